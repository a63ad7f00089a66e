// End-to-end: who gets in (allow list, max_connections), what a connection costs once it is gone
// (file descriptors), and unix-socket listeners.
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstring>
#include <thread>

#include "harness.hpp"

using namespace e2e;
using namespace std::chrono_literals;

namespace {

std::string config(const TempDir& dir, const std::string& listen,
                   const std::string& extra_route_keys = "") {
  return withDir(R"(log: { level: info }
drain_timeout: 5s
routes:
  - name: app
    listen: )" + listen +
                     R"(
)" + extra_route_keys +
                     R"(    archive:
      dir: @DIR@/archive
      layout: per_connection
      name: "{route}-{conn}-{peer_port}-{seq}.log"
)",
                 dir);
}

// A refused connection is closed by the daemon at once: EOF or a reset.
bool closedAtOnce(int result) { return result == 0 || result == ECONNRESET; }

// Polls until `daemon` has the same fd count for 200 ms in a row; returns it.
size_t settledFdCount(const Daemon& daemon) {
  size_t last = daemon.fdCount();
  auto stable_since = Clock::now();
  const auto deadline = Clock::now() + 5s;
  while (Clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
    size_t now = daemon.fdCount();
    if (now != last) {
      last = now;
      stable_since = Clock::now();
    } else if (Clock::now() - stable_since >= 200ms) {
      break;
    }
  }
  return last;
}

}  // namespace

TEST_CASE("allow list: a client outside it is closed at once and nothing is archived",
          "[e2e][admission]") {
  TempDir dir;
  Daemon daemon(dir, config(dir, "127.0.0.1:0", "    allow: [10.0.0.0/8]\n"));
  const uint16_t port = daemon.port("app");

  Conn conn = connectTcp(port);
  REQUIRE(conn.valid());
  (void)conn.sendAll("these bytes must not be archived\n");  // may fail: the daemon closes
  CHECK(closedAtOnce(conn.waitClosed(2s)));

  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
  const fs::path archive = dir / "archive";
  CHECK(closedSegments(archive).empty());
  CHECK(openSegments(archive).empty());
  auto totals = parseTotals(daemon.log(), "app");
  INFO(daemon.log());
  CHECK(totals["rejected_denied"] == 1);
  CHECK(totals["rejected_limit"] == 0);
  CHECK(totals["connections"] == 0);
  CHECK(totals["bytes_in"] == 0);
  CHECK(totals["archive_bytes"] == 0);
}

TEST_CASE("max_connections: 2 - a third client is closed at once, the first two are archived",
          "[e2e][admission]") {
  TempDir dir;
  Daemon daemon(dir, config(dir, "127.0.0.1:0", "    max_connections: 2\n"));
  const uint16_t port = daemon.port("app");
  const fs::path archive = dir / "archive";
  const std::string p1 = randomPayload(21, 300 * kKiB + 1);
  const std::string p2 = randomPayload(22, 200 * kKiB + 5);
  const size_t head = 64 * kKiB;

  Conn c1 = connectTcp(port);
  Conn c2 = connectTcp(port);
  REQUIRE(c1.valid());
  REQUIRE(c2.valid());
  REQUIRE(c1.sendAll(p1.data(), head) == 0);
  REQUIRE(c2.sendAll(p2.data(), head) == 0);
  // Both are accepted and streaming: each has an open segment holding its first bytes.
  REQUIRE(waitUntil(
      [&] {
        auto open = openSegments(archive);
        if (open.size() != 2) return false;
        std::error_code ec;
        return fs::file_size(open[0], ec) == head && fs::file_size(open[1], ec) == head;
      },
      10s));

  Conn c3 = connectTcp(port);
  REQUIRE(c3.valid());
  (void)c3.sendAll("over the limit\n");
  CHECK(closedAtOnce(c3.waitClosed(2s)));
  const uint16_t port3 = c3.localPort();

  REQUIRE(c1.sendAll(p1.data() + head, p1.size() - head) == 0);
  REQUIRE(c2.sendAll(p2.data() + head, p2.size() - head) == 0);
  c1.shutdownWrite();
  c2.shutdownWrite();
  CHECK(c1.waitClosed(10s) == 0);
  CHECK(c2.waitClosed(10s) == 0);

  // With the first two gone there is room again.
  const std::string p4 = randomPayload(24, 1000);
  Conn c4 = connectTcp(port);
  REQUIRE(c4.valid());
  REQUIRE(c4.sendAll(p4) == 0);
  c4.shutdownWrite();
  CHECK(c4.waitClosed(10s) == 0);

  auto chains = chainsByConn(archive);
  CHECK(chains.size() == 3);
  CHECK(findByPort(chains, port3) == nullptr);
  const Chain* a = findByPort(chains, c1.localPort());
  const Chain* b = findByPort(chains, c2.localPort());
  const Chain* d = findByPort(chains, c4.localPort());
  REQUIRE(a != nullptr);
  REQUIRE(b != nullptr);
  REQUIRE(d != nullptr);
  CHECK(firstDifference(concatFiles(a->files()), p1) == "");
  CHECK(firstDifference(concatFiles(b->files()), p2) == "");
  CHECK(firstDifference(concatFiles(d->files()), p4) == "");

  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
  auto totals = parseTotals(daemon.log(), "app");
  INFO(daemon.log());
  CHECK(totals["rejected_limit"] == 1);
  CHECK(totals["rejected_denied"] == 0);
  CHECK(totals["connections"] == 3);
  CHECK(totals["bytes_in"] == p1.size() + p2.size() + p4.size());
}

