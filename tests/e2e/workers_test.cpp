// End-to-end: workers. Several event loops in one process: SO_REUSEPORT spreads TCP connections
// between them, a Unix socket is shared, max_connections and /metrics stay the route's, and a
// second spliced cannot join a route's port.
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cmath>
#include <fstream>
#include <functional>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"

using namespace e2e;
using namespace std::chrono_literals;

namespace {

std::string collectConfig(const std::string& workers, const std::string& listen,
                          const std::string& route_extra = "",
                          const std::string& archive_extra = "") {
  return "workers: " + workers + R"(
log: { level: info }
admin: { listen: 127.0.0.1:0 }
drain_timeout: 5s
routes:
  - name: app
    listen: )" +
         listen + "\n" + route_extra + R"(    archive:
      dir: @DIR@/archive
      layout: shared
      name: "{route}-{seq}.log"
)" + archive_extra;
}

double value(const MetricValues& m, const std::string& key) {
  auto it = m.find(key);
  return it == m.end() ? -1 : it->second;
}

std::string workerKey(const std::string& family, int worker) {
  return family + "{worker=\"" + std::to_string(worker) + "\"}";
}

// `n` short connections from `threads` threads, each sending `line(i)` and closing. Returns the
// bytes sent.
uint64_t shortConnections(const std::function<Conn()>& connect, size_t n, size_t threads,
                          const std::function<std::string(size_t)>& line) {
  std::atomic<uint64_t> sent{0};
  std::atomic<size_t> failed{0};
  std::vector<std::thread> pool;
  for (size_t t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (size_t i = t; i < n; i += threads) {
        Conn c = connect();
        const std::string msg = line(i);
        if (!c.valid() || c.sendAll(msg) != 0) {
          ++failed;
          continue;
        }
        c.shutdownWrite();
        if (c.waitClosed(10s) != 0) ++failed;
        sent += msg.size();
      }
    });
  }
  for (auto& th : pool) th.join();
  CHECK(failed.load() == 0);
  return sent.load();
}

}  // namespace

TEST_CASE("workers: 2 - the kernel spreads 20,000 connections evenly and /metrics sums them",
          "[e2e][workers]") {
  constexpr size_t kConnections = 20000;
  TempDir dir;
  Daemon daemon(dir, withDir(collectConfig("2", "127.0.0.1:0"), dir));
  const uint16_t port = daemon.port("app");
  const std::string admin = daemon.waitAdmin();
  auto line = [](size_t i) { return "connection " + std::to_string(i) + "\n"; };
  const uint64_t sent = shortConnections([&] { return connectTcp(port); }, kConnections, 4, line);

  REQUIRE(waitUntil(
      [&] { return value(scrapeMetrics(admin), "spliced_connections_active{route=\"app\"}") == 0; },
      10s));
  const MetricValues m = scrapeMetrics(admin);
  const double w0 = value(m, workerKey("spliced_worker_connections_total", 0));
  const double w1 = value(m, workerKey("spliced_worker_connections_total", 1));
  INFO("worker 0: " << w0 << ", worker 1: " << w1);
  std::cout << "workers: 2, " << kConnections << " connections: worker 0 accepted " << w0
            << ", worker 1 accepted " << w1 << "\n";
  CHECK(value(m, "spliced_workers") == 2);
  CHECK(w0 + w1 == kConnections);
  CHECK(std::abs(w0 - kConnections / 2.0) <= kConnections / 2.0 * 0.1);
  CHECK(std::abs(w1 - kConnections / 2.0) <= kConnections / 2.0 * 0.1);
  // The route's counters are the sum of both workers' and match what the clients sent.
  CHECK(value(m, "spliced_connections_total{route=\"app\"}") == kConnections);
  CHECK(value(m, "spliced_bytes_in_total{route=\"app\"}") == static_cast<double>(sent));

  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
  // One shared chain for both workers: every connection's line, whole, exactly once.
  std::string all;
  for (const auto& f : closedSegments(dir / "archive")) all += readFile(f);
  CHECK(all.size() == sent);
  std::vector<size_t> seen(kConnections, 0);
  size_t start = 0, bad = 0;
  while (start < all.size()) {
    size_t nl = all.find('\n', start);
    if (nl == std::string::npos) break;
    const std::string l = all.substr(start, nl - start);
    start = nl + 1;
    if (l.rfind("connection ", 0) != 0) {
      ++bad;
      continue;
    }
    const size_t i = std::stoul(l.substr(11));
    if (i < kConnections) ++seen[i];
  }
  CHECK(bad == 0);
  CHECK(std::count(seen.begin(), seen.end(), 1) == static_cast<long>(kConnections));
  auto totals = parseTotals(daemon.log(), "app");
  CHECK(totals["connections"] == kConnections);
  CHECK(totals["bytes_in"] == sent);
}

