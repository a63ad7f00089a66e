#pragma once
// Sessions, and the narrow view of its route that a session gets.
//
// A session never sees its Route or the Server (Envoy's tcp_proxy filter sees ReadFilterCallbacks
// and pool callbacks, never its owner): it gets a RouteContext for what every session needs (the
// loop, pipes, syscalls, counters, and telling the route it is done) and, from the route kind
// that created it, what its kind needs (the archive chain, or the upstream pool).
//
// A route kind (collect, proxy) is a strategy: it owns the resources of its kind and creates the
// sessions; the Route keeps the listener, the limits and the session list.
#include <event2/event.h>
#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "spliced/core/address.hpp"
#include "spliced/core/error.hpp"
#include "spliced/core/fd.hpp"
#include "spliced/core/handoff.hpp"
#include "spliced/core/metrics.hpp"
#include "spliced/core/pipe_pool.hpp"
#include "spliced/core/syscalls.hpp"

namespace spliced {

// One client connection in progress. Owned by its route's SessionList and freed after the
// callback that closed it has returned (never inside it).
class Session {
 public:
  virtual ~Session() = default;
  virtual void start() = 0;
  // Closes active archive segments (SIGUSR1, interval); nothing for sessions without any.
  virtual void rotate() {}
  // drain_timeout is over: write what is already received where it can go, and close.
  virtual void shutdownSweep() = 0;
  // A shutdown has begun: tell the client the stream is ending (nothing by default).
  virtual void beginDrain() {}
  // Binary upgrade (docs/DESIGN.md, "Binary upgrade"): stops every event of the session and
  // describes it in `out` (fields, descriptors, bytes held in user space) for the new process.
  // False when the session cannot move: it is then left running. thaw(): the upgrade failed;
  // the frozen session goes on as if nothing happened.
  virtual bool freeze(HandoffRecord& /*out*/) { return false; }
  virtual void thaw() {}

  // The configuration the session started with (its route's config snapshot, opaque here): kept
  // alive as long as the session, whatever reloads change meanwhile.
  void holdConfig(std::shared_ptr<const void> config) { config_ = std::move(config); }
  const std::shared_ptr<const void>& heldConfig() const { return config_; }

 private:
  friend class SessionList;
  std::shared_ptr<const void> config_;
  std::list<std::unique_ptr<Session>>::iterator self_{};  // its place in the owning list
  bool listed_ = false;
};
using SessionPtr = std::unique_ptr<Session>;

// The sessions of one route: added and removed in constant time, each by itself.
class SessionList {
 public:
  SessionList() = default;
  SessionList(const SessionList&) = delete;
  SessionList& operator=(const SessionList&) = delete;

  Session* add(SessionPtr s);
  // Takes `s` out of the list and returns its ownership. `s` must be in this list.
  SessionPtr remove(Session* s);
  size_t size() const { return list_.size(); }
  // The sessions now (they remove themselves from the list while a caller walks this copy).
  std::vector<Session*> snapshot() const;
  void clear() { list_.clear(); }

 private:
  std::list<SessionPtr> list_;
};

// A connection accepted (and, with accept_proxy, past its PROXY header), on its way to the
// session its route kind makes of it.
struct Connection {
  UniqueFd fd;
  sockaddr_storage peer{};
  socklen_t peer_len = 0;
  std::optional<ProxyAddresses> origin;  // accept_proxy: the client a front balancer named
  uint64_t id = 0;
};

// What a session, or a route kind, may ask of the route that owns it.
class RouteContext {
 public:
  virtual event_base* base() = 0;
  virtual PipePool& pipes() = 0;
  virtual SysCalls& sys() = 0;
  virtual RouteMetrics& metrics() = 0;
  virtual const std::string& routeName() const = 0;
  virtual std::chrono::milliseconds idleTimeout() const = 0;
  virtual uint64_t nextConnectionId() = 0;
  // The session has closed: it is freed after the current callback returns, and its
  // connection is no longer counted as active.
  virtual void sessionDone(Session* s) = 0;
  // `from` hands its connection on to `next` (accept_proxy: from the handshake to the real
  // session), which starts now; the connection stays counted as active. `from` is freed after
  // the current callback returns.
  virtual void replaceSession(Session* from, SessionPtr next) = 0;
  // Rotates every session's active segment and the kind's own (interval rotation).
  virtual void rotateSessions() = 0;
  // Runs `fn` on this context's loop (from any thread): a worker's for a session's context, the
  // main loop for a route kind's.
  virtual void post(std::function<void()> fn) = 0;

 protected:
  ~RouteContext() = default;
};

// What a route does with its connections: collect into an archive, or proxy to upstreams.
class RouteKind {
 public:
  virtual ~RouteKind() = default;
  // Prepares what the kind owns before the listener opens (archive dir, lock and recovery;
  // upstream health checks).
  virtual Status start() = 0;
  // The session for a new connection (not yet started), on the worker whose context is `ctx`.
  virtual SessionPtr createSession(RouteContext& ctx, Connection conn) = 0;
  // Descriptors one of its sessions holds at most, its client's socket included (a segment, an
  // upstream socket): taken before a connection is accepted. Pipes are not counted (optional).
  virtual size_t descriptorsPerSession() const { return 2; }
  // Closes what the kind itself holds open (the shared chain's segment): SIGUSR1, interval.
  virtual void rotate() {}
  // The last step of a shutdown or teardown, once no session is left.
  virtual void finish() {}
  // A session the process before a binary upgrade froze (Session::freeze), made again here on
  // the worker whose context is `ctx` (not yet started), or why it cannot be.
  virtual Result<SessionPtr> restoreSession(RouteContext& /*ctx*/, HandoffRecord& r) {
    return Error(ErrorSource::Internal,
                 "this route kind cannot take over a session of type " + r.fields["type"]);
  }
  // Appends the kind's problems for /healthz, one line each.
  virtual void problems(std::vector<std::string>& /*out*/) const {}
};

}  // namespace spliced
