// A proxy route in-process (Server on loopback port 0, an echo upstream in a thread) with the
// socket calls of the seam failing at an exact call: the PROXY header send, the copy path's send,
// the half-close at end of stream, and the peek at an accept_proxy header. Each test checks what
// the client and the upstream saw, byte for byte, the route's counters, and that the faulted
// call was made.
#include <linux/sockios.h>
#include <sys/ioctl.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>

#include "fixtures.hpp"
#include "server_fixtures.hpp"
#include "spliced/server/server.hpp"

using namespace spliced;
using namespace spliced::testing;
using namespace std::chrono_literals;

namespace {

// One proxy route "p" on 127.0.0.1:0 to the upstream at `port`. `route_extra` adds keys to the
// route (four spaces), `forward_extra` to its forward block (six), `top` top-level keys.
ConfigPtr proxyConfig(uint16_t port, const std::string& forward_extra = "",
                      const std::string& route_extra = "", const std::string& top = "") {
  std::string text =
      "workers: 1\n" + top + "routes:\n  - name: p\n    listen: 127.0.0.1:0\n" + route_extra +
      "    forward:\n      upstreams: [127.0.0.1:" + std::to_string(port) + "]\n" + forward_extra;
  auto loaded = loadConfigString(text, "test.yaml");
  for (auto& e : loaded.errors) FAIL(e.format());
  return loaded.config;
}

// The route's one upstream as the admin endpoint would report it.
UpstreamStatus upstreamOf(Server& server) {
  ServerStatus st = server.status();
  REQUIRE(st.routes.size() == 1);
  REQUIRE(st.routes[0].upstreams.size() == 1);
  return st.routes[0].upstreams[0];
}

// Runs the loop until `n` connections have been accepted and none is left.
bool sessionsEnded(Server& server, uint64_t n, std::chrono::milliseconds limit = 2s) {
  const RouteMetrics& m = *server.metrics("p");
  return loopUntil(
      server, [&] { return m.connections_total == n && m.connections_active == 0; }, limit);
}

// The client must see its connection closed, by a reset or an EOF, never left open.
bool closedOrReset(int end) { return end == 0 || end == ECONNRESET; }

}  // namespace

TEST_CASE("proxy: the PROXY v2 header send failing ends the session before any byte",
          "[proxy][faults]") {
  EchoUpstream upstream;
  FaultySysCalls sys;
  sys.fault = failCalls(Call::Send, EPIPE, 1);  // the header is the session's first send
  Server server(proxyConfig(upstream.port, "      proxy_protocol: v2\n"), sys);
  REQUIRE(server.start().ok());
  const RouteMetrics& m = *server.metrics("p");
  UniqueFd client = connectTo(server.boundAddress("p"));
  sendAll(client.get(), "hello");
  REQUIRE(sessionsEnded(server, 1));
  CHECK(sys.calls(Call::Send) == 1);
  Received got = recvUntilClosed(client.get(), 2s);
  CHECK(got.bytes.empty());
  CHECK(closedOrReset(got.end));
  // The upstream was connected to, and then closed without a byte: neither the header nor the
  // client's bytes.
  REQUIRE(waitUntil([&] { return upstream.finished == 1; }, 2s));
  CHECK(upstream.accepted == 1);
  CHECK(upstream.bytes == 0);
  // Counted as an upstream error (the session released it as failed); nothing was moved, the
  // header included, and it is not a rejection.
  UpstreamStatus u = upstreamOf(server);
  CHECK(u.errors == 1);
  CHECK(u.active == 0);
  CHECK(u.up);
  CHECK(m.upstream_bytes == 0);
  CHECK(m.bytes_in == 0);
  CHECK(m.bytes_out == 0);
  CHECK(m.rejected_no_upstream == 0);
  CHECK(m.rejected_bad_header == 0);
  stopServer(server);
}

