#pragma once
// A small worker thread for the event loop's blocking file work: a FIFO of jobs that run on the
// thread, each returning a completion that then runs on the loop thread. The admin endpoint lists
// archive dirs on one; a collect route with `fsync: on_close` closes (syncs and publishes) its
// segments on another. Separate from the archive lifecycle thread, whose jobs (compressing a large
// file) may take minutes: neither a listing nor a close waits behind a compression.
//
// The completion comes back through an eventfd watched by the loop (no libevent locking needed:
// the worker only writes to the eventfd). Jobs run one at a time, in the order posted; their
// completions run in the same order.
//
// Ownership: the LoopWorker owns its thread, its queue, the eventfd and its event; the event_base
// is borrowed and outlives it. Everything but the constructor's caller thread rule below is
// thread-safe; post(), drain() and the destructor are called on the loop thread.
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include "spliced/core/event.hpp"
#include "spliced/core/fd.hpp"

namespace spliced {

class LoopWorker {
 public:
  // What runs on the loop thread once the job is done.
  using Completion = std::function<void()>;
  // What runs on the worker thread; returns the completion (may be empty).
  using Job = std::function<Completion()>;

  // `max_queue`: jobs queued or running at most (0 = no limit). `nice`: the thread's CPU priority.
  LoopWorker(event_base* base, std::string name, size_t max_queue = 0, int nice = 0);
  // Waits for the job in progress; queued jobs are dropped (destroyed without running) and
  // completions not yet delivered are dropped too. Call drain() first to deliver them.
  ~LoopWorker();
  LoopWorker(const LoopWorker&) = delete;
  LoopWorker& operator=(const LoopWorker&) = delete;

  // Queues `job`. False (nothing queued) when max_queue jobs are already queued or running.
  bool post(Job job);
  // Jobs queued or running, plus completions not delivered yet.
  size_t pending() const;
  // On the loop thread: waits until every job posted so far has run, at most `limit`, and runs
  // the completions that are ready now. True when nothing is left pending.
  bool drain(std::chrono::milliseconds limit);
  const std::string& name() const { return name_; }

 private:
  static void onReady(evutil_socket_t fd, short, void* arg);
  void deliver();
  void run(int nice);

  const std::string name_;
  const size_t max_queue_;
  UniqueFd efd_;
  EventPtr ready_ev_;
  mutable std::mutex mu_;
  std::condition_variable cv_;       // a job was queued, or stop
  std::condition_variable idle_cv_;  // a job finished
  std::deque<Job> queue_;
  std::deque<Completion> done_;
  bool busy_ = false;
  bool stop_ = false;
  std::thread thread_;  // last: started once everything it uses exists
};

}  // namespace spliced
