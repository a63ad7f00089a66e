// End-to-end: SIGUSR1 rotates active segments; SIGTERM stops accepting, lets streams finish
// within drain_timeout, then takes what is left and exits 0.
#include <signal.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>
#include <thread>

#include "harness.hpp"

using namespace e2e;
using namespace std::chrono_literals;

namespace {

std::string config(const TempDir& dir, const std::string& drain, const std::string& max_bytes) {
  return withDir(R"(log: { level: info }
drain_timeout: )" + drain +
                     R"(
routes:
  - name: app
    listen: 127.0.0.1:0
    archive:
      dir: @DIR@/archive
      layout: per_connection
      name: "{route}-{conn}-{peer_port}-{seq}.log"
      rotate: { max_bytes: )" +
                     max_bytes + R"( }
)",
                 dir);
}

// True when `dir` holds exactly one .open file and it has `size` bytes.
bool openSegmentHas(const fs::path& dir, uintmax_t size) {
  auto open = openSegments(dir);
  std::error_code ec;
  return open.size() == 1 && fs::file_size(open[0], ec) == size && !ec;
}

}  // namespace

TEST_CASE("SIGUSR1 mid-stream closes the active segment and the chain stays byte-identical",
          "[e2e][signals][rotation]") {
  TempDir dir;
  Daemon daemon(dir, config(dir, "5s", "256MiB"));
  const uint16_t port = daemon.port("app");
  const fs::path archive = dir / "archive";
  const std::string a = randomPayload(1, 3 * kMiB + 1);
  const std::string b = randomPayload(2, 2 * kMiB + 3);
  const std::string c = randomPayload(3, kMiB);

  Conn conn = connectTcp(port);
  REQUIRE(conn.valid());

  REQUIRE(conn.sendAll(a) == 0);
  REQUIRE(waitUntil([&] { return openSegmentHas(archive, a.size()); }, 10s));
  daemon.signal(SIGUSR1);
  REQUIRE(waitUntil([&] { return closedSegments(archive).size() == 1; }, 5s));
  CHECK(openSegments(archive).empty());

  // Nothing is active now: another SIGUSR1 must not produce an empty segment.
  daemon.signal(SIGUSR1);
  // The daemon logs one line per SIGUSR1 it handles: wait for the second one.
  REQUIRE(waitUntil([&] { return logLines(daemon.log(), {"SIGUSR1"}).size() == 2; }, 5s));
  std::this_thread::sleep_for(50ms);
  CHECK(closedSegments(archive).size() == 1);

  REQUIRE(conn.sendAll(b) == 0);
  REQUIRE(waitUntil([&] { return openSegmentHas(archive, b.size()); }, 10s));
  daemon.signal(SIGUSR1);
  REQUIRE(waitUntil([&] { return closedSegments(archive).size() == 2; }, 5s));

  REQUIRE(conn.sendAll(c) == 0);
  conn.shutdownWrite();
  REQUIRE(conn.waitClosed(10s) == 0);

  CHECK(openSegments(archive).empty());
  auto chains = chainsByConn(archive);
  REQUIRE(chains.size() == 1);
  const Chain& chain = chains.begin()->second;
  CHECK(chain.seqsContiguous());
  REQUIRE(chain.segments.size() == 3);
  CHECK(firstDifference(readFile(chain.segments[0].second), a) == "");
  CHECK(firstDifference(readFile(chain.segments[1].second), b) == "");
  CHECK(firstDifference(readFile(chain.segments[2].second), c) == "");
  CHECK(firstDifference(concatFiles(chain.files()), a + b + c) == "");

  daemon.signal(SIGTERM);
  CHECK(daemon.waitExit(10s) == 0);
}

