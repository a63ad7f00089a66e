#include "spliced/core/loop_queue.hpp"

#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

namespace spliced {

LoopQueue::LoopQueue(event_base* base) {
  efd_.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!efd_.valid()) {
    spdlog::error("error=environment cannot create an eventfd for a loop queue: {}",
                  std::strerror(errno));
    return;
  }
  ev_.reset(event_new(base, efd_.get(), EV_READ | EV_PERSIST, &LoopQueue::onReady, this));
  event_add(ev_.get(), nullptr);
}

LoopQueue::~LoopQueue() { ev_.reset(); }

bool LoopQueue::post(std::function<void()> fn) {
  if (!efd_.valid()) return false;
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    wake = queue_.empty();
    queue_.push_back(std::move(fn));
  }
  if (wake) {
    uint64_t one = 1;
    [[maybe_unused]] ssize_t w = ::write(efd_.get(), &one, sizeof one);
  }
  return true;
}

void LoopQueue::onReady(evutil_socket_t fd, short, void* arg) {
  uint64_t n = 0;
  [[maybe_unused]] ssize_t r = ::read(fd, &n, sizeof n);  // resets the counter
  static_cast<LoopQueue*>(arg)->runPending();
}

void LoopQueue::runPending() {
  std::vector<std::function<void()>> now;
  {
    std::lock_guard lock(mu_);
    now.swap(queue_);
  }
  for (auto& fn : now) fn();
}

}  // namespace spliced
