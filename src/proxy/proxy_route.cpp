#include "spliced/proxy/proxy_route.hpp"

#include <fmt/format.h>

#include "spliced/proxy/proxy_session.hpp"

namespace spliced {

ProxyRoute::ProxyRoute(RouteContext& ctx, const ForwardConfig& cfg)
    : ctx_(ctx), cfg_(cfg), pool_(ctx.base(), cfg, ctx.routeName()) {}

Status ProxyRoute::start() {
  pool_.start();
  return Ok{};
}

SessionPtr ProxyRoute::createSession(RouteContext& ctx, Connection conn) {
  return std::make_unique<ProxySession>(ctx, pool_, cfg_, std::move(conn));
}

void ProxyRoute::problems(std::vector<std::string>& out) const {
  if (!pool_.anyUp())
    out.push_back(fmt::format("route {}: no upstream available", ctx_.routeName()));
}

}  // namespace spliced
