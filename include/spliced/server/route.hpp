#pragma once
// A route: its limits and its route kind (collect or proxy, which owns what the kind needs and
// makes the sessions), plus one RouteWorker per worker: that worker's listener, sessions and
// counters.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "spliced/collect/collect_route.hpp"
#include "spliced/collect/udp_receiver.hpp"
#include "spliced/config/config.hpp"
#include "spliced/core/error.hpp"
#include "spliced/core/listener.hpp"
#include "spliced/core/metrics.hpp"
#include "spliced/core/session.hpp"
#include "spliced/proxy/proxy_route.hpp"
#include "spliced/server/worker.hpp"

namespace spliced {

class Server;
class Route;

// What one worker holds of a route: its listener (its own SO_REUSEPORT socket, or the route's
// one Unix socket shared by every worker) or, for a udp: route, its UDP socket and receiver, its
// sessions and its counters. It is the RouteContext
// of the sessions it accepts. Used only on its worker's thread, except counters(), which any
// thread may read; the main thread posts what it wants done.
class RouteWorker final : public RouteContext {
 public:
  RouteWorker(Route& route, Worker& worker, std::shared_ptr<const RouteConfig> cfg);
  ~RouteWorker();

  void stopAccepting();
  void rotateSessions() override;
  void shutdownSweep();
  // Frees every session at once (server teardown).
  void closeAll();
  const RouteMetrics& counters() const { return metrics_; }
  Worker& worker() { return worker_; }
  std::string boundAddress() const {
    if (udp_) return udp_->boundAddress();
    return listener_ ? listener_->boundAddress() : "";
  }
  bool listening() const { return listening_; }

  // Binary upgrade, in the running process (this worker's thread): stops accepting and freezes
  // every session, appending a record for each to `out`; `refused` gets the first session that
  // cannot move (then the caller thaws everything). thaw() undoes it; handedOff() lets go of
  // everything once the new process has it.
  void freeze(std::vector<HandoffRecord>& out, std::string& refused);
  void thaw();
  void handedOff();
  // Binary upgrade, in the new process (this worker's thread): makes and starts the session `r`
  // describes, counted as this worker's.
  Status restore(HandoffRecord& r);

  // RouteContext: what its sessions may ask.
  event_base* base() override { return worker_.base(); }
  PipePool& pipes() override { return worker_.pipes(); }
  SysCalls& sys() override;
  RouteMetrics& metrics() override { return metrics_; }
  const std::string& routeName() const override;
  std::chrono::milliseconds idleTimeout() const override;
  uint64_t nextConnectionId() override;
  void sessionDone(Session* s) override;
  void replaceSession(Session* from, SessionPtr next) override;
  void post(std::function<void()> fn) override { worker_.post(std::move(fn)); }

 private:
  friend class Route;
  void onAccept(UniqueFd fd, const sockaddr_storage& peer, socklen_t len, FdCharge charge);
  void adopt(SessionPtr session);

  Route& route_;
  Worker& worker_;
  // The route's config as this worker applies it to new connections (allow, accept_proxy,
  // idle_timeout): replaced on this worker's thread by a reload.
  std::shared_ptr<const RouteConfig> cfg_;
  RouteMetrics metrics_;
  size_t fds_held_ = 0;  // descriptors taken for its active connections (its worker's FdBudget)
  std::unique_ptr<Listener> listener_;
  std::unique_ptr<UdpReceiver> udp_;  // listen: udp:... (instead of listener_)
  std::atomic<bool> listening_{false};
  SessionList sessions_;
};

// A Route owns its route kind, its RouteWorkers and (Unix sockets) the listening socket they
// share. It is the RouteContext of its kind, on the main thread: the kind's timers run on the main
// loop, and what it posts runs there. The Server and the config snapshot are borrowed.
class Route final : public RouteContext {
 public:
  // `cfg` is one of `snapshot`'s routes: the route keeps its snapshot alive.
  Route(Server& server, ConfigPtr snapshot, const RouteConfig& cfg);
  ~Route();

