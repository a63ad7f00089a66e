#pragma once
// A route: one listener, its limits and its sessions, plus a route kind (collect or proxy) that
// owns what the kind needs and makes the sessions.
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "spliced/collect/collect_route.hpp"
#include "spliced/config/config.hpp"
#include "spliced/core/error.hpp"
#include "spliced/core/listener.hpp"
#include "spliced/core/metrics.hpp"
#include "spliced/core/session.hpp"
#include "spliced/proxy/proxy_route.hpp"

namespace spliced {

class Server;

// A Route owns its listener, counters, session list and route kind, and is the RouteContext of
// its sessions. The Server and the config snapshot are borrowed.
class Route final : public RouteContext {
 public:
  Route(Server& server, const RouteConfig& cfg);
  ~Route();

  // Prepares the route kind and starts listening.
  Status start();
  void stopAccepting();
  void rotateAll();
  void shutdownSweep();
  // The last step of a shutdown: the kind closes what it holds (the shared chain's segment).
  void finish();
  // Frees every session and closes every segment at once (server teardown).
  void closeAll();

  const RouteConfig& config() const { return cfg_; }
  const RouteMetrics& counters() const { return metrics_; }
  size_t sessionCount() const { return sessions_.size(); }
  std::string boundAddress() const { return listener_ ? listener_->boundAddress() : ""; }
  bool listening() const { return listener_ && listener_->isOpen(); }
  // Problems for /healthz, one line each; empty when the route is healthy.
  std::vector<std::string> problems() const;
  // The kind's parts, for the admin endpoint (nullptr when the route is of the other kind).
  const CollectRoute* collect() const { return collect_; }
  const ProxyRoute* proxy() const { return proxy_; }
  size_t descriptorsPerSession() const { return kind_->descriptorsPerSession(); }

  // RouteContext: what its sessions and its kind may ask.
  event_base* base() override;
  PipePool& pipes() override;
  SysCalls& sys() override;
  RouteMetrics& metrics() override { return metrics_; }
  const std::string& routeName() const override { return cfg_.name; }
  std::chrono::milliseconds idleTimeout() const override { return cfg_.idle_timeout; }
  uint64_t nextConnectionId() override;
  void sessionDone(Session* s) override;
  void replaceSession(Session* from, SessionPtr next) override;
  void rotateSessions() override { rotateAll(); }

 private:
  void onAccept(UniqueFd fd, const sockaddr_storage& peer, socklen_t len, FdCharge charge);
  void adopt(SessionPtr session);

  Server& server_;
  const RouteConfig& cfg_;
  RouteMetrics metrics_;
  size_t fds_held_ = 0;  // descriptors taken for its active connections (FdBudget)
  std::unique_ptr<RouteKind> kind_;
  CollectRoute* collect_ = nullptr;  // kind_, when it collects
  ProxyRoute* proxy_ = nullptr;      // kind_, when it proxies
  std::unique_ptr<Listener> listener_;
  SessionList sessions_;  // after kind_: sessions borrow it, so they are destroyed first
};

}  // namespace spliced
