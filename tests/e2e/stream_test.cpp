// End-to-end: per-connection archives are byte-exact copies of each client's stream, size
// rotation cuts exactly at max_bytes, and idle connections are closed by the daemon.
#include <poll.h>
#include <signal.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <thread>

#include "harness.hpp"

using namespace e2e;
using namespace std::chrono_literals;

namespace {

// A collect route on 127.0.0.1:0 writing per-connection chains named kPerConnName.
std::string perConnectionConfig(const TempDir& dir, const std::string& max_bytes,
                                const std::string& extra_route_keys = "",
                                const std::string& extra_top_keys = "") {
  return withDir(R"(log: { level: info }
drain_timeout: 5s
)" + extra_top_keys + R"(
routes:
  - name: app
    listen: 127.0.0.1:0
)" + extra_route_keys +
                     R"(    archive:
      dir: @DIR@/archive
      layout: per_connection
      name: "{route}-{conn}-{peer_port}-{seq}.log"
      rotate: { max_bytes: )" +
                     max_bytes + R"( }
)",
                 dir);
}

}  // namespace

TEST_CASE("16 concurrent clients x 8 MiB: each connection's chain is byte-identical to its stream",
          "[e2e][per_connection]") {
  constexpr int kClients = 16;
  constexpr size_t kBytes = 8 * kMiB;
  constexpr size_t kMaxBytes = 3 * kMiB;  // 3 segments per connection: 3 + 3 + 2 MiB
  // Through pipes with splice(2), and through the copy path every stream falls back to when no
  // pipe can be had (pipes.max: 0).
  const bool copy = GENERATE(false, true);
  INFO((copy ? "copy path (pipes.max: 0)" : "splice path"));
  TempDir dir;
  Daemon daemon(dir, perConnectionConfig(dir, "3MiB", "", copy ? "pipes: { max: 0 }\n" : ""));
  const uint16_t port = daemon.port("app");

  std::vector<std::string> payloads;
  for (int i = 0; i < kClients; ++i) payloads.push_back(randomPayload(1000 + i, kBytes));
  std::vector<Conn> conns;
  std::vector<uint16_t> ports;
  for (int i = 0; i < kClients; ++i) {
    int err = 0;
    conns.push_back(connectTcp(port, &err));
    INFO("client " << i << " connect errno " << err);
    REQUIRE(conns.back().valid());
    ports.push_back(conns.back().localPort());
  }

  struct Outcome {
    int send_err = -1;
    int closed = -1;
  };
  std::vector<Outcome> outcomes(kClients);
  {
    std::vector<std::jthread> clients;
    for (int i = 0; i < kClients; ++i) {
      clients.emplace_back([&, i] {
        // Writes of random sizes so the daemon sees every kind of partial read.
        Prng sizes(77 + i);
        const std::string& p = payloads[i];
        size_t off = 0;
        int err = 0;
        while (off < p.size() && err == 0) {
          size_t n = std::min<size_t>(sizes.between(1, 256 * kKiB), p.size() - off);
          err = conns[i].sendAll(p.data() + off, n);
          off += n;
        }
        outcomes[i].send_err = err;
        conns[i].shutdownWrite();
        outcomes[i].closed = conns[i].waitClosed(60s);
      });
    }
  }  // joins every client

  for (int i = 0; i < kClients; ++i) {
    INFO("client " << i << " (port " << ports[i] << ")");
    CHECK(outcomes[i].send_err == 0);
    CHECK(outcomes[i].closed == 0);  // the daemon closed the connection after the stream ended
  }
  const fs::path archive = dir / "archive";
  CHECK(openSegments(archive).empty());
  std::vector<std::string> unparsed;
  auto chains = chainsByConn(archive, &unparsed);
  CHECK(unparsed.empty());
  CHECK(chains.size() == kClients);
  for (int i = 0; i < kClients; ++i) {
    INFO("client " << i << " (port " << ports[i] << ")");
    const Chain* chain = findByPort(chains, ports[i]);
    REQUIRE(chain != nullptr);
    CHECK(chain->seqsContiguous());
    CHECK(chain->segments.size() == (kBytes + kMaxBytes - 1) / kMaxBytes);
    CHECK(firstDifference(concatFiles(chain->files()), payloads[i]) == "");
  }

  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
  auto totals = parseTotals(daemon.log(), "app");
  INFO(daemon.log());
  CHECK(totals["connections"] == kClients);
  CHECK(totals["bytes_in"] == kClients * kBytes);
  CHECK(totals["archive_bytes"] == kClients * kBytes);
  CHECK(totals["segments"] == kClients * ((kBytes + kMaxBytes - 1) / kMaxBytes));
  if (copy) CHECK(totals["copy_fallback_bytes"] == kClients * kBytes);
  CHECK(daemon.countLogLines({"close route=app", "end=eof"}, kClients) == kClients);
}