TEST_CASE("proxy: send failing on the copy path with ECONNRESET resets the client",
          "[proxy][faults]") {
  EchoUpstream upstream;
  FaultySysCalls sys;
  sys.fault = failCalls(Call::Send, ECONNRESET, 1);  // the first copied bytes to the upstream
  // No pipe can be had: both directions copy through user space, hence send(). The failed
  // direction stops; the other (upstream -> client, with nothing to carry) goes on until the
  // idle timeout.
  Server server(proxyConfig(upstream.port, "", "    idle_timeout: 300ms\n", "pipes: { max: 0 }\n"),
                sys);
  REQUIRE(server.start().ok());
  const RouteMetrics& m = *server.metrics("p");
  UniqueFd client = connectTo(server.boundAddress("p"));
  std::string data = payload(64 * 1024, 71);
  sendAll(client.get(), data);  // and the client keeps its side open
  REQUIRE(sessionsEnded(server, 1));
  CHECK(sys.calls(Call::Send) == 1);
  CHECK(sys.calls(Call::SpliceFromSocket) == 0);
  CHECK(sys.calls(Call::Read) > 0);
  CHECK(m.copy_fallback_bytes > 0);
  Received got = recvUntilClosed(client.get(), 2s);
  CHECK(got.bytes.empty());
  CHECK(got.end == ECONNRESET);  // a reset, not an EOF that would pass for a clean end
  REQUIRE(waitUntil([&] { return upstream.finished == 1; }, 2s));
  CHECK(upstream.bytes == 0);
  CHECK(m.upstream_bytes == 0);
  CHECK(upstreamOf(server).errors == 1);
  stopServer(server);
}

TEST_CASE("proxy: shutdown(SHUT_WR) failing at end of stream ends the session as an error",
          "[proxy][faults]") {
  EchoUpstream upstream;
  FaultySysCalls sys;
  sys.fault = failCalls(Call::Shutdown, EIO, 1);  // the client's FIN, passed on to the upstream
  // The failed direction stops; the other goes on until the idle timeout (the upstream, without
  // the FIN, never ends its echo).
  Server server(proxyConfig(upstream.port, "", "    idle_timeout: 300ms\n"), sys);
  REQUIRE(server.start().ok());
  const RouteMetrics& m = *server.metrics("p");
  UniqueFd client = connectTo(server.boundAddress("p"));
  std::string data = payload(64 * 1024, 72);
  sendAll(client.get(), data);
  ::shutdown(client.get(), SHUT_WR);
  // Without the FIN the upstream would wait forever; the session must end, not hang.
  REQUIRE(sessionsEnded(server, 1));
  CHECK(sys.calls(Call::Shutdown) == 1);
  CHECK(m.bytes_in == data.size());
  CHECK(m.upstream_bytes == data.size());
  Received got = recvUntilClosed(client.get(), 2s);
  // Some of the echo may have come back before the end; whatever came is the stream's start.
  CHECK(got.bytes.size() <= data.size());
  CHECK(difference(got.bytes, data.substr(0, got.bytes.size())) == "");
  CHECK(got.end == ECONNRESET);  // an error, not a clean end
  CHECK(upstreamOf(server).errors == 1);
  REQUIRE(waitUntil([&] { return upstream.finished == 1; }, 2s));
  CHECK(upstream.bytes == data.size());
  stopServer(server);
}

