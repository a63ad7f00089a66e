#pragma once
// Rotation policy: where a size limit splits a chunk, and when the next wall-clock boundary is.
#include <chrono>
#include <cstdint>

namespace spliced {

// Bytes that may still go into a segment holding `written` bytes under `max_bytes` (0 = no limit).
inline uint64_t roomInSegment(uint64_t written, uint64_t max_bytes) {
  if (max_bytes == 0) return UINT64_MAX;
  return written >= max_bytes ? 0 : max_bytes - written;
}

// The first instant after `now` that is a whole multiple of `interval` on the wall clock (UTC, or
// local time when `localtime`): with interval 1h, the next full hour. `interval` must be > 0.
std::chrono::system_clock::time_point nextBoundary(std::chrono::system_clock::time_point now,
                                                   std::chrono::milliseconds interval,
                                                   bool localtime);

}  // namespace spliced