TEST_CASE("size rotation: no segment above max_bytes, all but the last exactly max_bytes",
          "[e2e][rotation]") {
  struct Case {
    std::string max_text;
    size_t max_bytes;
    size_t total;
  };
  // A power of two, and an odd size that is not a multiple of the page or pipe size.
  auto c = GENERATE(Case{"1MiB", kMiB, 50 * kMiB + 12345}, Case{"100003", 100003, 5 * kMiB + 7});
  INFO("max_bytes " << c.max_text << ", stream " << c.total << " bytes");
  TempDir dir;
  Daemon daemon(dir, perConnectionConfig(dir, c.max_text));
  const uint16_t port = daemon.port("app");
  const std::string payload = randomPayload(42, c.total);

  Conn conn = connectTcp(port);
  REQUIRE(conn.valid());
  REQUIRE(conn.sendAll(payload) == 0);
  conn.shutdownWrite();
  REQUIRE(conn.waitClosed(30s) == 0);

  const fs::path archive = dir / "archive";
  CHECK(openSegments(archive).empty());
  auto chains = chainsByConn(archive);
  REQUIRE(chains.size() == 1);
  const Chain& chain = chains.begin()->second;
  CHECK(chain.seqsContiguous());
  CHECK(chain.segments.size() == (c.total + c.max_bytes - 1) / c.max_bytes);
  for (size_t i = 0; i < chain.segments.size(); ++i) {
    const auto size = fs::file_size(chain.segments[i].second);
    INFO("segment " << chain.segments[i].second.filename().string());
    CHECK(size <= c.max_bytes);
    if (i + 1 < chain.segments.size()) {
      CHECK(size == c.max_bytes);
    } else {
      CHECK(size > 0);
    }
  }
  CHECK(firstDifference(concatFiles(chain.files()), payload) == "");

  daemon.signal(SIGTERM);
  CHECK(daemon.waitExit(10s) == 0);
}

TEST_CASE("idle_timeout: a silent connection is closed and its bytes are in a closed segment",
          "[e2e][idle]") {
  TempDir dir;
  Daemon daemon(dir, perConnectionConfig(dir, "256MiB", "    idle_timeout: 300ms\n"));
  const uint16_t port = daemon.port("app");
  const std::string payload = randomPayload(7, 10000);

  // A client that keeps sending a little every 100 ms is not idle: it must stay connected
  // well past 300 ms.
  Conn trickle = connectTcp(port);
  REQUIRE(trickle.valid());
  const std::string trickled = randomPayload(8, 12);
  int trickle_err = 0;
  std::jthread trickler([&] {
    for (size_t i = 0; i < trickled.size() && trickle_err == 0; ++i) {
      trickle_err = trickle.sendAll(trickled.substr(i, 1));
      std::this_thread::sleep_for(100ms);
    }
  });

  // A client that connects and never sends is closed too, and leaves no (empty) segment.
  Conn mute = connectTcp(port);
  REQUIRE(mute.valid());

  Conn silent = connectTcp(port);
  REQUIRE(silent.valid());
  REQUIRE(silent.sendAll(payload) == 0);
  const auto sent_at = Clock::now();
  CHECK(silent.waitClosed(5s) == 0);  // EOF: the daemon closed it
  const auto waited = std::chrono::duration_cast<Millis>(Clock::now() - sent_at);
  CHECK(waited >= 280ms);
  CHECK(waited < 3s);

  CHECK(mute.waitClosed(2s) == 0);

  trickler.join();
  CHECK(trickle_err == 0);
  pollfd p{trickle.fd(), POLLIN, 0};
  CHECK(::poll(&p, 1, 0) == 0);  // the active client was not closed
  trickle.shutdownWrite();
  CHECK(trickle.waitClosed(5s) == 0);

  const fs::path archive = dir / "archive";
  CHECK(openSegments(archive).empty());
  auto chains = chainsByConn(archive);
  const Chain* s = findByPort(chains, silent.localPort());
  const Chain* t = findByPort(chains, trickle.localPort());
  REQUIRE(s != nullptr);
  REQUIRE(t != nullptr);
  CHECK(findByPort(chains, mute.localPort()) == nullptr);
  CHECK(chains.size() == 2);
  CHECK(firstDifference(concatFiles(s->files()), payload) == "");
  CHECK(firstDifference(concatFiles(t->files()), trickled) == "");
  CHECK(daemon.countLogLines({"close route=app", "end=idle_timeout"}, 2) == 2);
  CHECK(daemon.countLogLines({"close route=app", "end=eof"}, 1) == 1);

  daemon.signal(SIGTERM);
  CHECK(daemon.waitExit(10s) == 0);
}
