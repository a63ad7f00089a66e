#pragma once
// One worker's UDP socket of a collect route (listen: udp:HOST:PORT): datagrams in batches
// (recvmmsg), each written whole as one record into the route's shared chain (layout: shared) or
// into its sender's own chain (layout: per_peer).
#include <sys/socket.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "spliced/archive/segment_chain.hpp"
#include "spliced/core/address.hpp"
#include "spliced/core/event.hpp"
#include "spliced/core/fd.hpp"
#include "spliced/core/log_limit.hpp"
#include "spliced/core/session.hpp"

namespace spliced {

class CollectRoute;

// What the route decides for a datagram's sender: the allow list, and (layout: per_peer) one more
// sender's chain under max_connections, counted over every worker.
struct UdpAdmission {
  std::vector<Cidr> allow;        // empty: everyone
  std::function<bool()> admit;    // true: a new chain may open (counted until release)
  std::function<void()> release;  // a chain admitted before has closed
};

// The records a datagram becomes (see docs/DESIGN.md, "UDP listeners"):
//   framing: raw                      the datagram as it came;
//   framing: lines, or octet_counted
//     with output: lines              the datagram, plus '\n' when it does not end with one;
//   framing: octet_counted            "LEN SP" and the datagram (an octet-counted stream).
// An empty datagram makes no record. A datagram longer than the record limit (max_line less the
// room the framing adds, and at most 65535 bytes) is truncated by the kernel and counted.
struct UdpRecordShape {
  size_t max_payload = 0;  // the longest datagram kept whole
  bool newline = false;    // '\n' appended when missing
  bool header = false;     // "LEN SP" prepended
  size_t room = 0;         // the most bytes a record adds to its datagram
};
UdpRecordShape udpRecordShape(const ArchiveConfig& cfg);

// Appends the record of datagram `data` (`n` bytes, n > 0) at `out`, which has room for n plus
// shape.room bytes; `data` may overlap `out` at or after it. Returns the record's length.
size_t writeUdpRecord(const UdpRecordShape& shape, const char* data, size_t n, char* out);

// A UdpReceiver owns its socket, its events, its batch buffers and (layout: per_peer) its senders'
// chains; the RouteContext (its worker's) and the CollectRoute (config, dir, shared chain, close
// worker) are borrowed and outlive it. Used on its worker's thread only.
class UdpReceiver {
 public:
  UdpReceiver(RouteContext& ctx, CollectRoute& archive, UniqueFd fd, UdpAdmission admission);
  ~UdpReceiver();
  UdpReceiver(const UdpReceiver&) = delete;
  UdpReceiver& operator=(const UdpReceiver&) = delete;

  void start();
  // Stops receiving: takes what the socket already holds (bounded), writes it, closes the socket
  // and every sender's chain (their segments are published).
  void close();
  // Closes the active segment of every sender's chain (SIGUSR1, interval).
  void rotate();
  // A reload changed the route: datagrams from now on follow `cfg` (max_line) and `allow`, and
  // senders' chains opened from now on its rotation; chains already open keep theirs.
  void reconfigure(std::shared_ptr<const ArchiveConfig> cfg, std::vector<Cidr> allow);
  bool isOpen() const { return fd_.valid(); }
  // "udp:127.0.0.1:5140" (the real port when the config said 0).
  std::string boundAddress() const;
  size_t peers() const { return peers_.size(); }

 private:
  // One sender's chain (layout: per_peer).
  struct Peer {
    PeerInfo info;
    uint64_t id = 0;
    std::shared_ptr<const ArchiveConfig> cfg;  // what its chain was opened with
    std::unique_ptr<SegmentChain> chain;
    std::chrono::steady_clock::time_point started;
    std::chrono::steady_clock::time_point last;
    uint64_t datagrams = 0;
    uint64_t bytes = 0;
  };
  // Records a write could not place yet (the archive refuses): written, in order, before anything
  // is read again.
  struct Held {
    Peer* peer = nullptr;  // nullptr: the shared chain
    std::string bytes;
    std::vector<size_t> ends;
  };

  static void onReadable(evutil_socket_t, short, void* arg);
  static void onRetry(evutil_socket_t, short, void* arg);
  static void onSweep(evutil_socket_t, short, void* arg);
  // Receives up to `batches` batches; false when a write failed (reading is paused).
  bool receive(size_t batches);
  // Makes records of the `n` datagrams just received and writes them.
  void process(unsigned n);
  // Writes the records [start, start + ends.back()) of the batch buffer to `peer`'s chain (or the
  // shared one); what is not taken is held.
  void writeRun(Peer* peer, const char* data, std::span<const size_t> ends);
  // Writes what is held; true when nothing is left.
  bool flushHeld();
  void pause(int err, IoStatus status);
  void resume();
  Peer* peerFor(const sockaddr* sa, socklen_t len, std::chrono::steady_clock::time_point now);
  void closePeer(const std::string& key, const char* why);
  SegmentChain& chainOf(Peer* peer);

  RouteContext& ctx_;
  CollectRoute& archive_;
  std::shared_ptr<const ArchiveConfig>
      cfg_;  // the route's archive config, as its last reload left it
  UniqueFd fd_;
  UdpAdmission admission_;
  UdpRecordShape shape_;
  size_t slot_ = 0;        // bytes per datagram slot in buf_ (max_payload + room)
  std::vector<char> buf_;  // kBatch slots
  std::vector<mmsghdr> msgs_;
  std::vector<iovec> iovs_;
  std::vector<sockaddr_storage> names_;
  std::vector<char> control_;  // one SO_RXQ_OVFL control message per slot
  uint32_t kernel_drops_ = 0;  // the socket's drop count last seen
  uint64_t owner_ = 0;         // this receiver's owner id in the shared chain
  std::unordered_map<std::string, std::unique_ptr<Peer>> peers_;  // by raw address bytes
  std::deque<Held> held_;
  EventPtr read_ev_;
  EventPtr retry_ev_;
  EventPtr sweep_ev_;
  std::chrono::milliseconds backoff_{0};
  int storage_err_ = 0;   // the errno of the current storage episode (logged once)
  bool stalled_ = false;  // counted in the route's stalled connections
  LogLimiter truncated_log_{"udp truncated datagram"};
  LogLimiter drop_log_{"udp kernel drops"};
  LogLimiter limit_log_{"udp per_peer limit"};
  LogLimiter recv_log_{"udp receive"};
};

}  // namespace spliced
