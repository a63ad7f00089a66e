#pragma once
// Figures of this process from /proc/self, for the process_* metrics.
#include <cstdint>

namespace spliced {

struct ProcessStats {
  uint64_t open_fds = 0;
  uint64_t max_fds = 0;
  uint64_t rss_bytes = 0;
  double cpu_seconds = 0;
};

// Reads them now. A figure that cannot be read stays 0.
ProcessStats readProcessStats();

}  // namespace spliced
