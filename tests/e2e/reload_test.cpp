// End-to-end: configuration reload (SIGHUP). An invalid file keeps the running config; added
// routes start, removed ones drain; unchanged routes keep their sockets; what a reload cannot
// apply is refused as a whole with a clear message.
#include <signal.h>
#include <sys/socket.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"

using namespace e2e;
using namespace std::chrono_literals;

namespace {

std::string route(const std::string& name, const std::string& listen = "127.0.0.1:0") {
  return "  - name: " + name + "\n    listen: " + listen + "\n    archive:\n      dir: @DIR@/" +
         name + "\n      name: \"{route}-{conn}-{seq}.log\"\n";
}

std::string config(const std::string& routes, const std::string& top = "") {
  return top +
         "log: { level: info }\nadmin: { listen: 127.0.0.1:0 }\ndrain_timeout: 10s\nroutes:\n" +
         routes;
}

std::string archived(const fs::path& dir) {
  std::string all;
  for (const auto& f : closedSegments(dir)) all += readFile(f);
  return all;
}

}  // namespace

TEST_CASE("reload: an invalid file keeps the running config, says why, and counts it",
          "[e2e][reload]") {
  TempDir dir;
  Daemon daemon(dir, withDir(config(route("a")), dir));
  const uint16_t port = daemon.port("a");
  const std::string admin = daemon.waitAdmin();
  writeFile(daemon.configPath(), withDir(config(route("a")) + "bogus: 1\n", dir));
  daemon.signal(SIGHUP);
  REQUIRE(waitReloads(daemon, 1));
  const std::string log = daemon.log();
  INFO(log);
  CHECK(log.find("error=config " + daemon.configPath().string() + ":10:1: bogus: unknown key") !=
        std::string::npos);
  CHECK(log.find("reload failed: " + daemon.configPath().string() +
                 ": configuration is invalid (1 error(s)); the running configuration "
                 "(generation 1) is kept") != std::string::npos);
  CHECK(metricValue(admin, "spliced_config_reloads_total{result=\"failure\"}") == 1);
  CHECK(metricValue(admin, "spliced_config_reloads_total{result=\"success\"}") == 0);
  CHECK(metricValue(admin, "spliced_config_generation") == 1);
  HttpResponse h = httpGet(admin, "/healthz");
  CHECK(h.status == 200);
  CHECK(h.body.find("ok\nlast reload failed (configuration generation 1 is running)") == 0);
  // Still serving with the old config.
  Conn c = connectTcp(port);
  REQUIRE(c.sendAll("still here\n") == 0);
  c.shutdownWrite();
  REQUIRE(c.waitClosed(5s) == 0);
  // A valid file afterwards applies and clears the note.
  writeFile(daemon.configPath(), withDir(config(route("a") + route("b")), dir));
  daemon.signal(SIGHUP);
  REQUIRE(waitReloads(daemon, 2));
  CHECK(metricValue(admin, "spliced_config_generation") == 2);
  CHECK(httpGet(admin, "/healthz").body == "ok\n");
}

