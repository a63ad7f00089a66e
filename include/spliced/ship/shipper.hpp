#pragma once
// Store-and-forward: a Shipper sends what one chain archived to the route's upstream pool, from
// the segment files themselves (sendfile(2)), and counts a byte as shipped only once the
// upstream's kernel has acknowledged it (bytes sent minus what the socket's send queue still
// holds, SIOCOUTQ). See docs/DESIGN.md, "Store-and-forward".
//
// The chain tells the shipper as it opens, appends to and completes segments (ChainObserver), on
// the writing threads; the shipper keeps a descriptor of every segment it has yet to ship, so a
// rename (publish, .unsynced) or an unlink under it changes nothing, and it never looks at the
// disk to learn that bytes arrived. Everything else runs on the route's home loop.
//
// Positions are (segment id, offset): ids grow with each segment the chain opens. The shipper
// keeps two: the next byte to send and the cursor (acknowledged). A broken connection rewinds
// sending to the cursor (with framing: lines, to the start of the line that holds it), so bytes
// sent but unacknowledged are sent again (counted as resent) and nothing is skipped.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_set>
#include <vector>

#include "spliced/archive/archive_dir.hpp"
#include "spliced/archive/segment_chain.hpp"
#include "spliced/core/event.hpp"
#include "spliced/core/fd.hpp"
#include "spliced/core/log_limit.hpp"
#include "spliced/core/syscalls.hpp"
#include "spliced/proxy/forward_config.hpp"
#include "spliced/proxy/upstream_pool.hpp"
#include "spliced/ship/cursor.hpp"

namespace spliced {

// A shipping route's counters. Written on the home loop (dropped: also by the lifecycle thread),
// read when scraped.
struct ShipMetrics {
  std::atomic<uint64_t> sent{0};     // bytes handed to upstream sockets (resent ones included)
  std::atomic<uint64_t> acked{0};    // bytes the upstream's kernel acknowledged
  std::atomic<uint64_t> resent{0};   // bytes sent again after a broken connection
  std::atomic<uint64_t> dropped{0};  // unshipped bytes lost: retention (drop), truncation
  std::atomic<uint64_t> lag_bytes{0};
  std::atomic<int64_t> oldest_ms{0};       // when the oldest unshipped byte was archived (Unix ms)
  std::atomic<uint64_t> cursor_errors{0};  // failed cursor saves, a cursor found removed
  // Segments found truncated, removed or unreadable under the shipper (by someone else).
  std::atomic<uint64_t> segment_errors{0};
  std::vector<std::unique_ptr<std::atomic<uint64_t>>> reconnects;  // per upstream (pool order)
};

// A route's shipping figures at one moment: one shipper's, or summed over a route's (the lag in
// time is the worst).
struct ShipTotals {
  uint64_t sent = 0, acked = 0, lag_bytes = 0, resent = 0, dropped = 0, cursor_errors = 0,
           segment_errors = 0;
  std::chrono::milliseconds lag{0};
  std::vector<uint64_t> reconnects;  // per upstream, pool order
  void add(const ShipTotals& o);
};

class Shipper : public ChainObserver {
 public:
  // `post` runs a function on the home loop (from any thread). The pool, the dir, the config and
  // `on_shipped` (told of each segment the upstream acknowledged whole, on the home loop) are
  // borrowed and outlive the shipper.
  //
  // `per_connection`: the chain is one client connection's (layout: per_connection). Its journal
  // keeps every segment of the chain, and once the chain has ended and the upstream acknowledged
  // all of it, the shipper removes its cursor and journal and calls `on_finished` (home loop).
  Shipper(event_base* base, SysCalls& sys, std::string route, std::string chain,
          const ForwardConfig& cfg, bool lines, UpstreamPool& pool, ArchiveDir& dir,
          std::function<void(std::function<void()>)> post,
          std::function<void(const std::string& rel)> on_shipped, bool per_connection = false,
          std::function<void()> on_finished = {});
  ~Shipper() override;
  Shipper(const Shipper&) = delete;
  Shipper& operator=(const Shipper&) = delete;

  // Reads the cursor and the journal, opens the segments still to ship and starts connecting.
  // Home loop.
  void start();
  // A new per-connection chain (nothing to read back): creates its journal and first cursor, on
  // the calling thread (the connection's worker, before the chain writes), then sets up its
  // events on the home loop.
  void startFresh();
  // Takes what the upstream has acknowledged so far into the cursor, saves it and closes the
  // connection. What is unacknowledged ships again after the next start.
  void stop();

  // ChainObserver: any thread, with the chain's lock held.
  void segmentOpened(const std::string& rel, int fd) override;
  void segmentAppended(uint64_t size) override;
  void segmentDone(uint64_t size) override;
  void chainEnded() override;

  // True while `rel` (a published name; NAME.unsynced counts as NAME) is still to be shipped whole.
  // Any thread.
  bool unshipped(const std::string& rel) const;
  // Retention deleted `rel` (retain.unshipped: drop): what of it was unshipped is dropped and
  // counted. Any thread.
  void dropped(const std::string& rel);

  const ShipMetrics& metrics() const { return metrics_; }
  ShipTotals totals() const;
  // The age of the oldest unshipped byte (0 when none).
  std::chrono::milliseconds lag() const;
  // For /healthz: why shipping is unhealthy (lag past forward.max_lag), or "".
  std::string problem() const;
  // The upstream connected now ("" when none), for the status page and tests.
  std::string upstream() const;
  const std::string& chain() const { return chain_; }
  // A per-connection chain that ended and was shipped whole (its files are removed).
  bool finished() const { return finished_; }

