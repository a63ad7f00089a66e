// The faults group (archive): scenarios of the fault campaign, each against the real binary. Each
// test failed before its fix.
#include <signal.h>

#include <catch2/catch.hpp>
#include <string>
#include <thread>

#include "harness.hpp"

using namespace e2e;
using namespace std::chrono_literals;

namespace {

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

}  // namespace

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
