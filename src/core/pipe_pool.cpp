#include "spliced/core/pipe_pool.hpp"

#include "spliced/core/check.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>

namespace spliced {

PipePool::PipePool(SysCalls& sys, size_t pipe_size, size_t max_pipes)
    : sys_(sys), requested_size_(pipe_size), try_size_(pipe_size), max_pipes_(max_pipes) {}

PipePool::~PipePool() {
  if (budget_ != nullptr) budget_->setReclaimer(nullptr);
}

void PipePool::useBudget(FdBudget& budget) {
  budget_ = &budget;
  budget.setReclaimer([this](size_t want) { return closeIdle(want); });
}

size_t PipePool::closeIdle(size_t want) {
  size_t freed = 0;
  while (freed < want && !free_.empty()) {
    free_.pop_back();  // closes both ends
    --pooled_;
    freed += 2;
  }
  if (freed > 0 && budget_ != nullptr) budget_->give(freed);
  return freed;
}

std::optional<Pipe> PipePool::acquire() {
  if (!free_.empty()) {
    Pipe p = std::move(free_.back());
    free_.pop_back();
    --pooled_;
    ++in_use_;
    return p;
  }
  if (in_use_ >= max_pipes_) return std::nullopt;
  // Connections come first: a pipe is made only from descriptors they leave (else: copy).
  if (budget_ != nullptr && (budget_->hasWaiters() || !budget_->take(2))) return std::nullopt;
  int fds[2];
  if (sys_.pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
    if (budget_ != nullptr) budget_->give(2);
    // One line per episode: the next pipe the kernel grants ends it.
    if (refused_log_.hit()) {
      spdlog::warn("error=environment cannot create a pipe ({}); copying instead",
                   std::strerror(errno));
    }
    return std::nullopt;
  }
  if (std::optional<uint64_t> n = refused_log_.end()) {
    spdlog::info("pipes can be created again ({} refusals suppressed); splicing", *n);
  }
  Pipe p;
  p.rd.reset(fds[0]);
  p.wr.reset(fds[1]);
  // Ask for the configured size; an unprivileged user over pipe-user-pages-soft or above
  // pipe-max-size gets EPERM: halve until the kernel agrees, and remember what worked. The
  // limit counts every pipe of the user, other processes' too, so the pressure can pass: every
  // kRetryEvery-th pipe asks for the full size again.
  if (try_size_ < requested_size_ && ++made_ % kRetryEvery == 0) try_size_ = requested_size_;
  while (try_size_ > 4096) {
    if (sys_.setPipeSize(p.wr.get(), static_cast<int>(try_size_)) >= 0) break;
    if (errno != EPERM && errno != EBUSY && errno != EINVAL) break;
    try_size_ /= 2;
  }
  int granted = ::fcntl(p.wr.get(), F_GETPIPE_SZ);
  p.capacity = granted > 0 ? static_cast<size_t>(granted) : 65536;
  if (granted_size_ != p.capacity) {
    if (p.capacity < requested_size_) {
      spdlog::warn("pipes.size {} requested, kernel granted {}", requested_size_, p.capacity);
    } else if (granted_size_ != 0) {
      spdlog::info("pipes.size {} granted again", requested_size_);
    }
    granted_size_ = p.capacity;
  }
  ++in_use_;
  return p;
}

Pipe PipePool::adopt(Pipe&& pipe) {
  int sz = ::fcntl(pipe.wr.get(), F_GETPIPE_SZ);
  pipe.capacity = sz > 0 ? static_cast<size_t>(sz) : 65536;
  if (budget_ != nullptr) budget_->force(2);
  ++in_use_;
  return std::move(pipe);
}

void PipePool::release(Pipe&& pipe) {
  if (!pipe.rd.valid()) return;
  SPLICED_ASSERT(in_use_ > 0, "a released pipe was acquired from this pool");
  SPLICED_ASSERT(pipe.bytes <= pipe.capacity, "a pipe holds at most its capacity");
  --in_use_;
  // A listener waiting for descriptors gets this pipe's instead of the pool.
  const bool wanted = budget_ != nullptr && budget_->hasWaiters();
  // A small pipe from a time of pressure is not kept once full-size ones are granted again.
  const bool small = pipe.capacity < granted_size_;
  if (pipe.bytes == 0 && free_.size() + in_use_ < max_pipes_ && !wanted && !small) {
    free_.push_back(std::move(pipe));
    ++pooled_;
    return;
  }
  // A pipe that still holds bytes (or one over the cap) is closed here, never reused.
  pipe.rd.reset();
  pipe.wr.reset();
  if (budget_ != nullptr) budget_->give(2);
}

}  // namespace spliced