TEST_CASE("accept_proxy: recv failing on the header peek refuses the connection, counted",
          "[proxy][faults]") {
  EchoUpstream upstream;
  FaultySysCalls sys;
  sys.fault = failCalls(Call::Recv, ECONNRESET, 1);
  Server server(proxyConfig(upstream.port, "", "    accept_proxy: true\n"), sys);
  REQUIRE(server.start().ok());
  const RouteMetrics& m = *server.metrics("p");
  // A valid header and stream bytes: without the fault this connection goes through.
  const std::string header = "PROXY TCP4 192.0.2.7 127.0.0.1 40000 80\r\n";
  const std::string data = "hello, upstream";
  {
    UniqueFd client = connectTo(server.boundAddress("p"));
    sendAll(client.get(), header + data);
    REQUIRE(sessionsEnded(server, 1));
    CHECK(sys.calls(Call::Recv) == 1);  // the peek failed; the header was not read
    CHECK(m.rejected_bad_header == 1);
    Received got = recvUntilClosed(client.get(), 2s);
    CHECK(got.bytes.empty());
    CHECK(closedOrReset(got.end));
    CHECK(upstream.accepted == 0);
    CHECK(m.bytes_in == 0);
  }
  // The same bytes again, the fault spent: accepted, header taken off, the stream echoed back.
  {
    UniqueFd client = connectTo(server.boundAddress("p"));
    sendAll(client.get(), header + data);
    ::shutdown(client.get(), SHUT_WR);
    REQUIRE(sessionsEnded(server, 2));
    Received got = recvUntilClosed(client.get(), 2s);
    CHECK(got.bytes == data);
    CHECK(got.end == 0);
    CHECK(sys.calls(Call::Recv) >= 3);  // the failed peek, a peek, the header itself
  }
  CHECK(m.rejected_bad_header == 1);
  CHECK(m.bytes_in == data.size());
  CHECK(m.connections_active == 0);
  CHECK(upstream.accepted == 1);
  stopServer(server);
}

namespace {

// The port at the other end of socket `fd`; 0 when it is not a connected inet socket.
uint16_t peerPort(int fd) {
  sockaddr_in sa{};
  socklen_t len = sizeof sa;
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) return 0;
  if (sa.sin_family != AF_INET) return 0;
  return ntohs(sa.sin_port);
}

// The seam with one more fault: while `hold_port` is set, splicing into the daemon's socket
// whose peer has that port (the test's client) is EAGAIN, as if the client did not read.
struct HoldingSysCalls : FaultySysCalls {
  std::atomic<uint16_t> hold_port{0};
  ssize_t splice(int fd_in, loff_t* off_in, int fd_out, loff_t* off_out, size_t len,
                 unsigned int flags) override {
    uint16_t hold = hold_port.load();
    if (hold != 0 && !isPipe(fd_out) && peerPort(fd_out) == hold) {
      errno = EAGAIN;
      return -1;
    }
    return FaultySysCalls::splice(fd_in, off_in, fd_out, off_out, len, flags);
  }
};

// An HTTP server answering 413 during an upload, on 127.0.0.1:0, for one connection: it reads
// `read_first` bytes, waits for `go`, sends `answer`, waits until the proxy's kernel has
// acknowledged all of it, and closes with the rest of the upload unread (the kernel sends a
// reset).
struct AnswerThenClose {
  UniqueFd listener;
  uint16_t port = 0;
  size_t read_first;
  std::string answer;
  std::atomic<bool> go{false};
  std::atomic<uint64_t> got{0};
  std::atomic<bool> closed{false};
  std::atomic<bool> stop{false};
  std::thread thread;

  AnswerThenClose(size_t first, std::string body) : read_first(first), answer(std::move(body)) {
    listener.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in sa = loopbackAddr(0);
    REQUIRE(::bind(listener.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    REQUIRE(::listen(listener.get(), 4) == 0);
    socklen_t len = sizeof sa;
    ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&sa), &len);
    port = ntohs(sa.sin_port);
    thread = std::thread([this] { serve(); });
  }
  ~AnswerThenClose() {
    stop = true;
    thread.join();
  }