TEST_CASE("2000 short connections: the daemon's fd count returns to its baseline", "[e2e][fds]") {
  // Enough that every worker's pool is warm (the kernel spreads connections by their ports).
  constexpr int kWarmup = 50;
  constexpr int kConnections = 2000;
  TempDir dir;
  Daemon daemon(dir, config(dir, "127.0.0.1:0"));
  const uint16_t port = daemon.port("app");
  const fs::path archive = dir / "archive";
  const size_t at_start = settledFdCount(daemon);

  auto shortConnection = [&](int i) {
    Conn c = connectTcp(port);
    if (!c.valid()) return false;
    return c.sendAll("connection " + std::to_string(i) + "\n") == 0;
  };
  // The first connections put a pipe in the daemon's pipe pool, where it stays by design: the
  // baseline is taken once the pool is warm.
  for (int i = 0; i < kWarmup; ++i) REQUIRE(shortConnection(i));
  REQUIRE(waitUntil([&] { return closedSegments(archive).size() == kWarmup; }, 10s));
  const size_t baseline = settledFdCount(daemon);
  INFO("fds at start " << at_start << ", after warm-up " << baseline);
  CHECK(baseline <= at_start + 2 * autoWorkers());  // one pooled pipe per worker at most

  for (int i = kWarmup; i < kWarmup + kConnections; ++i) {
    INFO("connection " << i);
    REQUIRE(shortConnection(i));
  }
  CHECK(waitUntil([&] { return closedSegments(archive).size() == kWarmup + kConnections; }, 30s));
  bool settled = waitUntil([&] { return daemon.fdCount() == baseline; }, 10s);
  INFO("fd count " << daemon.fdCount() << ", baseline " << baseline << "; open fds:\n"
                   << daemon.fdListing());
  CHECK(settled);
  CHECK(openSegments(archive).empty());

  // Every connection's bytes, once each.
  std::vector<std::string> want;
  for (int i = 0; i < kWarmup + kConnections; ++i) {
    want.push_back("connection " + std::to_string(i) + "\n");
  }
  std::sort(want.begin(), want.end());
  CHECK(sortedSegmentContents(archive) == want);

  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
  auto totals = parseTotals(daemon.log(), "app");
  CHECK(totals["connections"] == kWarmup + kConnections);
}

TEST_CASE(
    "unix listener: replaces a stale socket file, archives bytes intact, removes the file "
    "at exit",
    "[e2e][unix]") {
  TempDir dir;
  const std::string sock = (dir / "s.sock").string();
  {
    // A stale socket file: bound by a process that has closed it without unlinking.
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd >= 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::memcpy(sa.sun_path, sock.c_str(), sock.size() + 1);
    int rc = ::bind(fd, reinterpret_cast<const sockaddr*>(&sa), sizeof sa);
    ::close(fd);
    REQUIRE(rc == 0);
    struct stat st {};
    REQUIRE(::lstat(sock.c_str(), &st) == 0);
    REQUIRE(S_ISSOCK(st.st_mode));
    int err = 0;
    CHECK_FALSE(connectUnix(sock, &err).valid());
    CHECK(err == ECONNREFUSED);
  }

  Daemon daemon(dir, config(dir, "unix:" + sock));
  CHECK(daemon.waitListening("app") == "unix:" + sock);
  const std::string payload = randomPayload(31, 2 * kMiB + 5);
  int err = 0;
  Conn conn = connectUnix(sock, &err);
  INFO("connect errno " << err);
  REQUIRE(conn.valid());
  REQUIRE(conn.sendAll(payload) == 0);
  conn.shutdownWrite();
  CHECK(conn.waitClosed(10s) == 0);

  const fs::path archive = dir / "archive";
  CHECK(openSegments(archive).empty());
  auto chains = chainsByConn(archive);
  REQUIRE(chains.size() == 1);
  CHECK(firstDifference(concatFiles(chains.begin()->second.files()), payload) == "");

  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
  CHECK_FALSE(fs::exists(fs::symlink_status(sock)));
}
