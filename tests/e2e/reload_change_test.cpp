// End-to-end: a reload that changes a route in place (SIGHUP). The listening socket stays (no
// client refused); new connections and new segments take the new config, running connections keep
// the one they started with; what a reload cannot change is refused whole, naming the key.
#include <signal.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cerrno>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"
#include "upstreams.hpp"

using namespace e2e;
using namespace std::chrono_literals;

namespace {

std::string top(const std::string& extra = "") {
  return "log: { level: info }\nadmin: { listen: 127.0.0.1:0 }\ndrain_timeout: 10s\n" + extra +
         "routes:\n";
}

std::string proxy(const std::vector<std::string>& upstreams, const std::string& balance) {
  std::string ups;
  for (const auto& u : upstreams) {
    if (!ups.empty()) ups += ", ";
    ups += "\"" + u + "\"";
  }
  std::string out = "  - name: web\n    listen: 127.0.0.1:0\n    forward:\n      upstreams: [";
  out += ups;
  out += "]\n      balance: ";
  out += balance;
  out += "\n";
  return out;
}

void reload(Daemon& d, const std::string& text, size_t& n) {
  writeFile(d.configPath(), text);
  d.signal(SIGHUP);
  REQUIRE(waitReloads(d, ++n));
}

// A client connecting again and again (a line, a half-close, the close) until stopped: counts the
// connections that failed at any step.
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
            if (c.waitClosed(5s) != 0) {
              ++failed_;
              continue;
            }
            sent_ += msg.size();
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
  uint64_t sent() const { return sent_.load(); }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<size_t> failed_{0}, done_{0};
  std::atomic<uint64_t> sent_{0};
  std::thread thread_;
};

uint64_t received(const TestUpstream& u) {
  uint64_t n = 0;
  for (const auto& r : u.records()) n += r.bytes;
  return n;
}

