#pragma once
// The upstreams of a proxy route: which one a new session tries next (round_robin,
// least_connections, source_hash), and whether each is up. Passive health: `max_fails` failed
// connects in a row mark an upstream down for `fail_timeout`, after which it is tried again.
// Active health (optional): a TCP connect every `interval`; `fall` failures in a row mark it down,
// `rise` successes in a row up.
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "spliced/core/check.hpp"
#include "spliced/core/event.hpp"
#include "spliced/core/fd.hpp"
#include "spliced/proxy/forward_config.hpp"

namespace spliced {

class UpstreamPool;

// One upstream and its state. Owned by the pool.
struct Upstream {
  SocketAddress addr;
  uint64_t active = 0;        // sessions connected through it now
  uint64_t fails_in_row = 0;  // failed connects (passive health)
  std::chrono::steady_clock::time_point down_until{};
  bool check_down = false;  // verdict of the active check
  uint64_t check_ok_in_row = 0;
  uint64_t check_bad_in_row = 0;
  uint64_t errors = 0;  // failed connects and upstream resets (spliced_upstream_errors_total)
  // Written by the pool only; sessions report through connectFailed/connected/release.

  bool up(std::chrono::steady_clock::time_point now) const {
    return !check_down && now >= down_until;
  }

  // Active check in progress: the probe socket and its events.
  UpstreamPool* pool = nullptr;
  UniqueFd probe;
  EventPtr probe_ev;
  EventPtr timer_ev;
};

// What the admin endpoint reports of one upstream.
struct UpstreamView {
  std::string address;
  uint64_t errors = 0;
  uint64_t active = 0;
  bool up = false;
};

// An UpstreamPool owns its upstreams and their check events; the event_base and the forward
// config (part of the config snapshot) are borrowed. One pool serves every worker of its route:
// its state is guarded by a mutex (held for a few comparisons per connection), so balancing
// (least_connections, round_robin) and health are the route's, not a worker's. The health checks
// run on the main loop (`base`).
class UpstreamPool {
 public:
  UpstreamPool(event_base* base, const ForwardConfig& cfg, std::string route);
  ~UpstreamPool();

  // Starts the active checks, if configured.
  void start();
  // A reload changed the forward block (main thread; the caller keeps `next` alive while the pool
  // uses it). Upstreams whose address stays keep their state (health, errors, active sessions);
  // new addresses are added, up; the others are no longer picked, and stay (retired, unchecked)
  // for the sessions still connected through them. Balancing, health checks and passive health
  // follow `next` from now on.
  void reconfigure(const ForwardConfig& next);
  // The next upstream to try for a client at `client` (used by source_hash), skipping `tried`;
  // nullptr when none is up.
  Upstream* pick(const sockaddr* client, const std::vector<Upstream*>& tried);

  // What a session reports back (nginx's peer.free(..., NGX_PEER_FAILED)): a session never
  // writes the pool's counters itself.
  // A connect to `u` failed (refused, timed out, ...): counted, and passive health may mark it
  // down. Not for the process's own shortages (EMFILE, ...), which are not the upstream's fault.
  void connectFailed(Upstream* u, int err);
  // A connect to `u` succeeded: passive health clears it, and it counts one more active session
  // until release().
  void connected(Upstream* u);
  // A session connected to `address` (the text of an upstream's address) came from the process
  // before a binary upgrade: it counts as connected through that upstream, or through a retired
  // one made for it when the config no longer names that address. nullptr when `address` does not
  // parse.
  Upstream* adopt(const std::string& address);
  enum class PeerState { Ok, Failed };
  // A session connected through `u` is done with it; Failed (a reset or failed transfer) counts
  // as an upstream error.
  void release(Upstream* u, PeerState state);
  bool anyUp() const;
  // The upstreams' addresses (immutable) and configuration order.
  const std::vector<std::unique_ptr<Upstream>>& upstreams() const { return upstreams_; }
  // A consistent copy of every upstream's state (any thread).
  std::vector<UpstreamView> view() const;

 private:
  static void onCheckTimer(evutil_socket_t, short, void* arg);
  static void onProbe(evutil_socket_t, short what, void* arg);
  void probeResult(Upstream& u, bool ok, int err);

  event_base* base_;
  const ForwardConfig* cfg_;  // replaced by reconfigure() (under mu_); its owner keeps it alive
  std::string route_;
  std::vector<std::unique_ptr<Upstream>> upstreams_;
  // Removed by a reload: sessions may still point at them (one per address; one that comes back
  // is taken from here with its state).
  std::vector<std::unique_ptr<Upstream>> retired_;
  size_t next_ = 0;        // round-robin position
  mutable std::mutex mu_;  // guards every Upstream's state and next_
};

// Starts a non-blocking connect to `addr`. Returns the socket (connecting or connected) or an
// invalid fd with `err` set.
UniqueFd connectNonBlocking(const SocketAddress& addr, int& err);

// The outcome of a non-blocking connect whose write event fired with `what`: 0 when connected,
// else the errno (ETIMEDOUT when the event timed out). The one place a connect is judged, for
// sessions and health checks alike (nginx's ngx_stream_proxy_test_connect).
int connectResult(int fd, short what);
// The same for a connect watched with EV_READ | EV_WRITE: a success reported as EV_WRITE alone
// needs no getsockopt (an error always comes with EV_READ too).
int connectResultReadWrite(int fd, short what);

}  // namespace spliced
