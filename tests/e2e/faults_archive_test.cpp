// The faults group (archive): scenarios of the fault campaign, each against the real binary. Each
// test failed before its fix.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>
#include <thread>

#include "harness.hpp"
#include "upstreams.hpp"

using namespace e2e;
using namespace std::chrono_literals;

namespace {

// FNV-1a, 64 bits: a stream's fingerprint for a failure message and a cheap comparison.
uint64_t fnv1a(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

// The awk program that joins cut lines, as docs/OPERATIONS.md ("Long lines") prints it: the text
// between "LC_ALL=C awk '" and the next "'". Empty when the document has none.
std::string documentedJoinProgram() {
  const fs::path doc =
      fs::path(__FILE__).parent_path().parent_path().parent_path() / "docs" / "OPERATIONS.md";
  const std::string text = readFile(doc);
  const std::string open = "LC_ALL=C awk '";
  size_t start = text.find(open);
  if (start == std::string::npos) return "";
  start += open.size();
  size_t end = text.find('\'', start);
  return end == std::string::npos ? "" : text.substr(start, end - start);
}

// The awk implementations on PATH ("awk" itself, and mawk, gawk, busybox awk when present).
std::vector<std::string> awks() {
  std::vector<std::string> out = {"awk"};
  for (const char* name : {"mawk", "gawk", "busybox"}) {
    std::string probe = std::string("command -v ") + name + " >/dev/null 2>&1";
    if (std::system(probe.c_str()) == 0) {
      out.push_back(std::string(name) == "busybox" ? "busybox awk" : name);
    }
  }
  return out;
}

// /healthz of `admin`: its status and body.
std::string healthz(const std::string& admin, int* status) {
  HttpResponse r = httpGet(admin, "/healthz");
  *status = r.status;
  return r.body;
}

double routeMetric(const std::string& admin, const std::string& name, const std::string& route) {
  MetricValues m = scrapeMetrics(admin);
  auto it = m.find(name + "{route=\"" + route + "\"}");
  return it == m.end() ? -1 : it->second;
}

// Creates `n` empty closed segments seg-NNNNNN.log in `dir` (one openat + close each: about a
// second for 100,000).
void makeEmptySegments(const fs::path& dir, size_t n) {
  fs::create_directories(dir);
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  REQUIRE(dfd >= 0);
  size_t failed = 0;
  for (size_t i = 0; i < n; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "seg-%06zu.log", i);
    int fd = ::openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
    if (fd < 0) ++failed;
    ::close(fd);
  }
  ::close(dfd);
  REQUIRE(failed == 0);
}

Millis since(Clock::time_point t0) { return std::chrono::duration_cast<Millis>(Clock::now() - t0); }

}  // namespace

