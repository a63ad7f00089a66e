#pragma once
// One client connection of a collect route: client socket -> pump -> segment chain.
#include <chrono>
#include <list>
#include <memory>
#include <optional>

#include "spliced/archive/line_framer.hpp"
#include "spliced/archive/record_framer.hpp"
#include "spliced/archive/segment_chain.hpp"
#include "spliced/core/address.hpp"
#include "spliced/core/event.hpp"
#include "spliced/core/fd.hpp"
#include "spliced/core/pump.hpp"
#include "spliced/core/session.hpp"

namespace spliced {

class CollectRoute;

// How a session ended, for the close log line.
enum class EndReason { Eof, IdleTimeout, Reset, Shutdown, Internal, BadFrame };
const char* toString(EndReason r);

// A CollectSession owns the client socket, its events, its pump, and (layout: per_connection)
// its own segment chain; with layout: shared it borrows the route's chain. The RouteContext and
// the CollectRoute that created it are borrowed; the route frees the session after the callback
// that closed it has returned. `ac` is the archive config the session started with (held by the
// session: see Session::holdConfig), which a reload does not change for it.
class CollectSession : public Session {
 public:
  CollectSession(RouteContext& ctx, CollectRoute& archive, const ArchiveConfig& ac, UniqueFd fd,
                 PeerInfo peer, uint64_t id);
  ~CollectSession() override;
  CollectSession(const CollectSession&) = delete;
  CollectSession& operator=(const CollectSession&) = delete;

  void start() override;
  // Closes the active segment of a per_connection chain (SIGUSR1, interval).
  void rotate() override;
  // drain_timeout is over: take what the socket already holds, write it, and close.
  void shutdownSweep() override;
  // Sends FIN (shutdown SHUT_WR; spliced never writes to a collect client) so that a sender that
  // watches its socket (rsyslog) stops writing and reconnects, instead of writing bytes that the
  // final close would reset away. Reading goes on until the client's EOF or drain_timeout.
  void beginDrain() override;

  uint64_t id() const { return id_; }
  bool closed() const { return state_ == State::Closed; }

 private:
  // Streaming: reading the client. Backoff: the sink refused bytes (full disk, ...); the client
  // is not read until a retry flushes what is held. Closed: waiting to be freed.
  enum class State { Streaming, Backoff, Closed };

  static void onEvent(evutil_socket_t fd, short what, void* arg);
  static void onRetry(evutil_socket_t fd, short what, void* arg);
  // The one entry point that moves bytes and advances the state.
  void advance(size_t budget);
  void handle(const PumpResult& r);
  void enterBackoff(const PumpResult& r);
  // While paused (nothing is read), a client that resets or hangs up is still noticed and
  // logged; what it sent before is still written.
  void noticeHangUp();
  // Ends the stream: writes what is held (and an unterminated last line), then closes; if the
  // sink refuses, waits in Backoff and closes once the retry has written it.
  void finishStream(EndReason why, int err);
  void close(EndReason why, int err);
  // The record framer refused the stream (malformed header; oversize: close): true when the
  // session is ending because of it.
  bool checkRefused();

  RouteContext& ctx_;
  CollectRoute& archive_;
  UniqueFd fd_;
  PeerInfo peer_;
  uint64_t id_;
  std::unique_ptr<SegmentChain> own_chain_;  // layout: per_connection
  std::unique_ptr<LineFramer> framer_;       // layout: shared, framing: lines
  std::unique_ptr<RecordFramer> records_;    // framing: octet_counted or auto (either layout)
  std::unique_ptr<Pump> pump_;               // after the sinks it borrows: destroyed first
  EventPtr read_ev_;
  EventPtr retry_ev_;
  State state_ = State::Streaming;
  std::optional<EndReason> ending_;  // the stream is over; close once held bytes are written
  int ending_err_ = 0;
  int storage_err_ = 0;   // errno of the current storage episode (logged once)
  bool stalled_ = false;  // counted in the route's stalled sessions
  bool hung_up_ = false;  // noticed while paused (logged once)
  std::chrono::milliseconds backoff_{0};
  std::chrono::steady_clock::time_point started_;
  uint64_t bytes_ = 0;
};

}  // namespace spliced
