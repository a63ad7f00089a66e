// End-to-end: systemd integration (sd_notify to a fake NOTIFY_SOCKET, the watchdog, socket
// activation) and dropping root for a configured user.
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"

using namespace e2e;
using namespace std::chrono_literals;

namespace {

size_t countWith(const std::vector<std::string>& msgs, const std::string& needle) {
  size_t n = 0;
  for (const auto& m : msgs) n += m.find(needle) != std::string::npos ? 1 : 0;
  return n;
}

std::string collect(const std::string& top, const std::string& listen = "127.0.0.1:0") {
  return top + R"(log: { level: info }
routes:
  - name: app
    listen: )" +
         listen +
         R"(
    archive:
      dir: @DIR@/archive
      name: "{route}-{conn}-{seq}.log"
)";
}

std::string statusField(pid_t pid, const std::string& field) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) return line.substr(field.size() + 1);
  }
  return "";
}

std::string squeeze(std::string s) {
  std::string out;
  for (char c : s) {
    if (c == '\t' || c == ' ') {
      if (!out.empty() && out.back() != ' ') out += ' ';
    } else {
      out += c;
    }
  }
  while (!out.empty() && out.front() == ' ') out.erase(out.begin());
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

}  // namespace

TEST_CASE("systemd: READY, WATCHDOG and STOPPING reach NOTIFY_SOCKET in that order",
          "[e2e][systemd]") {
  TempDir dir;
  FakeNotifySocket notify(dir / "notify.sock");
  DaemonOptions opts;
  opts.env = {{"NOTIFY_SOCKET", notify.path()}, {"WATCHDOG_USEC", "400000"}};
  Daemon daemon(dir, withDir(collect("workers: 2\n"), dir), opts);
  const uint16_t port = daemon.port("app");
  auto msgs = notify.receive([](const auto& m) { return countWith(m, "WATCHDOG=1") >= 3; }, 5s);
  INFO(daemon.log());
  REQUIRE(!msgs.empty());
  CHECK(msgs.front().find("READY=1") == 0);
  CHECK(msgs.front().find("MAINPID=" + std::to_string(daemon.pid())) != std::string::npos);
  CHECK(msgs.front().find("STATUS=0 connection(s) on 1 route(s), 2 worker(s)") !=
        std::string::npos);
  CHECK(countWith(msgs, "WATCHDOG=1") >= 3);
  // SIGHUP: RELOADING=1 with the time it began, then READY=1 again.
  daemon.signal(SIGHUP);
  msgs = notify.receive([](const auto& m) { return countWith(m, "READY=1") >= 2; }, 5s);
  REQUIRE(countWith(msgs, "RELOADING=1") == 1);
  for (size_t i = 0; i < msgs.size(); ++i) {
    if (msgs[i].find("RELOADING=1") == std::string::npos) continue;
    CHECK(msgs[i].find("MONOTONIC_USEC=") != std::string::npos);
    bool ready_after = false;
    for (size_t k = i + 1; k < msgs.size(); ++k) {
      ready_after = ready_after || msgs[k].find("READY=1") == 0;
    }
    CHECK(ready_after);
  }
  // A connection is served while systemd watches.
  Conn c = connectTcp(port);
  REQUIRE(c.sendAll("hello\n") == 0);
  c.shutdownWrite();
  REQUIRE(c.waitClosed(5s) == 0);
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
  msgs = notify.receive([](const auto& m) { return countWith(m, "STOPPING=1") >= 1; }, 2s);
  CHECK(countWith(msgs, "STOPPING=1") == 1);
  CHECK(countWith(msgs, "READY=1") == 2);
  // Without NOTIFY_SOCKET nothing of this is logged or sent.
  TempDir plain;
  Daemon quiet(plain, withDir(collect(""), plain));
  quiet.port("app");
  CHECK(quiet.log().find("watchdog") == std::string::npos);
}