// framing: lines with max_line: 128KiB archived lines of up to 192 KiB: only a line whose tail
// arrived without its '\n' was cut, and the pieces of a cut line carried nothing to join them by.
TEST_CASE("faults: max_line is a hard limit and cut lines join back by their marker",
          "[e2e][faults][lines]") {
  constexpr size_t kMaxLine = 128 * kKiB;
  constexpr int kClients = 6;
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
      max_line: 128KiB
)",
                             dir));
  const uint16_t port = daemon.port("app");

  // Each client: short lines and long ones (up to 192 KiB; also max_line - 1, max_line and
  // max_line + 1 bytes with the '\n'), every line tagged "cN " with its client. Client 0 ends
  // with a long line without '\n'.
  static constexpr char kAlphabet[] =
      "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ";
  std::vector<std::string> streams(kClients);
  for (int c = 0; c < kClients; ++c) {
    Prng prng(7000 + static_cast<uint64_t>(c));
    // Built piece by piece: GCC 12 at -O3 misjudges `"c" + std::to_string(c)` (a false
    // -Wstringop-overflow).
    std::string tag = "c";
    tag += std::to_string(c);
    tag += ' ';
    std::vector<size_t> lengths = {kMaxLine - 1, kMaxLine, kMaxLine + 1, 192 * kKiB};
    for (int i = 0; i < 24; ++i) lengths.push_back(prng.between(kMaxLine / 2, 192 * kKiB));
    for (int i = 0; i < 200; ++i) lengths.push_back(prng.between(tag.size() + 1, 300));
    for (size_t i = lengths.size() - 1; i > 0; --i)
      std::swap(lengths[i], lengths[prng.next() % (i + 1)]);
    for (size_t len : lengths) {  // `len` counts the '\n'
      std::string line = tag;
      while (line.size() < len - 1) line.push_back(kAlphabet[prng.next() % (sizeof kAlphabet - 1)]);
      streams[c] += line + "\n";
    }
  }
  streams[0] += "c0 unterminated " + std::string(150 * kKiB, 'u');

  std::vector<Conn> conns;
  for (int c = 0; c < kClients; ++c) {
    conns.push_back(connectTcp(port));
    REQUIRE(conns.back().valid());
  }
  std::vector<int> send_err(kClients, -1), closed(kClients, -1);
  {
    std::vector<std::jthread> clients;
    for (int c = 0; c < kClients; ++c) {
      clients.emplace_back([&, c] {
        Prng sizes(900 + static_cast<uint64_t>(c));
        const std::string& s = streams[c];
        size_t off = 0;
        int err = 0;
        while (off < s.size() && err == 0) {
          size_t n = std::min<size_t>(sizes.between(1, 96 * kKiB), s.size() - off);
          err = conns[c].sendAll(s.data() + off, n);
          off += n;
        }
        send_err[c] = err;
        conns[c].shutdownWrite();
        closed[c] = conns[c].waitClosed(60s);
      });
    }
  }
  for (int c = 0; c < kClients; ++c) {
    INFO("client " << c);
    CHECK(send_err[c] == 0);
    CHECK(closed[c] == 0);
  }
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);

  const fs::path archive = dir / "archive";
  CHECK(openSegments(archive).empty());
  const std::vector<fs::path> segments = closedSegments(archive);  // {seq} order
  REQUIRE(segments.size() > 1);

  // The limit: no archived line is longer than max_line, its '\n' counted.
  size_t longest = 0, over = 0, pieces = 0;
  for (const fs::path& seg : segments) {
    const std::string bytes = readFile(seg);
    size_t start = 0;
    while (start < bytes.size()) {
      size_t nl = bytes.find('\n', start);
      size_t end = nl == std::string::npos ? bytes.size() : nl + 1;
      longest = std::max(longest, end - start);
      if (end - start > kMaxLine) ++over;
      if (bytes.compare(start, 2,
                        "\x1e"
                        "c") == 0)
        ++pieces;
      start = end;
    }
  }
  INFO("longest archived line: " << longest << " bytes; " << over << " over max_line");
  CHECK(over == 0);
  CHECK(pieces > 0);

  // Joined by the documented awk program, every client's stream comes back byte for byte.
  const std::string program = documentedJoinProgram();
  REQUIRE(!program.empty());
  writeFile(dir / "join.awk", program);
  std::string files;
  for (const fs::path& seg : segments) files += " '" + seg.string() + "'";
  for (const std::string& awk : awks()) {
    INFO("joined with " << awk);
    const fs::path out = dir / "joined.log";
    const std::string cmd = "LC_ALL=C " + awk + " -f '" + (dir / "join.awk").string() + "'" +
                            files + " > '" + out.string() + "'";
    REQUIRE(std::system(cmd.c_str()) == 0);
    const std::string joined = readFile(out);
    std::vector<std::string> got(kClients);
    size_t untagged = 0, start = 0;
    while (start < joined.size()) {
      size_t nl = joined.find('\n', start);
      REQUIRE(nl != std::string::npos);
      int c = -1;
      if (joined[start] == 'c' && std::sscanf(joined.c_str() + start + 1, "%d ", &c) == 1 &&
          c >= 0 && c < kClients) {
        got[c].append(joined, start, nl + 1 - start);
      } else {
        ++untagged;
      }
      start = nl + 1;
    }
    CHECK(untagged == 0);
    for (int c = 0; c < kClients; ++c) {
      INFO("client " << c);
      std::string want = streams[c];
      if (want.back() != '\n') want += '\n';  // the unterminated last line gets one
      INFO(firstDifference(got[c], want));
      CHECK(fnv1a(got[c]) == fnv1a(want));
    }
  }
}

