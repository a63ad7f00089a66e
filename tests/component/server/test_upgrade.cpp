// Binary upgrade in-process: two Servers in this process, the running one (A) and the new one
// (B), talking over a socketpair as a process and the binary it started do. A proxied stream is
// frozen in A at an awkward moment (bytes waiting in a pipe behind a blocked sink, bytes in a copy
// buffer, one direction already half-closed), moved to B, and must end byte-exact; a B that
// refuses leaves A to finish the stream.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <thread>

#include "fixtures.hpp"
#include "server_fixtures.hpp"
#include "spliced/server/server.hpp"

using namespace spliced;
using namespace spliced::testing;
using namespace std::chrono_literals;

namespace {

// The syscalls of A: writes toward the client or toward the upstream (told apart by the peer's
// port) say EAGAIN while blocked, as a peer that does not read; `copy` refuses splice from sockets
// (EINVAL) so that the pumps copy through their buffers.
class GateSys : public SysCalls {
 public:
  std::atomic<bool> block_to_client{false};
  std::atomic<bool> block_to_upstream{false};
  std::atomic<bool> copy{false};
  std::atomic<uint16_t> client_port{0};

  ssize_t splice(int fd_in, loff_t* off_in, int fd_out, loff_t* off_out, size_t len,
                 unsigned int flags) override {
    if (copy && isSocket(fd_in)) {
      errno = EINVAL;
      return -1;
    }
    if (blocked(fd_out)) {
      errno = EAGAIN;
      return -1;
    }
    return SysCalls::splice(fd_in, off_in, fd_out, off_out, len, flags);
  }
  ssize_t send(int fd, const void* buf, size_t len, int flags) override {
    if (blocked(fd)) {
      errno = EAGAIN;
      return -1;
    }
    return SysCalls::send(fd, buf, len, flags);
  }

 private:
  static bool isSocket(int fd) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    return ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0;
  }
  bool blocked(int fd) const {
    sockaddr_in sa{};
    socklen_t len = sizeof sa;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) return false;
    const bool to_client = ntohs(sa.sin_port) == client_port.load();
    return to_client ? block_to_client.load() : block_to_upstream.load();
  }
};

ConfigPtr config(uint16_t upstream_port, const std::string& listen = "127.0.0.1:0") {
  auto loaded = loadConfigString(
      "workers: 1\nroutes:\n  - name: p\n    listen: " + listen +
          "\n    forward:\n      upstreams: [127.0.0.1:" + std::to_string(upstream_port) + "]\n",
      "test.yaml");
  for (auto& e : loaded.errors) FAIL(e.format());
  return loaded.config;
}

uint16_t localPort(int fd) {
  sockaddr_in sa{};
  socklen_t len = sizeof sa;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  return ntohs(sa.sin_port);
}

// B's side of the handoff, on a thread of its own while the test runs A's loop: takes over,
// starts, makes the sessions again and says "ready".
struct NewServer {
  Server server;
  std::thread thread;
  std::atomic<bool> done{false};
  std::string error;

  NewServer(ConfigPtr cfg, UniqueFd channel) : server(std::move(cfg)) {
    thread = std::thread([this, ch = std::move(channel)]() mutable {
      Status s = server.takeOver(std::move(ch));
      if (s) s = server.start();
      if (s) s = server.finishTakeOver();
      if (!s) error = s.error().message();
      done = true;
    });
  }
  ~NewServer() { join(); }
  void join() {
    if (thread.joinable()) thread.join();
  }
};

}  // namespace

