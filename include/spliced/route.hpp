#pragma once
// A route: one listener plus what happens to its streams (for now: collect into an archive).
#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "spliced/archive.hpp"
#include "spliced/archive_worker.hpp"
#include "spliced/collect_session.hpp"
#include "spliced/config.hpp"
#include "spliced/event.hpp"
#include "spliced/listener.hpp"
#include "spliced/metrics.hpp"
#include "spliced/proxy_protocol.hpp"
#include "spliced/session.hpp"
#include "spliced/upstream.hpp"

namespace spliced {

class Server;

// A Route owns its listener, counters, archive dir fd, its shared chain (layout: shared), its
// interval timer and its sessions. The Server and the config snapshot are borrowed.
class Route {
 public:
  Route(Server& server, const RouteConfig& cfg);
  ~Route();

  // Creates the archive dir and starts listening. Empty on success, else the reason.
  std::string start();
  void stopAccepting();
  void rotateAll();
  void shutdownSweep();
  // Closes the shared chain's segment (the last step of a shutdown).
  void closeShared();
  // Frees every session and closes every segment at once (server teardown).
  void closeAll();

  const RouteConfig& config() const { return cfg_; }
  RouteMetrics& metrics() { return metrics_; }
  Server& server() { return server_; }
  SegmentChain* sharedChain() { return shared_.get(); }
  int dirFd() const { return dir_fd_.get(); }
  size_t sessionCount() const { return sessions_.size(); }
  std::string boundAddress() const { return listener_ ? listener_->boundAddress() : ""; }

  // A segment of this route is complete: queue its compression and a retention pass.
  void segmentClosed(const std::string& rel);
  const LifecycleMetrics& lifecycle() const { return lifecycle_; }

  // Proxy routes: the upstream pool (nullptr for collect routes).
  UpstreamPool* upstreams() { return upstreams_.get(); }
  // accept_proxy: the handshake read a valid PROXY header; the connection gets its session.
  void headerReceived(Session* handshake, UniqueFd fd, const sockaddr_storage& peer, socklen_t len,
                      const ProxyAddresses& origin);

  // Called by a session that has closed: it is freed after the current callback returns.
  void sessionDone(Session* s);

  // Storage episodes: a session whose archive writes fail marks the route stalled until its
  // writes succeed again (for /healthz and the stalled gauge).
  void storageStalled(int err);
  void storageRecovered();
  uint64_t stalledSessions() const { return stalled_; }
  int lastStorageError() const { return last_storage_err_; }
  // Problems for /healthz, one line each; empty when the route is healthy.
  std::vector<std::string> problems() const;
  bool listening() const { return listener_ && listener_->isOpen(); }

 private:
  void onAccept(UniqueFd fd, const sockaddr_storage& peer, socklen_t len);
  std::string startArchive();
  void startSession(UniqueFd fd, const sockaddr_storage& peer, socklen_t len,
                    std::optional<ProxyAddresses> origin);
  void adopt(SessionPtr session);
  static void onInterval(evutil_socket_t, short, void* arg);
  static void onMaintenance(evutil_socket_t, short, void* arg);
  void armInterval();
  std::string lockDir();

  Server& server_;
  const RouteConfig& cfg_;
  RouteMetrics metrics_;
  UniqueFd dir_fd_;
  UniqueFd lock_fd_;  // flock on <dir>/.spliced.lock: one process per archive dir
  LifecycleMetrics lifecycle_;
  ArchiveTarget target_;  // what the archive worker needs of this route
  std::unique_ptr<SegmentChain> shared_;
  std::unique_ptr<UpstreamPool> upstreams_;
  std::unique_ptr<Listener> listener_;
  EventPtr interval_ev_;
  EventPtr maintenance_ev_;
  std::list<SessionPtr> sessions_;
  uint64_t stalled_ = 0;
  int last_storage_err_ = 0;
};

}  // namespace spliced
