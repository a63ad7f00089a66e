#include "spliced/proxy/proxy_route.hpp"

#include <fmt/format.h>

#include "spliced/proxy/proxy_session.hpp"

namespace spliced {

ProxyRoute::ProxyRoute(RouteContext& ctx, std::shared_ptr<const ForwardConfig> cfg)
    : ctx_(ctx), cfg_(std::move(cfg)), pool_(ctx.base(), *cfg_, ctx.routeName()) {}

Status ProxyRoute::start() {
  pool_.start();
  return Ok{};
}

SessionPtr ProxyRoute::createSession(RouteContext& ctx, Connection conn) {
  std::shared_ptr<const ForwardConfig> cfg = current();
  SessionPtr s = std::make_unique<ProxySession>(ctx, pool_, *cfg, std::move(conn));
  s->holdConfig(std::move(cfg));
  return s;
}

Result<SessionPtr> ProxyRoute::restoreSession(RouteContext& ctx, HandoffRecord& r) {
  std::shared_ptr<const ForwardConfig> cfg = current();
  Result<SessionPtr> s = ProxySession::restore(ctx, pool_, *cfg, r);
  if (s) s.value()->holdConfig(std::move(cfg));
  return s;
}

std::shared_ptr<const ForwardConfig> ProxyRoute::current() const {
  std::lock_guard lock(mu_);
  return cfg_;
}

void ProxyRoute::reconfigure(std::shared_ptr<const ForwardConfig> next) {
  // The pool first: a session created in between takes the new config with the new pool. The
  // pool's config stays alive with ours (cfg_ below) until the next reload replaces both.
  pool_.reconfigure(*next);
  std::lock_guard lock(mu_);
  cfg_ = std::move(next);
}

void ProxyRoute::problems(std::vector<std::string>& out) const {
  if (!pool_.anyUp())
    out.push_back(fmt::format("route {}: no upstream available", ctx_.routeName()));
}

}  // namespace spliced
