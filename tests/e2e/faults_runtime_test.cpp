// The faults group (runtime): scenarios of the fault campaign, each against the real binary. Each
// test failed before its fix.
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "harness.hpp"

using namespace e2e;
using namespace std::chrono_literals;

namespace {

// ---------------------------------------------------------------------------------------------
// The daemon's resources, from /proc

// A "Name:   N kB" field of /proc/PID/status in KiB (0 when it cannot be read).
size_t statusKiB(pid_t pid, const std::string& field) {
  // /proc files have no size: read them line by line (readFile() would see them empty).
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) {
      return static_cast<size_t>(std::strtoull(line.c_str() + field.size() + 1, nullptr, 10));
    }
  }
  return 0;
}

// utime + stime of `pid` in clock ticks (fields 14 and 15 of /proc/PID/stat); 0 when unreadable.
uint64_t cpuTicks(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto paren = stat.rfind(')');
  if (paren == std::string::npos) return 0;
  std::istringstream fields(stat.substr(paren + 2));  // from field 3 (state) on
  std::string f;
  uint64_t utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> f; ++i) {
    if (i == 14) utime = std::strtoull(f.c_str(), nullptr, 10);
    if (i == 15) stime = std::strtoull(f.c_str(), nullptr, 10);
  }
  return utime + stime;
}

// Size of the daemon's log file in bytes.
uint64_t logBytes(const Daemon& daemon) {
  std::error_code ec;
  auto n = fs::file_size(daemon.logPath(), ec);
  return ec ? 0 : n;
}

// The daemon's CPU use (a fraction of one core) and log growth over `window`.
struct Activity {
  double cpu = 0;
  uint64_t log_bytes = 0;
};
Activity measureActivity(const Daemon& daemon, Millis window) {
  const uint64_t ticks0 = cpuTicks(daemon.pid());
  const uint64_t log0 = logBytes(daemon);
  const auto t0 = Clock::now();
  std::this_thread::sleep_for(window);
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  const uint64_t ticks = cpuTicks(daemon.pid()) - ticks0;
  return {static_cast<double>(ticks) / static_cast<double>(::sysconf(_SC_CLK_TCK)) / secs,
          logBytes(daemon) - log0};
}

// Polls until the daemon's fd count has not changed for 300 ms (at most 10 s); returns it.
size_t settledFds(const Daemon& daemon) {
  size_t last = daemon.fdCount();
  auto stable_since = Clock::now();
  const auto deadline = Clock::now() + 10s;
  while (Clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
    const size_t now = daemon.fdCount();
    if (now != last) {
      last = now;
      stable_since = Clock::now();
    } else if (Clock::now() - stable_since >= 300ms) {
      break;
    }
  }
  return last;
}

