// End-to-end abuse: what the real binary does when clients, operators and the environment
// misbehave. Connection floods above max_connections, thousands of idle clients, clients that
// reset mid-stream, 10,000 short connections (file descriptors and RSS back to their baseline),
// clients that send nothing, a listen port that is taken, archive dirs that cannot be written
// (under a regular file, on a read-only filesystem), a second daemon on the same archive dir, and
// garbage sent to the admin port.
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <netinet/in.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"

using namespace e2e;
using namespace std::chrono_literals;

namespace {

using Metrics = MetricValues;

// ---------------------------------------------------------------------------------------------
// Configs

// A collect route "app" on 127.0.0.1:0 archiving per connection (kPerConnName) into
// `archive_dir`, with the admin endpoint on 127.0.0.1:0. `route_keys` are extra lines of the
// route, indented by 4 spaces.
std::string abuseConfig(const TempDir& dir, const std::string& route_keys = "",
                        const std::string& archive_dir = "@DIR@/archive",
                        const std::string& listen = "127.0.0.1:0",
                        const std::string& admin = "127.0.0.1:0") {
  return withDir(R"(log: { level: info }
drain_timeout: 5s
admin: { listen: )" + admin +
                     R"( }
routes:
  - name: app
    listen: )" + listen +
                     "\n" + route_keys + R"(    archive:
      dir: )" + archive_dir +
                     R"(
      layout: per_connection
      name: ")" + std::string(kPerConnName) +
                     "\"\n",
                 dir);
}

// The value of `name{route="app"}` (or `name{route="app",reason="REASON"}`); -1 when absent.
double appMetric(const Metrics& m, const std::string& name, const std::string& reason = "") {
  const std::string key = name + "{route=\"app\"" +
                          (reason.empty() ? std::string() : ",reason=\"" + reason + "\"") + "}";
  auto it = m.find(key);
  return it == m.end() ? -1 : it->second;
}

// Scrapes until spliced_connections_active{route="app"} is `active` and
// spliced_connections_total{route="app"} is `total`; returns the last scrape.
Metrics waitConnections(const std::string& admin, double active, double total, Millis timeout,
                        bool* ok) {
  Metrics m;
  *ok = waitUntil(
      [&] {
        m = scrapeMetrics(admin);
        return appMetric(m, "spliced_connections_active") == active &&
               appMetric(m, "spliced_connections_total") == total;
      },
      timeout, Millis(20));
  return m;
}

// ---------------------------------------------------------------------------------------------
// The daemon's resources

// VmRSS of `pid` in KiB (0 when it cannot be read).
size_t rssKiB(pid_t pid) {
  // /proc files have no size: read them line by line (readFile() would see them empty).
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      return static_cast<size_t>(std::strtoull(line.c_str() + 6, nullptr, 10));
    }
  }
  return 0;
}

struct Footprint {
  size_t fds = 0;
  size_t rss_kib = 0;
};

// Polls until the daemon's fd count has not changed for 300 ms (at most 5 s), then reads its RSS.
Footprint settledFootprint(const Daemon& daemon, const std::string& admin = "") {
  if (!admin.empty()) {
    // The lifecycle thread (nice 19) opens each closed segment to hash it for the manifest: on a
    // busy machine it may still hold one. Every closed segment's line is written first.
    waitUntil(
        [&] {
          const Metrics m = scrapeMetrics(admin);
          return appMetric(m, "spliced_archive_manifest_records_total") >=
                 appMetric(m, "spliced_archive_segments_total");
        },
        10s, Millis(20));
  }
  size_t last = daemon.fdCount();
  auto stable_since = Clock::now();
  const auto deadline = Clock::now() + 5s;
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
  return {last, rssKiB(daemon.pid())};
}

// RLIMIT_NOFILE raised to its hard limit for the life of the object (the daemon inherits it).
class NofileAtHardLimit {
 public:
  NofileAtHardLimit() {
    if (::getrlimit(RLIMIT_NOFILE, &saved_) != 0) return;
    rlimit raised = saved_;
    raised.rlim_cur = raised.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) current_ = raised.rlim_cur;
  }
  ~NofileAtHardLimit() {
    if (current_ > 0) ::setrlimit(RLIMIT_NOFILE, &saved_);
  }
  NofileAtHardLimit(const NofileAtHardLimit&) = delete;
  NofileAtHardLimit& operator=(const NofileAtHardLimit&) = delete;

  // The soft limit now in force; 0 when it could not be raised.
  rlim_t current() const { return current_; }
  rlim_t hard() const { return saved_.rlim_max; }

 private:
  rlimit saved_{};
  rlim_t current_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Many clients at once

// How and when the daemon ended one client's connection.
struct Closure {
  bool done = false;
  int result = ETIMEDOUT;  // 0 EOF, an errno (ECONNRESET...), EPROTO when bytes arrived
  Clock::time_point at{};  // when the test saw it
};

