// The archive's file and durability calls failing at an exact call, through the syscall seam:
// a whole collect route in-process (Server on loopback port 0) for segment opens, parent dirs,
// renames and syncs, and compressSegment directly for each step of its crash-safe sequence. Every
// test checks whole file contents against the payload, and that the faulted call was made.
#include <fcntl.h>
#include <time.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <iostream>

#include "fixtures.hpp"
#include "server_fixtures.hpp"
#include "spliced/admin/metrics_catalogue.hpp"
#include "spliced/archive/compressor.hpp"
#include "spliced/archive/recovery.hpp"
#include "spliced/server/server.hpp"

using namespace spliced;
using namespace spliced::testing;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

// One collect route "t" on 127.0.0.1:0 archiving into `dir` with the name template `name`;
// `archive_extra` adds keys to its archive block (indented by six spaces).
ConfigPtr collectConfig(const fs::path& dir, const std::string& name,
                        const std::string& archive_extra = "") {
  std::string text =
      "workers: 1\ndrain_timeout: 2s\nroutes:\n  - name: t\n    listen: 127.0.0.1:0\n" +
      std::string("    archive:\n      dir: ") + dir.string() + "\n      name: \"" + name + "\"\n" +
      archive_extra;
  auto loaded = loadConfigString(text, "test.yaml");
  for (auto& e : loaded.errors) FAIL(e.format());
  return loaded.config;
}

int utcYear() {
  time_t now = ::time(nullptr);
  tm t{};
  ::gmtime_r(&now, &t);
  return t.tm_year + 1900;
}

// Sends `data` on a new connection to route "t", closes it, and runs the loop until the session
// has closed (its segment with it).
void archiveOneConnection(Server& server, const std::string& data) {
  const RouteMetrics& m = *server.metrics("t");
  uint64_t total = m.connections_total;
  UniqueFd client = connectTo(server.boundAddress("t"));
  ThreadGuard t(std::thread([&] {
    sendAll(client.get(), data);
    ::shutdown(client.get(), SHUT_WR);
  }));
  REQUIRE(loopUntil(
      server, [&] { return m.connections_total == total + 1 && m.connections_active == 0; }, 5s));
}

// A storage fault on the way to opening the first segment (`kind` fails while `failing`): the
// client is paused with nothing archived; once the fault clears every byte lands, once, in the
// one segment `expected_rel`. `refused` counts the failed calls.
void pausedThenComplete(Server& server, FaultySysCalls& sys, std::atomic<bool>& failing,
                        std::atomic<int>& refused, Call kind, const fs::path& dir,
                        const std::function<std::string()>& expected_rel) {
  const RouteMetrics& m = *server.metrics("t");
  UniqueFd client = connectTo(server.boundAddress("t"));
  // More than the pipe and both socket buffers hold: the client must be stopped by the server.
  std::string data = payload(16 << 20, 31);
  ThreadGuard t(std::thread([&] {
    sendAll(client.get(), data);
    ::shutdown(client.get(), SHUT_WR);
  }));
  // The first try fails, and the retry 100 ms later too: the session is in its back-off.
  REQUIRE(loopUntil(
      server, [&] { return sys.calls(kind) >= 2; }, 2s));
  uint64_t in = m.bytes_in;
  runFor(server, 150ms);
  CHECK(m.bytes_in == in);  // nothing more is read from the client meanwhile
  CHECK(m.bytes_in > 0);
  CHECK(m.bytes_in < data.size());
  CHECK(m.archive_bytes == 0);
  CHECK(m.storage_errors == static_cast<uint64_t>(refused.load()));
  CHECK(server.status().routes.at(0).stalled == 1);
  CHECK(namesIn(dir) == "");
  failing = false;
  REQUIRE(loopUntil(
      server, [&] { return m.connections_active == 0; }, 5s));
  t.join();
  CHECK(refused >= 2);
  CHECK(sys.calls(kind) == refused + 1);  // the fault made the retries, not something else
  CHECK(m.storage_errors == static_cast<uint64_t>(refused.load()));
  CHECK(server.status().routes.at(0).stalled == 0);
  CHECK(m.bytes_in == data.size());
  CHECK(m.archive_bytes == data.size());
  CHECK(m.archive_segments == 1);
  auto files = filesIn(dir);
  REQUIRE(files.size() == 1);
  CHECK(files.begin()->first == expected_rel());
  CHECK(difference(files.begin()->second, data) == "");
}

}  // namespace