// The lines of every closed segment of `dir`, sorted.
std::vector<std::string> sortedLines(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& f : closedSegments(dir)) {
    const std::string body = readFile(f);
    for (size_t pos = 0; pos < body.size();) {
      size_t end = body.find('\n', pos);
      end = end == std::string::npos ? body.size() : end + 1;
      out.push_back(body.substr(pos, end - pos));
      pos = end;
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string lines(const std::string& tag, size_t count, size_t width) {
  std::string out;
  for (size_t i = 0; i < count; ++i) {
    std::string line = tag + " " + std::to_string(i) + " ";
    line.append(width - 1 - line.size(), static_cast<char>('a' + i % 26));
    line += '\n';
    out += line;
  }
  return out;
}

}  // namespace

TEST_CASE(
    "reload: a changed proxy route keeps its socket - a running session keeps its upstream and new "
    "ones take the new list",
    "[e2e][reload]") {
  auto a = TestUpstream::sink(4 * 1024 * 1024);
  auto b = TestUpstream::sink(4 * 1024 * 1024);
  TempDir dir;
  size_t reloads = 0;
  Daemon daemon(dir, top("workers: 2\n") + proxy({a->address()}, "round_robin"));
  const uint16_t port = daemon.port("web");
  const std::string admin = daemon.waitAdmin();

  // A long stream through upstream a, in the middle of its bytes when the route changes.
  Conn running = connectTcp(port);
  REQUIRE(running.valid());
  const std::string first = randomPayload(21, 300000);
  REQUIRE(running.sendAll(first) == 0);
  REQUIRE(waitUntil([&] { return received(*a) >= first.size(); }, 5s));

  Looper looper(port);
  reload(daemon, top("workers: 2\n") + proxy({b->address()}, "least_connections"), reloads);
  INFO(daemon.log());
  REQUIRE(daemon.log().find("reload applied: configuration generation 2: 0 route(s) added, 1 "
                            "changed, 0 removed") != std::string::npos);
  CHECK(daemon.log().find("route=web changed by reload") != std::string::npos);

  // A new connection goes to b; the running one still goes to a, and ends there byte-exact.
  const size_t b_before = b->accepted();
  Conn fresh = connectTcp(port);
  REQUIRE(fresh.sendAll("to the new upstream\n") == 0);
  fresh.shutdownWrite();
  REQUIRE(fresh.waitClosed(5s) == 0);
  const std::string second = randomPayload(22, 300000);
  REQUIRE(running.sendAll(second) == 0);
  running.shutdownWrite();
  REQUIRE(running.waitClosed(5s) == 0);
  REQUIRE(a->waitDone(1, 5s));
  bool found = false;
  for (const auto& r : a->records()) {
    if (r.bytes == first.size() + second.size()) {
      CHECK(firstDifference(r.data, first + second) == "");
      found = true;
    }
  }
  CHECK(found);
  CHECK(b->accepted() > b_before);
  CHECK(metricValue(admin,
                    "spliced_upstream_up{route=\"web\",upstream=\"" + b->address() + "\"}") == 1);

  // Ten more changes back and forth while the looping client goes on: none of its connections
  // fails, and every byte it sent reached one of the two upstreams.
  for (int i = 0; i < 10; ++i) {
    const auto& u = i % 2 == 0 ? *a : *b;
    reload(daemon, top("workers: 2\n") + proxy({u.address()}, "round_robin"), reloads);
  }
  std::this_thread::sleep_for(200ms);
  looper.finish();
  CHECK(looper.failed() == 0);
  CHECK(looper.done() > 0);
  CHECK(metricValue(admin, "spliced_config_generation") == 12);
  // The socket was never reopened: one "listening" line for the route.
  CHECK(logLines(daemon.log(), {"route=web listening on"}).size() == 1);
  REQUIRE(waitUntil(
      [&] {
        return received(*a) + received(*b) == first.size() + second.size() + 20 + looper.sent();
      },
      5s));
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
}

TEST_CASE(
    "reload: a changed archive route rotates at the new size and cuts lines at the new max_line "
    "for new connections - a running one keeps its max_line",
    "[e2e][reload]") {
  TempDir dir;
  size_t reloads = 0;
  auto route = [&](const std::string& max_bytes, const std::string& max_line) {
    return "  - name: logs\n    listen: 127.0.0.1:0\n    archive:\n      dir: " +
           (dir / "logs").string() +
           "\n      layout: shared\n      framing: lines\n      name: \"{route}-{seq}.log\"\n"
           "      max_line: " +
           max_line + "\n      rotate: { max_bytes: " + max_bytes + " }\n";
  };
  Daemon daemon(dir, top("workers: 2\n") + route("1MiB", "1MiB"));
  const uint16_t port = daemon.port("logs");
  daemon.waitAdmin();

  Conn old_conn = connectTcp(port);
  const std::string before = lines("old", 200, 1000);
  REQUIRE(old_conn.sendAll(before) == 0);
  REQUIRE(waitUntil(
      [&] {
        MetricValues m = scrapeMetrics(daemon.waitAdmin());
        return m["spliced_archive_bytes_total{route=\"logs\"}"] >= before.size();
      },
      5s));

  reload(daemon, top("workers: 2\n") + route("64KiB", "2KiB"), reloads);
  INFO(daemon.log());
  REQUIRE(daemon.log().find("route=logs changed by reload") != std::string::npos);

  // Both write more; each also sends one line of 5000 bytes: the running connection's is kept
  // whole (its max_line is still 1 MiB), the new one's is cut at 2 KiB.
  const std::string long_old = std::string(4999, 'O') + "\n";
  const std::string long_new = std::string(4999, 'N') + "\n";
  Conn new_conn = connectTcp(port);
  const std::string after_old = lines("old-after", 200, 1000) + long_old;
  const std::string after_new = lines("new", 200, 1000) + long_new;
  REQUIRE(old_conn.sendAll(after_old) == 0);
  REQUIRE(new_conn.sendAll(after_new) == 0);
  old_conn.shutdownWrite();
  new_conn.shutdownWrite();
  REQUIRE(old_conn.waitClosed(5s) == 0);
  REQUIRE(new_conn.waitClosed(5s) == 0);
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);

  // Every segment opened after the reload is at most 64 KiB; the first holds what came before.
  const auto files = closedSegments(dir / "logs");
  REQUIRE(files.size() > 5);
  size_t big = 0;
  for (const auto& f : files) {
    if (fs::file_size(f) > 64 * 1024) ++big;
  }
  CHECK(big == 1);
  std::string all;
  for (const auto& f : files) all += readFile(f);
  CHECK(all.find(long_old) != std::string::npos);
  CHECK(all.find(long_new) == std::string::npos);
  CHECK(all.find(std::string(2000, 'N')) != std::string::npos);
  // The short lines, each once.
  std::vector<std::string> want;
  for (const std::string* s : {&before, &after_old, &after_new}) {
    for (size_t pos = 0; pos < s->size();) {
      size_t end = s->find('\n', pos) + 1;
      if (end - pos < 2000) want.push_back(s->substr(pos, end - pos));
      pos = end;
    }
  }
  std::sort(want.begin(), want.end());
  std::vector<std::string> got;
  for (const auto& l : sortedLines(dir / "logs")) {
    if (l.size() < 2000 && l.find('\x1e') == std::string::npos) got.push_back(l);
  }
  CHECK(got == want);
}

