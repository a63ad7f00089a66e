// Workers: work posted across threads runs on the worker's loop, in order; a worker that hits an
// internal error takes the process down loudly, never silently.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "spliced/server/worker.hpp"

using namespace spliced;
using namespace std::chrono_literals;

TEST_CASE("worker: functions posted from other threads run on its thread, in order",
          "[component][workers]") {
  Worker w(1, nullptr, SysCalls::kernel(), PipesConfig{}, 4);
  w.startThread();
  std::vector<int> order;  // touched only on the worker's thread until it has stopped
  std::atomic<int> ran{0};
  std::thread::id where;
  const std::thread::id here = std::this_thread::get_id();
  std::vector<std::thread> posters;
  for (int t = 0; t < 4; ++t) {
    posters.emplace_back([&, t] {
      for (int i = 0; i < 1000; ++i) {
        w.post([&, t, i] {
          where = std::this_thread::get_id();
          if (t == 0) order.push_back(i);
          ++ran;
        });
      }
    });
  }
  for (auto& p : posters) p.join();
  w.stopThread();  // runs what was posted first
  CHECK(ran.load() == 4000);
  CHECK(where != here);
  REQUIRE(order.size() == 1000);
  for (int i = 0; i < 1000; ++i) CHECK(order[static_cast<size_t>(i)] == i);
}

TEST_CASE("worker: an internal error in a worker aborts the process with one log line naming it",
          "[component][workers]") {
  int out[2];
  REQUIRE(::pipe(out) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::dup2(out[1], STDOUT_FILENO);
    ::dup2(out[1], STDERR_FILENO);
    ::close(out[0]);
    installFatalHandler();
    Worker w(1, nullptr, SysCalls::kernel(), PipesConfig{}, 4);
    w.startThread();
    w.post([] { throw std::runtime_error("injected failure"); });
    std::this_thread::sleep_for(10s);
    ::_exit(0);  // not reached when the handler works
  }
  ::close(out[1]);
  std::string log;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(out[0], buf, sizeof buf)) > 0) log.append(buf, static_cast<size_t>(n));
  ::close(out[0]);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  INFO(log);
  REQUIRE(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGABRT);
  CHECK(log.find("error=internal thread spliced-w1: injected failure: aborting the process") !=
        std::string::npos);
}