TEST_CASE(
    "SIGTERM or SIGINT: a stream that ends within drain_timeout is archived whole and new "
    "connections are refused",
    "[e2e][signals][shutdown]") {
  const int sig = GENERATE(SIGTERM, SIGINT);
  INFO("signal " << sig);
  TempDir dir;
  Daemon daemon(dir, config(dir, "5s", "1MiB"));
  const uint16_t port = daemon.port("app");
  const fs::path archive = dir / "archive";
  const std::string payload = randomPayload(11, 4 * kMiB + 99);
  const size_t part_a = kMiB + 17;

  Conn conn = connectTcp(port);
  REQUIRE(conn.valid());
  REQUIRE(conn.sendAll(payload.data(), part_a) == 0);
  // The connection is accepted and streaming: 1 MiB is in a closed segment, 17 bytes in the next.
  REQUIRE(waitUntil(
      [&] { return closedSegments(archive).size() == 1 && openSegmentHas(archive, 17); }, 10s));

  daemon.signal(sig);
  REQUIRE(daemon.waitLog("shutting down", 5s));
  int err = 0;
  Conn late = connectTcp(port, &err);
  CHECK_FALSE(late.valid());
  CHECK(err == ECONNREFUSED);

  // The client finishes its stream, in pieces, well within drain_timeout.
  size_t off = part_a;
  while (off < payload.size()) {
    size_t n = std::min<size_t>(128 * kKiB, payload.size() - off);
    REQUIRE(conn.sendAll(payload.data() + off, n) == 0);
    off += n;
    std::this_thread::sleep_for(15ms);
  }
  CHECK(daemon.running());
  conn.shutdownWrite();
  CHECK(conn.waitClosed(10s) == 0);
  REQUIRE(daemon.waitExit(10s) == 0);

  CHECK(openSegments(archive).empty());
  auto chains = chainsByConn(archive);
  REQUIRE(chains.size() == 1);
  const Chain& chain = chains.begin()->second;
  CHECK(chain.seqsContiguous());
  CHECK(firstDifference(concatFiles(chain.files()), payload) == "");
  const std::string log = daemon.log();
  INFO(log);
  CHECK(logLines(log, {"close route=app", "end=eof"}).size() == 1);
  auto totals = parseTotals(log, "app");
  CHECK(totals["connections"] == 1);
  CHECK(totals["bytes_in"] == payload.size());
  CHECK(totals["archive_bytes"] == payload.size());
}

namespace {

// A client streams without end; SIGTERM is sent once it has written 2 MiB (and, with
// `second_signal`, SIGTERM again once the daemon has started draining). The daemon must exit 0
// within `min_exit`..`max_exit` of the first signal, having archived an exact prefix of the
// stream that holds at least everything written before the signal.
void cutEndlessStream(const std::string& drain, bool second_signal, Millis min_exit,
                      Millis max_exit) {
  constexpr uint64_t kSeed = 99;
  TempDir dir;
  Daemon daemon(dir, config(dir, drain, "4MiB"));
  const uint16_t port = daemon.port("app");
  const fs::path archive = dir / "archive";

  Conn conn = connectTcp(port);
  REQUIRE(conn.valid());
  EndlessWriter writer(conn, kSeed);
  REQUIRE(waitUntil([&] { return writer.written() >= 2 * kMiB; }, 10s));
  const uint64_t before = writer.written();
  daemon.signal(SIGTERM);
  const auto signalled = Clock::now();
  if (second_signal) {
    REQUIRE(daemon.waitLog("shutting down", 5s));
    daemon.signal(SIGTERM);
  }
  const int rc = daemon.waitExit(max_exit + 3s);
  const auto took = std::chrono::duration_cast<Millis>(Clock::now() - signalled);
  CHECK(rc == 0);
  CHECK(took >= min_exit);
  CHECK(took < max_exit);

  // The daemon closed the connection: the writer's next sends fail.
  CHECK(waitUntil([&] { return writer.finished(); }, 10s));
  writer.stop();
  CHECK(writer.error() != 0);

  CHECK(openSegments(archive).empty());
  auto chains = chainsByConn(archive);
  REQUIRE(chains.size() == 1);
  const Chain& chain = chains.begin()->second;
  CHECK(chain.seqsContiguous());
  const std::string archived = concatFiles(chain.files());
  INFO("written before SIGTERM " << before << ", written in all " << writer.written()
                                 << ", archived " << archived.size());
  CHECK(archived.size() >= before);
  CHECK(archived.size() <= writer.written());
  CHECK(firstDifference(archived, randomPayload(kSeed, archived.size())) == "");
  const std::string log = daemon.log();
  INFO(log);
  CHECK(logLines(log, {"close route=app", "end=shutdown"}).size() == 1);
  auto totals = parseTotals(log, "app");
  CHECK(totals["archive_bytes"] == archived.size());
  CHECK(totals["bytes_in"] == archived.size());
}

}  // namespace

TEST_CASE(
    "SIGTERM: a client that never stops is cut at drain_timeout and the archive is an exact "
    "prefix of its stream",
    "[e2e][signals][shutdown]") {
  // The stream gets its drain_timeout (1 s), then the daemon exits promptly.
  cutEndlessStream("1s", false, 900ms, 5s);
}

TEST_CASE("a second SIGTERM ends the drain at once and the archive is an exact prefix",
          "[e2e][signals][shutdown]") {
  // drain_timeout is 30 s: only the second signal can explain a quick exit.
  cutEndlessStream("30s", true, 0ms, 3s);
}
