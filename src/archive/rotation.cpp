#include "spliced/archive/rotation.hpp"

#include <ctime>

namespace spliced {

namespace {

std::chrono::milliseconds utcOffset(std::chrono::system_clock::time_point t) {
  std::time_t tt = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  localtime_r(&tt, &tm);
  return std::chrono::seconds(tm.tm_gmtoff);
}

}  // namespace

std::chrono::system_clock::time_point nextBoundary(std::chrono::system_clock::time_point now,
                                                   std::chrono::milliseconds interval,
                                                   bool localtime) {
  using namespace std::chrono;
  auto now_ms = duration_cast<milliseconds>(now.time_since_epoch());
  if (!localtime) {
    return system_clock::time_point(
        duration_cast<system_clock::duration>((now_ms / interval + 1) * interval));
  }
  // The next instant whose local wall-clock time is a multiple of `interval`. Across a
  // daylight-saving change the offset differs before and after: try the offset in force now and
  // the one in force an interval later, keep the candidates that agree with their own offset,
  // and take the earliest.
  auto candidate = [&](milliseconds offset) {
    return system_clock::time_point(duration_cast<system_clock::duration>(
        ((now_ms + offset) / interval + 1) * interval - offset));
  };
  system_clock::time_point best = system_clock::time_point::max();
  for (auto offset : {utcOffset(now), utcOffset(now + interval)}) {
    auto at = candidate(offset);
    if (utcOffset(at) == offset && at > now && at < best) best = at;
  }
  return best != system_clock::time_point::max() ? best : candidate(utcOffset(now));
}

}  // namespace spliced
