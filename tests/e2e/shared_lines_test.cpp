// End-to-end: layout: shared + framing: lines. Many clients write lines in odd-sized chunks into
// one segment chain; every line must land whole, none lost, none duplicated.
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdio>
#include <map>
#include <thread>

#include "harness.hpp"

using namespace e2e;
using namespace std::chrono_literals;

namespace {

constexpr size_t kLineLen = 100;  // 99 characters + '\n'

// Line `line` of client `client`: "cCC lLLLLLL " then pseudo-random letters and digits, 99
// characters in all, then '\n'. Unique per (client, line).
std::string makeLine(int client, int line) {
  static constexpr char kAlphabet[] =
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  char head[32];
  int n = std::snprintf(head, sizeof head, "c%02d l%06d ", client, line);
  std::string s(head, static_cast<size_t>(n));
  Prng prng(static_cast<uint64_t>(client) * 1000003u + static_cast<uint64_t>(line));
  while (s.size() < kLineLen - 1) s.push_back(kAlphabet[prng.next() % (sizeof kAlphabet - 1)]);
  s.push_back('\n');
  return s;
}

// The lines of `text` without their '\n'; a trailing piece without '\n' is returned too.
std::vector<std::string> splitLines(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    if (nl == std::string::npos) {
      out.push_back(text.substr(start));
      break;
    }
    out.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  return out;
}

// Up to `limit` elements of a that are not in b (both sorted), for a failure message.
std::string sampleDifference(const std::vector<std::string>& a, const std::vector<std::string>& b,
                             size_t limit) {
  std::vector<std::string> diff;
  std::set_difference(a.begin(), a.end(), b.begin(), b.end(), std::back_inserter(diff));
  std::string out = std::to_string(diff.size()) + " line(s)";
  for (size_t i = 0; i < diff.size() && i < limit; ++i) out += "\n  [" + diff[i] + "]";
  return out;
}

}  // namespace

TEST_CASE("shared + lines: 16 clients writing odd-sized chunks, every line lands whole",
          "[e2e][shared][lines]") {
  constexpr int kClients = 16;
  constexpr int kLines = 20000;  // 2 MB per client
  constexpr size_t kMaxBytes = kMiB;
  TempDir dir;
  Daemon daemon(dir, withDir(R"(log: { level: info }
drain_timeout: 5s
routes:
  - name: app
    listen: 127.0.0.1:0
    archive:
      dir: @DIR@/archive
      layout: shared
      framing: lines
      name: "{route}-{seq}.log"
      rotate: { max_bytes: 1MiB }
)",
                             dir));
  const uint16_t port = daemon.port("app");

  // Clients 0..15 send whole lines; client 16 sends 100 lines and then a last line without '\n'.
  const int kPartialClient = kClients;
  const std::string kUnterminated = "c16 the last line has no newline";
  std::vector<std::string> streams(kClients + 1);
  std::vector<std::string> expected;
  for (int c = 0; c < kClients; ++c) {
    for (int l = 0; l < kLines; ++l) streams[c] += makeLine(c, l);
  }
  for (int l = 0; l < 100; ++l) streams[kPartialClient] += makeLine(kPartialClient, l);
  streams[kPartialClient] += kUnterminated;
  for (const auto& s : streams) {
    auto lines = splitLines(s);
    expected.insert(expected.end(), lines.begin(), lines.end());
  }

  std::vector<Conn> conns;
  for (size_t c = 0; c < streams.size(); ++c) {
    conns.push_back(connectTcp(port));
    REQUIRE(conns.back().valid());
  }
  struct Outcome {
    int send_err = -1;
    int closed = -1;
  };
  std::vector<Outcome> outcomes(streams.size());
  {
    std::vector<std::jthread> clients;
    for (size_t c = 0; c < streams.size(); ++c) {
      clients.emplace_back([&, c] {
        // Chunks of 7..4000 bytes: most lines straddle two writes.
        Prng sizes(500 + c);
        const std::string& s = streams[c];
        size_t off = 0;
        int err = 0;
        while (off < s.size() && err == 0) {
          size_t n = std::min<size_t>(sizes.between(7, 4000), s.size() - off);
          err = conns[c].sendAll(s.data() + off, n);
          off += n;
        }
        outcomes[c].send_err = err;
        conns[c].shutdownWrite();
        outcomes[c].closed = conns[c].waitClosed(60s);
      });
    }
  }
  for (size_t c = 0; c < streams.size(); ++c) {
    INFO("client " << c);
    CHECK(outcomes[c].send_err == 0);
    CHECK(outcomes[c].closed == 0);
  }

  // The shared segment stays open while the daemon runs; stopping it closes the chain.
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);

  const fs::path archive = dir / "archive";
  CHECK(openSegments(archive).empty());
  auto segments = closedSegments(archive);
  REQUIRE(!segments.empty());
  std::string all;
  for (size_t i = 0; i < segments.size(); ++i) {
    const std::string name = segments[i].filename().string();
    char want[32];
    std::snprintf(want, sizeof want, "app-%06zu.log", i);
    INFO("segment " << name);
    CHECK(name == want);  // seq order, none missing
    std::string bytes = readFile(segments[i]);
    CHECK(!bytes.empty());
    CHECK(bytes.size() <= kMaxBytes);
    CHECK(bytes.back() == '\n');  // a size rotation never cuts a line
    all += bytes;
  }

  std::vector<std::string> got = splitLines(all);
  // Lines of one client keep their order.
  std::map<int, int> last_line;
  size_t out_of_order = 0;
  for (const auto& line : got) {
    int c = -1, l = -1;
    if (std::sscanf(line.c_str(), "c%d l%d ", &c, &l) != 2) continue;
    auto it = last_line.find(c);
    if (it != last_line.end() && l <= it->second) ++out_of_order;
    last_line[c] = l;
  }
  CHECK(out_of_order == 0);
  // The unterminated last line landed whole, with a '\n' appended.
  CHECK(std::count(got.begin(), got.end(), kUnterminated) == 1);

  std::sort(got.begin(), got.end());
  std::sort(expected.begin(), expected.end());
  INFO("archived " << got.size() << " lines, sent " << expected.size());
  INFO("missing from the archive: " << sampleDifference(expected, got, 5));
  INFO("unexpected in the archive: " << sampleDifference(got, expected, 5));
  CHECK(got == expected);

  auto totals = parseTotals(daemon.log(), "app");
  uint64_t sent = 0;
  for (const auto& s : streams) sent += s.size();
  CHECK(totals["connections"] == streams.size());
  CHECK(totals["bytes_in"] == sent);
  CHECK(totals["archive_bytes"] == sent + 1);  // the appended '\n'
}

