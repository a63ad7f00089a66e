#include "spliced/core/fd_budget.hpp"

#include <dirent.h>

#include <algorithm>
#include <cerrno>

#include "spliced/core/check.hpp"

namespace spliced {

void FdBudget::configure(size_t limit, size_t in_use, size_t reserve) {
  limited_ = true;
  capacity_ = limit > in_use + reserve ? limit - in_use - reserve : 0;
}

bool FdBudget::take(size_t n) {
  if (!limited_) return true;
  if (available() < n && reclaim_) reclaim_(n - available());
  if (available() < n) return false;
  taken_ += n;
  return true;
}

void FdBudget::give(size_t n) {
  if (!limited_) return;
  SPLICED_ASSERT(n <= taken_, "only what was taken is given back");
  taken_ -= std::min(n, taken_);
  if (waiters_.empty() || notifying_) return;
  // A waiter may wait again (or cancel) while it is told: tell those of now, once.
  notifying_ = true;
  std::vector<Waiter*> now;
  now.swap(waiters_);
  for (Waiter* w : now) w->fdsAvailable();
  notifying_ = false;
}

void FdBudget::wait(Waiter* w) {
  if (std::find(waiters_.begin(), waiters_.end(), w) == waiters_.end()) waiters_.push_back(w);
}

void FdBudget::cancelWait(Waiter* w) { std::erase(waiters_, w); }

size_t countOpenFds() {
  DIR* d = ::opendir("/proc/self/fd");
  if (d == nullptr) return 0;
  size_t n = 0;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(d);
  return n > 0 ? n - 1 : 0;  // not the one reading the dir
}

NofileLimits raiseNofileLimit() {
  NofileLimits out;
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) {
    out.err = errno;
    return out;
  }
  out.before = out.now = rl.rlim_cur;
  if (rl.rlim_cur < rl.rlim_max) {
    rlimit raised = rl;
    raised.rlim_cur = rl.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) {
      out.now = raised.rlim_cur;
    } else {
      out.err = errno;
    }
  }
  return out;
}

}  // namespace spliced
