// A whole collect route in-process: a real event_base, a listener on loopback port 0, and the
// syscall seam forcing a full disk in the middle of a stream.
#include <arpa/inet.h>
#include <netinet/in.h>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <sstream>

#include "fixtures.hpp"
#include "spliced/server/server.hpp"

using namespace spliced;
using namespace spliced::testing;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

UniqueFd connectTo(const std::string& hostport) {
  auto colon = hostport.rfind(':');
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(std::stoi(hostport.substr(colon + 1))));
  ::inet_pton(AF_INET, hostport.substr(0, colon).c_str(), &sa.sin_addr);
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
  return fd;
}

void sendAll(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    off += static_cast<size_t>(n);
  }
}

// Joins on scope exit, so a failed REQUIRE does not terminate the process.
struct ThreadGuard {
  std::thread t;
  explicit ThreadGuard(std::thread th) : t(std::move(th)) {}
  ~ThreadGuard() { join(); }
  void join() {
    if (t.joinable()) t.join();
  }
};

// Runs the loop until `done()` holds or the deadline passes.
template <typename Pred>
bool loopUntil(Server& server, Pred done, std::chrono::milliseconds limit = 20s) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    timeval tv{0, 10000};
    event_base_loopexit(server.base(), &tv);
    event_base_dispatch(server.base());
  }
  return true;
}

ConfigPtr collectConfig(const fs::path& dir, const std::string& extra = "") {
  std::string text =
      "workers: 1\ndrain_timeout: 2s\nroutes:\n  - name: t\n    listen: 127.0.0.1:0\n" + extra +
      "    archive:\n      dir: " + dir.string() + "\n      name: \"{route}-{conn}-{seq}.log\"\n";
  auto loaded = loadConfigString(text, "test.yaml");
  for (auto& e : loaded.errors) FAIL(e.format());
  return loaded.config;
}

}  // namespace

TEST_CASE("a full disk pauses the client and resumes without losing a byte", "[server]") {
  TempDir tmp;
  FaultySysCalls sys;
  std::atomic<bool> full{false};
  sys.hook = [&full](Call c, size_t&) {
    if ((c == Call::SpliceToFile || c == Call::Pwrite) && full) {
      errno = ENOSPC;
      return -1;
    }
    return 0;
  };
  Server server(collectConfig(tmp.path), sys);
  REQUIRE(server.start().ok());
  const RouteMetrics& m = *server.metrics("t");
  UniqueFd client = connectTo(server.boundAddress("t"));
  std::string data = payload(16 << 20, 11);
  const size_t first = 2 << 20;
  // Part one arrives and is archived; then the disk fills and part two is sent.
  ThreadGuard t1(std::thread([&] { sendAll(client.get(), data.substr(0, first)); }));
  REQUIRE(loopUntil(server, [&] { return m.archive_bytes == first; }));
  t1.join();
  full = true;
  ThreadGuard t2(std::thread([&] {
    sendAll(client.get(), data.substr(first));
    ::shutdown(client.get(), SHUT_WR);
  }));
  REQUIRE(loopUntil(server, [&] { return m.storage_errors > 0; }));
  // Reading stops: bytes_in settles while the disk is full (the kernel pushes back on the
  // client), and nothing more reaches the file.
  uint64_t archived = m.archive_bytes;
  loopUntil(
      server, [] { return false; }, 300ms);
  uint64_t in1 = m.bytes_in;
  loopUntil(
      server, [] { return false; }, 700ms);
  CHECK(m.bytes_in == in1);
  CHECK(m.archive_bytes == archived);
  CHECK(m.bytes_in < data.size());
  full = false;
  REQUIRE(loopUntil(server, [&] { return m.connections_active == 0; }));
  t2.join();
  CHECK(m.bytes_in == data.size());
  CHECK(m.archive_bytes == data.size());
  CHECK(readFile(tmp.path / "t-1-000000.log") == data);
  server.beginShutdown();
  loopUntil(
      server, [] { return false; }, 50ms);
}

TEST_CASE("shutdown writes what sockets already hold, closes segments, and stops", "[server]") {
  TempDir tmp;
  Server server(collectConfig(tmp.path, "    idle_timeout: 0\n"), SysCalls::kernel());
  REQUIRE(server.start().ok());
  const RouteMetrics& m = *server.metrics("t");
  UniqueFd a = connectTo(server.boundAddress("t"));
  UniqueFd b = connectTo(server.boundAddress("t"));
  std::string da = payload(100000, 1), db = payload(3000, 2);
  REQUIRE(::send(a.get(), da.data(), da.size(), 0) == static_cast<ssize_t>(da.size()));
  REQUIRE(loopUntil(server, [&] { return m.connections_active == 2 && m.bytes_in == da.size(); }));
  // b's bytes are sent but not yet read by the loop when the stop begins.
  REQUIRE(::send(b.get(), db.data(), db.size(), 0) == static_cast<ssize_t>(db.size()));
  server.beginShutdown();
  // The clients never close: drain_timeout (2s) ends them after the sweep.
  auto start = std::chrono::steady_clock::now();
  event_base_dispatch(server.base());  // returns when the shutdown has finished
  CHECK(std::chrono::steady_clock::now() - start < 5s);
  CHECK(m.connections_active == 0);
  CHECK(readFile(tmp.path / "t-1-000000.log") == da);
  CHECK(readFile(tmp.path / "t-2-000000.log") == db);
  CHECK(m.archive_segments == 2);
}

TEST_CASE("a client that resets while the disk is full is noticed - what it sent is still written",
          "[server]") {
  TempDir tmp;
  FaultySysCalls sys;
  std::atomic<bool> full{true};
  sys.hook = [&full](Call c, size_t&) {
    if ((c == Call::SpliceToFile || c == Call::Pwrite) && full) {
      errno = ENOSPC;
      return -1;
    }
    return 0;
  };
  // What the daemon logs, to see the hang-up noticed while nothing is read.
  std::ostringstream logged;
  auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(logged);
  auto previous = spdlog::default_logger();
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("capture", sink));
  struct Restore {
    std::shared_ptr<spdlog::logger> l;
    ~Restore() { spdlog::set_default_logger(l); }
  } restore{previous};

  Server server(collectConfig(tmp.path), sys);
  REQUIRE(server.start().ok());
  const RouteMetrics& m = *server.metrics("t");
  UniqueFd client = connectTo(server.boundAddress("t"));
  const std::string data = payload(256 << 10, 12);
  sendAll(client.get(), data);
  REQUIRE(loopUntil(server, [&] { return m.storage_errors > 0; }));
  // The client gives up with a reset (SO_LINGER 0) while its session is paused.
  linger lg{1, 0};
  REQUIRE(::setsockopt(client.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0);
  client.reset();
  REQUIRE(loopUntil(server, [&] {
    return logged.str().find("client hung up while the archive refuses writes") !=
           std::string::npos;
  }));
  CHECK(m.connections_active == 1);  // what it sent is still held, not dropped
  full = false;
  REQUIRE(loopUntil(server, [&] { return m.connections_active == 0; }));
  // Every byte read before the reset is in the archive, in order, and nothing else.
  const std::string got = readFile(tmp.path / "t-1-000000.log");
  CHECK(got.size() == m.bytes_in);
  CHECK(got == data.substr(0, got.size()));
  CHECK(m.archive_bytes == m.bytes_in);
  server.beginShutdown();
  loopUntil(
      server, [] { return false; }, 50ms);
}
