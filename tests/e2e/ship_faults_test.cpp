// End-to-end: store-and-forward under faults. Segments removed or truncated under the shipper;
// the cursor file removed; an upstream that accepts and never reads (given up after
// forward.ack_timeout, shipping fails over); a slow upstream; unreachable and refusing upstreams;
// the disk full while the upstream is down; and a storm of upstream restarts and SIGKILLs of
// spliced while clients write. Each checks its log line, its metric, and what the upstream
// received against the archive (`spliced cat`), byte for byte.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"
#include "ship_helpers.hpp"
#include "upstreams.hpp"

using namespace e2e;
using namespace e2e::ship;
using namespace std::chrono_literals;

namespace {

// The segments of the shared chain, in the order `spliced cat` joins them (their names sort so).
std::vector<fs::path> chainSegments(const fs::path& archive) {
  std::vector<fs::path> segs = closedSegments(archive);
  for (const auto& p : openSegments(archive)) segs.push_back(p);
  std::sort(segs.begin(), segs.end());
  return segs;
}

// The start of the line that holds byte `off` of `s`.
size_t lineStartOf(std::string_view s, size_t off) {
  if (off == 0) return 0;
  size_t nl = s.rfind('\n', off - 1);
  return nl == std::string::npos ? 0 : nl + 1;
}

// A TCP listener on 127.0.0.1:0 that accepts nothing until drained: its kernel takes what fits
// in the queued connection's (small) receive buffer, then the window closes and the sender's
// queue fills. drain() accepts and reads what it holds, then what the sender's kernel still
// sends.
class StuckListener {
 public:
  StuckListener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const int small = 16384;
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    socklen_t len = sizeof sa;
    REQUIRE(::getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &len) == 0);
    REQUIRE(::listen(fd_, 16) == 0);
    port_ = ntohs(sa.sin_port);
  }
  ~StuckListener() { ::close(fd_); }
  StuckListener(const StuckListener&) = delete;
  StuckListener& operator=(const StuckListener&) = delete;
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

  // Each queued connection's bytes, read until it is closed or quiet for 500 ms.
  std::vector<std::string> drain() {
    std::vector<std::string> out;
    ::fcntl(fd_, F_SETFL, O_NONBLOCK);
    for (;;) {
      int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) break;
      std::string got;
      char buf[65536];
      for (;;) {
        pollfd p{c, POLLIN, 0};
        if (::poll(&p, 1, 500) <= 0) break;
        ssize_t n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0) break;
        got.append(buf, static_cast<size_t>(n));
      }
      ::close(c);
      out.push_back(std::move(got));
    }
    return out;
  }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

// A route whose upstreams are `upstreams` (config() takes one address; this spells a list).
std::string configTo(const TempDir& dir, const std::vector<std::string>& upstreams,
                     const std::string& archive_extra = "", const std::string& forward_extra = "") {
  std::string list;
  for (const auto& u : upstreams) {
    if (!list.empty()) list += "\", \"";
    list += u;
  }
  return config(dir, list, archive_extra, forward_extra);
}

// Waits until nothing waits to be shipped and no client is connected.
bool waitDrained(const std::string& admin, Millis timeout, MetricValues* last) {
  return waitUntil(
      [&] {
        *last = scrapeMetrics(admin);
        return metric(*last, "spliced_archive_bytes_total") > 0 &&
               metric(*last, "spliced_ship_lag_bytes") == 0 &&
               metric(*last, "spliced_connections_active") == 0;
      },
      timeout, Millis(50));
}

double upstreamMetric(const MetricValues& m, const std::string& name, const std::string& up) {
  auto it = m.find(name + "{route=\"app\",upstream=\"" + up + "\"}");
  return it == m.end() ? -1 : it->second;
}

}  // namespace