TEST_CASE("workers: 2 - max_connections is exact for the route across workers", "[e2e][workers]") {
  constexpr size_t kLimit = 10;
  constexpr size_t kClients = 40;
  TempDir dir;
  Daemon daemon(dir, withDir(collectConfig("2", "127.0.0.1:0",
                                           "    max_connections: " + std::to_string(kLimit) + "\n"),
                             dir));
  const uint16_t port = daemon.port("app");
  const std::string admin = daemon.waitAdmin();
  std::vector<Conn> conns;
  for (size_t i = 0; i < kClients; ++i) {
    conns.push_back(connectTcp(port));
    REQUIRE(conns.back().valid());
  }
  // The refused ones are closed at once; the admitted ones stay open.
  REQUIRE(waitUntil(
      [&] {
        MetricValues m = scrapeMetrics(admin);
        return value(m, "spliced_connections_rejected_total{route=\"app\",reason=\"limit\"}") +
                   value(m, "spliced_connections_active{route=\"app\"}") ==
               kClients;
      },
      10s));
  const MetricValues m = scrapeMetrics(admin);
  CHECK(value(m, "spliced_connections_active{route=\"app\"}") == kLimit);
  CHECK(value(m, "spliced_connections_rejected_total{route=\"app\",reason=\"limit\"}") ==
        kClients - kLimit);
  // Which worker admitted them depends on which accepted first; together, exactly the limit.
  CHECK(value(m, workerKey("spliced_worker_connections_active", 0)) +
            value(m, workerKey("spliced_worker_connections_active", 1)) ==
        kLimit);
  size_t open = 0;
  for (auto& c : conns) {
    if (c.waitClosed(100ms) == ETIMEDOUT) ++open;
  }
  CHECK(open == kLimit);
  // Once one closes, a new client gets its place.
  conns.clear();
  REQUIRE(waitUntil(
      [&] { return value(scrapeMetrics(admin), "spliced_connections_active{route=\"app\"}") == 0; },
      10s));
  Conn again = connectTcp(port);
  REQUIRE(again.valid());
  CHECK(again.waitClosed(300ms) == ETIMEDOUT);
}

TEST_CASE("workers: 2 - a second spliced on the same address fails at start with a clear error",
          "[e2e][workers]") {
  TempDir dir;
  Daemon first(dir, withDir(collectConfig("2", "127.0.0.1:0"), dir));
  const uint16_t port = first.port("app");
  for (const std::string workers : {"2", "1"}) {
    INFO("second instance with workers: " << workers);
    TempDir dir2;
    const fs::path cfg = dir2 / "second.yaml";
    {
      std::ofstream out(cfg);
      out << withDir(collectConfig(workers, "127.0.0.1:" + std::to_string(port)), dir2);
    }
    CommandResult r = runSpliced(dir2, {"-c", cfg.string()}, 10s);
    INFO(r.out << r.err);
    CHECK(r.exit_code == 1);
    CHECK((r.out + r.err)
              .find("cannot bind 127.0.0.1:" + std::to_string(port) + ": Address already in use") !=
          std::string::npos);
    CHECK((r.out + r.err).find("error=environment") != std::string::npos);
  }
  // The first one never shared its port: every connection is still its own.
  const std::string admin = first.waitAdmin();
  const uint64_t sent = shortConnections([&] { return connectTcp(port); }, 200, 2,
                                         [](size_t i) { return std::to_string(i) + "\n"; });
  CHECK(value(scrapeMetrics(admin), "spliced_bytes_in_total{route=\"app\"}") ==
        static_cast<double>(sent));
}

