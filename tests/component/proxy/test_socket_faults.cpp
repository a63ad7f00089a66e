// A proxy route in-process (Server on loopback port 0, an echo upstream in a thread) with the
// socket calls of the seam failing at an exact call: the PROXY header send, the copy path's send,
// the half-close at end of stream, and the peek at an accept_proxy header. Each test checks what
// the client and the upstream saw, byte for byte, the route's counters, and that the faulted
// call was made.
#include <catch2/catch.hpp>
#include <chrono>

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
  std::string text = top + "routes:\n  - name: p\n    listen: 127.0.0.1:0\n" + route_extra +
                     "    forward:\n      upstreams: [127.0.0.1:" + std::to_string(port) + "]\n" +
                     forward_extra;
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
  // No pipe can be had: both directions copy through user space, hence send().
  Server server(proxyConfig(upstream.port, "", "", "pipes: { max: 0 }\n"), sys);
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
  Server server(proxyConfig(upstream.port), sys);
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
