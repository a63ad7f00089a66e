#pragma once
// The descriptors a process may still open, spent before they are needed.
//
// A connection is accepted only when what it will hold is there (its socket, and its segment or
// its upstream socket), so an accepted connection never stalls for want of a descriptor (at the
// limit, a session that could not open its segment used to wait for descriptors that only other
// waiting sessions could give back). Pipes are optional (the pump copies without one): the pool
// takes them from what is left, and gives idle ones back when a listener is waiting.
//
// Single-threaded: one event loop's (each worker has its own share of the process's limit). A fixed
// reserve covers what is opened briefly or elsewhere (a segment's parent dir, the lifecycle
// thread's files, admin clients, health checks).
#include <sys/resource.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

namespace spliced {

class FdBudget {
 public:
  // Told when descriptors come back while it waits (once per wait).
  class Waiter {
   public:
    virtual void fdsAvailable() = 0;

   protected:
    ~Waiter() = default;
  };

  // Unlimited until configure().
  FdBudget() = default;
  FdBudget(const FdBudget&) = delete;
  FdBudget& operator=(const FdBudget&) = delete;

  // `limit` descriptors in all (RLIMIT_NOFILE), `in_use` open now and kept (listeners, dirs,
  // locks, logs), `reserve` kept back for brief and outside uses.
  void configure(size_t limit, size_t in_use, size_t reserve);
  // A budget of exactly `capacity` descriptors (a worker's share of the process's).
  void configureCapacity(size_t capacity) {
    limited_ = true;
    capacity_ = capacity;
  }
  bool limited() const { return limited_; }

  // Takes `n` descriptors, asking the reclaimer (idle pipes) first when short. False: not
  // enough; nothing is taken.
  bool take(size_t n);
  // Takes `n` descriptors that are already open (moved in by a binary upgrade), over the
  // capacity if need be: what is given back later balances it.
  void force(size_t n) {
    if (limited_) taken_ += n;
  }
  // Gives `n` back and tells the waiters.
  void give(size_t n);
  size_t available() const {
    return limited_ ? (taken_ >= capacity_ ? 0 : capacity_ - taken_) : SIZE_MAX;
  }
  size_t capacity() const { return capacity_; }
  size_t taken() const { return taken_; }

  // Called back once when descriptors are given back; a waiter may wait again from there.
  void wait(Waiter* w);
  void cancelWait(Waiter* w);
  bool hasWaiters() const { return !waiters_.empty(); }

  // Frees idle descriptors (pooled pipes) on request: given `want`, gives back what it can
  // through give() and returns how many.
  void setReclaimer(std::function<size_t(size_t want)> fn) { reclaim_ = std::move(fn); }

 private:
  bool limited_ = false;
  size_t capacity_ = 0;  // what connections and pipes may hold together
  size_t taken_ = 0;
  std::vector<Waiter*> waiters_;
  std::function<size_t(size_t)> reclaim_;
  bool notifying_ = false;
};

// `n` descriptors taken from a budget, given back when destroyed unless released.
class FdCharge {
 public:
  FdCharge() = default;
  FdCharge(FdBudget& budget, size_t n) : budget_(&budget), n_(n) {}
  FdCharge(FdCharge&& o) noexcept : budget_(o.budget_), n_(o.n_) { o.budget_ = nullptr; }
  FdCharge& operator=(FdCharge&& o) noexcept {
    if (this != &o) {
      reset();
      budget_ = o.budget_;
      n_ = o.n_;
      o.budget_ = nullptr;
    }
    return *this;
  }
  FdCharge(const FdCharge&) = delete;
  FdCharge& operator=(const FdCharge&) = delete;
  ~FdCharge() { reset(); }

  size_t size() const { return budget_ ? n_ : 0; }
  // The descriptors stay taken; their owner gives them back itself. Returns how many.
  size_t release() {
    size_t n = size();
    budget_ = nullptr;
    return n;
  }
  // Gives the descriptors back now.
  void reset() {
    if (budget_ != nullptr) budget_->give(n_);
    budget_ = nullptr;
  }

 private:
  FdBudget* budget_ = nullptr;
  size_t n_ = 0;
};

// Descriptors open in this process now (/proc/self/fd), or 0 when that cannot be read.
size_t countOpenFds();

// RLIMIT_NOFILE's soft limit raised to its hard limit (as Go does at start): returns the limits
// before and after, or the errno when it cannot be read.
struct NofileLimits {
  rlim_t before = 0;
  rlim_t now = 0;
  int err = 0;
};
NofileLimits raiseNofileLimit();

}  // namespace spliced