TEST_CASE("workers: 2 - a Unix socket is shared: both workers accept from it", "[e2e][workers]") {
  constexpr size_t kConnections = 2000;
  TempDir dir;
  const std::string path = (dir / "app.sock").string();
  Daemon daemon(dir, withDir(collectConfig("2", "unix:" + path), dir));
  daemon.waitListening("app");
  const std::string admin = daemon.waitAdmin();
  const uint64_t sent =
      shortConnections([&] { return connectUnix(path); }, kConnections, 4,
                       [](size_t i) { return "unix " + std::to_string(i) + "\n"; });
  REQUIRE(waitUntil(
      [&] { return value(scrapeMetrics(admin), "spliced_connections_active{route=\"app\"}") == 0; },
      10s));
  const MetricValues m = scrapeMetrics(admin);
  const double w0 = value(m, workerKey("spliced_worker_connections_total", 0));
  const double w1 = value(m, workerKey("spliced_worker_connections_total", 1));
  std::cout << "workers: 2, " << kConnections << " Unix connections: worker 0 accepted " << w0
            << ", worker 1 accepted " << w1 << "\n";
  CHECK(w0 + w1 == kConnections);
  CHECK(w0 > 0);
  CHECK(w1 > 0);
  CHECK(value(m, "spliced_bytes_in_total{route=\"app\"}") == static_cast<double>(sent));
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
  // The socket file is removed once both workers have let go of it.
  CHECK(!fs::exists(path));
}

TEST_CASE("workers: 1 runs one loop on the main thread, and workers takes auto or 1 to 1024",
          "[e2e][workers]") {
  TempDir dir;
  {
    Daemon daemon(dir, withDir(collectConfig("1", "127.0.0.1:0"), dir));
    const std::string admin = daemon.waitAdmin();
    const MetricValues m = scrapeMetrics(admin);
    CHECK(value(m, "spliced_workers") == 1);
    CHECK(daemon.log().find("workers:") == std::string::npos);
    // No worker thread: the main thread runs the one loop.
    size_t worker_threads = 0;
    for (const auto& e :
         fs::directory_iterator("/proc/" + std::to_string(daemon.pid()) + "/task")) {
      if (readFile(e.path() / "comm").rfind("spliced-w", 0) == 0) ++worker_threads;
    }
    CHECK(worker_threads == 0);
    daemon.signal(SIGTERM);
    REQUIRE(daemon.waitExit(10s) == 0);
  }
  struct Case {
    std::string value;
    std::string message;  // "" when valid
  };
  for (const Case& c : {Case{"auto", ""}, Case{"3", ""}, Case{"0", "0 is out of range (1 to 1024)"},
                        Case{"two", "'two' is neither auto nor a whole number"},
                        Case{"2000", "2000 is out of range (1 to 1024)"}}) {
    INFO("workers: " << c.value);
    const fs::path cfg = dir / "check.yaml";
    {
      std::ofstream out(cfg);
      out << withDir(collectConfig(c.value, "127.0.0.1:0"), dir);
    }
    CommandResult r = runSpliced(dir, {"-t", "-c", cfg.string()});
    if (c.message.empty()) {
      CHECK(r.exit_code == 0);
    } else {
      CHECK(r.exit_code == 1);
      CHECK(r.err.find(":1:10: workers: " + c.message) != std::string::npos);
    }
  }
}