TEST_CASE(
    "reload: an added route starts, a removed one drains its connections, others keep "
    "their sockets",
    "[e2e][reload]") {
  TempDir dir;
  Daemon daemon(dir, withDir(config(route("keep") + route("old")), dir));
  const uint16_t keep_port = daemon.port("keep");
  const uint16_t old_port = daemon.port("old");
  const std::string admin = daemon.waitAdmin();

  // A client in the middle of its stream on the route that goes away.
  Conn inflight = connectTcp(old_port);
  const std::string first = randomPayload(11, 200000);
  REQUIRE(inflight.sendAll(first) == 0);

  // A client connecting in a loop to the route that stays, throughout every reload.
  std::atomic<bool> stop{false};
  std::atomic<size_t> refused{0}, done{0};
  std::string loop_sent;
  std::thread looper([&] {
    for (size_t i = 0; !stop; ++i) {
      Conn c = connectTcp(keep_port);
      const std::string msg = "loop " + std::to_string(i) + "\n";
      if (!c.valid() || c.sendAll(msg) != 0) {
        ++refused;
        continue;
      }
      c.shutdownWrite();
      if (c.waitClosed(5s) != 0) ++refused;
      loop_sent += msg;
      ++done;
    }
  });

  writeFile(daemon.configPath(), withDir(config(route("keep") + route("new")), dir));
  daemon.signal(SIGHUP);
  REQUIRE(waitReloads(daemon, 1));
  INFO(daemon.log());
  CHECK(daemon.log().find(
            "reload applied: configuration generation 2: 1 route(s) added, 0 changed, 1 removed") !=
        std::string::npos);
  const uint16_t new_port = daemon.port("new");
  // The new route serves; the removed one refuses new clients.
  Conn n = connectTcp(new_port);
  REQUIRE(n.sendAll("on the new route\n") == 0);
  n.shutdownWrite();
  REQUIRE(n.waitClosed(5s) == 0);
  REQUIRE(waitUntil(
      [&] {
        int err = 0;
        Conn c = connectTcp(old_port, &err);
        return !c.valid() && err == ECONNREFUSED;
      },
      5s));
  // The in-flight client goes on, then ends: every byte archived, and the route is retired.
  const std::string second = randomPayload(12, 300000);
  REQUIRE(inflight.sendAll(second) == 0);
  inflight.shutdownWrite();
  REQUIRE(inflight.waitClosed(5s) == 0);
  REQUIRE(daemon.waitLog("route=old removed: its last connection has closed", 5s));
  CHECK(daemon.log().find("route=old totals: connections=1 ") != std::string::npos);
  CHECK(firstDifference(archived(dir / "old"), first + second) == "");
  CHECK(archived(dir / "new") == "on the new route\n");

  // 20 more reloads, adding and removing a route, while the loop client goes on.
  for (int i = 0; i < 20; ++i) {
    const std::string routes =
        route("keep") + route("new") + (i % 2 == 0 ? route("extra" + std::to_string(i)) : "");
    writeFile(daemon.configPath(), withDir(config(routes), dir));
    daemon.signal(SIGHUP);
    REQUIRE(waitReloads(daemon, static_cast<size_t>(i) + 2));
  }
  std::this_thread::sleep_for(200ms);
  stop = true;
  looper.join();
  CHECK(refused.load() == 0);
  CHECK(done.load() > 0);
  CHECK(metricValue(admin, "spliced_config_reloads_total{result=\"success\"}") == 21);
  CHECK(metricValue(admin, "spliced_config_generation") == 22);
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
  // Every loop connection's line, once.
  const std::string keep = archived(dir / "keep");
  CHECK(keep.size() == loop_sent.size());
}

TEST_CASE("reload: what a reload cannot apply is refused whole, with the reason", "[e2e][reload]") {
  TempDir dir;
  Daemon daemon(dir, withDir(config(route("a"), "workers: 2\n"), dir));
  daemon.port("a");
  const std::string admin = daemon.waitAdmin();
  struct Case {
    std::string file;
    std::string reason;
  };
  const std::vector<Case> cases = {
      {config(route("a"), "workers: 1\n"), "workers changed from 2 to 1: a restart applies it"},
      {config(route("a", "127.0.0.1:1"), "workers: 2\n"),
       "route a: listen changed: a reload keeps a route's listening socket"},
      {config(route("a") + route("b"), "workers: 2\npipes: { max: 10 }\n"),
       "pipes changed: a restart applies it"},
  };
  size_t n = 0;
  for (const Case& c : cases) {
    INFO(c.reason);
    writeFile(daemon.configPath(), withDir(c.file, dir));
    daemon.signal(SIGHUP);
    REQUIRE(waitReloads(daemon, ++n));
    CHECK(daemon.log().find("reload failed: " + c.reason) != std::string::npos);
    CHECK(metricValue(admin, "spliced_config_generation") == 1);
  }
  // Nothing was half-applied: route b of the last file was not started.
  CHECK(daemon.log().find("route=b listening") == std::string::npos);
  CHECK(metricValue(admin, "spliced_config_reloads_total{result=\"failure\"}") == 3);
}
