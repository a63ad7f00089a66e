#pragma once
// One log line per episode of a repeated condition (accept failing at the descriptor limit, the
// kernel refusing pipes, a library repeating itself): the first occurrence is logged, repeats are
// counted, and when the episode ends one line says how many were suppressed.
//
// An episode ends when its owner sees the condition clear (end()), or, for a condition nobody
// sees clear, when no occurrence came for `quiet`: the next occurrence then first logs the old
// episode's count and starts a new episode. A LogLimiter belongs to one thread (its owner's).
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace spliced {

class LogLimiter {
 public:
  using Clock = std::chrono::steady_clock;

  // `what` names the line in the count logged after a quiet period ("admin accept").
  explicit LogLimiter(std::string what, Clock::duration quiet = std::chrono::seconds(60));

  // One occurrence. True: the caller logs it (it starts an episode). False: it was counted.
  bool hit(Clock::time_point now = Clock::now());
  // The condition cleared: ends the episode and returns how many occurrences were not logged
  // (the caller says so in its "again" line); nothing when no episode was open.
  std::optional<uint64_t> end();

  bool inEpisode() const { return open_; }
  uint64_t suppressed() const { return suppressed_; }

 private:
  std::string what_;
  Clock::duration quiet_;
  bool open_ = false;
  uint64_t suppressed_ = 0;  // occurrences of the open episode that were not logged
  Clock::time_point last_{};
};

}  // namespace spliced