  // Why `next` (the same route in a new config) cannot be applied to this route by a reload, or
  // "" when it can: the keys that need a restart, or a new route name (see docs/OPERATIONS.md).
  std::string reloadRefusal(const RouteConfig& next) const;
  // Applies `next`, one of `snapshot`'s routes, to new connections and new segments (main thread;
  // reloadRefusal(next) is ""). The listening sockets stay; sessions running keep the config
  // they started with.
  void reconfigure(ConfigPtr snapshot, const RouteConfig& next);

  // Prepares the route kind and starts listening on every worker.
  Status start();
  // Every worker stops accepting (its sessions are told the stream is ending), and this waits
  // until each has: new clients are refused when it returns. A shared socket is closed then.
  void stopAccepting();
  void rotateAll();
  void shutdownSweep();
  // The last step of a shutdown: the kind closes what it holds (the shared chain's segment).
  void finish();
  // Frees every session and closes every segment at once (server teardown, workers stopped).
  void closeAll();

  // Binary upgrade, in the running process (main thread): a record for each listening socket
  // (appended to `out`) and every worker frozen (RouteWorker::freeze); thaw() undoes it,
  // handedOff() lets go of everything, a Unix socket's file staying where it is.
  Status freeze(std::vector<HandoffRecord>& out);
  void thaw();
  void handedOff();
  // In the new process (main thread): the session `r` describes, on worker `worker`.
  Status restore(HandoffRecord& r, size_t worker);

  // The config now (main thread).
  const RouteConfig& config() const { return *cfg_; }
  // Every worker's counters summed, and the kind's.
  RouteMetrics counters() const;
  // Worker 0's counters (with one worker, the route's).
  const RouteMetrics& firstCounters() const { return workers_.front()->counters(); }
  // Connections open now, over every worker (exact: max_connections is checked against it).
  uint64_t activeConnections() const { return active_.load(); }
  const std::vector<std::unique_ptr<RouteWorker>>& workers() const { return workers_; }
  // No worker listens any more and no connection is open: it may be retired.
  bool quiet() const { return listeners_open_ == 0 && active_.load() == 0; }
  std::string boundAddress() const;
  bool listening() const;
  // Problems for /healthz, one line each; empty when the route is healthy.
  std::vector<std::string> problems() const;
  // The kind's parts, for the admin endpoint (nullptr when the route is of the other kind).
  const CollectRoute* collect() const { return collect_; }
  const ProxyRoute* proxy() const { return proxy_; }
  size_t descriptorsPerSession() const { return kind_->descriptorsPerSession(); }

  // RouteContext of the kind (main thread): the main loop, worker 0's pipes and counters.
  event_base* base() override;
  PipePool& pipes() override;
  SysCalls& sys() override;
  RouteMetrics& metrics() override;
  const std::string& routeName() const override { return name_; }
  std::chrono::milliseconds idleTimeout() const override { return cfg_->idle_timeout; }
  uint64_t nextConnectionId() override;
  void sessionDone(Session* s) override;
  void replaceSession(Session* from, SessionPtr next) override;
  void rotateSessions() override { rotateAll(); }
  void post(std::function<void()> fn) override;

 private:
  friend class RouteWorker;
  // Counts a new connection against max_connections; false (nothing counted) at the limit.
  bool admit();
  void release();
  // listen: udp:...: one UDP socket and receiver per worker.
  Status startUdp();

  Server& server_;
  ConfigPtr snapshot_;  // the one the route started with: its kind keeps parts of it
  ConfigPtr current_;   // the latest a reload applied (snapshot_ until then)
  const RouteConfig* cfg_;
  const std::string name_;
  std::atomic<uint64_t> max_connections_;  // read by every worker's admit()
  std::unique_ptr<RouteKind> kind_;
  CollectRoute* collect_ = nullptr;  // kind_, when it collects
  ProxyRoute* proxy_ = nullptr;      // kind_, when it proxies
  std::atomic<uint64_t> active_{0};
  UniqueFd shared_fd_;         // a Unix socket: one, accepted from by every worker
  std::string unix_path_;      // removed when the shared socket closes
  size_t listeners_open_ = 0;  // main thread: workers that have not closed their listener yet
  // After kind_: sessions borrow it, so they are destroyed first.
  std::vector<std::unique_ptr<RouteWorker>> workers_;
};

}  // namespace spliced