TEST_CASE(
    "ship faults: a segment removed under the shipper ships whole from its descriptor, one "
    "truncated ships up to its last whole line, both said and counted",
    "[e2e][ship][ship_faults]") {
  TempDir dir;
  UnixSink sink((dir / "up.sock").string());  // down for now: a backlog builds
  Daemon daemon(dir, config(dir, sink.address()));
  const std::string admin = daemon.waitAdmin();
  const std::string payload = lines(0, 1600u << 10);  // 7 segments of 256 KiB
  sendClients(daemon.port("app"), {payload});
  MetricValues m;
  REQUIRE(waitUntil(
      [&] {
        m = scrapeMetrics(admin);
        return metric(m, "spliced_archive_bytes_total") == static_cast<double>(payload.size()) &&
               metric(m, "spliced_ship_lag_bytes") == static_cast<double>(payload.size());
      },
      10s));
  const std::string before = archiveOf(dir);
  REQUIRE(before == payload);
  const std::vector<fs::path> segs = chainSegments(dir / "archive");
  REQUIRE(segs.size() >= 6);
  // Where each segment starts in the chain.
  std::vector<size_t> at{0};
  for (const auto& p : segs) at.push_back(at.back() + fs::file_size(p));
  // The second is removed; the fourth truncated mid-line.
  fs::remove(segs[1]);
  const size_t size3 = at[4] - at[3];
  size_t cut = size3 / 2;
  if (before[at[3] + cut - 1] == '\n') ++cut;
  fs::resize_file(segs[3], cut);
  const size_t end3 = lineStartOf(std::string_view(before).substr(at[3], size3), cut);
  const std::string want = before.substr(0, at[3] + end3) + before.substr(at[4]);

  sink.start();
  REQUIRE(waitDrained(admin, 30s, &m));
  INFO(describe(m));
  REQUIRE(waitUntil([&] { return sink.joined().size() >= want.size(); }, 10s));
  // The first connection ends with the torn line of the truncated segment; the next starts on
  // a line; joined without torn lines, the stream is the archive as it stands, whole lines
  // repeated at most.
  auto streams = sink.streams();
  REQUIRE(streams.size() >= 2);
  const std::string torn = before.substr(at[3] + end3, cut - end3);
  CHECK(streams[0].ends_with(torn));
  CHECK(streams[1].starts_with("client "));
  std::string why;
  const int64_t dup = duplicatedWholeLines(sink.joinedWholeLines(), want, why);
  INFO(why);
  CHECK(dup >= 0);
  CHECK(metric(m, "spliced_ship_segment_errors_total") == 2);
  CHECK(metric(m, "spliced_ship_dropped_bytes_total") == static_cast<double>(size3 - end3));
  const std::string name1 = segs[1].filename().string(), name3 = segs[3].filename().string();
  CHECK(daemon.countLogLines({"route=app ship: segment " + name1,
                              "was removed from the archive dir before the upstream "
                              "acknowledged it; it was shipped whole"},
                             1) == 1);
  CHECK(
      daemon.countLogLines({"error=storage route=app ship: segment " + name3,
                            "was truncated to " + std::to_string(cut) + " bytes",
                            "ends at its last whole line, byte " + std::to_string(end3),
                            std::to_string(size3 - end3) + " byte(s) of it will never be shipped"},
                           1) == 1);
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(20s) == 0);
}

TEST_CASE(
    "ship faults: a segment removed while spliced was down is said and skipped, the rest "
    "ships",
    "[e2e][ship][ship_faults]") {
  TempDir dir;
  UnixSink sink((dir / "up.sock").string());
  const std::string cfg = config(dir, sink.address());
  std::string before;
  std::vector<fs::path> segs;
  {
    Daemon daemon(dir, cfg);
    const std::string admin = daemon.waitAdmin();
    sendClients(daemon.port("app"), {lines(1, 1u << 20)});
    daemon.signal(SIGTERM);
    REQUIRE(daemon.waitExit(20s) == 0);
    before = archiveOf(dir);
    segs = chainSegments(dir / "archive");
    REQUIRE(segs.size() >= 3);
  }
  const size_t gone = fs::file_size(segs[1]);
  fs::remove(segs[1]);
  sink.start();
  Daemon daemon(dir, cfg);
  const std::string admin = daemon.waitAdmin();
  MetricValues m;
  REQUIRE(waitUntil(
      [&] {
        m = scrapeMetrics(admin);
        return metric(m, "spliced_ship_lag_bytes") == 0 &&
               sink.joined().size() == before.size() - gone;
      },
      20s));
  CHECK(sink.joined() == archiveOf(dir));
  CHECK(metric(m, "spliced_ship_segment_errors_total") == 1);
  CHECK(daemon.countLogLines({"error=storage route=app ship: segment " +
                              segs[1].lexically_relative(dir / "archive").string() +
                              " is gone (No such file or directory) before it was shipped "
                              "whole"},
                             1) == 1);
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(20s) == 0);
}

