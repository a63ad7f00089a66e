#include "spliced/core/log_limit.hpp"

#include <spdlog/spdlog.h>

#include <utility>

namespace spliced {

LogLimiter::LogLimiter(std::string what, Clock::duration quiet)
    : what_(std::move(what)), quiet_(quiet) {}

bool LogLimiter::hit(Clock::time_point now) {
  if (open_ && now - last_ >= quiet_) {
    // The old episode went quiet without anyone seeing it end: its count, then a new episode.
    if (suppressed_ > 0) {
      spdlog::info("{}: {} repeated line(s) suppressed in the last episode", what_, suppressed_);
    }
    open_ = false;
  }
  last_ = now;
  if (!open_) {
    open_ = true;
    suppressed_ = 0;
    return true;
  }
  ++suppressed_;
  return false;
}

std::optional<uint64_t> LogLimiter::end() {
  if (!open_) return std::nullopt;
  open_ = false;
  return std::exchange(suppressed_, 0);
}

}  // namespace spliced
