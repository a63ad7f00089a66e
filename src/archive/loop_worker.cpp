#include "spliced/archive/loop_worker.hpp"

#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>

#include "spliced/core/check.hpp"

namespace spliced {

LoopWorker::LoopWorker(event_base* base, std::string name, size_t max_queue, int nice)
    : name_(std::move(name)), max_queue_(max_queue) {
  efd_.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!efd_.valid()) {
    // Without it completions are delivered by drain() only: say so, once per worker.
    spdlog::error("error=internal {} worker: eventfd: {}; replies wait for the next drain", name_,
                  std::strerror(errno));
  } else {
    ready_ev_.reset(event_new(base, efd_.get(), EV_READ | EV_PERSIST, &LoopWorker::onReady, this));
    event_add(ready_ev_.get(), nullptr);
  }
  thread_ = std::thread([this, nice] { run(nice); });
}

LoopWorker::~LoopWorker() {
  std::deque<Job> dropped;
  {
    std::lock_guard lock(mu_);
    stop_ = true;
    dropped.swap(queue_);
  }
  cv_.notify_all();
  thread_.join();
  dropped.clear();  // their captures (descriptors) close here, on the loop thread
  ready_ev_.reset();
}

bool LoopWorker::post(Job job) {
  {
    std::lock_guard lock(mu_);
    if (stop_) return false;
    if (max_queue_ > 0 && queue_.size() + (busy_ ? 1 : 0) >= max_queue_) return false;
    queue_.push_back(std::move(job));
  }
  cv_.notify_one();
  return true;
}

size_t LoopWorker::pending() const {
  std::lock_guard lock(mu_);
  return queue_.size() + (busy_ ? 1 : 0) + done_.size();
}

bool LoopWorker::drain(std::chrono::milliseconds limit) {
  bool idle = false;
  {
    std::unique_lock lock(mu_);
    idle = idle_cv_.wait_for(lock, limit, [this] { return queue_.empty() && !busy_; });
  }
  deliver();
  return idle;
}

void LoopWorker::onReady(evutil_socket_t fd, short, void* arg) {
  uint64_t n = 0;
  [[maybe_unused]] ssize_t r = ::read(fd, &n, sizeof n);  // resets the counter
  static_cast<LoopWorker*>(arg)->deliver();
}

void LoopWorker::deliver() {
  std::deque<Completion> ready;
  {
    std::lock_guard lock(mu_);
    ready.swap(done_);
  }
  for (auto& c : ready) {
    if (c) c();
  }
}

void LoopWorker::run(int nice) {
  if (nice != 0) ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), nice);
  while (true) {
    Job job;
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
    }
    Completion c = job();
    job = nullptr;  // its captures go now, on this thread, before the loop hears of it
    {
      std::lock_guard lock(mu_);
      done_.push_back(std::move(c));
      busy_ = false;
    }
    idle_cv_.notify_all();
    if (efd_.valid()) {
      uint64_t one = 1;
      [[maybe_unused]] ssize_t w = ::write(efd_.get(), &one, sizeof one);
    }
  }
}

}  // namespace spliced