  void serve() {
    UniqueFd c;
    while (!stop && !c.valid()) {
      pollfd p{listener.get(), POLLIN, 0};
      if (::poll(&p, 1, 20) > 0) c.reset(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    }
    char buf[4096];
    while (!stop && got < read_first) {
      pollfd q{c.get(), POLLIN, 0};
      if (::poll(&q, 1, 20) <= 0) continue;
      ssize_t n = ::recv(c.get(), buf, std::min(sizeof buf, read_first - got), 0);
      if (n <= 0) return;
      got += static_cast<uint64_t>(n);
    }
    while (!stop && !go) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    sendAll(c.get(), answer);
    // Everything sent is acknowledged: the close below cannot take any of it back.
    for (int i = 0; i < 1000 && !stop; ++i) {
      int queued = 0;
      if (::ioctl(c.get(), SIOCOUTQ, &queued) != 0 || queued == 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    c.reset();  // unread upload bytes: a reset, not a FIN
    closed = true;
  }
};

// Sends an endless upload on `fd` without blocking until a send fails or `stop` is set.
std::thread uploader(int fd, std::atomic<bool>& stop, std::atomic<int>& send_err) {
  return std::thread([fd, &stop, &send_err] {
    const std::string chunk = payload(64 * 1024, 91);
    while (!stop) {
      ssize_t w = ::send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w >= 0 || errno == EINTR) continue;
      if (errno == EAGAIN) {
        pollfd p{fd, POLLOUT, 0};
        ::poll(&p, 1, 20);
        continue;
      }
      send_err = errno;
      return;
    }
  });
}

}  // namespace

// Issue 12 item 11: the upstream reads a little of an upload, answers (413) and closes with the
// rest unread; the write to it fails while the answer still waits in the proxy. The failed
// direction must not take the other one down: the client gets the whole answer.
TEST_CASE("proxy: a failed write to the upstream leaves its answer flowing to the client",
          "[proxy][faults]") {
  std::string answer = "HTTP/1.1 413 Content Too Large\r\nConnection: close\r\n\r\n";
  answer += payload(48 * 1024, 92);
  AnswerThenClose upstream(256 * 1024, answer);
  HoldingSysCalls sys;
  Server server(proxyConfig(upstream.port, "", "    idle_timeout: 0\n"), sys);
  REQUIRE(server.start().ok());
  const RouteMetrics& m = *server.metrics("p");
  UniqueFd client = connectTo(server.boundAddress("p"));
  const uint16_t client_port = [&] {
    sockaddr_in sa{};
    socklen_t len = sizeof sa;
    ::getsockname(client.get(), reinterpret_cast<sockaddr*>(&sa), &len);
    return ntohs(sa.sin_port);
  }();
  std::atomic<bool> stop_upload{false};
  std::atomic<int> send_err{0};
  ThreadGuard up(uploader(client.get(), stop_upload, send_err));
  Received got;
  ThreadGuard reader(std::thread([&] { got = recvUntilClosed(client.get(), 10s); }));
  // Destroyed first, even when a REQUIRE fails: the uploader stops, the client is shut.
  struct StopOnExit {
    std::atomic<bool>& stop;
    int fd;
    ~StopOnExit() {
      stop = true;
      ::shutdown(fd, SHUT_RDWR);
    }
  } stop_on_exit{stop_upload, client.get()};

  // The upstream has read its part; the client goes on uploading into a full upstream.
  REQUIRE(loopUntil(
      server, [&] { return upstream.got.load() >= upstream.read_first; }, 5s));
  // The client reads nothing for now: the answer will wait in the proxy when the upstream
  // resets, and the write to the upstream fails first.
  sys.hold_port = client_port;
  upstream.go = true;
  REQUIRE(loopUntil(
      server, [&] { return upstream.closed.load(); }, 5s));
  runFor(server, std::chrono::milliseconds(300));
  // The client reads again: the whole answer must reach it.
  sys.hold_port = 0;
  const bool ended = loopUntil(
      server, [&] { return m.connections_active == 0; }, 5s);
  reader.join();
  stop_upload = true;
  up.join();
  INFO("client got " << got.bytes.size() << " of " << answer.size() << " answer bytes, end "
                     << got.end << " (" << std::strerror(got.end) << "); upload send errno "
                     << send_err.load());
  CHECK(ended);
  CHECK(difference(got.bytes, answer) == "");
  CHECK(closedOrReset(got.end));
  CHECK(m.bytes_out == answer.size());
  // The failed write is still the upstream's error.
  CHECK(upstreamOf(server).errors == 1);
  CHECK(upstreamOf(server).active == 0);
  stopServer(server);
}
