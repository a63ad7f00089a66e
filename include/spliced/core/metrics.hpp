#pragma once
// Plain counters, updated on the data path and formatted only when read (admin /metrics, logs).
// One set per route per worker; a scrape sums workers.
#include <cstdint>

namespace spliced {

struct RouteMetrics {
  uint64_t connections_active = 0;
  uint64_t connections_total = 0;
  uint64_t rejected_limit = 0;
  uint64_t rejected_denied = 0;
  uint64_t rejected_no_upstream = 0;  // proxy: no upstream could be reached
  uint64_t rejected_bad_header = 0;   // accept_proxy: malformed or missing PROXY header
  uint64_t bytes_in = 0;              // from clients
  uint64_t bytes_out = 0;             // to clients (proxy)
  uint64_t upstream_bytes = 0;        // to upstreams (proxy)
  uint64_t upstream_bytes_in = 0;     // from upstreams (proxy)
  uint64_t archive_bytes = 0;         // written into segment files
  uint64_t archive_segments = 0;      // segments closed (renamed to their final name)
  uint64_t copy_fallback_bytes = 0;   // bytes that passed through user space
  uint64_t storage_errors = 0;
  uint64_t unsynced_segments = 0;         // published as NAME.unsynced: their fdatasync failed
  uint64_t archive_rescued_segments = 0;  // opened under a rescue name (rescue/...)
  uint64_t lines_split = 0;               // framing: lines, lines longer than max_line
};

}  // namespace spliced