// Issue 12: the archive dir is removed (rm -rf) while a client streams. spliced keeps the old dir
// fd: before the fix it went on writing into the removed dir and never used the new one.
TEST_CASE("faults: a removed archive dir pauses its clients and is reopened when recreated",
          "[e2e][faults]") {
  TempDir dir;
  const fs::path archive = dir / "archive";
  Daemon daemon(dir, withDir(R"(log: { level: info }
drain_timeout: 5s
admin: { listen: 127.0.0.1:0 }
routes:
  - name: app
    listen: 127.0.0.1:0
    archive:
      dir: @DIR@/archive
      name: "{route}-{conn}-{seq}.log"
)",
                             dir));
  const std::string admin = daemon.waitAdmin();
  Conn conn = connectTcp(daemon.port("app"));
  REQUIRE(conn.valid());

  // Part 1 reaches its segment; then the dir and that segment are removed.
  const std::string part1 = randomPayload(121, 300 * kKiB);
  REQUIRE(conn.sendAll(part1) == 0);
  REQUIRE(waitUntil(
      [&] {
        auto open = openSegments(archive);
        std::error_code ec;
        return open.size() == 1 && fs::file_size(open[0], ec) == part1.size();
      },
      5s));
  fs::remove_all(archive);
  int status = 0;
  std::string body;
  REQUIRE(waitUntil(
      [&] {
        body = healthz(admin, &status);
        return status == 503 && body.find(archive.string()) != std::string::npos &&
               body.find("removed") != std::string::npos;
      },
      5s));
  CHECK(daemon.waitLog("archive dir " + archive.string() + " was removed", 5s));

  // Part 2 is sent while the dir is gone: held, the client paused, nothing written anywhere.
  const std::string part2 = randomPayload(122, 200 * kKiB);
  const std::string part3 = randomPayload(123, 700 * kKiB);
  std::thread sender([&] { conn.sendAll(part2); });
  CHECK(waitUntil(
      [&] { return routeMetric(admin, "spliced_archive_stalled_connections", "app") == 1; }, 5s));
  CHECK(!fs::exists(archive));

  // The operator recreates the dir: spliced reopens it and the held bytes flow into it.
  fs::create_directory(archive);
  CHECK(daemon.waitLog("archive dir " + archive.string() + " is back; reopened", 5s));
  CHECK(waitUntil([&] { return healthz(admin, &status).empty() || status == 200; }, 5s));
  CHECK(status == 200);
  sender.join();
  REQUIRE(conn.sendAll(part3) == 0);
  conn.shutdownWrite();
  CHECK(conn.waitClosed(20s) == 0);
  CHECK(waitUntil([&] { return openSegments(archive).empty(); }, 5s));

  // Everything sent after the removal was noticed is in the new dir, once, in order.
  const std::string got = concatFiles(closedSegments(archive));
  CHECK(firstDifference(got, part2 + part3) == "");
  CHECK(fs::exists(archive / ".spliced.lock"));
  // The segment that was open went with the removed dir, and the log says how much of it.
  CHECK(!logLines(daemon.log(), {"307200 bytes", "went with the removed archive dir"}).empty());
  CHECK(routeMetric(admin, "spliced_archive_stalled_connections", "app") == 0);
  daemon.signal(SIGTERM);
  CHECK(daemon.waitExit(10s) == 0);
}