double routeMetric(const MetricValues& m, const std::string& name) {
  auto it = m.find(name + "{route=\"app\"}");
  return it == m.end() ? -1 : it->second;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Item 1: more clients than descriptors

namespace {

// Client i's stream: a header naming it, then bytes that differ per client and per position.
std::string clientPayload(size_t i, size_t size) {
  std::string s = "client " + std::to_string(i) + "\n";
  uint64_t x = 0x9e3779b97f4a7c15ULL * (i + 1);
  while (s.size() < size) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    s.push_back(static_cast<char>('!' + x % 90));
  }
  return s;
}

// `clients` clients each send `size` bytes, half-close and wait, against a daemon whose
// RLIMIT_NOFILE is `nofile`: every one is archived byte-exact, in bounded time.
void manyClientsFewDescriptors(size_t clients, rlim_t nofile, size_t size) {
  rlimit own{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &own) == 0);
  if (own.rlim_cur < clients + 200) {
    own.rlim_cur = std::min<rlim_t>(own.rlim_max, clients + 200);
    ::setrlimit(RLIMIT_NOFILE, &own);
    if (own.rlim_cur < clients + 200) {
      WARN("RLIMIT_NOFILE " << own.rlim_cur << " is too low for " << clients
                            << " clients: the test is SKIPPED");
      return;
    }
  }
  TempDir dir;
  Daemon daemon(dir,
                withDir(R"(log: { level: info }
drain_timeout: 5s
admin: { listen: 127.0.0.1:0 }
routes:
  - name: app
    listen: 127.0.0.1:0
    idle_timeout: 5m
    archive:
      dir: @DIR@/archive
      layout: per_connection
      name: "{route}-{conn}-{seq}.log"
)",
                        dir),
                DaemonOptions{nofile});
  const uint16_t port = daemon.port("app");
  const auto t0 = Clock::now();
  std::vector<Conn> conns;
  conns.reserve(clients);
  // All connect first (the daemon accepts what it can while nothing has arrived yet), then each
  // sends its bytes and half-closes.
  for (size_t i = 0; i < clients; ++i) {
    int err = 0;
    conns.push_back(connectTcp(port, &err));
    INFO("client " << i << ": errno " << err);
    REQUIRE(conns.back().valid());
  }
  settledFds(daemon);
  for (size_t i = 0; i < clients; ++i) {
    REQUIRE(conns[i].sendAll(clientPayload(i, size)) == 0);
    conns[i].shutdownWrite();
  }
  // Each client waits for the daemon to close its connection: all of them, in bounded time.
  size_t closed = 0;
  const auto deadline = Clock::now() + 30s;
  for (auto& c : conns) {
    const auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now());
    if (left.count() > 0 && c.waitClosed(left) == 0) ++closed;
  }
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  std::cout << "faults " << clients << " clients under " << nofile << " fds: " << closed
            << " closed by the daemon in " << secs << " s\n";
  INFO("log tail:\n"
       << daemon.log().substr(daemon.log().size() > 4000 ? daemon.log().size() - 4000 : 0));
  REQUIRE(closed == clients);

  // Byte-exact: one closed segment per client, each exactly what that client sent.
  std::vector<fs::path> segs = closedSegments(dir / "archive");
  CHECK(segs.size() == clients);
  CHECK(openSegments(dir / "archive").empty());
  std::vector<bool> seen(clients, false);
  size_t exact = 0;
  for (const auto& p : segs) {
    const std::string got = readFile(p);
    const size_t id = static_cast<size_t>(std::strtoull(got.c_str() + 7, nullptr, 10));
    if (got.rfind("client ", 0) == 0 && id < clients && !seen[id] &&
        got == clientPayload(id, size)) {
      seen[id] = true;
      ++exact;
    }
  }
  CHECK(exact == clients);
  // Nothing ran out of descriptors: the budget held accepts back instead.
  const std::string log = daemon.log();
  std::cout << "  log lines: " << logLines(log, {"accept paused: the descriptor limit"}).size()
            << " paused, " << logLines(log, {"every waiting client accepted"}).size()
            << " resumed\n";
  INFO("log:\n" << log.substr(0, 6000));
  CHECK(log.find("Too many open files") == std::string::npos);
  CHECK(log.find("room for") != std::string::npos);
  CHECK(logLines(log, {"accept paused: the descriptor limit"}).size() <= 3);
  daemon.signal(SIGTERM);
  CHECK(daemon.waitExit(10s) == 0);
}

}  // namespace

TEST_CASE("faults: 1000 clients under 256 descriptors - every one archived byte-exact",
          "[e2e][faults]") {
  manyClientsFewDescriptors(1000, 256, 10 * 1000);
}

TEST_CASE("faults: 1100 clients under systemd's default of 1024 descriptors - all archived",
          "[e2e][faults]") {
  manyClientsFewDescriptors(1100, 1024, 10 * 1000);
}

// ---------------------------------------------------------------------------------------------
// Item 2: the admin listener at the descriptor limit

