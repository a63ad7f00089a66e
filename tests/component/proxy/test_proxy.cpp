// A proxy route in-process: a real event_base, loopback sockets, an echo upstream written here,
// and the syscall seam forcing EAGAIN and short transfers on every leg of both directions.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <map>
#include <mutex>

#include "fixtures.hpp"
#include "spliced/server/server.hpp"

using namespace spliced;
using namespace spliced::testing;
using namespace std::chrono_literals;

namespace {

sockaddr_in loopback(uint16_t port) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return sa;
}

// An echo server on 127.0.0.1:0 serving one connection at a time in a thread; it echoes until
// EOF, then shuts its write side (so half-close travels back through the proxy).
struct EchoUpstream {
  UniqueFd listener;
  uint16_t port = 0;
  std::thread thread;
  std::atomic<bool> stop{false};

  EchoUpstream() {
    listener.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in sa = loopback(0);
    REQUIRE(::bind(listener.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    REQUIRE(::listen(listener.get(), 16) == 0);
    socklen_t len = sizeof sa;
    ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&sa), &len);
    port = ntohs(sa.sin_port);
    thread = std::thread([this] {
      while (!stop) {
        pollfd p{listener.get(), POLLIN, 0};
        if (::poll(&p, 1, 50) <= 0) continue;
        UniqueFd c(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (!c.valid()) continue;
        char buf[65536];
        while (true) {
          ssize_t n = ::recv(c.get(), buf, sizeof buf, 0);
          if (n <= 0) break;
          for (ssize_t off = 0; off < n;) {
            ssize_t w = ::send(c.get(), buf + off, static_cast<size_t>(n - off), MSG_NOSIGNAL);
            if (w <= 0) break;
            off += w;
          }
        }
        ::shutdown(c.get(), SHUT_WR);
      }
    });
  }
  ~EchoUpstream() {
    stop = true;
    thread.join();
  }
};

ConfigPtr proxyConfig(uint16_t upstream_port) {
  std::string text =
      "workers: 1\nroutes:\n  - name: p\n    listen: 127.0.0.1:0\n    forward:\n"
      "      upstreams: [127.0.0.1:" +
      std::to_string(upstream_port) + "]\n";
  auto loaded = loadConfigString(text, "test.yaml");
  for (auto& e : loaded.errors) FAIL(e.format());
  return loaded.config;
}

// A client that sends `data` (then shuts its write side) while reading everything back.
struct EchoClient {
  UniqueFd fd;
  std::string received;
  std::thread reader, writer;
  std::atomic<bool> done{false};

  EchoClient(const std::string& hostport, const std::string& data) {
    auto colon = hostport.rfind(':');
    sockaddr_in sa = loopback(static_cast<uint16_t>(std::stoi(hostport.substr(colon + 1))));
    fd.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    REQUIRE(::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    writer = spliced::testing::writer(fd.get(), data, 70000);
    reader = std::thread([this] {
      char buf[65536];
      while (true) {
        ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
        if (n <= 0) break;
        received.append(buf, static_cast<size_t>(n));
      }
      done = true;
    });
  }
  ~EchoClient() {
    writer.join();
    reader.join();
  }
};

void runUntil(Server& server, const std::function<bool()>& pred, std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!pred() && std::chrono::steady_clock::now() < deadline) {
    timeval tv{0, 10000};
    event_base_loopexit(server.base(), &tv);
    event_base_dispatch(server.base());
  }
}

}  // namespace

TEST_CASE("proxy: both directions byte-exact under forced EAGAIN and short splices", "[proxy]") {
  EchoUpstream upstream;
  FaultySysCalls sys;
  std::atomic<int> n{0};
  std::map<Call, int> seen;
  std::mutex mu;
  sys.hook = [&](Call c, size_t& len) {
    int k = ++n;
    {
      std::lock_guard lock(mu);
      seen[c]++;
    }
    if (k % 4 == 0) {
      errno = EAGAIN;  // "nothing to read" / "socket full" when it is not
      return -1;
    }
    len = std::min<size_t>(len, 1 + (static_cast<size_t>(k) * 7919) % 20000);
    return 0;
  };
  Server server(proxyConfig(upstream.port), sys);
  REQUIRE(server.start().ok());
  const RouteMetrics& m = *server.metrics("p");
  std::string data = payload(3 << 20, 21);
  {
    EchoClient client(server.boundAddress("p"), data);
    runUntil(
        server, [&] { return client.done.load() && m.connections_active == 0; }, 30s);
    REQUIRE(client.done);
    CHECK(client.received.size() == data.size());
    CHECK(client.received == data);
  }
  CHECK(m.bytes_in == data.size());
  CHECK(m.upstream_bytes == data.size());
  CHECK(m.bytes_out == data.size());
  CHECK(m.connections_active == 0);
  CHECK(seen[Call::SpliceFromSocket] > 10);
  CHECK(seen[Call::SpliceToSocket] > 10);
  server.beginShutdown();
  runUntil(
      server, [] { return false; }, 50ms);
}

TEST_CASE("proxy: EINVAL from splice copies both directions, counted, byte-exact", "[proxy]") {
  EchoUpstream upstream;
  FaultySysCalls sys;
  sys.hook = [](Call c, size_t&) {
    if (c == Call::SpliceToSocket) {
      errno = EINVAL;
      return -1;
    }
    return 0;
  };
  Server server(proxyConfig(upstream.port), sys);
  REQUIRE(server.start().ok());
  const RouteMetrics& m = *server.metrics("p");
  std::string data = payload(1 << 20, 22);
  {
    EchoClient client(server.boundAddress("p"), data);
    runUntil(
        server, [&] { return client.done.load() && m.connections_active == 0; }, 30s);
    REQUIRE(client.done);
    CHECK(client.received == data);
  }
  // Every byte went through user space once per direction, and each is counted.
  CHECK(m.copy_fallback_bytes == 2 * data.size());
  server.beginShutdown();
  runUntil(
      server, [] { return false; }, 50ms);
}