TEST_CASE(
    "ship faults: the cursor file removed is saved again (at the next checkpoint, or at "
    "shutdown when nothing waits), and a restart resumes from it",
    "[e2e][ship][ship_faults]") {
  TempDir dir;
  UnixSink sink((dir / "up.sock").string());
  sink.start();
  const std::string cfg = config(dir, sink.address());
  const fs::path cursor = dir / "archive/.spliced/ship/shared.cursor";
  const std::string first = lines(2, 300u << 10), second = lines(3, 100u << 10);
  {
    Daemon daemon(dir, cfg);
    const std::string admin = daemon.waitAdmin();
    sendClients(daemon.port("app"), {first});
    MetricValues m;
    REQUIRE(waitShipped(admin, 20s, &m));
    REQUIRE(waitUntil([&] { return fs::exists(cursor); }, 5s));
    std::this_thread::sleep_for(1200ms);  // a checkpoint with nothing new: the shipper is idle
    // Removed while idle: written again at shutdown at the latest.
    fs::remove(cursor);
    daemon.signal(SIGTERM);
    REQUIRE(daemon.waitExit(20s) == 0);
    CHECK(fs::exists(cursor));
  }
  {
    auto daemon = std::make_unique<Daemon>(dir, cfg);
    const std::string admin = daemon->waitAdmin();
    CHECK(daemon->countLogLines({"ship: the cursor .spliced/ship/shared.cursor is missing"}, 0,
                                200ms) == 0);
    // The upstream down, new bytes wait: the cursor does not move; removed now, it is written
    // again at the next checkpoint.
    sink.stop();
    sendClients(daemon->port("app"), {second});
    MetricValues m;
    REQUIRE(waitUntil(
        [&] {
          m = scrapeMetrics(admin);
          return metric(m, "spliced_ship_lag_bytes") == static_cast<double>(second.size());
        },
        10s));
    std::this_thread::sleep_for(1200ms);
    fs::remove(cursor);
    REQUIRE(waitUntil([&] { return fs::exists(cursor); }, 5s));
    m = scrapeMetrics(admin);
    CHECK(metric(m, "spliced_ship_cursor_errors_total") == 1);
    CHECK(daemon->countLogLines({"the cursor .spliced/ship/shared.cursor was removed"}, 1) == 1);
    daemon.reset();  // SIGKILL: the restart reads that cursor
  }
  sink.start();
  Daemon daemon(dir, cfg);
  const std::string admin = daemon.waitAdmin();
  MetricValues m;
  REQUIRE(waitUntil([&] { return sink.joined().size() >= first.size() + second.size(); }, 20s));
  std::this_thread::sleep_for(300ms);
  // Nothing shipped twice: the first run's bytes once, the second's once.
  CHECK(sink.joined() == archiveOf(dir));
  CHECK(daemon.countLogLines({"cursor .spliced/ship/shared.cursor is missing"}, 0, 200ms) == 0);
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(20s) == 0);
}

TEST_CASE(
    "ship faults: an upstream that accepts and never reads is given up after ack_timeout and "
    "shipping fails over: what its kernel took and what the next one got make the archive",
    "[e2e][ship][ship_faults]") {
  TempDir dir;
  StuckListener hole;
  UnixSink sink((dir / "up.sock").string());
  sink.start();
  Daemon daemon(dir,
                configTo(dir, {hole.address(), sink.address()}, "", "      ack_timeout: 500ms\n"));
  const std::string admin = daemon.waitAdmin();
  sendClients(daemon.port("app"), {lines(4, 4u << 20)});
  MetricValues m;
  REQUIRE(waitShipped(admin, 30s, &m));
  INFO(describe(m));
  const std::string archive = archiveOf(dir);
  CHECK(daemon.countLogLines({"route=app ship: connection to " + hole.address() + " lost",
                              "was acknowledged for 500ms (forward.ack_timeout): the upstream "
                              "is stuck; giving it up"},
                             1) == 1);
  CHECK(upstreamMetric(m, "spliced_upstream_errors_total", hole.address()) == 1);
  CHECK(upstreamMetric(m, "spliced_ship_reconnects_total", sink.address()) == 1);
  // What the stuck upstream's kernel took (acknowledged, so shipped) is the archive's start; the
  // next upstream got the rest, from the start of the line that held the cursor.
  const std::vector<std::string> held = hole.drain();
  REQUIRE(held.size() == 1);
  const std::vector<std::string> streams = sink.streams();
  REQUIRE(streams.size() == 1);
  const std::string& second = streams[0];
  CHECK(held[0].size() < archive.size());
  CHECK(firstDifference(held[0], archive.substr(0, held[0].size())) == "");
  REQUIRE(second.size() <= archive.size());
  const size_t resume = archive.size() - second.size();
  CHECK(resume <= held[0].size());
  CHECK(lineStartOf(archive, resume) == resume);
  CHECK(firstDifference(second, archive.substr(resume)) == "");
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(20s) == 0);
}

