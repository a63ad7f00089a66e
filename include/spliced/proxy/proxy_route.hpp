#pragma once
// The proxy kind of route: what a route with a `forward:` block owns besides its listener.
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "spliced/core/session.hpp"
#include "spliced/proxy/forward_config.hpp"
#include "spliced/proxy/upstream_pool.hpp"

namespace spliced {

// A ProxyRoute owns the upstream pool (balancing, health checks) and creates the route's
// ProxySessions, which borrow the pool. The RouteContext is borrowed and outlives it; the forward
// config is shared with the config snapshot it belongs to, and each session holds the one it
// started with.
class ProxyRoute : public RouteKind {
 public:
  ProxyRoute(RouteContext& ctx, std::shared_ptr<const ForwardConfig> cfg);

  // Starts the active health checks, if configured.
  Status start() override;
  SessionPtr createSession(RouteContext& ctx, Connection conn) override;
  Result<SessionPtr> restoreSession(RouteContext& ctx, HandoffRecord& r) override;
  void problems(std::vector<std::string>& out) const override;

  const UpstreamPool& pool() const { return pool_; }

  // A reload changed the route's forward block (main thread): new sessions take `next`, running
  // ones keep the config they started with. The pool keeps the upstreams whose address stays (with
  // their health and counters), adds the new ones and no longer picks the others.
  void reconfigure(std::shared_ptr<const ForwardConfig> next);

 private:
  std::shared_ptr<const ForwardConfig> current() const;

  RouteContext& ctx_;
  mutable std::mutex mu_;  // guards cfg_ (workers read it, a reload replaces it)
  std::shared_ptr<const ForwardConfig> cfg_;
  UpstreamPool pool_;
};

}  // namespace spliced