TEST_CASE("faults: an admin client waiting at the fd limit - no busy loop, one log line",
          "[e2e][faults]") {
  TempDir dir;
  Daemon daemon(dir, withDir(R"(log: { level: info }
drain_timeout: 5s
admin: { listen: 127.0.0.1:0 }
routes:
  - name: app
    listen: 127.0.0.1:0
    idle_timeout: 5m
    archive:
      dir: @DIR@/archive
      layout: per_connection
      name: "{route}-{conn}-{seq}.log"
)",
                             dir));
  const std::string admin = daemon.waitAdmin();
  const uint16_t port = daemon.port("app");
  REQUIRE(httpGet(admin, "/healthz").status == 200);

  // A low descriptor limit for the daemon alone: a few more than it holds now.
  const size_t base_fds = settledFds(daemon);
  rlimit low{};
  REQUIRE(::prlimit(daemon.pid(), RLIMIT_NOFILE, nullptr, &low) == 0);
  low.rlim_cur = base_fds + 8;
  REQUIRE(::prlimit(daemon.pid(), RLIMIT_NOFILE, &low, nullptr) == 0);

  // Idle route clients until the daemon cannot accept any more.
  std::vector<Conn> clients;
  for (int i = 0; i < 40 && !daemon.waitLog("accept paused", 0ms); ++i) {
    clients.push_back(connectTcp(port));
    REQUIRE(clients.back().valid());
    waitUntil([&] { return daemon.waitLog("accept paused", 0ms); }, 100ms);
  }
  REQUIRE(daemon.waitLog("accept paused", 2s));
  CHECK(settledFds(daemon) == low.rlim_cur);

  // An admin client now waits in the admin listener's backlog.
  Conn waiting = connectTcp(static_cast<uint16_t>(std::stoi(admin.substr(admin.rfind(':') + 1))));
  REQUIRE(waiting.valid());
  REQUIRE(waiting.sendAll("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") == 0);
  std::this_thread::sleep_for(200ms);
  const Activity a = measureActivity(daemon, 2s);
  std::cout << "faults admin at the fd limit: CPU " << a.cpu * 100 << "% of a core, log +"
            << a.log_bytes << " bytes in 2 s\n";
  INFO("CPU " << a.cpu * 100 << "% of a core, log +" << a.log_bytes << " bytes in 2 s");
  CHECK(a.cpu < 0.10);
  CHECK(a.log_bytes < 1024);

  // Descriptors come back: the waiting client is answered, and the admin works again.
  clients.clear();
  HttpResponse r = httpExchange(waiting, "", 10s);
  INFO(r.error);
  CHECK(r.status == 200);
  CHECK(httpGet(admin, "/healthz").status == 200);
  // One line for each listener's episode, and one saying it ended, with a count.
  CHECK(daemon.waitLog("admin accepting again", 2s));
  CHECK(daemon.waitLog("route=app accepting again", 2s));
  const std::string log = daemon.log();
  INFO("log:\n" << log);
  CHECK(logLines(log, {"admin accept paused", "Too many open files"}).size() == 1);
  CHECK(logLines(log, {"route=app accept paused", "Too many open files"}).size() == 1);
  CHECK(logLines(log, {"admin accepting again", "failed accepts suppressed"}).size() == 1);
  CHECK(logLines(log, {"route=app accepting again", "failed accepts suppressed"}).size() == 1);
  // The pipe pool may have been refused a pipe while the clients closed: one line at most.
  // One line per episode per worker (each has its own pipe pool).
  CHECK(logLines(log, {"cannot create a pipe"}).size() <= autoWorkers());
  CHECK(logLines(log, {"Too many open files"}).size() <= 3);

  daemon.signal(SIGTERM);
  CHECK(daemon.waitExit(10s) == 0);
}

// ---------------------------------------------------------------------------------------------
// Item 7: idle line-framed connections keep no copy buffer

