// The archive's file and durability calls failing at an exact call, through the syscall seam:
// a whole collect route in-process (Server on loopback port 0) for segment opens, parent dirs,
// renames and syncs, and compressSegment directly for each step of its crash-safe sequence. Every
// test checks whole file contents against the payload, and that the faulted call was made.
#include <fcntl.h>
#include <time.h>

#include <catch2/catch.hpp>
#include <chrono>

#include "fixtures.hpp"
#include "server_fixtures.hpp"
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
  std::string text = "drain_timeout: 2s\nroutes:\n  - name: t\n    listen: 127.0.0.1:0\n" +
                     std::string("    archive:\n      dir: ") + dir.string() + "\n      name: \"" +
                     name + "\"\n" + archive_extra;
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

TEST_CASE("renameat2 failing at close leaves NAME.open complete, and recovery publishes it",
          "[archive][faults]") {
  TempDir tmp;
  FaultySysCalls sys;
  sys.fault = failCalls(Call::Renameat2, EIO, 1);
  std::string first = payload(3 << 20, 41), second = payload(200000, 42);
  {
    Server server(collectConfig(tmp.path, "{route}-{conn}-{seq}.log"), sys);
    REQUIRE(server.start().ok());
    const RouteMetrics& m = *server.metrics("t");
    archiveOneConnection(server, first);
    CHECK(sys.calls(Call::Renameat2) == 1);
    auto files = filesIn(tmp.path);
    CHECK(namesIn(tmp.path) == "t-1-000000.log.open(3145728)");
    CHECK(difference(files["t-1-000000.log.open"], first) == "");
    // The route goes on: the next connection's segment is published as usual.
    archiveOneConnection(server, second);
    CHECK(sys.calls(Call::Renameat2) == 2);
    files = filesIn(tmp.path);
    CHECK(namesIn(tmp.path) == "t-1-000000.log.open(3145728) t-2-000000.log(200000)");
    CHECK(difference(files["t-1-000000.log.open"], first) == "");
    CHECK(difference(files["t-2-000000.log"], second) == "");
    CHECK(m.archive_bytes == first.size() + second.size());
    // Only the published segment counts as closed; the failed rename counts as a storage error.
    CHECK(m.archive_segments == 1);
    CHECK(m.storage_errors == 1);
    stopServer(server);
  }
  // The next start: recovery publishes the segment under its own name, byte for byte.
  UniqueFd dir(::open(tmp.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  REQUIRE(dir.valid());
  RecoveryResult rec = recoverArchive(dir.get(), "t", SysCalls::kernel());
  CHECK(rec.errors.empty());
  REQUIRE(rec.finalized.size() == 1);
  CHECK(rec.finalized[0] == "t-1-000000.log");
  CHECK(rec.removed_tmp == 0);
  auto files = filesIn(tmp.path);
  CHECK(namesIn(tmp.path) == "t-1-000000.log(3145728) t-2-000000.log(200000)");
  CHECK(difference(files["t-1-000000.log"], first) == "");
  CHECK(difference(files["t-2-000000.log"], second) == "");
}

// A failed fdatasync at close is logged (error=storage) and counted, and the segment is published
// anyway, complete (holding it back would not make its bytes durable).
TEST_CASE("fdatasync failing at close (fsync: on_close): the segment is still published whole",
          "[archive][faults]") {
  TempDir tmp;
  FaultySysCalls sys;
  sys.fault = failCalls(Call::Fdatasync, EIO, 1);
  Server server(collectConfig(tmp.path, "{route}-{conn}-{seq}.log", "      fsync: on_close\n"),
                sys);
  REQUIRE(server.start().ok());
  const RouteMetrics& m = *server.metrics("t");
  std::string data = payload(1 << 20, 51);
  archiveOneConnection(server, data);
  CHECK(sys.calls(Call::Fdatasync) == 1);
  CHECK(sys.calls(Call::Renameat2) == 1);
  CHECK(sys.calls(Call::Fsync) == 1);  // the directory, after the rename
  CHECK(namesIn(tmp.path) == "t-1-000000.log(1048576)");
  CHECK(difference(filesIn(tmp.path)["t-1-000000.log"], data) == "");
  CHECK(m.archive_segments == 1);
  CHECK(m.archive_bytes == data.size());
  CHECK(m.storage_errors == 1);  // the failed sync is counted
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
  CHECK(sys.calls(Call::Fdatasync) == 1);
  CHECK(sys.calls(Call::Fsync) == 1);
  CHECK(namesIn(tmp.path) == "t-1-000000.log(1048576)");
  CHECK(difference(filesIn(tmp.path)["t-1-000000.log"], first) == "");
  // The route goes on, and the next close syncs normally.
  archiveOneConnection(server, second);
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
