#pragma once
// Counters, updated on the data path and formatted only when read (admin /metrics, logs).
// One set per route per worker; a scrape sums workers.
#include <atomic>
#include <cstdint>

namespace spliced {

// A counter that any thread may add to and read (relaxed atomics: no ordering, no lost updates).
// Each worker adds to its own set, so the cache line stays on its core; the admin endpoint reads
// every set from the main thread. Copying takes a snapshot.
class Counter {
 public:
  Counter() = default;
  Counter(uint64_t v) : v_(v) {}  // NOLINT(google-explicit-constructor): a counter is a number
  Counter(const Counter& o) : v_(o.get()) {}
  Counter& operator=(const Counter& o) {
    v_.store(o.get(), std::memory_order_relaxed);
    return *this;
  }
  Counter& operator=(uint64_t v) {
    v_.store(v, std::memory_order_relaxed);
    return *this;
  }
  Counter& operator+=(uint64_t n) {
    v_.fetch_add(n, std::memory_order_relaxed);
    return *this;
  }
  Counter& operator-=(uint64_t n) {
    v_.fetch_sub(n, std::memory_order_relaxed);
    return *this;
  }
  Counter& operator++() { return *this += 1; }
  Counter& operator--() { return *this -= 1; }
  uint64_t operator++(int) { return v_.fetch_add(1, std::memory_order_relaxed); }
  uint64_t operator--(int) { return v_.fetch_sub(1, std::memory_order_relaxed); }
  operator uint64_t() const { return get(); }  // NOLINT(google-explicit-constructor)
  uint64_t get() const { return v_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> v_{0};
};

struct RouteMetrics {
  Counter connections_active;
  Counter connections_total;
  Counter rejected_limit;
  Counter rejected_denied;
  Counter rejected_no_upstream;  // proxy: no upstream could be reached
  Counter rejected_bad_header;   // accept_proxy: malformed or missing PROXY header
  Counter bytes_in;              // from clients
  Counter bytes_out;             // to clients (proxy)
  Counter upstream_bytes;        // to upstreams (proxy)
  Counter upstream_bytes_in;     // from upstreams (proxy)
  Counter archive_bytes;         // written into segment files
  Counter archive_segments;      // segments closed (renamed to their final name)
  Counter copy_fallback_bytes;   // bytes that passed through user space
  Counter storage_errors;
  Counter unsynced_segments;         // published as NAME.unsynced: their fdatasync failed
  Counter archive_rescued_segments;  // opened under a rescue name (rescue/...)
  Counter lines_split;               // framing: lines, lines longer than max_line
  Counter framing_auto_octet;        // framing: auto chose octet counting for a connection
  Counter framing_auto_lines;        // framing: auto chose lines for a connection
  Counter frames_oversize;           // octet-counted records longer than max_line
  Counter frames_malformed;          // connections refused for a malformed octet-count header
  Counter frames_incomplete;         // octet-counted frames cut short by the end of the stream
  Counter framing_copied_bytes;      // octet_counted / auto: bytes framed in user space
  Counter framing_spliced_bytes;     // octet_counted / auto: record bytes spliced into segments
  Counter udp_datagrams;             // udp: datagrams received (whatever became of them)
  Counter udp_truncated;             // udp: datagrams longer than a record may be, truncated
  Counter udp_dropped;               // udp: datagrams the kernel dropped (SO_RXQ_OVFL)
  Counter udp_denied;                // udp: datagrams from senders outside the allow list
  Counter udp_rejected_limit;        // udp, per_peer: datagrams of new senders past the limit

  // Adds every counter of `o` (summing workers).
  RouteMetrics& operator+=(const RouteMetrics& o) {
    connections_active += o.connections_active;
    connections_total += o.connections_total;
    rejected_limit += o.rejected_limit;
    rejected_denied += o.rejected_denied;
    rejected_no_upstream += o.rejected_no_upstream;
    rejected_bad_header += o.rejected_bad_header;
    bytes_in += o.bytes_in;
    bytes_out += o.bytes_out;
    upstream_bytes += o.upstream_bytes;
    upstream_bytes_in += o.upstream_bytes_in;
    archive_bytes += o.archive_bytes;
    archive_segments += o.archive_segments;
    copy_fallback_bytes += o.copy_fallback_bytes;
    storage_errors += o.storage_errors;
    unsynced_segments += o.unsynced_segments;
    archive_rescued_segments += o.archive_rescued_segments;
    lines_split += o.lines_split;
    framing_auto_octet += o.framing_auto_octet;
    framing_auto_lines += o.framing_auto_lines;
    frames_oversize += o.frames_oversize;
    frames_malformed += o.frames_malformed;
    frames_incomplete += o.frames_incomplete;
    framing_copied_bytes += o.framing_copied_bytes;
    framing_spliced_bytes += o.framing_spliced_bytes;
    udp_datagrams += o.udp_datagrams;
    udp_truncated += o.udp_truncated;
    udp_dropped += o.udp_dropped;
    udp_denied += o.udp_denied;
    udp_rejected_limit += o.udp_rejected_limit;
    return *this;
  }
};

}  // namespace spliced