TEST_CASE("openat failing with ENOSPC pauses the client, then every byte lands once it clears",
          "[archive][faults]") {
  TempDir tmp;
  FaultySysCalls sys;
  std::atomic<bool> failing{true};
  std::atomic<int> refused{0};
  sys.fault = [&](Call c, int, size_t&) {
    if (c != Call::Openat || !failing) return 0;
    ++refused;
    errno = ENOSPC;
    return -1;
  };
  Server server(collectConfig(tmp.path, "{route}-{conn}-{seq}.log"), sys);
  REQUIRE(server.start().ok());
  pausedThenComplete(server, sys, failing, refused, Call::Openat, tmp.path,
                     [] { return std::string("t-1-000000.log"); });
  stopServer(server);
}

TEST_CASE("mkdirat failing with EACCES pauses the client, then every byte lands once it clears",
          "[archive][faults]") {
  TempDir tmp;
  FaultySysCalls sys;
  std::atomic<bool> failing{true};
  std::atomic<int> refused{0};
  sys.fault = [&](Call c, int, size_t&) {
    if (c != Call::Mkdirat || !failing) return 0;
    ++refused;
    errno = EACCES;
    return -1;
  };
  Server server(collectConfig(tmp.path, "%Y/{route}-{conn}-{seq}.log"), sys);
  REQUIRE(server.start().ok());
  int year_before = utcYear();
  pausedThenComplete(server, sys, failing, refused, Call::Mkdirat, tmp.path, [&] {
    // The name is expanded when the open succeeds; a new year may have begun meanwhile.
    int year = utcYear();
    if (!fs::exists(tmp.path / std::to_string(year))) year = year_before;
    return std::to_string(year) + "/t-1-000000.log";
  });
  // No segment was opened before its directory existed.
  CHECK(sys.calls(Call::Openat) == 1);
  stopServer(server);
}

namespace {

// Whether the /healthz problems of `server` have a line naming route t that contains `what`.
bool problemSays(const Server& server, const std::string& what) {
  for (const auto& p : server.problems()) {
    if (p.find("route t") != std::string::npos && p.find(what) != std::string::npos) return true;
  }
  return false;
}

// The /metrics line of `family` for route t, e.g. "spliced_archive_unsynced_segments_total 1".
std::string metricLine(const Server& server, const std::string& family) {
  std::string text = renderMetrics(server.status());
  std::string key = family + "{route=\"t\"} ";
  auto at = text.find(key);
  if (at == std::string::npos) return family + " missing";
  auto eol = text.find('\n', at);
  return family + " " + text.substr(at + key.size(), eol - at - key.size());
}

}  // namespace

