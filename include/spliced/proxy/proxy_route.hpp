#pragma once
// The proxy kind of route: what a route with a `forward:` block owns besides its listener.
#include <string>
#include <vector>

#include "spliced/core/session.hpp"
#include "spliced/proxy/forward_config.hpp"
#include "spliced/proxy/upstream_pool.hpp"

namespace spliced {

// A ProxyRoute owns the upstream pool (balancing, health checks) and creates the route's
// ProxySessions, which borrow the pool. The RouteContext and the forward config (part of the
// config snapshot) are borrowed and outlive it.
class ProxyRoute : public RouteKind {
 public:
  ProxyRoute(RouteContext& ctx, const ForwardConfig& cfg);

  // Starts the active health checks, if configured.
  Status start() override;
  SessionPtr createSession(RouteContext& ctx, Connection conn) override;
  void problems(std::vector<std::string>& out) const override;

  const UpstreamPool& pool() const { return pool_; }

 private:
  RouteContext& ctx_;
  const ForwardConfig& cfg_;
  UpstreamPool pool_;
};

}  // namespace spliced
