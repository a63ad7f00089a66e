// LoopWorker: jobs on its thread, completions back on the loop in order, a bounded queue, drain()
// for shutdown, and a destructor that drops what has not run.
#include <catch2/catch.hpp>
#include <chrono>
#include <thread>
#include <vector>

#include "spliced/archive/loop_worker.hpp"
#include "spliced/core/event.hpp"

using namespace spliced;
using namespace std::chrono_literals;

namespace {

// Runs `base` until `done()` or the deadline.
template <typename Pred>
bool runUntil(event_base* base, Pred done, std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    timeval tv{0, 5000};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
  }
  return true;
}

}  // namespace

TEST_CASE("LoopWorker: jobs run off the loop thread, completions on it, in order", "[worker]") {
  EventBasePtr base(event_base_new());
  LoopWorker worker(base.get(), "test");
  const auto loop_thread = std::this_thread::get_id();
  std::vector<int> order;
  std::atomic<int> off_loop{0};
  for (int i = 0; i < 50; ++i) {
    REQUIRE(worker.post([&, i]() -> LoopWorker::Completion {
      if (std::this_thread::get_id() != loop_thread) ++off_loop;
      return [&, i] {
        CHECK(std::this_thread::get_id() == loop_thread);
        order.push_back(i);
      };
    }));
  }
  REQUIRE(runUntil(
      base.get(), [&] { return order.size() == 50; }, 5s));
  CHECK(off_loop == 50);
  for (int i = 0; i < 50; ++i) CHECK(order[static_cast<size_t>(i)] == i);
  CHECK(worker.pending() == 0);
}

TEST_CASE("LoopWorker: a full queue refuses, drain waits and delivers, the destructor drops",
          "[worker]") {
  EventBasePtr base(event_base_new());
  std::atomic<bool> release{false};
  int delivered = 0;
  std::atomic<int> ran{0};
  auto slow = [&]() -> LoopWorker::Completion {
    while (!release) std::this_thread::sleep_for(1ms);
    return [&] { ++delivered; };
  };
  {
    LoopWorker worker(base.get(), "test", 2);
    REQUIRE(worker.post(slow));
    REQUIRE(worker.post(slow));
    CHECK_FALSE(worker.post(slow));  // two queued or running: the third is refused
    CHECK(worker.pending() == 2);
    CHECK_FALSE(worker.drain(50ms));  // still running: not idle within the limit
    CHECK(delivered == 0);
    release = true;
    CHECK(worker.drain(5s));  // both done, and delivered now, without the loop running
    CHECK(delivered == 2);
    CHECK(worker.pending() == 0);
    // The destructor: the job in progress finishes, queued ones never run, nothing is delivered.
    release = false;
    REQUIRE(worker.post([&]() -> LoopWorker::Completion {
      ++ran;
      std::this_thread::sleep_for(50ms);
      return [&] { ++delivered; };
    }));
    while (ran == 0) std::this_thread::sleep_for(1ms);
    REQUIRE(worker.post([&]() -> LoopWorker::Completion {
      ++ran;
      return {};
    }));
    release = true;
  }
  CHECK(delivered == 2);
  CHECK(ran == 1);  // the queued job was dropped
}