// Polls every connection whose closure is not known yet until at least `want` closures are
// known in all, or `deadline` passes. Returns the number known.
size_t pollClosures(const std::vector<Conn>& conns, std::vector<Closure>& out, size_t want,
                    Clock::time_point deadline) {
  out.resize(conns.size());
  size_t known = static_cast<size_t>(
      std::count_if(out.begin(), out.end(), [](const Closure& c) { return c.done; }));
  std::vector<pollfd> fds;
  std::vector<size_t> index;
  char buf[512];
  while (known < want) {
    const auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now());
    if (left.count() <= 0) break;
    fds.clear();
    index.clear();
    for (size_t i = 0; i < conns.size(); ++i) {
      if (out[i].done) continue;
      fds.push_back({conns[i].fd(), POLLIN, 0});
      index.push_back(i);
    }
    if (fds.empty()) break;
    const int r = ::poll(fds.data(), fds.size(), static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    const auto now = Clock::now();
    for (size_t k = 0; k < fds.size(); ++k) {
      if (fds[k].revents == 0) continue;
      const ssize_t n = ::recv(fds[k].fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      Closure& c = out[index[k]];
      c.done = true;
      c.result = n == 0 ? 0 : n > 0 ? EPROTO : errno;
      c.at = now;
      ++known;
    }
  }
  return known;
}

// A refused or idle connection is closed by the daemon: EOF or a reset.
bool closedByDaemon(int result) { return result == 0 || result == ECONNRESET; }

// The open segment of the client on `port` (named kPerConnName) and its size; nullopt when none.
std::optional<uint64_t> openSegmentSize(const fs::path& archive, uint16_t port) {
  // Appended piece by piece: GCC 12 warns falsely (stringop-overflow) on "-" + to_string(..).
  std::string tag = "-";
  tag += std::to_string(port);
  tag += '-';
  for (const auto& f : openSegments(archive)) {
    if (f.filename().string().find(tag) == std::string::npos) continue;
    std::error_code ec;
    const auto size = fs::file_size(f, ec);
    if (!ec) return size;
  }
  return std::nullopt;
}

// The close line of the connection from 127.0.0.1:`port`; "" when none (or more than one).
std::string closeLine(const std::string& log, uint16_t port) {
  auto lines = logLines(log, {"close route=app ", "peer=127.0.0.1:" + std::to_string(port) + " "});
  return lines.size() == 1 ? lines[0] : std::string();
}

// Entries of `dir` other than the lock file and the manifest's .spliced/, as "a b c".
std::string entriesBesidesLock(const fs::path& dir) {
  std::string out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    const std::string rel = it->path().lexically_relative(dir).string();
    if (rel != ".spliced.lock" && rel != ".spliced" && !rel.starts_with(".spliced/")) {
      out += rel + " ";
    }
  }
  return out;
}

// Line and column (1-based) of the value of the first `key: ` in `text`, as "LINE:COL".
std::string valuePosition(const std::string& text, const std::string& key) {
  const auto pos = text.find(key + ": ");
  REQUIRE(pos != std::string::npos);
  const auto value = pos + key.size() + 2;
  const auto line_start = text.rfind('\n', value);
  const size_t line = static_cast<size_t>(std::count(text.begin(), text.begin() + value, '\n')) + 1;
  const size_t col = value - (line_start == std::string::npos ? 0 : line_start + 1) + 1;
  return std::to_string(line) + ":" + std::to_string(col);
}

// A TCP socket listening on 127.0.0.1 at a port picked by the kernel (which it holds).
class TakenPort {
 public:
  TakenPort() : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    REQUIRE(fd_ >= 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd_, reinterpret_cast<const sockaddr*>(&sa), sizeof sa) == 0);
    REQUIRE(::listen(fd_, 16) == 0);
    socklen_t len = sizeof sa;
    REQUIRE(::getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &len) == 0);
    port_ = ntohs(sa.sin_port);
  }
  ~TakenPort() { ::close(fd_); }
  TakenPort(const TakenPort&) = delete;
  TakenPort& operator=(const TakenPort&) = delete;

  uint16_t port() const { return port_; }
  // Accepts one pending connection (non-blocking); true when there was one.
  bool acceptOne() {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 2000) != 1) return false;
    int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) return false;
    ::close(c);
    return true;
  }

 private:
  int fd_;
  uint16_t port_ = 0;
};

// Sends `data` on a fresh connection to the admin port and collects what comes back until the
// daemon closes it (or `timeout`). `*closed` says whether it did.
std::string rawAdminExchange(uint16_t admin_port, const std::string& data, bool shut_write,
                             Millis timeout, bool* closed) {
  *closed = false;
  Conn c = connectTcp(admin_port);
  if (!c.valid()) return "<connect failed>";
  (void)c.sendAll(data);  // may fail once the daemon has answered and closed
  if (shut_write) c.shutdownWrite();
  std::string got;
  char buf[4096];
  const auto deadline = Clock::now() + timeout;
  while (Clock::now() < deadline) {
    pollfd p{c.fd(), POLLIN, 0};
    const auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now());
    const int r = ::poll(&p, 1, static_cast<int>(std::max<int64_t>(1, left.count())));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    const ssize_t n = ::recv(c.fd(), buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      got.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) continue;
    *closed = true;  // EOF or a reset
    break;
  }
  return got;
}

