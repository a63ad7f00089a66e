// End-to-end: binary upgrade (SIGUSR2). The running process starts its binary again and hands it
// every listening socket and live proxied connection; clients see no reset, no gap and no
// duplicate byte, a client connecting throughout is never refused, and the old process exits. An
// upgrade that cannot happen (a new binary that cannot run, refuses, crashes or speaks another
// version; a config the new binary refuses; archive routes) leaves the running process with
// everything.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"
#include "upstreams.hpp"

using namespace e2e;
using namespace std::chrono_literals;

namespace {

bool longRun() {
  const char* v = std::getenv("SPLICED_LONG_TESTS");
  return v != nullptr && std::string(v) == "1";
}

std::string proxyConfig(const std::string& upstream, size_t workers,
                        const std::string& balance = "round_robin") {
  return "log: { level: info }\nworkers: " + std::to_string(workers) +
         "\nadmin: { listen: 127.0.0.1:0 }\ndrain_timeout: 10s\nroutes:\n  - name: web\n    "
         "listen: 127.0.0.1:0\n    forward:\n      upstreams: [\"" +
         upstream + "\"]\n      balance: " + balance + "\n";
}

// The pid a "binary upgrade: pid N has taken over" line names, counting such lines from the
// `nth` (0-based); 0 when there is none (yet).
pid_t successorIn(const std::string& log, size_t nth) {
  const std::string needle = "binary upgrade: pid ";
  const std::string tail = " has taken over";
  size_t seen = 0;
  for (size_t pos = log.find(needle); pos != std::string::npos; pos = log.find(needle, pos + 1)) {
    const size_t start = pos + needle.size();
    const size_t end = log.find(' ', start);
    if (end == std::string::npos || log.compare(end, tail.size(), tail) != 0) continue;
    if (seen++ == nth) return static_cast<pid_t>(std::atol(log.c_str() + start));
  }
  return 0;
}

// The daemons after an upgrade become this test's children (it is their subreaper): whatever
// happened, every child process still there at the end is killed and reaped.
class Reaper {
 public:
  Reaper() { ::prctl(PR_SET_CHILD_SUBREAPER, 1); }
  ~Reaper() {
    for (const auto& task : fs::directory_iterator("/proc/self/task")) {
      std::ifstream in(task.path() / "children");  // a /proc file: no size to read by
      std::string list((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      for (size_t pos = 0; pos < list.size();) {
        const size_t end = std::min(list.find(' ', pos), list.size());
        if (end > pos) pids_.push_back(static_cast<pid_t>(std::atol(list.c_str() + pos)));
        pos = end + 1;
      }
    }
    for (pid_t p : pids_) {
      ::kill(p, SIGKILL);
      int st = 0;
      ::waitpid(p, &st, 0);
    }
  }
  void add(pid_t p) { pids_.push_back(p); }
  // Waits for `p` to exit; its status, or -1 on timeout.
  int waitExit(pid_t p, Millis timeout) {
    const auto deadline = Clock::now() + timeout;
    while (Clock::now() < deadline) {
      int st = 0;
      pid_t r = ::waitpid(p, &st, WNOHANG);
      if (r == p) {
        std::erase(pids_, p);
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      }
      std::this_thread::sleep_for(10ms);
    }
    return -1;
  }

 private:
  std::vector<pid_t> pids_;
};

// One client through the proxy to an echo upstream: sends its payload (`total` bytes at most) in
// pieces with pauses until finish() is called or the payload is all sent (so that the stream
// spans the upgrades), reads the echo concurrently, then half-closes and reads to the end.
// Records what it sent, what came back and how the stream ended.
class EchoStream {
 public:
  EchoStream(uint16_t port, uint64_t seed, size_t total, Millis pause)
      : want_(randomPayload(seed, total)) {
    int err = 0;
    conn_ = connectTcp(port, &err);
    connect_err_ = conn_.valid() ? 0 : err;
    if (!conn_.valid()) return;
    reader_ = std::thread([this] {
      char buf[65536];
      while (true) {
        ssize_t n = ::recv(conn_.fd(), buf, sizeof buf, 0);
        if (n > 0) {
          got_.append(buf, static_cast<size_t>(n));
          continue;
        }
        if (n < 0 && errno == EINTR) continue;
        read_err_ = n == 0 ? 0 : errno;
        return;
      }
    });
    writer_ = std::thread([this, pause] {
      Prng prng(want_.size());
      size_t off = 0;
      while (off < want_.size() && !finish_) {
        const size_t n = std::min<size_t>(want_.size() - off, prng.between(1, 64 * 1024));
        if (int e = conn_.sendAll(want_.data() + off, n); e != 0) {
          write_err_ = e;
          return;
        }
        off += n;
        sent_ = off;
        std::this_thread::sleep_for(pause);
      }
      conn_.shutdownWrite();
    });
  }
  ~EchoStream() {
    finish();
    join();
  }
  // Sends no more after the piece under way.
  void finish() { finish_ = true; }
  size_t sent() const { return sent_.load(); }
  void join() {
    if (writer_.joinable()) writer_.join();
    if (reader_.joinable()) reader_.join();
  }
  // "" when what was sent came back, byte for byte, and the stream ended with a FIN.
  std::string problem() {
    finish();
    join();
    if (connect_err_ != 0) return "connect failed: " + std::string(std::strerror(connect_err_));
    if (write_err_ != 0) return "send failed: " + std::string(std::strerror(write_err_));
    if (read_err_ != 0) return "recv failed: " + std::string(std::strerror(read_err_));
    return firstDifference(got_, std::string_view(want_).substr(0, sent_.load()));
  }

 private:
  std::string want_;
  std::string got_;
  Conn conn_;
  int connect_err_ = 0;
  std::atomic<int> write_err_{0};
  std::atomic<bool> finish_{false};
  std::atomic<size_t> sent_{0};
  int read_err_ = 0;
  std::thread reader_;
  std::thread writer_;
};

// A client connecting again and again through the proxy (a line, its echo, a half-close, the
// end) until stopped: counts the connections that failed at any step.
class Looper {
 public:
  explicit Looper(uint16_t port)
      : thread_([this, port] {
          for (size_t i = 0; !stop_; ++i) {
            Conn c = connectTcp(port);
            const std::string msg = "loop " + std::to_string(i) + "\n";
            if (!c.valid() || c.sendAll(msg) != 0) {
              ++failed_;
              continue;
            }
            c.shutdownWrite();
            std::string back;
            char buf[256];
            ssize_t n = 0;
            while ((n = ::recv(c.fd(), buf, sizeof buf, 0)) > 0) back.append(buf, n);
            if (n < 0 || back != msg) {
              ++failed_;
              continue;
            }
            ++done_;
          }
        }) {}
  ~Looper() { finish(); }
  void finish() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  size_t failed() const { return failed_.load(); }
  size_t done() const { return done_.load(); }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<size_t> failed_{0}, done_{0};
  std::thread thread_;
};

// The process serving now: the last successor named in the log, or the daemon itself.
pid_t current(const Daemon& d, size_t upgrades) {
  return upgrades == 0 ? d.pid() : successorIn(d.log(), upgrades - 1);
}

// Sends SIGUSR2 to `pid` and waits for the next "has taken over" line; returns the new pid.
pid_t upgrade(Daemon& d, Reaper& reaper, size_t& upgrades) {
  const pid_t old = current(d, upgrades);
  REQUIRE(::kill(old, SIGUSR2) == 0);
  pid_t next = 0;
  REQUIRE(waitUntil(
      [&] {
        next = successorIn(d.log(), upgrades);
        return next != 0;
      },
      20s));
  reaper.add(next);
  ++upgrades;
  // The old process exits at once, with status 0.
  if (upgrades == 1) {
    CHECK(d.waitExit(5s) == 0);
  } else {
    CHECK(reaper.waitExit(old, 5s) == 0);
  }
  return next;
}

// A copy of the spliced binary in `dir`, to run and then replace or make unrunnable.
std::string copyBinary(const TempDir& dir) {
  const std::string path = (dir / "spliced-bin").string();
  fs::copy_file(SPLICED_BIN, path, fs::copy_options::overwrite_existing);
  ::chmod(path.c_str(), 0755);
  return path;
}

// A stand-in for a new binary, in Python: it says hello on the channel (SPLICED_UPGRADE_FD) with
// `version`, reads what comes, and then ends as `how` says: "crash" (SIGKILL once the state has
// come), "exit" (before saying anything); or "slow": waits, then runs the real spliced with the
// same channel and arguments.
void writeFakeBinary(const std::string& path, uint64_t version, const std::string& how) {
  const std::string script = R"(#!/usr/bin/python3
import os, socket, struct, signal, sys, time
how = ")" + how + R"("
if how == "exit":
    sys.exit(3)
if how == "slow":
    time.sleep(1.5)
    os.execv(")" + std::string(SPLICED_BIN) +
                             R"(", [")" + std::string(SPLICED_BIN) + R"("] + sys.argv[1:])
s = socket.socket(fileno=int(os.environ["SPLICED_UPGRADE_FD"]))
text = b"hello binary=fake pid=%d version=)" +
                             std::to_string(version) + R"( workers=1" % os.getpid()
s.sendall(b"SPLH" + struct.pack("<II", len(text), 0) + text)
got = b""
s.settimeout(5)
try:
    while b"end" not in got:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
except OSError:
    pass
os.kill(os.getpid(), signal.SIGKILL)
)";
  fs::remove(path);
  writeFile(path, script);
  ::chmod(path.c_str(), 0755);
}

}  // namespace

TEST_CASE(
    "upgrade: SIGUSR2 hands every listener and live proxied stream to the new binary: no "
    "reset, no gap, no duplicate, no refused connect, old processes gone",
    "[e2e][upgrade]") {
  Reaper reaper;
  auto up = TestUpstream::echo();
  TempDir dir;
  Daemon d(dir, proxyConfig(up->address(), 2));
  const uint16_t port = d.port("web");
  const std::string admin = d.waitAdmin();
  const size_t clients = longRun() ? 500 : 40;
  const size_t each = 4 * kMiB;  // at most: the streams end once the reloads and upgrades are done
  // The baseline after one reload: the first one makes the thread that reads config files (and
  // its descriptor), which the processes after the upgrades have too.
  size_t reloads = 0;
  d.signal(SIGHUP);
  REQUIRE(waitReloads(d, ++reloads));
  const size_t fds_before = d.fdCount();
  Looper looper(port);
  std::vector<std::unique_ptr<EchoStream>> streams;
  for (size_t i = 0; i < clients; ++i) {
    streams.push_back(std::make_unique<EchoStream>(port, 1000 + i, each, 30ms));
  }
  // 20 reloads with alternating configs (sent to whichever process serves), and between them
  // three upgrades, while every stream runs.
  size_t upgrades = 0;
  for (int phase = 0; phase < 4; ++phase) {
    for (int k = 0; k < 5; ++k) {
      writeFile(
          d.configPath(),
          proxyConfig(up->address(), 2, reloads % 2 == 0 ? "least_connections" : "round_robin"));
      REQUIRE(::kill(current(d, upgrades), SIGHUP) == 0);
      REQUIRE(waitReloads(d, ++reloads));
    }
    if (phase < 3) upgrade(d, reaper, upgrades);
  }
  for (size_t i = 0; i < streams.size(); ++i) {
    INFO("stream " << i << ", " << streams[i]->sent() << " bytes sent");
    CHECK(streams[i]->problem().empty());
    CHECK(streams[i]->sent() > 0);
  }
  looper.finish();
  CHECK(looper.failed() == 0);
  CHECK(looper.done() > 0);
  const std::string log = d.log();
  // Every upgrade moved live connections (the streams were running through all three).
  const auto took = logLines(log, {"binary upgrade: took over"});
  CHECK(took.size() == 3);
  for (const auto& line : took) {
    // Every stream was live at every upgrade (the looper's connection may be there too).
    const size_t at = line.find("took over ") + 10;
    INFO(line);
    CHECK(std::stoul(line.substr(at)) >= clients);
  }
  CHECK(logLines(log, {"reload applied"}).size() == 21);
  CHECK(logLines(log, {"error="}).empty());
  // No session ended with a reset: every proxied stream's line says eof.
  CHECK(logLines(log, {"proxy route=web", "end=client_error"}).empty());
  CHECK(logLines(log, {"proxy route=web", "end=upstream_error"}).empty());
  // The last process serves, with as many descriptors as the first had before the load (the
  // empty pipes it keeps for reuse aside): nothing handed over leaked.
  const pid_t last = current(d, upgrades);
  const std::string fd_dir = "/proc/" + std::to_string(last) + "/fd";
  long open_now = 0;
  double pooled = 0;
  const bool settled = waitUntil(
      [&] {
        pooled = metricValue(admin, "spliced_pipes_pooled");
        open_now = std::distance(fs::directory_iterator(fd_dir), fs::directory_iterator{});
        return open_now - 2 * static_cast<long>(pooled) <= static_cast<long>(fds_before);
      },
      10s);
  INFO("descriptors before " << fds_before << ", now " << open_now << ", pooled pipes " << pooled);
  CHECK(settled);
  REQUIRE(::kill(last, SIGTERM) == 0);
  CHECK(reaper.waitExit(last, 20s) == 0);
}

TEST_CASE("upgrade: an upgrade that cannot happen leaves the running process with everything",
          "[e2e][upgrade]") {
  Reaper reaper;
  auto up = TestUpstream::echo();
  TempDir dir;
  DaemonOptions opts;
  opts.binary = copyBinary(dir);
  Daemon d(dir, proxyConfig(up->address(), 1), opts);
  const uint16_t port = d.port("web");
  d.waitAdmin();
  // A stream runs through every failed attempt and must come back whole.
  EchoStream stream(port, 7, 1536 * kKiB, 40ms);
  Looper looper(port);
  auto failedAttempts = [&] { return logLines(d.log(), {"binary upgrade", "failed"}).size(); };

  SECTION("the binary cannot be run, then can") {
    ::chmod(opts.binary.c_str(), 0644);
    d.signal(SIGUSR2);
    REQUIRE(d.waitLog("cannot be run (Permission denied); nothing changed", 5s));
    ::chmod(opts.binary.c_str(), 0755);
    d.signal(SIGUSR2);
    REQUIRE(waitUntil([&] { return successorIn(d.log(), 0) != 0; }, 20s));
    reaper.add(successorIn(d.log(), 0));
    CHECK(d.waitExit(5s) == 0);
  }
  SECTION("the config in the file is invalid now: the new binary refuses it") {
    writeFile(d.configPath(), "routes: [\n");
    d.signal(SIGUSR2);
    REQUIRE(d.waitLog("the new process refused: ", 20s));
    CHECK(d.log().find("configuration is invalid") != std::string::npos);
    CHECK(d.running());
  }
  SECTION("the config names the route's address differently: refused, naming both") {
    std::string moved = proxyConfig(up->address(), 1);
    moved.replace(moved.rfind("127.0.0.1:0"), 11, "127.0.0.1:1");  // the route's, not the admin's
    writeFile(d.configPath(), moved);
    d.signal(SIGUSR2);
    REQUIRE(d.waitLog("the new process refused: route web listens on", 20s));
    CHECK(d.log().find("reload the running process first (SIGHUP)") != std::string::npos);
  }
  SECTION("a new binary that crashes once it has the state") {
    writeFakeBinary(opts.binary, 1, "crash");
    d.signal(SIGUSR2);
    REQUIRE(d.waitLog("frozen and sent to pid", 20s));
    REQUIRE(waitUntil([&] { return failedAttempts() == 1; }, 20s));
    CHECK(d.log().find("was killed by signal 9") != std::string::npos);
    CHECK(d.log().find("keeps every listener and connection") != std::string::npos);
  }
  SECTION("a new binary that exits before it says anything") {
    writeFakeBinary(opts.binary, 1, "exit");
    d.signal(SIGUSR2);
    REQUIRE(waitUntil([&] { return failedAttempts() == 1; }, 20s));
    CHECK(d.log().find("exited with status 3") != std::string::npos);
  }
  SECTION("a new binary that speaks another handoff version") {
    writeFakeBinary(opts.binary, 999, "crash");
    d.signal(SIGUSR2);
    REQUIRE(waitUntil([&] { return failedAttempts() == 1; }, 20s));
    CHECK(d.log().find("speaks handoff version 999, this one 1") != std::string::npos);
    CHECK(d.log().find("frozen and sent") == std::string::npos);
  }
  SECTION("two SIGUSR2 in a row: the second is ignored, one upgrade happens") {
    // The new binary takes a moment to start (a wrapper that waits, then runs spliced), so the
    // second signal surely comes while the first upgrade is in progress.
    writeFakeBinary(opts.binary, 1, "slow");
    d.signal(SIGUSR2);
    REQUIRE(d.waitLog("binary upgrade: started", 5s));
    d.signal(SIGUSR2);
    REQUIRE(waitUntil([&] { return successorIn(d.log(), 0) != 0; }, 20s));
    reaper.add(successorIn(d.log(), 0));
    CHECK(d.log().find("is in progress: ignored") != std::string::npos);
    CHECK(d.waitExit(5s) == 0);
  }
  CHECK(stream.problem().empty());
  looper.finish();
  CHECK(looper.failed() == 0);
  CHECK(looper.done() > 0);
  // Whoever serves now stops cleanly.
  const pid_t next = successorIn(d.log(), 0);
  if (next != 0) {
    REQUIRE(::kill(next, SIGTERM) == 0);
    CHECK(reaper.waitExit(next, 20s) == 0);
  } else {
    d.signal(SIGTERM);
    CHECK(d.waitExit(20s) == 0);
  }
}

TEST_CASE("upgrade: refused with a reason for archive routes and while shutting down",
          "[e2e][upgrade]") {
  TempDir dir;
  Daemon d(dir,
           "log: { level: info }\ndrain_timeout: 3s\nroutes:\n  - name: app\n    listen: "
           "127.0.0.1:0\n    archive: { dir: " +
               (dir / "archive").string() + " }\n");
  const uint16_t port = d.port("app");
  d.signal(SIGUSR2);
  REQUIRE(d.waitLog("binary upgrade refused: route app collects into an archive", 5s));
  // While a connection drains, a SIGUSR2 is refused too.
  Conn c = connectTcp(port);
  REQUIRE(c.valid());
  REQUIRE(c.sendAll("a line\n") == 0);
  d.signal(SIGTERM);
  REQUIRE(d.waitLog("shutting down", 5s));
  d.signal(SIGUSR2);
  REQUIRE(d.waitLog("SIGUSR2 while shutting down: no upgrade", 5s));
  c.shutdownWrite();
  CHECK(d.waitExit(20s) == 0);
}

TEST_CASE(
    "upgrade: under systemd the old process hands the main pid to the new one, which is "
    "ready and keeps the watchdog fed",
    "[e2e][upgrade][systemd]") {
  Reaper reaper;
  auto up = TestUpstream::echo();
  TempDir dir;
  FakeNotifySocket notify(dir / "notify.sock");
  DaemonOptions opts;
  opts.env = {{"NOTIFY_SOCKET", notify.path()}, {"WATCHDOG_USEC", "400000"}};
  Daemon d(dir, proxyConfig(up->address(), 2), opts);
  d.port("web");
  auto count = [](const std::vector<std::string>& msgs, const std::string& needle) {
    size_t n = 0;
    for (const auto& m : msgs) n += m.find(needle) != std::string::npos ? 1 : 0;
    return n;
  };
  notify.receive([&](const auto& m) { return count(m, "READY=1") >= 1; }, 5s);
  size_t upgrades = 0;
  const pid_t next = upgrade(d, reaper, upgrades);
  const std::string handed = "MAINPID=" + std::to_string(next);
  // The new process's READY=1 names itself; the old one's last word is the new main pid; and
  // the watchdog is fed from the new process after the old one is gone.
  auto msgs = notify.receive(
      [&](const auto& m) {
        size_t at = m.size();
        for (size_t i = 0; i < m.size(); ++i) {
          if (m[i] == handed) at = i;
        }
        size_t pings = 0;
        for (size_t i = at; i < m.size(); ++i) pings += m[i] == "WATCHDOG=1" ? 1 : 0;
        return pings >= 3;
      },
      5s);
  INFO(d.log());
  CHECK(count(msgs, handed) == 2);  // READY=1 ... MAINPID=N (new), and MAINPID=N (old)
  bool new_ready = false;
  for (const auto& m : msgs) {
    new_ready = new_ready || (m.rfind("READY=1", 0) == 0 && m.find(handed) != std::string::npos);
  }
  CHECK(new_ready);
  CHECK(std::find(msgs.begin(), msgs.end(), handed) != msgs.end());
  CHECK(count(msgs, "STOPPING=1") == 0);  // the service did not stop
  REQUIRE(::kill(next, SIGTERM) == 0);
  CHECK(reaper.waitExit(next, 20s) == 0);
  msgs = notify.receive([&](const auto& m) { return count(m, "STOPPING=1") >= 1; }, 5s);
  CHECK(count(msgs, "STOPPING=1") == 1);
}