namespace {

std::string sharedLinesConfig(const TempDir& dir, const std::string& drain,
                              const std::string& extra_route_keys) {
  return withDir(R"(log: { level: info }
drain_timeout: )" + drain +
                     R"(
routes:
  - name: app
    listen: 127.0.0.1:0
)" + extra_route_keys +
                     R"(    archive:
      dir: @DIR@/archive
      layout: shared
      framing: lines
      name: "{route}-{seq}.log"
)",
                 dir);
}

}  // namespace

// The stream of a connection can also end because the daemon ends it (idle_timeout, the end of
// drain_timeout) or because the client resets it. Its last, unterminated line was received
// (counted in bytes_in) and must be archived like at EOF: whole, with a '\n' appended.
TEST_CASE(
    "shared + lines: an unterminated last line is archived when idle_timeout closes the "
    "connection",
    "[e2e][shared][lines][idle]") {
  TempDir dir;
  Daemon daemon(dir, sharedLinesConfig(dir, "5s", "    idle_timeout: 300ms\n"));
  const uint16_t port = daemon.port("app");
  Conn conn = connectTcp(port);
  REQUIRE(conn.valid());
  REQUIRE(conn.sendAll("first line\nunterminated line") == 0);
  CHECK(conn.waitClosed(5s) == 0);
  REQUIRE(daemon.waitLog("end=idle_timeout", 5s));

  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
  const std::string archived = concatFiles(closedSegments(dir / "archive"));
  const std::string log = daemon.log();
  INFO(log);
  CHECK(archived == "first line\nunterminated line\n");
  auto totals = parseTotals(log, "app");
  CHECK(totals["bytes_in"] == 28);
  CHECK(totals["archive_bytes"] == 29);
}

TEST_CASE(
    "shared + lines: an unterminated last line is archived when drain_timeout ends the "
    "connection",
    "[e2e][shared][lines][shutdown]") {
  TempDir dir;
  Daemon daemon(dir, sharedLinesConfig(dir, "500ms", ""));
  const uint16_t port = daemon.port("app");
  Conn conn = connectTcp(port);
  REQUIRE(conn.valid());
  REQUIRE(conn.sendAll("first line\n") == 0);
  // The first line is in the shared segment: the connection is accepted and read.
  REQUIRE(waitUntil(
      [&] {
        auto open = openSegments(dir / "archive");
        std::error_code ec;
        return open.size() == 1 && fs::file_size(open[0], ec) == 11;
      },
      5s));
  REQUIRE(conn.sendAll("unterminated line") == 0);
  std::this_thread::sleep_for(50ms);

  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
  const std::string archived = concatFiles(closedSegments(dir / "archive"));
  const std::string log = daemon.log();
  INFO(log);
  CHECK(logLines(log, {"close route=app", "end=shutdown"}).size() == 1);
  CHECK(archived == "first line\nunterminated line\n");
  auto totals = parseTotals(log, "app");
  CHECK(totals["bytes_in"] == 28);
  CHECK(totals["archive_bytes"] == 29);
}

TEST_CASE("shared + lines: an unterminated last line is archived when the client resets",
          "[e2e][shared][lines]") {
  TempDir dir;
  Daemon daemon(dir, sharedLinesConfig(dir, "5s", ""));
  const uint16_t port = daemon.port("app");
  Conn conn = connectTcp(port);
  REQUIRE(conn.valid());
  REQUIRE(conn.sendAll("first line\nunterminated line") == 0);
  REQUIRE(waitUntil(
      [&] {
        auto open = openSegments(dir / "archive");
        std::error_code ec;
        return open.size() == 1 && fs::file_size(open[0], ec) == 11;
      },
      5s));
  // Close with SO_LINGER 0: the daemon sees ECONNRESET instead of EOF.
  linger lg{1, 0};
  REQUIRE(::setsockopt(conn.fd(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0);
  conn.close();
  REQUIRE(daemon.waitLog("close route=app", 5s));

  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
  const std::string archived = concatFiles(closedSegments(dir / "archive"));
  const std::string log = daemon.log();
  INFO(log);
  CHECK(archived == "first line\nunterminated line\n");
}