 private:
  struct Seg {
    uint64_t id = 0;
    std::string rel;
    UniqueFd fd;
    uint64_t size = 0;     // bytes known to be in it
    bool done = false;     // complete: no byte will be added
    bool removed = false;  // found unlinked (said once)
  };
  // What the sender needs of one segment, copied out under the lock.
  struct View {
    bool exists = false;
    int fd = -1;
    uint64_t size = 0;
    bool done = false;
    bool has_next = false;
    std::string rel;
  };
  // A run of bytes sent on the current connection: segment id, its offset, position in the stream.
  struct Span {
    uint64_t id, off, stream, len;
  };
  enum class State { Idle, Backoff, Connecting, Connected };

  // The open segment holds `size` bytes now (`done`: and is complete). Any thread.
  void grew(uint64_t size, bool done);
  void wake();
  void onWake();
  void pump();
  void connect();
  static void onConnect(evutil_socket_t fd, short what, void* arg);
  static void onWritable(evutil_socket_t, short, void* arg);
  static void onReadable(evutil_socket_t fd, short, void* arg);
  static void onRetry(evutil_socket_t, short, void* arg);
  static void onTick(evutil_socket_t, short, void* arg);
  void connected();
  // The connection broke (or the upstream closed it): rewind to the cursor, reconnect later.
  // `upstream_fault` false: the shipper cut it itself (a segment cut short under it): no upstream
  // error, and it reconnects at once.
  void broken(const std::string& why, bool upstream_fault = true);
  void scheduleRetry();
  // Reads SIOCOUTQ and moves the cursor over what the upstream acknowledged.
  void sampleAck();
  void advanceCursor(uint64_t stream_acked);
  // Pops fully acknowledged, complete segments from the queue (and tells on_shipped).
  void settle();
  void checkpoint();
  View view(uint64_t id);
  // The offset of the start of the line that holds `off` in `fd` (lines framing).
  uint64_t lineStart(int fd, uint64_t off);
  void updateLag();
  // Segment `id` turned out shorter than the chain said (truncated by someone) or unreadable: it
  // ends at `real` (framing: lines, at the last whole line before it, read through `fd` when >= 0),
  // its rest is lost. Bytes past that end already sent cut the connection, so that a torn line is
  // the last thing the upstream got on it.
  void truncated(uint64_t id, uint64_t real, int fd);
  // Says (once) that segment `id`, sent whole, was found unlinked from the archive dir.
  void checkRemoved(uint64_t id);
  void load();
  void arm();
  // A per-connection chain that ended is shipped whole: its files go, the connection closes.
  void finishChain();
  ShipCursor snapshot(size_t& journal_seen);

  event_base* base_;
  SysCalls& sys_;
  const std::string route_;
  const std::string chain_;
  const ForwardConfig& cfg_;
  const bool lines_;
  UpstreamPool& pool_;
  ArchiveDir& dir_;
  std::function<void(std::function<void()>)> post_;
  std::function<void(const std::string&)> on_shipped_;
  const bool per_connection_;
  std::function<void()> on_finished_;
  std::atomic<bool> ended_{false};
  bool finished_ = false;
  ShipMetrics metrics_;
  std::shared_ptr<std::atomic<bool>> alive_ = std::make_shared<std::atomic<bool>>(true);
  std::atomic<bool> wake_pending_{false};

  // Shared with the writing threads.
  mutable std::mutex mu_;
  std::deque<Seg> queue_;                   // in id order; ids are contiguous
  std::unordered_set<std::string> names_;   // the rels in queue_
  uint64_t next_id_ = 1;                    // the id of the next segment opened
  UniqueFd journal_;                        // .spliced/ship/CHAIN.journal, appended
  std::vector<std::string> journal_names_;  // appended since the last cursor save
  std::string upstream_text_;               // guarded too: read by the admin

  // Home loop only.
  State state_ = State::Idle;
  uint64_t send_id_ = 1, send_off_ = 0;  // next byte to send
  uint64_t ack_id_ = 1, ack_off_ = 0;    // the cursor
  uint64_t high_id_ = 0, high_off_ = 0;  // the farthest byte ever sent (resent counting)
  uint64_t stream_sent_ = 0;             // on the current connection
  uint64_t stream_acked_ = 0;
  uint64_t ack_base_ = 0;  // tcpi_bytes_acked when the connection was set up
  // When bytes on the connection last got acknowledged (or started to wait): forward.ack_timeout.
  std::chrono::steady_clock::time_point ack_progress_{};
  std::deque<Span> spans_;
  // When bytes became known: (the last segment id then, Unix ms), for the lag in seconds.
  std::deque<std::pair<uint64_t, int64_t>> arrivals_;
  std::string last_popped_;  // the last segment acknowledged whole
  ShipCursor saved_;         // the last cursor saved
  bool saved_once_ = false;
  bool dirty_ = false;          // the cursor moved since it was saved
  uint64_t acked_at_save_ = 0;  // metrics_.acked when it was saved
  std::chrono::steady_clock::time_point last_save_{};
  UniqueFd sock_;
  Upstream* upstream_ = nullptr;
  std::vector<Upstream*> tried_;
  bool ever_connected_ = false;
  std::chrono::milliseconds backoff_{0};
  EventPtr connect_ev_, write_ev_, read_ev_, retry_ev_, tick_ev_;
  LogLimiter down_log_{"ship upstream down"};
  LogLimiter save_log_{"ship cursor save"};
  std::string last_error_;
};

}  // namespace spliced