TEST_CASE("renameat2 failing at close is retried with back-off until the segment is published",
          "[archive][faults]") {
  TempDir tmp;
  FaultySysCalls sys;
  // The first close and its first two retries fail (the dir is briefly not writable).
  sys.fault = failCalls(Call::Renameat2, EIO, 1, 3);
  std::string first = payload(3 << 20, 41), second = payload(200000, 42);
  Server server(collectConfig(tmp.path, "{route}-{conn}-{seq}.log"), sys);
  REQUIRE(server.start().ok());
  const RouteMetrics& m = *server.metrics("t");
  auto t0 = std::chrono::steady_clock::now();
  archiveOneConnection(server, first);
  // The session is over (and freed); its segment is complete but not published yet.
  CHECK(sys.calls(Call::Renameat2) == 1);
  CHECK(namesIn(tmp.path) == "t-1-000000.log.open(3145728)");
  CHECK(m.archive_segments == 0);
  CHECK(problemSays(server, "1 segment"));
  CHECK(metricLine(server, "spliced_archive_unpublished_segments") ==
        "spliced_archive_unpublished_segments 1");
  // The route retries: 100 ms, then 200 ms later (both fail), then 400 ms later it succeeds.
  REQUIRE(loopUntil(
      server, [&] { return filesIn(tmp.path).count("t-1-000000.log") == 1; }, 3s));
  auto took = std::chrono::steady_clock::now() - t0;
  CHECK(sys.calls(Call::Renameat2) == 4);
  CHECK(took >= 600ms);  // backed off: not a busy retry
  auto files = filesIn(tmp.path);
  CHECK(namesIn(tmp.path) == "t-1-000000.log(3145728)");
  CHECK(difference(files["t-1-000000.log"], first) == "");
  CHECK(m.archive_segments == 1);
  CHECK(server.problems().empty());
  CHECK(metricLine(server, "spliced_archive_unpublished_segments") ==
        "spliced_archive_unpublished_segments 0");
  // The route goes on: the next connection's segment is published as usual.
  archiveOneConnection(server, second);
  CHECK(sys.calls(Call::Renameat2) == 5);
  files = filesIn(tmp.path);
  CHECK(namesIn(tmp.path) == "t-1-000000.log(3145728) t-2-000000.log(200000)");
  CHECK(difference(files["t-2-000000.log"], second) == "");
  CHECK(m.archive_bytes == first.size() + second.size());
  CHECK(m.archive_segments == 2);
  CHECK(m.storage_errors == 3);  // every failed rename
  stopServer(server);
  CHECK(namesIn(tmp.path) == "t-1-000000.log(3145728) t-2-000000.log(200000)");
}

TEST_CASE("renameat2 failing until shutdown: a clean stop still leaves no .open segment",
          "[archive][faults]") {
  const bool shared = GENERATE(false, true);
  INFO("layout " << (shared ? "shared" : "per_connection"));
  TempDir tmp;
  FaultySysCalls sys;
  std::atomic<bool> failing{false};
  sys.fault = [&](Call c, int, size_t&) {
    if (c != Call::Renameat2 || !failing) return 0;
    errno = EACCES;
    return -1;
  };
  Server server(shared ? collectConfig(tmp.path, "{route}-{seq}.log", "      layout: shared\n")
                       : collectConfig(tmp.path, "{route}-{conn}-{seq}.log"),
                sys);
  REQUIRE(server.start().ok());
  const RouteMetrics& m = *server.metrics("t");
  std::string data = payload(500000, 43);
  const std::string name = shared ? "t-000000.log" : "t-1-000000.log";
  failing = true;
  archiveOneConnection(server, data);
  server.rotateAll();  // closes the shared chain's segment (per_connection: already closed)
  CHECK(namesIn(tmp.path) == name + ".open(500000)");
  runFor(server, 400ms);  // retries, all failing
  CHECK(sys.calls(Call::Renameat2) >= 3);
  CHECK(namesIn(tmp.path) == name + ".open(500000)");
  CHECK(problemSays(server, "1 segment"));
  // The dir is writable again; the stop publishes it at once, without waiting for a retry.
  failing = false;
  server.beginShutdown();
  auto files = filesIn(tmp.path);
  CHECK(namesIn(tmp.path) == name + "(500000)");
  CHECK(difference(files[name], data) == "");
  CHECK(m.archive_segments == 1);
  runFor(server, 50ms);
}