TEST_CASE(
    "reload: retention and compression turned on by a reload apply to the segments already "
    "there",
    "[e2e][reload]") {
  TempDir dir;
  size_t reloads = 0;
  auto route = [&](const std::string& extra) {
    return "  - name: keep\n    listen: 127.0.0.1:0\n    archive:\n      dir: " +
           (dir / "keep").string() + "\n      name: \"{route}-{conn}-{seq}.log\"\n" + extra;
  };
  Daemon daemon(dir, top() + route(""));
  const uint16_t port = daemon.port("keep");
  const std::string admin = daemon.waitAdmin();
  std::vector<std::string> sent;
  for (int i = 0; i < 5; ++i) {
    Conn c = connectTcp(port);
    sent.push_back(randomPayload(30 + i, 50000));
    REQUIRE(c.sendAll(sent.back()) == 0);
    c.shutdownWrite();
    REQUIRE(c.waitClosed(5s) == 0);
  }
  REQUIRE(waitUntil([&] { return closedSegments(dir / "keep").size() == 5; }, 5s));

  reload(daemon, top() + route("      retain: { max_files: 2 }\n      compress: zstd\n"), reloads);
  INFO(daemon.log());
  REQUIRE(daemon.log().find("route=keep changed by reload") != std::string::npos);
  // The catch-up the reload queued: three deleted, the two left compressed.
  auto listing = [&] {
    std::vector<std::string> names;
    for (const auto& e : fs::directory_iterator(dir / "keep")) {
      const std::string n = e.path().filename().string();
      if (n[0] != '.') names.push_back(n);
    }
    std::sort(names.begin(), names.end());
    return names;
  };
  REQUIRE(waitUntil(
      [&] {
        auto names = listing();
        return names.size() == 2 && names[0].ends_with(".zst") && names[1].ends_with(".zst");
      },
      10s));
  CHECK(metricValue(admin, "spliced_archive_deleted_segments_total{route=\"keep\"}") == 3);
  // What is left reads back as what the last two clients sent.
  CommandResult cat = runSpliced(dir, {"cat", (dir / "keep").string()});
  CHECK(cat.exit_code == 0);
  CHECK(firstDifference(cat.out, sent[3] + sent[4]) == "");
}

