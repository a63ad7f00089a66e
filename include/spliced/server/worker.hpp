#pragma once
// A worker: one event loop with its own pipe pool, descriptor budget and freed-session graveyard.
// Worker 0 runs on the main thread's loop (the one that also owns signals, the admin endpoint and
// the routes' timers); workers 1..N-1 each run their own loop on their own thread. Nothing of a
// worker is touched by another thread except through its LoopQueue (post) and its counters,
// which are atomics.
#include <event2/event.h>

#include <cstddef>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "spliced/core/event.hpp"
#include "spliced/core/fd_budget.hpp"
#include "spliced/core/loop_queue.hpp"
#include "spliced/core/pipe_pool.hpp"
#include "spliced/core/session.hpp"
#include "spliced/core/syscalls.hpp"

namespace spliced {

// A Worker owns its loop (except worker 0's, borrowed from the server), pipe pool, budget,
// queue, graveyard and thread.
class Worker {
 public:
  // `base`: the loop to run on (worker 0: the main loop); nullptr makes the worker its own.
  Worker(size_t index, event_base* base, SysCalls& sys, const PipesConfig& pipes, size_t max_pipes);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  size_t index() const { return index_; }
  event_base* base() { return base_; }
  PipePool& pipes() { return pipes_; }
  FdBudget& fdBudget() { return fds_; }
  // Runs `fn` on this worker's loop (from any thread).
  void post(std::function<void()> fn) { queue_->post(std::move(fn)); }
  // Runs what was posted and not run yet (on this worker's loop thread, or once it has stopped).
  void runPosted() { queue_->runPending(); }

  // Starts the worker's thread (not for worker 0, whose loop the main thread runs).
  void startThread();
  // Ends the worker's loop and joins its thread, after the functions posted so far have run.
  void stopThread();
  bool ownThread() const { return own_base_ != nullptr; }

  // Frees `s` after the current callback has returned (never inside its own callback); then
  // `after_cleanup` runs (the server's shutdown check).
  void retire(SessionPtr s);
  void onCleanup(std::function<void()> fn) { after_cleanup_ = std::move(fn); }
  // Frees the retired sessions now (on the worker's thread, or once it has stopped).
  void clearGraveyard() { graveyard_.clear(); }

 private:
  static void onCleanupEvent(evutil_socket_t, short, void* arg);

  size_t index_;
  EventBasePtr own_base_;
  event_base* base_;
  FdBudget fds_;  // before pipes_: they give back to it
  PipePool pipes_;
  std::unique_ptr<LoopQueue> queue_;
  EventPtr cleanup_ev_;
  std::vector<SessionPtr> graveyard_;
  std::function<void()> after_cleanup_;
  std::thread thread_;
};

// What happens when a worker (or the main thread) hits an internal error it cannot handle (an
// exception escaping a callback, std::terminate): one log line naming the thread and the error,
// saying that every worker's connections end and what their pipes held is lost, then abort() (a
// core for the operator; systemd's Restart= starts a new process). Installed once, at start.
void installFatalHandler();

}  // namespace spliced
