// The faults group (archive): scenarios of the fault campaign, each against the real binary. Each
// test failed before its fix.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <iostream>
#include <thread>

#include "harness.hpp"
#include "upstreams.hpp"

using namespace e2e;
using namespace std::chrono_literals;

namespace {

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
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(20s) == 0);
}