TEST_CASE("reload: an allow list changed by a reload applies to new connections only",
          "[e2e][reload]") {
  TempDir dir;
  size_t reloads = 0;
  auto route = [&](const std::string& allow) {
    return "  - name: a\n    listen: 127.0.0.1:0\n    allow: [\"" + allow +
           "\"]\n    archive:\n      dir: " + (dir / "a").string() +
           "\n      name: \"{route}-{conn}-{seq}.log\"\n";
  };
  Daemon daemon(dir, top("workers: 2\n") + route("127.0.0.1/32"));
  const uint16_t port = daemon.port("a");
  const std::string admin = daemon.waitAdmin();
  Conn running = connectTcp(port);
  const std::string first = randomPayload(41, 100000);
  REQUIRE(running.sendAll(first) == 0);

  reload(daemon, top("workers: 2\n") + route("10.0.0.0/8"), reloads);
  INFO(daemon.log());
  // New clients from 127.0.0.1 are refused now (accepted and closed at once)...
  for (int i = 0; i < 4; ++i) {
    Conn c = connectTcp(port);
    c.sendAll("refused\n");
    c.shutdownWrite();
    CHECK(c.waitClosed(5s) != ETIMEDOUT);
  }
  REQUIRE(waitUntil(
      [&] {
        return metricValue(
                   admin, "spliced_connections_rejected_total{route=\"a\",reason=\"denied\"}") == 4;
      },
      5s));
  // ... while the running one goes on to its end.
  const std::string second = randomPayload(42, 100000);
  REQUIRE(running.sendAll(second) == 0);
  running.shutdownWrite();
  REQUIRE(running.waitClosed(5s) == 0);
  // Allowed again by the next reload.
  reload(daemon, top("workers: 2\n") + route("127.0.0.0/8"), reloads);
  Conn again = connectTcp(port);
  REQUIRE(again.sendAll("allowed again\n") == 0);
  again.shutdownWrite();
  REQUIRE(again.waitClosed(5s) == 0);
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
  std::vector<std::string> want = {first + second, "allowed again\n"};
  std::sort(want.begin(), want.end());
  CHECK(sortedSegmentContents(dir / "a") == want);
}

TEST_CASE("reload: a change a reload cannot apply is refused whole - the message names the key",
          "[e2e][reload]") {
  auto up = TestUpstream::sink();
  TempDir dir;
  size_t reloads = 0;
  auto route = [&](const std::string& name, const std::string& archive_extra,
                   const std::string& forward = "") {
    std::string out = "  - name: " + name + "\n    listen: 127.0.0.1:0\n    archive:\n      dir: " +
                      (dir / name).string() + "\n" + archive_extra;
    if (!forward.empty()) out += "    forward: { upstreams: [\"" + forward + "\"] }\n";
    return out;
  };
  const std::string base =
      route("a", "      layout: shared\n      framing: lines\n") +
      route("s", "      layout: shared\n      framing: lines\n", up->address());
  Daemon daemon(dir, top() + base);
  daemon.port("a");
  const std::string admin = daemon.waitAdmin();
  struct Case {
    std::string routes;
    std::string reason;
  };
  const std::vector<Case> cases = {
      {route("a", "      layout: shared\n      framing: raw\n") +
           route("s", "      layout: shared\n      framing: lines\n", up->address()),
       "route a: archive.framing changed: it shapes the archive"},
      {route("a", "      layout: per_connection\n") +
           route("s", "      layout: shared\n      framing: lines\n", up->address()),
       "route a: archive.layout changed"},
      {route("a", "      layout: shared\n      framing: lines\n") +
           route("s", "      layout: shared\n      framing: lines\n", "127.0.0.1:1"),
       "route s: forward changed: a shipping route's upstream connection and cursor are its own"},
      {"  - name: a\n    listen: 127.0.0.1:0\n    forward: { upstreams: [\"" + up->address() +
           "\"] }\n" + route("s", "      layout: shared\n      framing: lines\n", up->address()),
       "route a: archive or forward changed: the route would be of another kind"},
  };
  for (const Case& c : cases) {
    INFO(c.reason);
    reload(daemon, top() + c.routes, reloads);
    CHECK(daemon.log().find("reload failed: " + c.reason) != std::string::npos);
    CHECK(metricValue(admin, "spliced_config_generation") == 1);
  }
  // A change it can apply, to both routes, goes through.
  reload(daemon,
         top() + route("a", "      layout: shared\n      framing: lines\n      max_line: 4KiB\n") +
             route("s", "      layout: shared\n      framing: lines\n      max_line: 4KiB\n",
                   up->address()),
         reloads);
  CHECK(metricValue(admin, "spliced_config_generation") == 2);
}