uint16_t portOf(const std::string& addr) {
  return static_cast<uint16_t>(std::atoi(addr.c_str() + addr.rfind(':') + 1));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Floods and idle clients

TEST_CASE("abuse: 500 connections flood max_connections 50 - the excess closed at once, counted",
          "[e2e][abuse]") {
  constexpr size_t kLimit = 50;
  constexpr size_t kFlood = 500;
  TempDir dir;
  Daemon daemon(dir, abuseConfig(dir, "    max_connections: 50\n"));
  const std::string admin = daemon.waitAdmin();
  const uint16_t port = daemon.port("app");
  const fs::path archive = dir / "archive";

  // As fast as one thread can connect; every connection is held.
  std::vector<Conn> conns;
  conns.reserve(kFlood);
  for (size_t i = 0; i < kFlood; ++i) {
    int err = 0;
    conns.push_back(connectTcp(port, &err));
    INFO("connection " << i << ": errno " << err);
    REQUIRE(conns.back().valid());
  }
  const auto flooded = Clock::now();

  // The excess is closed at once; the rest stays open.
  std::vector<Closure> closures;
  const size_t first = pollClosures(conns, closures, kFlood - kLimit, flooded + 5s);
  const auto all_closed = Clock::now();
  CHECK(first == kFlood - kLimit);
  pollClosures(conns, closures, kFlood, Clock::now() + 300ms);  // nothing more may close
  std::vector<size_t> kept;
  size_t bad_result = 0;
  for (size_t i = 0; i < kFlood; ++i) {
    if (!closures[i].done) {
      kept.push_back(i);
    } else if (!closedByDaemon(closures[i].result)) {
      ++bad_result;
    }
  }
  INFO("refused connections closed within "
       << std::chrono::duration_cast<Millis>(all_closed - flooded).count() << " ms");
  CHECK(all_closed - flooded < 3s);
  CHECK(bad_result == 0);
  REQUIRE(kept.size() == kLimit);
  CHECK(daemon.running());
  CHECK(httpGet(admin, "/healthz").status == 200);

  Metrics m = scrapeMetrics(admin);
  CHECK(appMetric(m, "spliced_connections_rejected_total", "limit") == kFlood - kLimit);
  CHECK(appMetric(m, "spliced_connections_rejected_total", "denied") == 0);
  CHECK(appMetric(m, "spliced_connections_active") == kLimit);
  CHECK(appMetric(m, "spliced_connections_total") == kLimit);

  // The 50 accepted ones stream their bytes and are archived exactly.
  std::vector<std::string> payloads;
  uint64_t total = 0;
  for (size_t k = 0; k < kept.size(); ++k) {
    payloads.push_back(randomPayload(1000 + k, 16 * kKiB + k * 997));
    total += payloads.back().size();
    REQUIRE(conns[kept[k]].sendAll(payloads.back()) == 0);
    conns[kept[k]].shutdownWrite();
  }
  for (size_t k = 0; k < kept.size(); ++k) CHECK(conns[kept[k]].waitClosed(10s) == 0);
  auto chains = chainsByConn(archive);
  CHECK(chains.size() == kLimit);
  for (size_t k = 0; k < kept.size(); ++k) {
    const Chain* c = findByPort(chains, conns[kept[k]].localPort());
    INFO("kept connection " << k);
    REQUIRE(c != nullptr);
    CHECK(firstDifference(concatFiles(c->files()), payloads[k]) == "");
  }

  // With them gone, a new client is served.
  conns.clear();
  const std::string late = randomPayload(2000, 4321);
  Conn c = connectTcp(port);
  REQUIRE(c.valid());
  REQUIRE(c.sendAll(late) == 0);
  c.shutdownWrite();
  CHECK(c.waitClosed(10s) == 0);
  const auto late_chains = chainsByConn(archive);
  const Chain* lc = findByPort(late_chains, c.localPort());
  REQUIRE(lc != nullptr);
  CHECK(firstDifference(concatFiles(lc->files()), late) == "");

  bool ok = false;
  m = waitConnections(admin, 0, kLimit + 1, 5s, &ok);
  CHECK(ok);
  CHECK(appMetric(m, "spliced_connections_rejected_total", "limit") == kFlood - kLimit);
  CHECK(appMetric(m, "spliced_bytes_in_total") == total + late.size());
  CHECK(appMetric(m, "spliced_archive_bytes_total") == total + late.size());

  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
  auto totals = parseTotals(daemon.log(), "app");
  INFO(daemon.log());
  CHECK(totals["rejected_limit"] == kFlood - kLimit);
  CHECK(totals["connections"] == kLimit + 1);
}

TEST_CASE("abuse: 5000 idle clients are closed after idle_timeout, each byte archived, no leak",
          "[e2e][abuse]") {
  constexpr size_t kClients = 5000;
  constexpr size_t kWarmup = 20;
  NofileAtHardLimit nofile;
  if (nofile.current() < 12000) {
    WARN("RLIMIT_NOFILE cannot be raised to 12000 (hard limit "
         << nofile.hard() << "): the 5000 idle clients test is SKIPPED");
    return;
  }
  TempDir dir;
  Daemon daemon(dir, abuseConfig(dir, "    idle_timeout: 1s\n"));
  const std::string admin = daemon.waitAdmin();
  const uint16_t port = daemon.port("app");
  const fs::path archive = dir / "archive";

  // Warm-up: the pipe pool and the allocator have seen connections.
  for (size_t i = 0; i < kWarmup; ++i) {
    Conn c = connectTcp(port);
    REQUIRE(c.valid());
    REQUIRE(c.sendAll("warm-up\n") == 0);
    c.shutdownWrite();
    REQUIRE(c.waitClosed(10s) == 0);
  }
  bool ok = false;
  waitConnections(admin, 0, kWarmup, 5s, &ok);
  REQUIRE(ok);
  const Footprint before = settledFootprint(daemon, admin);

  // Three rounds: the first shows that what 5000 sessions held is given back, the last that a
  // round costs nothing more once the allocator has grown (no per-connection leak). The
  // allocator's high-water mark is not reached in one round: where the first round's memory
  // settles depends on timing (8.6 to 10.5 MiB measured here), the second reaches the plateau.
  std::vector<Footprint> rounds;
  for (size_t round = 0; round < 3; ++round) {
    INFO("round " << round);
    const uint64_t first_id = kWarmup + round * kClients + 1;
    auto byteOf = [&](size_t i) { return static_cast<char>('A' + (i + round) % 58); };

    // Connect, one byte, silence.
    std::vector<Conn> conns;
    std::vector<Clock::time_point> sent_at;
    conns.reserve(kClients);
    for (size_t i = 0; i < kClients; ++i) {
      int err = 0;
      conns.push_back(connectTcp(port, &err));
      INFO("client " << i << ": errno " << err);
      REQUIRE(conns.back().valid());
      sent_at.push_back(Clock::now());
      const char byte = byteOf(i);
      REQUIRE(conns.back().sendAll(&byte, 1) == 0);
    }
    const auto connected = Clock::now();
    const size_t rss_at_connect = rssKiB(daemon.pid());
    const size_t fds_at_connect = daemon.fdCount();
    std::vector<Closure> closures;
    const size_t closed = pollClosures(conns, closures, kClients, connected + 10s);
    INFO("connecting took " << std::chrono::duration_cast<Millis>(connected - sent_at[0]).count()
                            << " ms");
    CHECK(closed == kClients);
    size_t not_eof = 0, early = 0, late = 0;
    Millis slowest{0};
    for (size_t i = 0; i < kClients; ++i) {
      if (!closures[i].done) continue;
      if (closures[i].result != 0) ++not_eof;
      const auto after = std::chrono::duration_cast<Millis>(closures[i].at - sent_at[i]);
      slowest = std::max(slowest, after);
      if (after < 950ms) ++early;
      // Late: a session accepted late (the daemon starved of CPU by a parallel test takes
      // seconds to accept 5000) starts its idle timer late; 7 s was seen under ctest -j2.
      if (after > 9s) ++late;
    }
    INFO("slowest close " << slowest.count() << " ms after the byte");
    CHECK(not_eof == 0);
    CHECK(early == 0);
    CHECK(late == 0);

    // Each client's byte is in its own closed segment.
    waitConnections(admin, 0, static_cast<double>(first_id - 1 + kClients), 10s, &ok);
    CHECK(ok);
    CHECK(openSegments(archive).empty());
    std::map<uint16_t, std::string> by_port;
    size_t chains = 0;
    for (const auto& [conn, chain] : chainsByConn(archive)) {
      if (conn < first_id) continue;
      ++chains;
      by_port[chain.port] = concatFiles(chain.files());
    }
    CHECK(chains == kClients);
    size_t wrong = 0;
    for (size_t i = 0; i < kClients; ++i) {
      auto it = by_port.find(conns[i].localPort());
      if (it == by_port.end() || it->second != std::string(1, byteOf(i))) ++wrong;
    }
    CHECK(wrong == 0);
    CHECK(daemon.countLogLines({"close route=app ", "bytes=1 ", "end=idle_timeout"},
                               (round + 1) * kClients) == (round + 1) * kClients);
    conns.clear();

    // Everything the 5000 sessions held is given back.
    const Footprint after = settledFootprint(daemon, admin);
    std::cout << "abuse idle clients, round " << round
              << " (before, at the last connect, after): fds " << before.fds << " -> "
              << fds_at_connect << " -> " << after.fds << ", RSS " << before.rss_kib << " KiB -> "
              << rss_at_connect << " KiB -> " << after.rss_kib << " KiB\n";
    INFO("fds " << before.fds << " -> " << after.fds << "; open fds:\n" << daemon.fdListing());
    CHECK(after.fds == before.fds);
    rounds.push_back(after);
  }
  INFO("RSS " << before.rss_kib << " KiB before, " << rounds[0].rss_kib << " KiB after round 0, "
              << rounds[1].rss_kib << " KiB after round 1, " << rounds[2].rss_kib
              << " KiB after round 2");
  // The allocator keeps part of what 5000 sessions used (measured: 6.2 MiB before, 8.6 to
  // 10.5 MiB after the first round, then 11.0 to 11.6 MiB and flat over further rounds): a
  // high-water mark, not a leak.
  if (rssIsMeaningful()) {
    CHECK(rounds[0].rss_kib <= before.rss_kib + 6 * 1024);
    CHECK(rounds[2].rss_kib <= rounds[1].rss_kib + 2 * 1024);
  }
  CHECK(httpGet(admin, "/healthz").status == 200);

  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
}

// ---------------------------------------------------------------------------------------------
// Resets, short connections, empty connections

TEST_CASE("abuse: 200 clients reset mid-stream - end=client_error, a prefix archived, no fd leak",
          "[e2e][abuse]") {
  constexpr size_t kClients = 200;
  constexpr size_t kBatch = 20;
  TempDir dir;
  Daemon daemon(dir, abuseConfig(dir));
  const std::string admin = daemon.waitAdmin();
  const uint16_t port = daemon.port("app");
  const fs::path archive = dir / "archive";
  // Enough warm-up connections that every worker's pipe pool is warm (the kernel spreads them).
  constexpr size_t kWarmup = 20;
  for (size_t i = 0; i < kWarmup; ++i) {
    Conn c = connectTcp(port);
    REQUIRE(c.valid());
    REQUIRE(c.sendAll("warm-up\n") == 0);
    c.shutdownWrite();
    REQUIRE(c.waitClosed(10s) == 0);
  }
  const Footprint before = settledFootprint(daemon, admin);

  struct Client {
    uint16_t port = 0;
    std::string sent;   // everything the client handed to its kernel
    uint64_t seen = 0;  // size of its open segment just before the reset
  };
  std::vector<Client> clients;
  Prng prng(77);
  for (size_t b = 0; b < kClients / kBatch; ++b) {
    std::vector<Conn> conns;
    std::vector<size_t> ids;
    for (size_t k = 0; k < kBatch; ++k) {
      const size_t id = clients.size();
      Client cl;
      cl.sent = randomPayload(3000 + id, prng.between(1, 128 * kKiB));
      conns.push_back(connectTcp(port));
      REQUIRE(conns.back().valid());
      cl.port = conns.back().localPort();
      REQUIRE(conns.back().sendAll(cl.sent) == 0);
      clients.push_back(std::move(cl));
      ids.push_back(id);
    }
    // Every one is streaming (its segment is open and holds bytes)...
    for (size_t k = 0; k < kBatch; ++k) {
      Client& cl = clients[ids[k]];
      std::optional<uint64_t> size;
      REQUIRE(waitUntil(
          [&] {
            size = openSegmentSize(archive, cl.port);
            return size && *size > 0;
          },
          10s));
      cl.seen = *size;
    }
    // ...then some hand their kernel a last 2 MiB without waiting (one non-blocking send: what
    // is still in their send buffer at the reset is lost), and all reset.
    for (size_t k = 0; k < kBatch; ++k) {
      Client& cl = clients[ids[k]];
      if (k % 2 == 1) {
        const std::string tail = randomPayload(9000 + ids[k], 2 * kMiB);
        const ssize_t n =
            ::send(conns[k].fd(), tail.data(), tail.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n > 0) cl.sent += tail.substr(0, static_cast<size_t>(n));
      }
      linger lg{1, 0};
      REQUIRE(::setsockopt(conns[k].fd(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0);
      conns[k].close();  // RST
    }
  }

  REQUIRE(waitUntil(
      [&] {
        return logLines(daemon.log(), {"close route=app ", "end=client_error"}).size() == kClients;
      },
      10s));
  CHECK(daemon.running());
  const std::string log = daemon.log();
  const auto chains = chainsByConn(archive);
  CHECK(openSegments(archive).empty());
  size_t full = 0;
  for (size_t i = 0; i < clients.size(); ++i) {
    const Client& cl = clients[i];
    INFO("client " << i << " port " << cl.port << " sent " << cl.sent.size() << ", its segment had "
                   << cl.seen << " bytes before the reset");
    const Chain* c = findByPort(chains, cl.port);
    REQUIRE(c != nullptr);
    const std::string got = concatFiles(c->files());
    CHECK(got.size() >= cl.seen);
    CHECK(got.size() <= cl.sent.size());
    CHECK(firstDifference(got, std::string_view(cl.sent).substr(0, got.size())) == "");
    full += got.size() == cl.sent.size() ? 1 : 0;
    const std::string line = closeLine(log, cl.port);
    INFO(line);
    CHECK(line.find(" bytes=" + std::to_string(got.size()) + " ") != std::string::npos);
    CHECK(line.find(" end=client_error error=downstream") != std::string::npos);
  }
  std::cout << "abuse resets: " << full << " of " << kClients
            << " reset clients had every byte archived, the others a prefix\n";

  bool ok = false;
  waitConnections(admin, 0, kWarmup + kClients, 5s, &ok);
  CHECK(ok);
  const Footprint after = settledFootprint(daemon, admin);
  std::cout << "abuse resets: fds " << before.fds << " -> " << after.fds << "\n";
  INFO("fds " << before.fds << " -> " << after.fds << "; open fds:\n" << daemon.fdListing());
  CHECK(after.fds == before.fds);
  CHECK(httpGet(admin, "/healthz").status == 200);
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
}

TEST_CASE("abuse: 10000 short connections in batches - fds and RSS back to their baseline",
          "[e2e][abuse]") {
  constexpr size_t kBatch = 100;
  constexpr size_t kWarmup = 2 * kBatch;
  constexpr size_t kConnections = 10000;
  TempDir dir;
  Daemon daemon(dir, abuseConfig(dir));
  const std::string admin = daemon.waitAdmin();
  const uint16_t port = daemon.port("app");
  const fs::path archive = dir / "archive";
  const Footprint at_start = settledFootprint(daemon, admin);

  // Batches of 100 connections open at once, each sending one line, then all closed.
  size_t next = 0;
  auto batch = [&] {
    std::vector<Conn> conns;
    for (size_t k = 0; k < kBatch; ++k) {
      conns.push_back(connectTcp(port));
      if (!conns.back().valid()) return false;
    }
    for (auto& c : conns) {
      if (c.sendAll("short " + std::to_string(next++) + "\n") != 0) return false;
    }
    return true;  // closed here
  };
  bool ok = false;
  for (size_t i = 0; i < kWarmup / kBatch; ++i) REQUIRE(batch());
  waitConnections(admin, 0, kWarmup, 10s, &ok);
  REQUIRE(ok);
  const Footprint before = settledFootprint(daemon, admin);

  const auto started = Clock::now();
  for (size_t i = 0; i < kConnections / kBatch; ++i) {
    INFO("batch " << i);
    REQUIRE(batch());
  }
  waitConnections(admin, 0, kWarmup + kConnections, 30s, &ok);
  CHECK(ok);
  const auto elapsed = std::chrono::duration_cast<Millis>(Clock::now() - started);
  const Footprint after = settledFootprint(daemon, admin);
  std::cout << "abuse 10000 short connections (" << elapsed.count() << " ms): fds " << at_start.fds
            << " at start, " << before.fds << " after warm-up, " << after.fds << " after; RSS "
            << at_start.rss_kib << " KiB at start, " << before.rss_kib << " KiB after warm-up, "
            << after.rss_kib << " KiB after\n";
  INFO("fds " << before.fds << " -> " << after.fds << ", RSS " << before.rss_kib << " KiB -> "
              << after.rss_kib << " KiB; open fds:\n"
              << daemon.fdListing());
  CHECK(after.fds == before.fds);
  if (rssIsMeaningful()) CHECK(after.rss_kib <= before.rss_kib + 4 * 1024);

  // Every connection's line, once each, nothing left open.
  CHECK(openSegments(archive).empty());
  std::vector<std::string> want;
  for (size_t i = 0; i < kWarmup + kConnections; ++i) {
    want.push_back("short " + std::to_string(i) + "\n");
  }
  std::sort(want.begin(), want.end());
  CHECK(sortedSegmentContents(archive) == want);

  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
  auto totals = parseTotals(daemon.log(), "app");
  CHECK(totals["connections"] == kWarmup + kConnections);
}

TEST_CASE("abuse: a client that sends nothing leaves no segment and logs bytes=0 end=eof",
          "[e2e][abuse]") {
  TempDir dir;
  Daemon daemon(dir, abuseConfig(dir));
  const std::string admin = daemon.waitAdmin();
  const uint16_t port = daemon.port("app");
  const fs::path archive = dir / "archive";

  for (bool half_close : {false, true}) {
    INFO((half_close ? "shutdown(SHUT_WR) first" : "close() at once"));
    Conn c = connectTcp(port);
    REQUIRE(c.valid());
    const uint16_t p = c.localPort();
    if (half_close) {
      c.shutdownWrite();
      CHECK(c.waitClosed(10s) == 0);
    }
    c.close();
    REQUIRE(waitUntil([&] { return !closeLine(daemon.log(), p).empty(); }, 10s));
    const std::string line = closeLine(daemon.log(), p);
    INFO(line);
    CHECK(line.find(" bytes=0 segments=0 ") != std::string::npos);
    CHECK(line.find(" end=eof") != std::string::npos);
    CHECK(line.find("error=") == std::string::npos);
    CHECK(entriesBesidesLock(archive) == "");
  }
  Metrics m = scrapeMetrics(admin);
  CHECK(appMetric(m, "spliced_connections_total") == 2);
  CHECK(appMetric(m, "spliced_archive_segments_total") == 0);
  CHECK(appMetric(m, "spliced_bytes_in_total") == 0);

  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
  CHECK(entriesBesidesLock(archive) == "");
}

// ---------------------------------------------------------------------------------------------
// Start-up refusals

TEST_CASE("abuse: a listen address already in use - exit 1 naming it, nothing left running",
          "[e2e][abuse]") {
  TempDir dir;
  TakenPort taken;
  const std::string addr = "127.0.0.1:" + std::to_string(taken.port());

  SECTION("a route's address") {
    const fs::path cfg = dir / "taken.yaml";
    writeFile(cfg, abuseConfig(dir, "", "@DIR@/archive", addr));
    const auto t0 = Clock::now();
    CommandResult r = runSpliced(dir, {"-c", cfg.string()}, 10s);
    const auto took = std::chrono::duration_cast<Millis>(Clock::now() - t0);
    INFO("took " << took.count() << " ms; stdout:\n" << r.out << "stderr:\n" << r.err);
    CHECK(r.exit_code == 1);
    CHECK(took < 5s);
    CHECK(r.err.find("route app: cannot bind " + addr + ": Address already in use") !=
          std::string::npos);
    CHECK(r.err.find("listening on") == std::string::npos);
  }
  SECTION("the admin address, after the route has started") {
    const fs::path cfg = dir / "taken.yaml";
    writeFile(cfg, abuseConfig(dir, "", "@DIR@/archive", "127.0.0.1:0", addr));
    const auto t0 = Clock::now();
    CommandResult r = runSpliced(dir, {"-c", cfg.string()}, 10s);
    const auto took = std::chrono::duration_cast<Millis>(Clock::now() - t0);
    INFO("took " << took.count() << " ms; stdout:\n" << r.out << "stderr:\n" << r.err);
    CHECK(r.exit_code == 1);
    CHECK(took < 5s);
    CHECK(r.err.find("admin: cannot bind " + addr + ": Address already in use") !=
          std::string::npos);
    // The route that had started is gone with the process.
    const std::string needle = "route=app listening on ";
    const auto pos = r.err.find(needle);
    if (pos != std::string::npos) {
      const auto end = r.err.find(' ', pos + needle.size());
      const std::string route_addr = r.err.substr(pos + needle.size(), end - pos - needle.size());
      int err = 0;
      CHECK_FALSE(connectTcp(portOf(route_addr), &err).valid());
      CHECK(err == ECONNREFUSED);
    }
  }

  // The port is still ours alone, and the archive dir's lock was released with the process.
  {
    Conn c = connectTcp(taken.port());
    REQUIRE(c.valid());
    CHECK(taken.acceptOne());
  }
  Daemon next(dir, abuseConfig(dir));
  next.waitListening("app");
  next.signal(SIGTERM);
  CHECK(next.waitExit(10s) == 0);
}

TEST_CASE(
    "abuse: an archive dir under a regular file - -t names FILE:LINE:COL and the key, start "
    "exits 1",
    "[e2e][abuse]") {
  TempDir dir;
  writeFile(dir / "plain", "a regular file\n");
  const fs::path cfg = dir / "bad.yaml";
  const std::string text = abuseConfig(dir, "", "@DIR@/plain/archive");
  writeFile(cfg, text);
  const std::string want = cfg.string() + ":" + valuePosition(text, "dir") +
                           ": routes[0].archive.dir: cannot create '" +
                           (dir / "plain" / "archive").string() + "': '" +
                           (dir / "plain").string() + "' is not a directory";

  CommandResult check = runSpliced(dir, {"-t", "-c", cfg.string()});
  INFO("-t stdout:\n" << check.out << "-t stderr:\n" << check.err);
  CHECK(check.exit_code == 1);
  CHECK(check.err.find(want) != std::string::npos);
  CHECK(check.err.find("configuration is invalid") != std::string::npos);

  CommandResult run = runSpliced(dir, {"-c", cfg.string()});
  INFO("run stdout:\n" << run.out << "run stderr:\n" << run.err);
  CHECK(run.exit_code == 1);
  CHECK(run.err.find(want) != std::string::npos);
  CHECK(run.err.find("listening on") == std::string::npos);
  CHECK(fs::is_regular_file(dir / "plain"));
}

TEST_CASE("abuse: an archive dir on a read-only filesystem - -t says not writable, start exits 1",
          "[e2e][abuse]") {
  TempDir dir;
  const fs::path ro = dir / "ro";
  TmpfsMount mnt(ro, "size=1m", MS_RDONLY);
  if (!mnt.mounted()) {
    WARN("cannot mount a read-only tmpfs (" << mnt.error()
                                            << "; needs root or CAP_SYS_ADMIN): SKIPPED");
    return;
  }
  struct Case {
    std::string dir;
    std::string message;
  };
  const std::vector<Case> cases = {
      {ro.string(), "directory '" + ro.string() + "' is not writable"},
      {(ro / "archive").string(),
       "cannot create '" + (ro / "archive").string() + "': '" + ro.string() + "' is not writable"},
  };
  for (const auto& c : cases) {
    INFO("archive.dir: " << c.dir);
    const fs::path cfg = dir / "ro.yaml";
    const std::string text = abuseConfig(dir, "", c.dir);
    writeFile(cfg, text);
    const std::string want =
        cfg.string() + ":" + valuePosition(text, "dir") + ": routes[0].archive.dir: " + c.message;

    CommandResult check = runSpliced(dir, {"-t", "-c", cfg.string()});
    INFO("-t stdout:\n" << check.out << "-t stderr:\n" << check.err);
    CHECK(check.exit_code == 1);
    CHECK(check.err.find(want) != std::string::npos);

    CommandResult run = runSpliced(dir, {"-c", cfg.string()});
    INFO("run stdout:\n" << run.out << "run stderr:\n" << run.err);
    CHECK(run.exit_code == 1);
    CHECK(run.err.find(want) != std::string::npos);
    CHECK(run.err.find("listening on") == std::string::npos);
  }
  CHECK(entriesBesidesLock(ro) == "");
}

TEST_CASE(
    "abuse: a second spliced on the same archive dir exits 1, the first goes on, two routes may "
    "not share one",
    "[e2e][abuse]") {
  TempDir dir;
  TempDir dir2;
  const fs::path archive = dir / "archive";
  Daemon first(dir, abuseConfig(dir));
  const std::string admin = first.waitAdmin();
  const uint16_t port = first.port("app");

  const fs::path cfg2 = dir2 / "second.yaml";
  writeFile(cfg2, abuseConfig(dir2, "", archive.string()));
  CommandResult r = runSpliced(dir2, {"-c", cfg2.string()}, 10s);
  INFO("stdout:\n" << r.out << "stderr:\n" << r.err);
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("archive dir " + archive.string() +
                   " is in use by another spliced process (pid " + std::to_string(first.pid()) +
                   ")") != std::string::npos);
  CHECK(r.err.find("listening on") == std::string::npos);

  CHECK(first.running());
  CHECK(httpGet(admin, "/healthz").status == 200);
  const std::string payload = randomPayload(61, 10000);
  Conn c = connectTcp(port);
  REQUIRE(c.valid());
  REQUIRE(c.sendAll(payload) == 0);
  c.shutdownWrite();
  CHECK(c.waitClosed(10s) == 0);
  const auto chains = chainsByConn(archive);
  const Chain* chain = findByPort(chains, c.localPort());
  REQUIRE(chain != nullptr);
  CHECK(firstDifference(concatFiles(chain->files()), payload) == "");
  first.signal(SIGTERM);
  CHECK(first.waitExit(10s) == 0);

  // Two routes of one config on one dir: refused by the config check, before any lock is taken.
  const fs::path cfg3 = dir2 / "shared-dir.yaml";
  const std::string text = abuseConfig(dir2, "", archive.string()) +
                           "  - name: other\n    listen: 127.0.0.1:0\n    archive:\n"
                           "      dir: " +
                           (archive / ".").string() + "\n";
  writeFile(cfg3, text);
  const auto second_dir = text.find("dir: ", text.find("name: other"));
  const size_t line =
      static_cast<size_t>(std::count(text.begin(), text.begin() + second_dir, '\n')) + 1;
  const std::string want = cfg3.string() + ":" + std::to_string(line) +
                           ":12: routes[1].archive.dir: archive dir " + archive.string() +
                           " is already used by route app";
  for (const bool check_only : {true, false}) {
    INFO((check_only ? "spliced -t" : "spliced"));
    std::vector<std::string> args = {"-c", cfg3.string()};
    if (check_only) args.insert(args.begin(), "-t");
    CommandResult shared = runSpliced(dir2, args);
    INFO("stdout:\n" << shared.out << "stderr:\n" << shared.err);
    CHECK(shared.exit_code == 1);
    CHECK(shared.err.find(want) != std::string::npos);
    CHECK(shared.err.find("listening on") == std::string::npos);
  }
}

// ---------------------------------------------------------------------------------------------
// The admin port

TEST_CASE("abuse: garbage on the admin port - the daemon stays up and answers /healthz",
          "[e2e][abuse][admin]") {
  TempDir dir;
  Daemon daemon(dir, abuseConfig(dir));
  const std::string admin = daemon.waitAdmin();
  daemon.port("app");
  const uint16_t admin_port = portOf(admin);
  REQUIRE(httpGet(admin, "/healthz").status == 200);
  const size_t baseline = settledFootprint(daemon).fds;

  auto healthy = [&] {
    HttpResponse h = httpGet(admin, "/healthz");
    INFO("healthz: " << h.status << " " << h.body << " " << h.error);
    CHECK(h.status == 200);
    CHECK(h.body == "ok\n");
  };

  // Connections holding garbage, open while /healthz is asked.
  std::vector<Conn> held;
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    held.push_back(connectTcp(admin_port));
    REQUIRE(held.back().valid());
    (void)held.back().sendAll(randomPayload(seed, seed * 16 * kKiB));
  }
  held.push_back(connectTcp(admin_port));
  REQUIRE(held.back().valid());
  (void)held.back().sendAll("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Half: ");  // never finished
  healthy();

  constexpr const char* kBad = "HTTP/1.1 400 Bad Request";
  constexpr const char* kTooLarge = "HTTP/1.1 413 Request Entity Too Large";
  struct Garbage {
    const char* what;
    std::string bytes;
    const char* status;  // the status line libevent's parser answers with
  };
  const std::vector<Garbage> garbage = {
      {"64 KiB of random bytes", randomPayload(11, 64 * kKiB), kBad},
      {"NUL bytes and CRLFs", std::string(1000, '\0') + "\r\n\r\n" + std::string(1000, '\0'), kBad},
      {"a 100 KiB header line",
       "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: " + std::string(100 * kKiB, 'a') + "\r\n\r\n",
       kBad},
      {"a 100 KiB request line", "GET /" + std::string(100 * kKiB, 'b') + " HTTP/1.1\r\n\r\n",
       kBad},
      {"an HTTP/0.9 request", "GET /healthz\r\n", kBad},
      {"an HTTP/0.9 request and an empty line", "GET /metrics\r\n\r\n", kBad},
      {"an unknown protocol version", "GET /healthz HTTP/7.3\r\nHost: x\r\n\r\n", kBad},
      {"a header without a colon", "GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n", kBad},
      {"a negative Content-Length",
       "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", kBad},
      {"a huge Content-Length",
       "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
       kTooLarge},
      {"a bad chunked body",
       "POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", kTooLarge},
  };
  for (const auto& g : garbage) {
    INFO(g.what);
    bool closed = false;
    const std::string reply = rawAdminExchange(admin_port, g.bytes, true, 10s, &closed);
    INFO("reply: " << reply.substr(0, 200));
    CHECK(closed);  // answered and closed, never held open
    CHECK(reply.substr(0, reply.find('\r')) == g.status);
    CHECK(daemon.running());
    healthy();
  }

  held.clear();
  CHECK(daemon.running());
  healthy();
  CHECK(appMetric(scrapeMetrics(admin), "spliced_connections_total") == 0);
  // Every admin connection is gone again.
  const bool settled = waitUntil([&] { return daemon.fdCount() == baseline; }, 5s);
  INFO("fds " << daemon.fdCount() << ", baseline " << baseline << "; open fds:\n"
              << daemon.fdListing());
  CHECK(settled);

  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
}
