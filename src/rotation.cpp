#include "spliced/rotation.hpp"

#include <ctime>

namespace spliced {

std::chrono::system_clock::time_point nextBoundary(std::chrono::system_clock::time_point now,
                                                   std::chrono::milliseconds interval,
                                                   bool localtime) {
  using namespace std::chrono;
  milliseconds offset{0};
  if (localtime) {
    std::time_t tt = system_clock::to_time_t(now);
    std::tm tm{};
    localtime_r(&tt, &tm);
    offset = seconds(tm.tm_gmtoff);
  }
  auto local_ms = duration_cast<milliseconds>(now.time_since_epoch()) + offset;
  auto next = (local_ms / interval + 1) * interval;
  return system_clock::time_point(duration_cast<system_clock::duration>(next - offset));
}

}  // namespace spliced
