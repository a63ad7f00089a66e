#pragma once
// One client of a proxy route: client <-> upstream, two pumps through two pipes.
//
//   Connecting --connected--> Streaming --both directions done / reset / idle--> Closed
//        |  connect refused or timed out: the next upstream (at most `retries` more)
//        +--no upstream left--> Closed
//
// Each direction reads its source only while its sink keeps up: when the sink socket is full the
// bytes wait in that direction's pipe, the source's read event is removed and the sink's write
// event added. End of stream from one side is passed on as shutdown(SHUT_WR) to the other once
// its pipe is empty; the session ends when both directions have ended. A reset from one side is
// passed on as a reset to the other.
//
// While client -> upstream is paused its client is not read, so a timer looks at the client
// every kPausedCheck for a pending socket error (a reset): a reset client ends the session; a FIN
// waits in the socket until the pipe has drained, as ever. A direction whose sink fails (a write
// to the upstream or the client fails) stops for good and drops what it holds; the other
// direction goes on until it ends or the idle timeout, and the session then ends with the
// failure as its reason.
#include <sys/socket.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "spliced/core/address.hpp"
#include "spliced/core/event.hpp"
#include "spliced/core/fd.hpp"
#include "spliced/core/pump.hpp"
#include "spliced/core/session.hpp"
#include "spliced/core/socket_sink.hpp"
#include "spliced/proxy/proxy_protocol.hpp"
#include "spliced/proxy/upstream_pool.hpp"

namespace spliced {

// A ProxySession owns both sockets, their events, both directions' sinks and pumps. The
// RouteContext, the upstream pool and the forward config are borrowed.
class ProxySession : public Session {
 public:
  // conn.origin: the addresses a front load balancer sent in a PROXY header (accept_proxy).
  ProxySession(RouteContext& ctx, UpstreamPool& pool, const ForwardConfig& cfg, Connection conn);
  ~ProxySession() override;

  void start() override;
  void shutdownSweep() override;
  // Binary upgrade: a connecting session moves as its client socket alone (nothing has been read
  // from it; the new process connects again) and a streaming one whole: both sockets, both pipes
  // with what they hold, copy buffers, half-close and failure states, counters and times.
  bool freeze(HandoffRecord& out) override;
  void thaw() override;
  // The session `r` describes, on `ctx`'s worker (started by start()).
  static Result<SessionPtr> restore(RouteContext& ctx, UpstreamPool& pool, const ForwardConfig& cfg,
                                    HandoffRecord& r);

 private:
  enum class State { Connecting, Streaming, Closed };
  // Why a session ended, for the access log (HAProxy's termination state, spelled out).
  enum class End {
    Done,           // both directions ended with a FIN
    NoUpstream,     // none up, or every try failed
    ClientReset,    // client reset or write to it failed
    UpstreamReset,  // upstream reset or write to it failed
    IdleTimeout,
    Shutdown,  // drain_timeout
    Internal,
  };
  static const char* toString(End e);

  // One direction of bytes; events carry a pointer to it.
  struct Direction {
    ProxySession* owner = nullptr;
    bool to_upstream = false;
    int src = -1;
    int dst = -1;
    std::unique_ptr<SocketSink> sink;
    std::unique_ptr<Pump> pump;  // after the sink it borrows
    EventPtr read_ev;            // src readable
    EventPtr write_ev;           // dst writable (only while the sink is behind)
    EventPtr check_ev;           // while paused: looks at src for a reset (client source only;
                                 // made at the first pause)
    bool waiting_sink = false;
    bool done = false;
    bool failed = false;  // its sink failed: nothing more is read or written, held bytes dropped
    uint64_t bytes = 0;   // read from src
  };

  // The client as the route sees it: the PROXY header's source, else the peer.
  const sockaddr* clientAddress() const;
  void connectNext();
  static void onConnect(evutil_socket_t fd, short what, void* arg);
  void connectFailed(int err);
  void startStreaming();
  // Makes a direction's sink, pump and events (none added).
  void setupDirection(Direction& d, bool to_upstream, int src, int dst);
  // Adds the events a streaming session waits on now (after a freeze, or once restored).
  void watch();
  static void onReadable(evutil_socket_t, short, void* arg);
  static void onWritable(evutil_socket_t, short, void* arg);
  static void onPausedCheck(evutil_socket_t, short, void* arg);
  void pause(Direction& d);
  void resume(Direction& d);
  // The sink of `d` failed: stop `d` for good, keep the other direction going.
  void failDirection(Direction& d, int err);
  static bool ended(const Direction& d) { return d.done || d.failed; }
  static void onIdle(evutil_socket_t, short, void* arg);
  // The one entry point that moves a direction's bytes and advances the session.
  void advance(Direction& d);
  void handle(Direction& d, const PumpResult& r);
  void close(End why, int err);

  RouteContext& ctx_;
  UpstreamPool& pool_;
  const ForwardConfig& cfg_;
  UniqueFd client_;
  UniqueFd upstream_fd_;
  sockaddr_storage peer_{};
  socklen_t peer_len_ = 0;
  PeerInfo peer_info_;
  std::optional<ProxyAddresses> origin_;
  uint64_t id_;
  State state_ = State::Connecting;
  // The first direction that failed while the other went on: the session's end reason.
  std::optional<End> failure_;
  int failure_err_ = 0;
  Upstream* upstream_ = nullptr;  // chosen; connected to it once connected_ (then released once)
  bool connected_ = false;
  std::vector<Upstream*> tried_;
  int last_connect_err_ = 0;
  EventPtr connect_ev_;
  EventPtr idle_ev_;
  Direction c2u_;  // client -> upstream
  Direction u2c_;  // upstream -> client
  std::chrono::steady_clock::time_point started_;
  std::chrono::steady_clock::time_point connect_started_;
  std::chrono::steady_clock::time_point last_activity_;
  std::chrono::milliseconds connect_time_{-1};
  bool frozen_ = false;
  bool restored_ = false;  // came from the process before a binary upgrade: start() resumes it
};

}  // namespace spliced