TEST_CASE("systemd: socket activation - a route takes the socket named after it",
          "[e2e][systemd]") {
  TempDir dir;
  // The "systemd" side: a listening socket on a port the config does not name.
  int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(lfd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
  REQUIRE(::listen(lfd, 128) == 0);
  socklen_t len = sizeof sa;
  ::getsockname(lfd, reinterpret_cast<sockaddr*>(&sa), &len);
  const uint16_t port = ntohs(sa.sin_port);
  int extra = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  DaemonOptions opts;
  opts.listen_fds = {lfd, extra};
  opts.env = {{"LISTEN_FDNAMES", "app:nosuchroute"}};
  // The config's own address is never bound: the socket from systemd is used instead.
  Daemon daemon(dir, withDir(collect("workers: 2\n", "127.0.0.1:0"), dir), opts);
  daemon.waitListening("app");
  ::close(lfd);  // the daemon has its own copy
  ::close(extra);
  CHECK(daemon.log().find("route=app takes its listening socket from systemd") !=
        std::string::npos);
  CHECK(daemon.log().find("socket activation: no route is named nosuchroute") != std::string::npos);
  std::vector<std::string> sent;
  for (int i = 0; i < 50; ++i) {
    Conn c = connectTcp(port);
    REQUIRE(c.valid());
    sent.push_back("activated " + std::to_string(i) + "\n");
    REQUIRE(c.sendAll(sent.back()) == 0);
    c.shutdownWrite();
    REQUIRE(c.waitClosed(5s) == 0);
  }
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
  std::string all;
  for (const auto& f : closedSegments(dir / "archive")) all += readFile(f);
  size_t found = 0;
  for (const auto& s : sent) found += all.find(s) != std::string::npos ? 1 : 0;
  CHECK(found == sent.size());
}

TEST_CASE("privileges: user: drops root for good after binding, and the archive is the user's",
          "[e2e][systemd]") {
  if (::geteuid() != 0) {
    WARN("SKIPPED: dropping privileges needs root");
    return;
  }
  TempDir dir;
  // A segment left by an earlier run as root: it becomes the user's too.
  fs::create_directories(dir / "archive");
  writeFile(dir / "archive" / "old-root-segment.log", "from an earlier run\n");
  Daemon daemon(dir, withDir(collect("user: nobody\ngroup: nogroup\n"), dir));
  const uint16_t port = daemon.port("app");
  REQUIRE(daemon.waitLog("running as user nobody", 5s));
  INFO(daemon.log());
  CHECK(squeeze(statusField(daemon.pid(), "Uid")) == "65534 65534 65534 65534");
  CHECK(squeeze(statusField(daemon.pid(), "Gid")) == "65534 65534 65534 65534");
  CHECK(squeeze(statusField(daemon.pid(), "Groups")) == "65534");
  CHECK(squeeze(statusField(daemon.pid(), "CapEff")) == "0000000000000000");
  CHECK(squeeze(statusField(daemon.pid(), "CapPrm")) == "0000000000000000");
  Conn c = connectTcp(port);
  const std::string payload = randomPayload(7, 300000);
  REQUIRE(c.sendAll(payload) == 0);
  c.shutdownWrite();
  REQUIRE(c.waitClosed(5s) == 0);
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
  struct stat st {};
  REQUIRE(::stat((dir / "archive").c_str(), &st) == 0);
  CHECK(st.st_uid == 65534);
  REQUIRE(::stat((dir / "archive" / "old-root-segment.log").c_str(), &st) == 0);
  CHECK(st.st_uid == 65534);
  std::string got;
  for (const auto& f : closedSegments(dir / "archive")) {
    REQUIRE(::stat(f.c_str(), &st) == 0);
    CHECK(st.st_uid == 65534);
    if (f.filename() != "old-root-segment.log") got += readFile(f);
  }
  CHECK(firstDifference(got, payload) == "");
}

TEST_CASE("privileges: a reload that needs a privileged port after user: says what would allow it",
          "[e2e][systemd]") {
  if (::geteuid() != 0) {
    WARN("SKIPPED: dropping privileges needs root");
    return;
  }
  std::string start;
  std::getline(std::ifstream("/proc/sys/net/ipv4/ip_unprivileged_port_start"), start);
  if (start != "1024") {
    WARN("SKIPPED: every port is unprivileged here (net.ipv4.ip_unprivileged_port_start)");
    return;
  }
  TempDir dir;
  // The user reads the config file again at the reload.
  fs::permissions(dir.path(), fs::perms::others_read | fs::perms::others_exec,
                  fs::perm_options::add);
  Daemon daemon(dir, withDir(collect("user: nobody\ngroup: nogroup\n"), dir));
  daemon.port("app");
  REQUIRE(daemon.waitLog("running as user nobody", 5s));
  fs::permissions(daemon.configPath(), fs::perms::others_read, fs::perm_options::add);
  // Port 1 (tcpmux) needs CAP_NET_BIND_SERVICE, which the daemon gave up.
  writeFile(daemon.configPath(),
            withDir(collect("user: nobody\ngroup: nogroup\n") +
                        "  - name: low\n    listen: 127.0.0.1:1\n    forward: { upstreams: "
                        "[\"127.0.0.1:9\"] }\n",
                    dir));
  daemon.signal(SIGHUP);
  REQUIRE(daemon.waitLog("reload failed", 5s));
  INFO(daemon.log());
  CHECK(daemon.log().find("reload failed: route low: cannot bind 127.0.0.1:1: Permission denied; "
                          "spliced runs as uid 65534 now and may not bind a privileged port: give "
                          "it CAP_NET_BIND_SERVICE") != std::string::npos);
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
}

TEST_CASE("privileges: a user or group that does not exist is a config error", "[e2e][systemd]") {
  TempDir dir;
  const fs::path cfg = dir / "bad.yaml";
  writeFile(cfg, withDir(collect("user: no-such-user-here\ngroup: no-such-group-here\n"), dir));
  CommandResult r = runSpliced(dir, {"-t", "-c", cfg.string()});
  INFO(r.err);
  CHECK(r.exit_code == 1);
  CHECK(r.err.find(":1:7: user: no such user 'no-such-user-here' on this machine") !=
        std::string::npos);
  CHECK(r.err.find(":2:8: group: no such group 'no-such-group-here' on this machine") !=
        std::string::npos);
}