TEST_CASE(
    "ship faults: a slow upstream gets everything in order: it is behind, not stuck, nothing "
    "given up, nothing resent",
    "[e2e][ship][ship_faults]") {
  TempDir dir;
  UnixSink sink((dir / "up.sock").string());
  sink.throttle(5ms);  // about 3 MB/s
  sink.start();
  Daemon daemon(dir, config(dir, sink.address(), "", "      ack_timeout: 300ms\n"));
  const std::string admin = daemon.waitAdmin();
  sendClients(daemon.port("app"), {lines(5, 2u << 20), lines(6, 1u << 20)});
  MetricValues m = scrapeMetrics(admin);
  INFO(describe(m));
  CHECK(metric(m, "spliced_ship_lag_bytes") > 0);  // behind for a while
  REQUIRE(waitShipped(admin, 30s, &m));
  CHECK(sink.joined() == archiveOf(dir));
  CHECK(sink.connections() == 1);
  CHECK(metric(m, "spliced_ship_resent_bytes_total") == 0);
  CHECK(upstreamMetric(m, "spliced_ship_reconnects_total", sink.address()) == 0);
  CHECK(daemon.countLogLines({"route=app ship: connected to " + sink.address()}, 1) == 1);
  CHECK(daemon.countLogLines({"ship: connection to"}, 0, 200ms) == 0);
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(20s) == 0);
}

TEST_CASE(
    "ship faults: refusing and unreachable upstreams: the backlog waits, said once, errors "
    "counted per upstream, and once one is up it drains byte-exact",
    "[e2e][ship][ship_faults]") {
  TempDir dir;
  Blackhole unreachable;  // connects never complete
  REQUIRE(unreachable.ok());
  const std::string refusing = "127.0.0.1:" + std::to_string(refusingPort());
  UnixSink sink((dir / "up.sock").string());
  Daemon daemon(dir, configTo(dir, {refusing, unreachable.address(), sink.address()}));
  const std::string admin = daemon.waitAdmin();
  sendClients(daemon.port("app"), {lines(7, 1u << 20)});
  MetricValues m;
  REQUIRE(waitUntil(
      [&] {
        m = scrapeMetrics(admin);
        return upstreamMetric(m, "spliced_upstream_errors_total", refusing) >= 1 &&
               upstreamMetric(m, "spliced_upstream_errors_total", unreachable.address()) >= 1 &&
               upstreamMetric(m, "spliced_upstream_errors_total", sink.address()) >= 1;
      },
      10s));
  INFO(describe(m));
  CHECK(metric(m, "spliced_ship_lag_bytes") == metric(m, "spliced_archive_bytes_total"));
  CHECK(metric(m, "spliced_ship_bytes_total") == 0);
  CHECK(daemon.countLogLines({"error=upstream route=app ship: no upstream takes the archive"}, 1) ==
        1);
  sink.start();
  REQUIRE(waitShipped(admin, 30s, &m));
  CHECK(sink.joined() == archiveOf(dir));
  CHECK(daemon.countLogLines({"route=app ship: connected to " + sink.address() + " again"}, 1) ==
        1);
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(20s) == 0);
}