TEST_CASE("faults: 2000 idle line-framed connections with a partial line - a few KiB each",
          "[e2e][faults]") {
  constexpr size_t kClients = 2000;
  constexpr size_t kWarmup = 50;
  rlimit nofile{};
  REQUIRE(::getrlimit(RLIMIT_NOFILE, &nofile) == 0);
  if (nofile.rlim_cur < 2 * kClients + 500) {
    WARN("RLIMIT_NOFILE " << nofile.rlim_cur << " is too low: the test is SKIPPED");
    return;
  }
  TempDir dir;
  Daemon daemon(dir, withDir(R"(log: { level: info }
drain_timeout: 5s
admin: { listen: 127.0.0.1:0 }
routes:
  - name: app
    listen: 127.0.0.1:0
    idle_timeout: 5m
    archive:
      dir: @DIR@/archive
      layout: shared
      framing: lines
      name: "{route}-{seq}.log"
)",
                             dir));
  const std::string admin = daemon.waitAdmin();
  const uint16_t port = daemon.port("app");
  auto partialLine = [](size_t i) {
    char head[32];
    std::snprintf(head, sizeof head, "client %05zu partial ", i);
    return std::string(head) + std::string(40 + i % 200, static_cast<char>('a' + i % 26));
  };
  std::vector<std::string> want;
  uint64_t sent = 0;

  // Warm-up: the allocator and the pipe pool have seen connections.
  for (size_t i = 0; i < kWarmup; ++i) {
    Conn c = connectTcp(port);
    REQUIRE(c.valid());
    const std::string line = "warm-up " + partialLine(kClients + i);
    REQUIRE(c.sendAll(line) == 0);
    sent += line.size();
    want.push_back(line);
    c.shutdownWrite();
    REQUIRE(c.waitClosed(10s) == 0);
  }
  REQUIRE(waitUntil(
      [&] {
        return routeMetric(scrapeMetrics(admin), "spliced_bytes_in_total") ==
               static_cast<double>(sent);
      },
      5s));
  settledFds(daemon);
  const size_t rss0 = statusKiB(daemon.pid(), "VmRSS");
  const size_t data0 = statusKiB(daemon.pid(), "VmData");

  std::vector<Conn> conns;
  conns.reserve(kClients);
  for (size_t i = 0; i < kClients; ++i) {
    int err = 0;
    conns.push_back(connectTcp(port, &err));
    INFO("client " << i << ": errno " << err);
    REQUIRE(conns.back().valid());
    const std::string line = partialLine(i);
    REQUIRE(conns.back().sendAll(line) == 0);
    sent += line.size();
    want.push_back(line);
  }
  // Every byte has been read by the daemon (and sits in its line framers).
  MetricValues m;
  const bool all_read = waitUntil(
      [&] {
        m = scrapeMetrics(admin);
        return routeMetric(m, "spliced_bytes_in_total") == static_cast<double>(sent) &&
               routeMetric(m, "spliced_connections_active") == static_cast<double>(kClients);
      },
      20s, 50ms);
  REQUIRE(all_read);
  settledFds(daemon);
  std::this_thread::sleep_for(300ms);
  const size_t rss1 = statusKiB(daemon.pid(), "VmRSS");
  const size_t data1 = statusKiB(daemon.pid(), "VmData");
  const double rss_per_conn = (static_cast<double>(rss1) - static_cast<double>(rss0)) / kClients;
  const double data_per_conn = (static_cast<double>(data1) - static_cast<double>(data0)) / kClients;
  std::cout << "faults idle line-framed connections: RSS " << rss0 << " -> " << rss1 << " KiB ("
            << rss_per_conn << " KiB each), heap (VmData) " << data0 << " -> " << data1 << " KiB ("
            << data_per_conn << " KiB each)\n";
  INFO("RSS " << rss_per_conn << " KiB per connection, VmData " << data_per_conn
              << " KiB per connection");
  // Under ASan RSS and VmData say nothing (quarantine, shadow memory).
  if (rssIsMeaningful()) {
    CHECK(rss_per_conn <= 16);
    CHECK(data_per_conn <= 16);
  }

  // They close: each partial line is archived whole, with the '\n' spliced adds at the end.
  conns.clear();
  REQUIRE(waitUntil(
      [&] { return routeMetric(scrapeMetrics(admin), "spliced_connections_active") == 0; }, 20s,
      50ms));
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
  std::string archived = concatFiles(closedSegments(dir / "archive"));
  std::vector<std::string> got;
  size_t start = 0;
  while (start < archived.size()) {
    size_t nl = archived.find('\n', start);
    if (nl == std::string::npos) {
      got.push_back(archived.substr(start) + "<no newline>");
      break;
    }
    got.push_back(archived.substr(start, nl - start));
    start = nl + 1;
  }
  std::sort(got.begin(), got.end());
  std::sort(want.begin(), want.end());
  CHECK(archived.size() == sent + want.size());
  CHECK(got.size() == want.size());
  CHECK(got == want);
}
