#pragma once
// A per-worker pool of kernel pipes. A pipe is lent to a pump only while it holds bytes; an empty
// pipe comes back here; a pipe that still holds bytes when its owner dies is closed, never reused.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

#include "spliced/core/fd.hpp"
#include "spliced/core/fd_budget.hpp"
#include "spliced/core/log_limit.hpp"
#include "spliced/core/metrics.hpp"
#include "spliced/core/syscalls.hpp"
#include "spliced/core/units.hpp"

namespace spliced {

// The `pipes:` block.
struct PipesConfig {
  uint64_t size = kMiB;  // requested with F_SETPIPE_SZ; the granted size is read back
  uint64_t max = 1024;   // pipes in existence (in use + pooled); 0 forces the copy path
};

class PipePool {
 public:
  // While the kernel grants less than asked, every this-many new pipes ask for the full size
  // again, so that pipes grow back once the pressure (other processes' pipes) is gone.
  static constexpr uint64_t kRetryEvery = 16;

  // `max_pipes` caps pipes in existence (lent + pooled); 0 means splice is never used.
  PipePool(SysCalls& sys, size_t pipe_size, size_t max_pipes);
  ~PipePool();
  PipePool(const PipePool&) = delete;
  PipePool& operator=(const PipePool&) = delete;

  // Pipes then cost two descriptors each from `budget`, taken only from what connections leave;
  // idle pipes are closed when the budget asks for them back.
  void useBudget(FdBudget& budget);
  // Closes idle pipes until `want` descriptors are given back (or none is left); returns how
  // many descriptors were given back.
  size_t closeIdle(size_t want);

  // A pipe, or nothing when the cap is reached or the kernel refuses one (the caller then copies).
  std::optional<Pipe> acquire();
  // A pipe that came from another process (binary upgrade), with the bytes it holds: lent from
  // this pool from now on (its descriptors are charged to the budget, over its limit if need be).
  Pipe adopt(Pipe&& pipe);
  // Takes a pipe back: an empty one is pooled, one that holds bytes is closed, and so is one
  // smaller than asked for once the kernel grants the full size again.
  void release(Pipe&& pipe);

  // Readable from any thread (the admin endpoint sums workers' pools).
  size_t inUse() const { return in_use_; }
  size_t pooled() const { return pooled_; }
  size_t grantedSize() const { return granted_size_; }

 private:
  SysCalls& sys_;
  size_t requested_size_;
  size_t try_size_;    // drops when the kernel refuses larger pipes (pipe-user-pages-soft)
  uint64_t made_ = 0;  // pipes created: every kRetryEvery-th asks for the full size again
  size_t granted_size_ = 0;
  size_t max_pipes_;
  Counter in_use_;
  Counter pooled_;  // free_.size(), readable from any thread
  FdBudget* budget_ = nullptr;
  LogLimiter refused_log_{"pipe refused"};  // the kernel refuses pipes: one line per episode
  std::vector<Pipe> free_;
};

}  // namespace spliced