// A failed fdatasync at close ("fsyncgate": the kernel may have dropped the dirty pages) is never
// hidden: the segment is published as NAME.unsynced, counted, reported in /healthz until a later
// close syncs, and never compressed (it stays as written, for the operator to check).
TEST_CASE("fdatasync failing at close (fsync: on_close): published as NAME.unsynced and reported",
          "[archive][faults]") {
  TempDir tmp;
  FaultySysCalls sys;
  sys.fault = failCalls(Call::Fdatasync, EIO, 1);
  Server server(collectConfig(tmp.path, "{route}-{conn}-{seq}.log",
                              "      fsync: on_close\n      compress: zstd\n"),
                sys);
  REQUIRE(server.start().ok());
  const RouteMetrics& m = *server.metrics("t");
  std::string data = payload(1 << 20, 51), second = payload(300000, 54);
  archiveOneConnection(server, data);
  // The close worker syncs and publishes it; the outcome comes back to the loop.
  REQUIRE(loopUntil(
      server, [&] { return m.archive_segments == 1; }, 5s));
  CHECK(sys.calls(Call::Fdatasync) == 1);
  CHECK(sys.calls(Call::Renameat2) == 1);
  CHECK(namesIn(tmp.path) == "t-1-000000.log.unsynced(1048576)");
  CHECK(difference(filesIn(tmp.path)["t-1-000000.log.unsynced"], data) == "");
  CHECK(m.archive_segments == 1);
  CHECK(m.archive_bytes == data.size());
  CHECK(m.storage_errors == 1);  // the failed sync is counted
  CHECK(metricLine(server, "spliced_archive_unsynced_segments_total") ==
        "spliced_archive_unsynced_segments_total 1");
  CHECK(problemSays(server, "t-1-000000.log.unsynced"));
  // The next close syncs: published and compressed as usual, and /healthz is clear again.
  archiveOneConnection(server, second);
  REQUIRE(loopUntil(
      server,
      [&] {
        // Compressed, and the plain file removed after it.
        auto f = filesIn(tmp.path);
        return f.count("t-2-000000.log.zst") == 1 && f.count("t-2-000000.log") == 0;
      },
      5s));
  // The two closes and the compression of t-2 (its .zst.tmp); none for t-1.
  CHECK(sys.calls(Call::Fdatasync) == 3);
  auto files = filesIn(tmp.path);
  CHECK(files.count("t-1-000000.log.unsynced") == 1);  // not compressed
  CHECK(difference(files["t-1-000000.log.unsynced"], data) == "");
  CHECK(files.size() == 2);
  CHECK(server.problems().empty());
  CHECK(metricLine(server, "spliced_archive_unsynced_segments_total") ==
        "spliced_archive_unsynced_segments_total 1");
  stopServer(server);
  // Recovery leaves it alone: it is not an active segment.
  UniqueFd dir(::open(tmp.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  RecoveryResult rec = recoverArchive(dir.get(), "t", SysCalls::kernel());
  CHECK(rec.finalized.empty());
  CHECK(filesIn(tmp.path).count("t-1-000000.log.unsynced") == 1);
}

// The longest time the loop went without running a 5 ms timer: how long the loop stalled.
class LoopStallMeter {
 public:
  explicit LoopStallMeter(event_base* base)
      : ev_(event_new(base, -1, EV_PERSIST, &LoopStallMeter::onTick, this)) {
    addEvent(ev_.get(), 5ms);
  }
  std::chrono::milliseconds worst() const {
    return std::chrono::duration_cast<std::chrono::milliseconds>(worst_);
  }

 private:
  static void onTick(evutil_socket_t, short, void* arg) {
    auto* self = static_cast<LoopStallMeter*>(arg);
    auto now = std::chrono::steady_clock::now();
    if (self->last_ != std::chrono::steady_clock::time_point{}) {
      self->worst_ = std::max(self->worst_, now - self->last_);
    }
    self->last_ = now;
  }
  EventPtr ev_;
  std::chrono::steady_clock::time_point last_{};
  std::chrono::steady_clock::duration worst_{};
};

// Issue 12, item 8: with fsync: on_close the close of a segment (fdatasync, rename, fsync of the
// directory) ran on the event loop: a slow disk stalled every connection of the process. The close
// worker does it now; a clean stop still waits for it, so no NAME.open is left.
TEST_CASE(
    "a slow fdatasync at close (fsync: on_close) stalls no other session - a stop waits for it",
    "[archive][faults]") {
  const bool shared = GENERATE(false, true);
  INFO("layout " << (shared ? "shared" : "per_connection"));
  constexpr auto kSlowSync = 400ms;
  TempDir tmp;
  FaultySysCalls sys;
  std::atomic<int> syncing{0};
  sys.fault = [&](Call c, int, size_t&) {
    if (c == Call::Fdatasync) {
      ++syncing;
      std::this_thread::sleep_for(kSlowSync);
      --syncing;
    }
    return 0;
  };
  Server server(
      shared ? collectConfig(tmp.path, "{route}-{seq}.log",
                             "      fsync: on_close\n      layout: shared\n")
             : collectConfig(tmp.path, "{route}-{conn}-{seq}.log", "      fsync: on_close\n"),
      sys);
  REQUIRE(server.start().ok());
  const RouteMetrics& m = *server.metrics("t");
  LoopStallMeter meter(server.base());
  // Another client streams all along, in small pieces.
  UniqueFd b = connectTo(server.boundAddress("t"));
  std::string data_a = payload(1 << 20, 61), data_b;
  std::atomic<bool> stop_b{false};
  ThreadGuard tb(std::thread([&] {
    // Never blocks: a failed check on the test thread must not leave it stuck in send().
    for (int i = 0; !stop_b; ++i) {
      std::string piece = payload(1000, 100 + static_cast<uint64_t>(i));
      ssize_t n = ::send(b.get(), piece.data(), piece.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n > 0) data_b += piece.substr(0, static_cast<size_t>(n));
      std::this_thread::sleep_for(5ms);
    }
  }));
  struct Stop {
    std::atomic<bool>& flag;
    ~Stop() { flag = true; }
  } stop_on_exit{stop_b};
  {
    // Client a sends its bytes and leaves; b stays.
    UniqueFd a = connectTo(server.boundAddress("t"));
    ThreadGuard ta(std::thread([&] {
      sendAll(a.get(), data_a);
      ::shutdown(a.get(), SHUT_WR);
    }));
    REQUIRE(loopUntil(
        server, [&] { return m.connections_total == 2 && m.connections_active == 1; }, 5s));
  }
  if (shared) server.rotateAll();  // the shared chain's segment closes now
  // While its fdatasync sleeps on the worker, the loop goes on moving the other client's bytes.
  const bool overlapped = loopUntil(
      server, [&] { return syncing > 0; }, 1s);
  uint64_t before = m.archive_bytes;
  runFor(server, 200ms);
  const int still_syncing = syncing;
  const bool moved = m.archive_bytes > before;
  REQUIRE(loopUntil(
      server, [&] { return m.archive_segments == 1; }, 5s));
  std::cout << "layout " << (shared ? "shared" : "per_connection") << ": longest loop stall "
            << "during a " << kSlowSync.count()
            << " ms fdatasync at close: " << meter.worst().count() << " ms\n";
  CHECK(overlapped);
  CHECK(still_syncing > 0);
  CHECK(moved);
  CHECK(meter.worst() < 100ms);
  // A clean stop: the last close's slow sync is waited for, and nothing is left as NAME.open.
  stop_b = true;
  tb.join();
  ::shutdown(b.get(), SHUT_WR);
  server.beginShutdown();
  REQUIRE(loopUntil(
      server, [&] { return m.connections_active == 0; }, 5s));
  runFor(server, 50ms);
  CHECK(m.archive_segments == 2);
  CHECK(sys.calls(Call::Fdatasync) == 2);
  auto files = filesIn(tmp.path);
  INFO("files: " << namesIn(tmp.path));
  REQUIRE(files.size() == 2);
  std::string all;
  for (const auto& [name, content] : files) {
    CHECK(name.find(".open") == std::string::npos);
    all += content;
  }
  // Both clients' bytes, whole (per_connection: one segment each; shared: in arrival order).
  CHECK(all.size() == data_a.size() + data_b.size());
  if (!shared) {
    CHECK(difference(files["t-1-000000.log"], data_b) == "");  // b connected first
    CHECK(difference(files["t-2-000000.log"], data_a) == "");
  }
}

// framing: lines on a shared chain: a long line half written when the disk fills must not be cut
// by a rotation (SIGUSR1 / interval) asked for meanwhile; the rotation waits for the line.
TEST_CASE("a rotation during a half-written line waits until the line is complete",
          "[archive][faults]") {
  TempDir tmp;
  FaultySysCalls sys;
  std::string long_line(300001, 'L');
  long_line.back() = '\n';
  // The first pwrite of the long line is short (half of it), and the following ones fail with
  // ENOSPC while `failing`.
  std::atomic<int> state{0};  // 0: waiting for the long line, 1: cut, 2: failing, 3: cleared
  std::atomic<int> refused{0};
  sys.hook = [&](Call c, size_t& len) {
    if (c != Call::Pwrite) return 0;
    if (state == 0 && len >= long_line.size()) {
      len = len / 2;
      state = 2;
      return 0;
    }
    if (state == 2) {
      ++refused;
      errno = ENOSPC;
      return -1;
    }
    return 0;
  };
  Server server(
      collectConfig(tmp.path, "{route}-{seq}.log", "      layout: shared\n      framing: lines\n"),
      sys);
  REQUIRE(server.start().ok());
  const RouteMetrics& m = *server.metrics("t");
  UniqueFd a = connectTo(server.boundAddress("t"));
  sendAll(a.get(), "a1\n" + long_line);
  REQUIRE(loopUntil(
      server, [&] { return refused >= 1; }, 3s));
  // Another client's line meanwhile, and a rotation (SIGUSR1) while the long line is half out.
  UniqueFd b = connectTo(server.boundAddress("t"));
  sendAll(b.get(), "b1\n");
  runFor(server, 50ms);
  server.rotateAll();
  runFor(server, 50ms);
  // Storage recovers; both clients finish.
  state = 3;
  sendAll(a.get(), "a2\n");
  ::shutdown(a.get(), SHUT_WR);
  ::shutdown(b.get(), SHUT_WR);
  REQUIRE(loopUntil(
      server, [&] { return m.connections_total == 2 && m.connections_active == 0; }, 5s));
  server.rotateAll();
  auto files = filesIn(tmp.path);
  INFO("files: " << namesIn(tmp.path));
  std::string all;
  bool whole = false;
  for (const auto& [name, content] : files) {
    CHECK((content.empty() || content.back() == '\n'));  // every segment ends with a whole line
    if (content.find(long_line) != std::string::npos) whole = true;
    all += content;
  }
  CHECK(whole);  // the long line is in one segment
  CHECK(all.size() == 3 + long_line.size() + 3 + 3);
  CHECK(all.find("b1\n") != std::string::npos);
  CHECK(all.find("a2\n") != std::string::npos);
  CHECK(files.size() == 2);  // the rotation came after the long line: two segments
  stopServer(server);
}

TEST_CASE("fsync of the directory failing at close (fsync: on_close) loses no segment",
          "[archive][faults]") {
  TempDir tmp;
  FaultySysCalls sys;
  sys.fault = failCalls(Call::Fsync, EIO, 1);
  Server server(collectConfig(tmp.path, "{route}-{conn}-{seq}.log", "      fsync: on_close\n"),
                sys);
  REQUIRE(server.start().ok());
  const RouteMetrics& m = *server.metrics("t");
  std::string first = payload(1 << 20, 52), second = payload(70000, 53);
  archiveOneConnection(server, first);
  REQUIRE(loopUntil(
      server, [&] { return m.archive_segments == 1; }, 5s));
  CHECK(sys.calls(Call::Fdatasync) == 1);
  CHECK(sys.calls(Call::Fsync) == 1);
  CHECK(namesIn(tmp.path) == "t-1-000000.log(1048576)");
  CHECK(difference(filesIn(tmp.path)["t-1-000000.log"], first) == "");
  // The route goes on, and the next close syncs normally.
  archiveOneConnection(server, second);
  REQUIRE(loopUntil(
      server, [&] { return m.archive_segments == 2; }, 5s));
  CHECK(sys.calls(Call::Fsync) == 2);
  auto files = filesIn(tmp.path);
  CHECK(namesIn(tmp.path) == "t-1-000000.log(1048576) t-2-000000.log(70000)");
  CHECK(difference(files["t-1-000000.log"], first) == "");
  CHECK(difference(files["t-2-000000.log"], second) == "");
  CHECK(m.archive_segments == 2);
  CHECK(m.storage_errors == 1);  // the failed directory sync is counted
  stopServer(server);
}

// compressSegment, one failing step at a time. The contract (compressor.hpp): an error before
// the rename removes the tmp file and leaves the plain file untouched; an error after it leaves
// both files with out_path set, and calling again finishes the job.
TEST_CASE("compressSegment: a failing step never loses the segment", "[archive][faults]") {
  const Compress algo = GENERATE(Compress::Zstd, Compress::Gzip);
  const std::string ext = algo == Compress::Zstd ? ".zst" : ".gz";
  TempDir tmp;
  UniqueFd dir(::open(tmp.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  REQUIRE(dir.valid());
  fs::create_directories(tmp.path / "d");
  const std::string rel = "d/seg.log";
  const std::string data = payload(1 << 20, 61) + std::string(1 << 20, 'x');  // some compresses
  {
    std::ofstream out(tmp.path / rel, std::ios::binary);
    out << data;
  }
  const std::string plain_only = "d/seg.log(" + std::to_string(data.size()) + ")";
  FaultySysCalls sys;
  std::string back;

  SECTION("fdatasync of the tmp file fails: error, plain file intact, no tmp left") {
    sys.fault = failCalls(Call::Fdatasync, EIO, 1);
    CompressResult r = compressSegment(dir.get(), rel, algo, 0, true, sys);
    CHECK(r.err == EIO);
    CHECK(r.out_path.empty());
    CHECK(sys.calls(Call::Fdatasync) == 1);
    CHECK(sys.calls(Call::Renameat2) == 0);  // stopped before step 3
    CHECK(namesIn(tmp.path) == plain_only);
    CHECK(difference(filesIn(tmp.path)[rel], data) == "");
  }

  SECTION("renameat2 of the tmp file fails with EIO: error, plain file intact, no tmp left") {
    sys.fault = failCalls(Call::Renameat2, EIO, 1);
    CompressResult r = compressSegment(dir.get(), rel, algo, 0, true, sys);
    CHECK(r.err == EIO);
    CHECK(r.out_path.empty());
    CHECK(sys.calls(Call::Fdatasync) == 1);
    CHECK(sys.calls(Call::Renameat2) == 1);
    CHECK(sys.calls(Call::Fsync) == 0);
    CHECK(namesIn(tmp.path) == plain_only);
    CHECK(difference(filesIn(tmp.path)[rel], data) == "");
  }

  SECTION("fsync of the directory fails: error with out_path, both kept; a second call finishes") {
    sys.fault = failCalls(Call::Fsync, EIO, 1);
    CompressResult r = compressSegment(dir.get(), rel, algo, 0, true, sys);
    CHECK(r.err == EIO);
    CHECK(r.out_path == rel + ext);
    CHECK(sys.calls(Call::Fsync) == 1);
    auto files = filesIn(tmp.path);
    REQUIRE(files.size() == 2);
    CHECK(files.count(rel + ext) == 1);
    CHECK(difference(files[rel], data) == "");
    REQUIRE(decompressFile(dir.get(), rel + ext, back, 64 << 20));
    CHECK(difference(back, data) == "");

    CompressResult again = compressSegment(dir.get(), rel, algo, 0, true, SysCalls::kernel());
    CHECK(again.err == 0);
    CHECK(again.message == "");
    CHECK(again.out_path == rel + ext);
    files = filesIn(tmp.path);
    REQUIRE(files.size() == 1);
    CHECK(files.begin()->first == rel + ext);
    REQUIRE(decompressFile(dir.get(), rel + ext, back, 64 << 20));
    CHECK(difference(back, data) == "");
  }

  SECTION("unlinkat of the plain file fails: error with out_path, both kept; again finishes") {
    // Call 1 removes a stale tmp file (there is none), call 2 is the plain file.
    sys.fault = failCalls(Call::Unlinkat, EIO, 2);
    CompressResult r = compressSegment(dir.get(), rel, algo, 0, false, sys);
    CHECK(r.err == EIO);
    CHECK(r.out_path == rel + ext);
    CHECK(sys.calls(Call::Unlinkat) == 2);
    auto files = filesIn(tmp.path);
    REQUIRE(files.size() == 2);
    CHECK(difference(files[rel], data) == "");
    REQUIRE(decompressFile(dir.get(), rel + ext, back, 64 << 20));
    CHECK(difference(back, data) == "");

    CompressResult again = compressSegment(dir.get(), rel, algo, 0, false, SysCalls::kernel());
    CHECK(again.err == 0);
    CHECK(again.out_path == rel + ext);
    CHECK(namesIn(tmp.path) == rel + ext + "(" + std::to_string(files[rel + ext].size()) + ")");
    REQUIRE(decompressFile(dir.get(), rel + ext, back, 64 << 20));
    CHECK(difference(back, data) == "");
  }
}
