// The descriptor budget: what connections take before they are accepted, and the pipes the pool
// may only make from what they leave (real pipes; counts read from /proc/self/fd).
#include <catch2/catch.hpp>
#include <vector>

#include "fixtures.hpp"
#include "spliced/core/fd_budget.hpp"
#include "spliced/core/pipe_pool.hpp"

using namespace spliced;
using namespace spliced::testing;

namespace {

struct CountingWaiter : FdBudget::Waiter {
  int told = 0;
  void fdsAvailable() override { ++told; }
};

}  // namespace

TEST_CASE("FdBudget: unlimited until configured, then takes only what is left", "[fd_budget]") {
  FdBudget b;
  CHECK(b.take(1000000));
  b.configure(100, 20, 30);  // 50 for connections and pipes
  CHECK(b.capacity() == 50);
  CHECK(b.take(48));
  CHECK_FALSE(b.take(3));  // nothing is taken when short
  CHECK(b.taken() == 48);
  CHECK(b.take(2));
  CHECK(b.available() == 0);
  b.give(50);
  CHECK(b.available() == 50);

  FdBudget tight;
  tight.configure(10, 8, 5);  // the limit is below what is open and kept back
  CHECK(tight.capacity() == 0);
  CHECK_FALSE(tight.take(1));
}

TEST_CASE("FdBudget: a waiter is told once when descriptors come back", "[fd_budget]") {
  FdBudget b;
  b.configure(10, 0, 0);
  CountingWaiter w, gone;
  REQUIRE(b.take(10));
  b.wait(&w);
  b.wait(&w);  // waiting twice is waiting once
  b.wait(&gone);
  b.cancelWait(&gone);
  b.give(2);
  CHECK(w.told == 1);
  CHECK(gone.told == 0);
  b.give(2);  // no longer waiting
  CHECK(w.told == 1);
}

TEST_CASE("PipePool with a budget: pipes only from what connections leave, idle ones given back",
          "[fd_budget][pipes]") {
  FaultySysCalls sys;
  FdBudget b;
  b.configure(1000, 0, 994);  // 6 descriptors: 3 pipes, or 1 connection of 2 and 2 pipes
  PipePool pool(sys, 64 * 1024, 16);
  pool.useBudget(b);
  const size_t fds0 = countOpenFds();

  std::vector<Pipe> lent;
  for (int i = 0; i < 3; ++i) {
    auto p = pool.acquire();
    REQUIRE(p);
    lent.push_back(std::move(*p));
  }
  CHECK_FALSE(pool.acquire());  // the budget is spent: the pump copies instead
  CHECK(b.available() == 0);
  CHECK(countOpenFds() == fds0 + 6);

  // Back in the pool, idle pipes still hold their descriptors...
  for (auto& p : lent) pool.release(std::move(p));
  lent.clear();
  CHECK(pool.pooled() == 3);
  CHECK(b.available() == 0);
  // ...until a connection needs them: the budget asks the pool to close idle ones.
  CHECK(b.take(2));
  CHECK(pool.pooled() == 2);
  CHECK(countOpenFds() == fds0 + 4);

  // While a listener waits, a released pipe is closed (its descriptors go to the listener) and
  // no new one is made.
  auto p = pool.acquire();  // from the pool: costs nothing more
  REQUIRE(p);
  CountingWaiter listener;
  b.wait(&listener);
  const size_t pooled = pool.pooled();
  pool.release(std::move(*p));
  CHECK(listener.told == 1);
  CHECK(pool.pooled() == pooled);  // closed, not pooled
  CHECK(countOpenFds() == fds0 + 2 * pooled);
  b.give(2);
}

TEST_CASE("PipePool with a budget: a refused pipe2 gives its descriptors back",
          "[fd_budget][pipes]") {
  FaultySysCalls sys;
  FdBudget b;
  b.configure(1000, 0, 990);
  PipePool pool(sys, 64 * 1024, 16);
  pool.useBudget(b);
  sys.pipe_fails = [](int) { return true; };
  CHECK_FALSE(pool.acquire());
  CHECK(b.available() == 10);
}

TEST_CASE("PipePool: pipes smaller than asked while the kernel refuses grow back once it grants",
          "[pipes]") {
  FaultySysCalls sys;
  constexpr size_t kAsked = 128 * 1024;
  PipePool pool(sys, kAsked, 64);
  sys.pipe_size_max = 32 * 1024;  // as over pipe-user-pages-soft: larger sizes get EPERM
  std::vector<Pipe> held;
  for (int i = 0; i < 3; ++i) {
    std::optional<Pipe> p = pool.acquire();
    REQUIRE(p);
    CHECK(p->capacity == 32 * 1024);
    held.push_back(std::move(*p));
  }
  CHECK(pool.grantedSize() == 32 * 1024);
  sys.pipe_size_max = 0;  // the pressure is gone
  size_t created = 0;
  while (pool.grantedSize() != kAsked && created < PipePool::kRetryEvery) {
    std::optional<Pipe> p = pool.acquire();
    REQUIRE(p);
    held.push_back(std::move(*p));
    ++created;
  }
  CHECK(pool.grantedSize() == kAsked);  // asked again within kRetryEvery new pipes
  CHECK(held.back().capacity == kAsked);
  // From then on the full size; the small pipes are closed when they come back, not pooled.
  std::optional<Pipe> next = pool.acquire();
  REQUIRE(next);
  CHECK(next->capacity == kAsked);
  held.push_back(std::move(*next));
  size_t full = 0;
  for (Pipe& p : held) {
    if (p.capacity == kAsked) ++full;
    pool.release(std::move(p));
  }
  CHECK(pool.pooled() == full);
  CHECK(pool.inUse() == 0);
  for (size_t i = 0; i < full; ++i) {
    std::optional<Pipe> p = pool.acquire();
    REQUIRE(p);
    CHECK(p->capacity == kAsked);
    pool.release(std::move(*p));
  }
}