// Issue 12, item 8: the listing walked the archive dir on the event loop (100,000 segments: a
// proxied 64-byte round trip on the same loop waited about 600 ms, /healthz as long). It runs on
// the admin's listing thread now, one page at a time.
TEST_CASE("faults: listing 100,000 segments stalls neither a proxied round trip nor /healthz",
          "[e2e][faults][archive]") {
  constexpr size_t kSegments = 100000;
  constexpr Millis kBound{100};
  TempDir dir;
  auto start = Clock::now();
  makeEmptySegments(dir / "archive-app", kSegments);
  std::cout << "created " << kSegments << " segments in " << since(start).count() << " ms\n";
  auto upstream = TestUpstream::echo();
  Daemon daemon(dir, withDir("log: { level: info }\nadmin: { listen: 127.0.0.1:0 }\nroutes:\n"
                             "  - name: app\n    listen: 127.0.0.1:0\n    archive:\n"
                             "      dir: @DIR@/archive-app\n"
                             "  - name: px\n    listen: 127.0.0.1:0\n    forward:\n"
                             "      upstreams: [\"" +
                                 upstream->address() + "\"]\n",
                             dir));
  const std::string admin = daemon.waitAdmin();
  const uint16_t px = daemon.port("px");
  Conn c = connectTcp(px);
  REQUIRE(c.valid());
  const std::string msg = randomPayload(64, 7);
  REQUIRE(echoOnce(c, msg) == "");

  // Three listings one after the other in a thread; meanwhile this thread measures round trips
  // through the proxy route and /healthz, all served by the same event loop.
  std::atomic<bool> done{false};
  std::vector<HttpResponse> listings;
  Millis listing_time{0};
  std::thread lister([&] {
    auto t0 = Clock::now();
    for (int i = 0; i < 3; ++i) listings.push_back(httpGet(admin, "/archive/app/"));
    listing_time = since(t0);
    done = true;
  });
  Millis worst_echo{0}, worst_health{0};
  size_t rounds = 0;
  std::string echo_error;
  int health_status = 200;
  while (!done) {
    auto t0 = Clock::now();
    std::string e = echoOnce(c, msg);
    if (!e.empty() && echo_error.empty()) echo_error = e;
    worst_echo = std::max(worst_echo, since(t0));
    t0 = Clock::now();
    HttpResponse h = httpGet(admin, "/healthz");
    if (h.status != 200) health_status = h.status;
    worst_health = std::max(worst_health, since(t0));
    ++rounds;
  }
  lister.join();
  std::cout << "3 listings of " << kSegments << " segments took " << listing_time.count()
            << " ms; meanwhile " << rounds << " rounds: slowest proxied 64-byte round trip "
            << worst_echo.count() << " ms, slowest /healthz " << worst_health.count() << " ms\n";
  CHECK(echo_error == "");
  CHECK(health_status == 200);
  CHECK(rounds >= 3);
  CHECK(worst_echo < kBound);
  CHECK(worst_health < kBound);
  // Each listing is the first page, with a link to the next.
  REQUIRE(listings.size() == 3);
  for (const auto& r : listings) {
    CHECK(r.status == 200);
    CHECK(r.header("Link") == "</archive/app/?limit=1000&after=seg-000999.log>; rel=\"next\"");
    CHECK(r.body.starts_with("[\n{\"name\":\"seg-000000.log\",\"size\":0,"));
    size_t entries = 0;
    for (size_t at = r.body.find("\"name\""); at != std::string::npos;
         at = r.body.find("\"name\"", at + 1)) {
      ++entries;
    }
    CHECK(entries == 1000);
  }

  // Clients that go away before their listing is answered: nothing is written to them, and the
  // daemon goes on.
  for (int i = 0; i < 5; ++i) {
    Conn gone = connectTcp(static_cast<uint16_t>(std::stoi(admin.substr(admin.rfind(':') + 1))));
    REQUIRE(gone.valid());
    REQUIRE(gone.sendAll("GET /archive/app/?limit=10000 HTTP/1.1\r\nHost: x\r\n\r\n") == 0);
  }
  // Listings run in order: once this one is answered, the walks above are over (or skipped).
  CHECK(httpGet(admin, "/archive/app/?limit=1").status == 200);
  // More listings at once than the queue holds: the rest get 503 with Retry-After.
  std::vector<HttpResponse> burst(12);
  {
    std::vector<std::jthread> clients;
    for (auto& r : burst) {
      clients.emplace_back([&r, &admin] { r = httpGet(admin, "/archive/app/?limit=10"); });
    }
  }
  size_t busy = 0;
  for (const auto& r : burst) {
    INFO(r.status << " " << r.body);
    CHECK((r.status == 200 || r.status == 503));
    if (r.status == 503) {
      ++busy;
      CHECK(r.header("Retry-After") == "1");
      CHECK(r.body == "8 archive listings are in progress; retry later\n");
    }
  }
  std::cout << busy << " of 12 simultaneous listings were told to retry\n";
  CHECK(busy >= 1);
  CHECK(busy <= 12 - 3);
  CHECK(httpGet(admin, "/healthz").status == 200);
  CHECK(echoOnce(c, msg) == "");
  c.close();
  // The new manifest adopts the 100,000 segments on the lifecycle thread, and a stop waits for a
  // manifest job in progress (they are never dropped): awaited here, since under ASan it takes
  // longer than the stop's bound below.
  REQUIRE(daemon.waitLog("100000 segment(s) already there adopted", 180s));
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(20s) == 0);
}