TEST_CASE(
    "ship faults: the disk full while the upstream is down pauses the client, shipping and "
    "retention (unshipped: keep) free space, it resumes, nothing is lost",
    "[e2e][ship][ship_faults][enospc]") {
  TempDir dir;
  TmpfsMount mnt(dir / "fs", "size=6m,mode=0755");
  if (!mnt.mounted()) {
    WARN("cannot mount a tmpfs (" << mnt.error()
                                  << "; needs root or CAP_SYS_ADMIN): the test is SKIPPED");
    return;
  }
  UnixSink sink((dir / "up.sock").string());
  std::string cfg =
      config(dir, sink.address(), "      retain: { max_bytes: 2MiB, unshipped: keep }\n");
  const std::string old_dir = (dir / "archive").string();
  const fs::path archive = dir / "fs" / "archive";
  cfg.replace(cfg.find(old_dir), old_dir.size(), archive.string());
  Daemon daemon(dir, cfg);
  const std::string admin = daemon.waitAdmin();
  const std::string payload = lines(8, 12u << 20);  // twice the file system
  Conn conn = connectTcp(daemon.port("app"));
  REQUIRE(conn.valid());
  const int sndbuf = 128 << 10;
  REQUIRE(::setsockopt(conn.fd(), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf) == 0);
  std::atomic<int> send_err{-1};
  std::jthread sender([&] {
    send_err = conn.sendAll(payload);
    conn.shutdownWrite();
  });
  // Full: the client is paused, nothing is deleted (every segment is unshipped).
  MetricValues m;
  REQUIRE(waitUntil(
      [&] {
        m = scrapeMetrics(admin);
        return metric(m, "spliced_archive_stalled_connections") == 1;
      },
      20s));
  INFO(describe(m));
  CHECK(daemon.countLogLines({"error=storage route=app conn=1 archive write failed: No space "
                              "left on device; pausing this client"},
                             1) == 1);
  CHECK(metric(m, "spliced_archive_deleted_segments_total") == 0);
  CHECK(metric(m, "spliced_ship_lag_bytes") > 0);
  CHECK(send_err == -1);  // still sending

  // The upstream comes up: what is shipped is deleted, the client resumes and finishes.
  sink.start();
  sender.join();
  CHECK(send_err == 0);
  CHECK(conn.waitClosed(30s) == 0);
  REQUIRE(waitShipped(admin, 30s, &m));
  CHECK(metric(m, "spliced_archive_bytes_total") == static_cast<double>(payload.size()));
  CHECK(metric(m, "spliced_archive_deleted_segments_total") > 0);
  CHECK(metric(m, "spliced_ship_dropped_bytes_total") == 0);
  CHECK(daemon.countLogLines({"route=app conn=1 archive writable again; resuming"}, 1) >= 1);
  // The upstream has every byte, in order; what the archive still holds is its end.
  const std::string got = sink.joined();
  CHECK(firstDifference(got, payload) == "");
  CommandResult r = runSpliced(dir, {"cat", archive.string()}, Millis(30000));
  REQUIRE(r.exit_code == 0);
  CHECK(!r.out.empty());
  CHECK(got.ends_with(r.out));
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(20s) == 0);
}

