#pragma once
// Work handed to an event loop from any thread: the way the main thread tells a worker what to
// do (stop accepting, rotate, drain), and a worker tells the main thread (a session is done, a
// segment closed), without touching the other thread's state or libevent's locks.
//
// The posted functions wait in a mutex-guarded list; an eventfd watched by the loop wakes it.
// They run on the loop thread, in the order posted.
#include <event2/event.h>

#include <functional>
#include <mutex>
#include <vector>

#include "spliced/core/event.hpp"
#include "spliced/core/fd.hpp"

namespace spliced {

// A LoopQueue owns its eventfd and event; the event_base is borrowed and outlives it. post() is
// for any thread; the constructor, runPending() and the destructor are for the loop thread.
// Functions still queued when it is destroyed are dropped without running.
class LoopQueue {
 public:
  explicit LoopQueue(event_base* base);
  ~LoopQueue();
  LoopQueue(const LoopQueue&) = delete;
  LoopQueue& operator=(const LoopQueue&) = delete;

  // Queues `fn` to run on the loop thread. False when the queue cannot wake its loop (no eventfd
  // could be made: logged once at construction).
  bool post(std::function<void()> fn);
  // Runs what is queued now (on the loop thread).
  void runPending();

 private:
  static void onReady(evutil_socket_t fd, short, void* arg);

  UniqueFd efd_;
  EventPtr ev_;
  std::mutex mu_;
  std::vector<std::function<void()>> queue_;
};

}  // namespace spliced