TEST_CASE(
    "upgrade in-process: a proxied stream frozen at an awkward moment ends byte-exact in "
    "the new server",
    "[upgrade]") {
  EchoUpstream upstream;
  GateSys sys;
  Server a(config(upstream.port), sys);
  REQUIRE(a.start().ok());
  const RouteMetrics& ma = *a.metrics("p");
  UniqueFd client = connectTo(a.boundAddress("p"));
  sys.client_port = localPort(client.get());
  // pipe: bytes waiting in the pipe to the upstream, which takes none; copy: bytes in the copy
  // buffer (splice refused), the upstream taking none; half-closed: the client's direction ended
  // (its FIN passed on), the echo waiting for the client.
  const std::string moment = GENERATE("pipe", "copy", "half-closed");
  INFO("moment: " << moment);
  const std::string data = payload(moment == "half-closed" ? 120 * 1024 : 600 * 1024, 99);
  const size_t first = 300 * 1024;
  if (moment == "pipe" || moment == "copy") {
    sys.copy = moment == "copy";
    sys.block_to_upstream = true;
    sendAll(client.get(), data.substr(0, first));
    REQUIRE(loopUntil(
        a, [&] { return ma.bytes_in > 0; }, 10s));
    runFor(a, 50ms);
    CHECK(ma.upstream_bytes == 0);
    if (moment == "copy") CHECK(ma.copy_fallback_bytes > 0);
  } else {
    sys.block_to_client = true;
    sendAll(client.get(), data);
    ::shutdown(client.get(), SHUT_WR);
    // Every byte reached the upstream, the FIN too (it saw the end of the stream), and echoed
    // bytes wait in the pipe toward the client.
    REQUIRE(loopUntil(
        a, [&] { return upstream.finished.load() == 1 && ma.upstream_bytes_in > 0; }, 10s));
    runFor(a, 50ms);
    CHECK(ma.upstream_bytes == data.size());
    CHECK(ma.bytes_out == 0);
  }
  // The handoff: A freezes and sends, B takes over and says ready, A lets go.
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  a.upgradeOver(UniqueFd(sv[0]), 0);
  NewServer b(config(upstream.port), UniqueFd(sv[1]));
  REQUIRE(loopUntil(
      a, [&] { return b.done.load() && a.handedOff(); }, 20s));
  b.join();
  REQUIRE(b.error.empty());
  // B alone from here: the rest of the stream, and the whole echo back.
  ThreadGuard rest(std::thread([&] {
    if (moment != "half-closed") {
      sendAll(client.get(), data.substr(first));
      ::shutdown(client.get(), SHUT_WR);
    }
  }));
  Received got;
  ThreadGuard reader(std::thread([&] { got = recvUntilClosed(client.get(), 20s); }));
  const RouteMetrics& mb = *b.server.metrics("p");
  REQUIRE(loopUntil(
      b.server, [&] { return mb.connections_total == 1 && mb.connections_active == 0; }, 20s));
  reader.join();
  rest.join();
  CHECK(got.end == 0);
  CHECK(difference(got.bytes, data) == "");
  // Counted once: what A moved plus what B moved is the stream, each way.
  CHECK(ma.bytes_in + mb.bytes_in == data.size());
  CHECK(ma.bytes_out + mb.bytes_out == data.size());
  stopServer(b.server);
}

TEST_CASE(
    "upgrade in-process: a new server that refuses leaves the running one to finish the "
    "stream",
    "[upgrade]") {
  EchoUpstream upstream;
  GateSys sys;
  Server a(config(upstream.port), sys);
  REQUIRE(a.start().ok());
  const RouteMetrics& ma = *a.metrics("p");
  UniqueFd client = connectTo(a.boundAddress("p"));
  sys.client_port = localPort(client.get());
  const std::string data = payload(400 * 1024, 7);
  sys.block_to_upstream = true;
  sendAll(client.get(), data.substr(0, 100 * 1024));
  REQUIRE(loopUntil(
      a, [&] { return ma.bytes_in == 100 * 1024; }, 10s));
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  a.upgradeOver(UniqueFd(sv[0]), 0);
  // B's config moves the route: it refuses, and A thaws.
  NewServer b(config(upstream.port, "127.0.0.1:1"), UniqueFd(sv[1]));
  REQUIRE(loopUntil(
      a, [&] { return b.done.load(); }, 20s));
  b.join();
  CHECK(b.error.find("listens on 127.0.0.1:0 in the running process") != std::string::npos);
  runFor(a, 50ms);
  CHECK_FALSE(a.handedOff());
  sys.block_to_upstream = false;
  ThreadGuard rest(std::thread([&] {
    sendAll(client.get(), data.substr(100 * 1024));
    ::shutdown(client.get(), SHUT_WR);
  }));
  Received got;
  ThreadGuard reader(std::thread([&] { got = recvUntilClosed(client.get(), 20s); }));
  REQUIRE(loopUntil(
      a, [&] { return ma.connections_active == 0; }, 20s));
  reader.join();
  CHECK(got.end == 0);
  CHECK(difference(got.bytes, data) == "");
  stopServer(a);
}