namespace {

// The storm: clients write lines into a shipping route while the upstream is stopped and started
// again and spliced is SIGKILLed and started again, in turns, spread over the clients' progress.
struct StormSize {
  size_t clients;
  size_t per_client;  // bytes each client gets sent (bytes in flight at a kill are lost)
  int upstream_restarts;
  int kills;
};

// Lines of client `c` from line `n` on, about `bytes` long.
std::string stormLines(size_t c, uint64_t& n, size_t bytes) {
  std::string out;
  while (out.size() < bytes) {
    out += "storm ";
    out += std::to_string(c);
    out += " line ";
    out += std::to_string(n);
    out += ' ';
    out.append(20 + (n * 7919 + c) % 100, static_cast<char>('a' + n % 26));
    out += '\n';
    ++n;
  }
  return out;
}

uint64_t cursorAcked(const fs::path& cursor) {
  const std::string text = readFile(cursor);
  const size_t at = text.find("\nacked ");
  return at == std::string::npos ? 0 : std::stoull(text.substr(at + 7));
}

void storm(const StormSize& size) {
  TempDir dir;
  // A Unix-socket upstream: there, acknowledged means read by the upstream process (sent minus
  // SIOCOUTQ), so stopping it loses nothing acknowledged, and what it had not read is counted
  // (unreadAtStop). A TCP upstream's kernel acknowledges what sits unread in its receive buffer:
  // an upstream process killed with such bytes loses them, by the contract (delivered = the
  // upstream's kernel acknowledged it), so the storm could not check that everything arrived.
  UnixSink sink((dir / "up.sock").string());
  sink.throttle(1ms);  // shipping lags the clients a little: the faults land mid-shipping
  sink.start();
  std::string cfg = config(dir, sink.address(), "", "      checkpoint_interval: 100ms\n");
  // Each run's chain has its own names ({pid}), so that `spliced cat` puts the runs in order.
  cfg.replace(cfg.find("{route}-{seq}"), 13, "{route}-{pid}-{seq}");
  cfg.replace(cfg.find("max_bytes: 256KiB"), 17, "max_bytes: 4MiB");
  const fs::path cursor = dir / "archive/.spliced/ship/shared.cursor";

  auto daemon = std::make_unique<Daemon>(dir, cfg);
  std::string admin = daemon->waitAdmin();
  std::atomic<uint16_t> port{daemon->port("app")};
  std::atomic<uint64_t> sent{0};
  std::atomic<bool> stop{false};
  std::vector<std::jthread> clients;
  for (size_t c = 0; c < size.clients; ++c) {
    clients.emplace_back([&, c] {
      uint64_t mine = 0, line = 0;
      while (mine < size.per_client && !stop) {
        const uint16_t p = port.load();
        Conn conn = p == 0 ? Conn() : connectTcp(p);
        if (!conn.valid()) {
          std::this_thread::sleep_for(5ms);
          continue;
        }
        while (mine < size.per_client && !stop) {
          // Whole lines: what a kill cuts off was never archived, and the next connection goes
          // on with new lines (every line of the archive is unique).
          const std::string batch = stormLines(c, line, 32u << 10);
          if (conn.sendAll(batch) != 0) break;
          mine += batch.size();
          sent += batch.size();
          std::this_thread::sleep_for(10ms);
        }
        if (mine >= size.per_client) {
          conn.shutdownWrite();
          conn.waitClosed(30s);
        }
      }
    });
  }

  // Resent bytes as each lifetime's /metrics said just before its end. A restarted spliced
  // cannot know what the upstream received after the last cursor save of the process before it
  // (that process was SIGKILLed): it sends those bytes again without counting them as resent.
  // So duplicates at the first connection of each lifetime are checked against their own bound,
  // and the counter against the duplicates of upstream failures only.
  double resent = 0;
  std::vector<size_t> first_of_life;    // index of each new lifetime's first connection
  std::vector<uint64_t> restart_bound;  // what it may send again uncounted
  const int events = size.upstream_restarts + size.kills;
  const uint64_t total = size.clients * size.per_client;
  for (int e = 0; e < events; ++e) {
    INFO("event " << e);
    const uint64_t due = total * static_cast<uint64_t>(e + 1) / static_cast<uint64_t>(events + 1);
    REQUIRE(waitUntil([&] { return sent.load() >= due; }, 120s));
    const bool kill = (e + 1) * size.kills / events > e * size.kills / events;
    if (kill) {
      resent += metric(scrapeMetrics(admin), "spliced_ship_resent_bytes_total");
      port = 0;
      daemon.reset();  // SIGKILL, reaped
      // Its upstream connection ends; the sink has read what it will ever read of it.
      REQUIRE(waitUntil([&] { return !sink.serving(); }, 10s));
      first_of_life.push_back(sink.connections());
      // Read since the last cursor save (the cursor's acked counts only what the sink read),
      // and the start of a line.
      const uint64_t had = sink.received();
      restart_bound.push_back(had - cursorAcked(cursor) + 200);
      daemon = std::make_unique<Daemon>(dir, cfg);
      admin = daemon->waitAdmin();
      port = daemon->port("app");
      // The new process is past what it sends again uncounted before the next event (an
      // upstream failure before that would mix the two kinds of duplicates).
      REQUIRE(waitUntil(
          [&] {
            return sink.received() >= had + restart_bound.back() + (1u << 20) ||
                   metric(scrapeMetrics(admin), "spliced_ship_lag_bytes") == 0;
          },
          60s));
    } else {
      sink.stop();  // its connections close; what they had not read is lost with them
      std::this_thread::sleep_for(200ms);
      const uint64_t had = sink.received();
      sink.start();
      // The bytes sent again are through before the next event (so that a kill does not cut a
      // resend whose count it would lose).
      REQUIRE(waitUntil(
          [&] {
            return sink.received() >= had + (1u << 20) ||
                   metric(scrapeMetrics(admin), "spliced_ship_lag_bytes") == 0;
          },
          60s));
    }
  }
  clients.clear();  // joined: every client sent its share
  sink.throttle(0ms);
  MetricValues m;
  REQUIRE(waitUntil(
      [&] {
        m = scrapeMetrics(admin);
        return metric(m, "spliced_ship_lag_bytes") == 0 &&
               metric(m, "spliced_connections_active") == 0;
      },
      120s, Millis(100)));
  resent += metric(m, "spliced_ship_resent_bytes_total");
  daemon->signal(SIGTERM);
  REQUIRE(daemon->waitExit(30s) == 0);
  const std::string archive = archiveOf(dir);
  INFO("archive " << archive.size() << " of " << total << " sent");
  REQUIRE(archive.size() > total / 2);

  // Every line of the archive and where it starts.
  std::unordered_map<std::string_view, size_t> index;
  size_t longest = 0;
  for (size_t at = 0; at < archive.size();) {
    size_t nl = archive.find('\n', at);
    REQUIRE(nl != std::string::npos);
    REQUIRE(index.emplace(std::string_view(archive).substr(at, nl + 1 - at), at).second);
    longest = std::max(longest, nl + 1 - at);
    at = nl + 1;
  }
  // Each upstream connection carried a run of the archive that starts on a line (its last line
  // may be torn: the connection broke); none starts past what the ones before covered (no gap);
  // where it starts before that, the overlap is duplicated whole lines (and a torn one).
  const std::vector<std::string> streams = sink.streams();
  const size_t next_life_end = first_of_life.size();
  size_t covered = 0, life = 0;
  uint64_t dup_upstream = 0, dup_restart = 0;
  const uint64_t unacked_bound = (4u << 20) + longest;  // a Unix socket's send queue and a line
  for (size_t i = 0; i < streams.size(); ++i) {
    const std::string& s = streams[i];
    INFO("connection " << i << " of " << streams.size() << ", " << s.size() << " bytes");
    const bool restart = life < next_life_end && first_of_life[life] == i;
    if (restart) ++life;
    if (s.empty()) continue;
    size_t start;
    const size_t nl = s.find('\n');
    if (nl != std::string::npos) {
      auto it = index.find(std::string_view(s).substr(0, nl + 1));
      REQUIRE(it != index.end());
      start = it->second;
    } else {
      // A torn line only: it starts on the line that holds the end of what came before, or on
      // one before it.
      start = lineStartOf(archive, std::min(covered, archive.size() - 1));
      while (start > 0 && archive.compare(start, s.size(), s) != 0) {
        start = lineStartOf(archive, start - 1);
      }
    }
    REQUIRE(archive.compare(start, s.size(), s) == 0);
    REQUIRE(start <= covered);
    const uint64_t overlap = std::min(covered, start + s.size()) - start;
    if (restart) {
      CHECK(overlap <= restart_bound[life - 1]);
      dup_restart += overlap;
    } else {
      CHECK(overlap <= unacked_bound);
      dup_upstream += overlap;
    }
    covered = std::max(covered, start + s.size());
  }
  // Everything that reached the archive reached the upstream.
  CHECK(covered == archive.size());
  // Resent bytes are the duplicates of upstream failures, plus what a stopped upstream lost
  // unread (sent again, received once), plus the start of the line that held a restarted
  // process's cursor (sent again and counted by it): within one line per restart.
  const double counted = resent - static_cast<double>(sink.unreadAtStop());
  std::cout << "storm: " << archive.size() << " bytes archived, " << streams.size()
            << " upstream connections, duplicated " << dup_upstream << " after upstream failures ("
            << resent << " counted as resent, " << sink.unreadAtStop()
            << " lost unread by a stopped upstream) and " << dup_restart << " after SIGKILLs\n";
  CHECK(counted >= static_cast<double>(dup_upstream));
  CHECK(counted <= static_cast<double>(dup_upstream + size.kills * longest));
}

}  // namespace

TEST_CASE(
    "ship faults: a storm of upstream restarts and SIGKILLs while 8 clients write: the upstream "
    "gets the archive, duplicates only whole lines within their bounds, counted",
    "[e2e][ship][ship_faults][storm]") {
  // 8 x 64 MiB, 10 upstream restarts, 5 kills under the ctest label `long`.
  const bool full = std::getenv("SPLICED_LONG_TESTS") != nullptr;
  storm(full ? StormSize{8, 64u << 20, 10, 5} : StormSize{8, 4u << 20, 3, 2});
}
