// End-to-end: proxy routes of the real binary against real upstream servers (upstreams.hpp).
// Bytes both ways under load, half-close in both directions, resets from either side, a stalled
// upstream (bounded memory), passive and active health, the three balance modes, the PROXY header
// sent to upstreams (v1/v2, IPv4/IPv6) and received from a front load balancer (accept_proxy,
// strict, on proxy and collect routes), the SIGTERM drain and the fd count after many sessions.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cerrno>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <thread>

#include "harness.hpp"
#include "upstreams.hpp"

using namespace e2e;
using namespace std::chrono_literals;

namespace {

// ---------------------------------------------------------------------------------------------
// Configs

struct Forward {
  std::vector<std::string> upstreams;
  std::string balance = "round_robin";
  std::string connect_timeout = "500ms";
  std::string proxy_protocol = "off";
  int retries = 2;
  int max_fails = 3;
  std::string fail_timeout = "10s";
  std::string health_check;  // "" (off) or a flow map "{ interval: 200ms, ... }"
};

// A proxy route NAME on `listen` forwarding as `f` says; `extra` holds more route keys (each line
// indented by 4 spaces).
std::string proxyRoute(const std::string& name, const Forward& f, const std::string& extra = "",
                       const std::string& listen = "127.0.0.1:0") {
  std::string ups;
  for (const auto& u : f.upstreams) ups += (ups.empty() ? "\"" : ", \"") + u + "\"";
  std::string out = "  - name: " + name + "\n    listen: \"" + listen +
                    "\"\n    idle_timeout: 0\n" + extra + "    forward:\n      upstreams: [" + ups +
                    "]\n      balance: " + f.balance +
                    "\n      connect_timeout: " + f.connect_timeout +
                    "\n      proxy_protocol: " + f.proxy_protocol +
                    "\n      retries: " + std::to_string(f.retries) +
                    "\n      max_fails: " + std::to_string(f.max_fails) +
                    "\n      fail_timeout: " + f.fail_timeout + "\n";
  if (!f.health_check.empty()) out += "      health_check: " + f.health_check + "\n";
  return out;
}

Forward to(const std::vector<std::string>& upstreams) {
  Forward f;
  f.upstreams = upstreams;
  return f;
}

std::string config(const TempDir& dir, const std::string& routes, const std::string& drain = "5s") {
  return withDir("log: { level: info }\ndrain_timeout: " + drain +
                     "\nadmin: { listen: 127.0.0.1:0 }\nroutes:\n" + routes,
                 dir);
}

// ---------------------------------------------------------------------------------------------
// /metrics, read loosely (admin_test.cpp checks the exposition format itself): every sample line
// "name{k="v",...} value" keyed by name plus its labels in sorted order.

using Labels = std::map<std::string, std::string>;

std::string sampleKey(const std::string& name, const Labels& labels) {
  std::string k = name + "{";
  bool first = true;
  for (const auto& [l, v] : labels) {
    k += (first ? "" : ",") + l + "=\"" + v + "\"";
    first = false;
  }
  return k + "}";
}

struct Metrics {
  std::map<std::string, double> values;
  std::string text;
  std::string error;

  // The sample's value; -1 when it is missing.
  double get(const std::string& name, const Labels& labels = {}) const {
    auto it = values.find(sampleKey(name, labels));
    return it == values.end() ? -1 : it->second;
  }
};

Metrics scrape(const std::string& admin) {
  Metrics m;
  HttpResponse r = httpGet(admin, "/metrics");
  if (r.status != 200) {
    m.error = "GET /metrics: status " + std::to_string(r.status) + " " + r.error;
    return m;
  }
  m.text = r.body;
  std::istringstream in(r.body);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const auto space = line.rfind(' ');
    if (space == std::string::npos) continue;
    std::string head = line.substr(0, space);
    const double value = std::strtod(line.c_str() + space + 1, nullptr);
    Labels labels;
    std::string name = head;
    if (auto brace = head.find('{'); brace != std::string::npos) {
      name = head.substr(0, brace);
      size_t pos = brace + 1;
      while (pos < head.size() && head[pos] != '}') {
        const auto eq = head.find('=', pos);
        if (eq == std::string::npos) break;
        std::string label = head.substr(pos, eq - pos);
        std::string v;
        pos = eq + 2;  // past ="
        while (pos < head.size() && head[pos] != '"') {
          if (head[pos] == '\\' && pos + 1 < head.size()) ++pos;
          v += head[pos++];
        }
        labels[label] = v;
        pos += 1;  // past "
        if (pos < head.size() && head[pos] == ',') ++pos;
      }
    }
    m.values[sampleKey(name, labels)] = value;
  }
  return m;
}

double metric(const std::string& admin, const std::string& name, const Labels& labels = {}) {
  return scrape(admin).get(name, labels);
}

// Polls until the sample equals `want`; false on timeout.
bool waitMetric(const std::string& admin, const std::string& name, const Labels& labels,
                double want, Millis timeout = 5000ms) {
  return waitUntil([&] { return metric(admin, name, labels) == want; }, timeout, 20ms);
}

Labels routeLabel(const std::string& route) { return {{"route", route}}; }
Labels reasonLabels(const std::string& route, const std::string& reason) {
  return {{"route", route}, {"reason", reason}};
}
Labels upstreamLabels(const std::string& route, const std::string& upstream) {
  return {{"route", route}, {"upstream", upstream}};
}

// ---------------------------------------------------------------------------------------------
// Logs and clients

// Waits for the access-log line of the session of `client` ("127.0.0.1:40000") on `route`; ""
// on timeout.
std::string accessLine(const Daemon& daemon, const std::string& route, const std::string& client,
                       Millis timeout = 5000ms) {
  std::string found;
  waitUntil(
      [&] {
        auto lines = logLines(daemon.log(),
                              {"proxy route=" + route + " ", " client=" + client + " ", " end="});
        if (lines.empty()) return false;
        found = lines.back();
        return true;
      },
      timeout);
  return found;
}

std::string clientName(const Conn& c) {
  Endpoint e = localEndpoint(c.fd());
  return (e.ip.find(':') != std::string::npos ? "[" + e.ip + "]" : e.ip) + ":" +
         std::to_string(e.port);
}

// A refused or abandoned connection is closed by the daemon: EOF or a reset.
bool closedByDaemon(int result) { return result == 0 || result == ECONNRESET; }

// Polls until `daemon` has the same fd count for 200 ms in a row; returns it.
size_t settledFdCount(const Daemon& daemon) {
  size_t last = daemon.fdCount();
  auto stable_since = Clock::now();
  const auto deadline = Clock::now() + 5s;
  while (Clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
    size_t now = daemon.fdCount();
    if (now != last) {
      last = now;
      stable_since = Clock::now();
    } else if (Clock::now() - stable_since >= 200ms) {
      break;
    }
  }
  return last;
}

// One short session: connect, `msg` echoed back, close. "" on success, else what went wrong.
std::string shortSession(uint16_t port, const std::string& msg, const std::string& bind_ip = "") {
  int err = 0;
  Conn c = connectIp("127.0.0.1", port, bind_ip, &err);
  if (!c.valid()) return std::string("connect: ") + std::strerror(err);
  return echoOnce(c, msg);
}

// Index of the one upstream whose served() grew since `before`; -1 when none or several did.
int whichServed(const std::vector<TestUpstream*>& ups, const std::vector<size_t>& before) {
  int found = -1;
  for (size_t i = 0; i < ups.size(); ++i) {
    if (ups[i]->served() == before[i]) continue;
    if (found >= 0) return -1;
    found = static_cast<int>(i);
  }
  return found;
}

std::vector<size_t> servedCounts(const std::vector<TestUpstream*>& ups) {
  std::vector<size_t> out;
  for (auto* u : ups) out.push_back(u->served());
  return out;
}

// ---------------------------------------------------------------------------------------------
// PROXY headers, built by hand from the spec (not with the daemon's encoder)

const std::string kV2Signature("\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A", 12);

void putPort(std::string& out, uint16_t port) {
  out += static_cast<char>(port >> 8);
  out += static_cast<char>(port & 0xff);
}

std::string v2Header(int family, const std::string& src, const std::string& dst, uint16_t src_port,
                     uint16_t dst_port) {
  std::string out = kV2Signature;
  out += '\x21';  // version 2, PROXY
  if (family == AF_INET) {
    out += '\x11';  // TCP over IPv4
    out += std::string("\x00\x0c", 2);
    in_addr a{}, b{};
    ::inet_pton(AF_INET, src.c_str(), &a);
    ::inet_pton(AF_INET, dst.c_str(), &b);
    out.append(reinterpret_cast<const char*>(&a), 4);
    out.append(reinterpret_cast<const char*>(&b), 4);
  } else {
    out += '\x21';  // TCP over IPv6
    out += std::string("\x00\x24", 2);
    in6_addr a{}, b{};
    ::inet_pton(AF_INET6, src.c_str(), &a);
    ::inet_pton(AF_INET6, dst.c_str(), &b);
    out.append(reinterpret_cast<const char*>(&a), 16);
    out.append(reinterpret_cast<const char*>(&b), 16);
  }
  putPort(out, src_port);
  putPort(out, dst_port);
  return out;
}

std::string hex(std::string_view s) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : s) {
    out += digits[c >> 4];
    out += digits[c & 15];
  }
  return out;
}

}  // namespace

// =============================================================================================
// Bytes both ways

TEST_CASE("proxy: 64 concurrent clients x 4 MiB each way through an echo upstream, byte-exact",
          "[e2e][proxy]") {
  constexpr int kClients = 64;
  constexpr uint64_t kBytes = 4 * kMiB;
  auto echo = TestUpstream::echo();
  TempDir dir;
  Daemon daemon(dir, config(dir, proxyRoute("web", to({echo->address()}))));
  const uint16_t port = daemon.port("web");
  const std::string admin = daemon.waitAdmin();

  std::vector<Conn> conns;
  for (int i = 0; i < kClients; ++i) {
    int err = 0;
    conns.push_back(connectTcp(port, &err));
    INFO("client " << i << ": connect errno " << err);
    REQUIRE(conns.back().valid());
  }
  std::vector<std::unique_ptr<Exchange>> xs;
  for (int i = 0; i < kClients; ++i) {
    ExchangeSpec spec;
    spec.send_seed = spec.recv_seed = 1000 + static_cast<uint64_t>(i);
    spec.send_bytes = kBytes;
    xs.push_back(std::make_unique<Exchange>(conns[i], spec));
  }
  for (int i = 0; i < kClients; ++i) {
    ExchangeResult r = xs[i]->join();
    INFO("client " << i << ": sent " << r.sent << " (errno " << r.send_err << "), received "
                   << r.received << " (errno " << r.recv_err << ", eof " << r.eof << ") "
                   << r.mismatch);
    CHECK(r.send_err == 0);
    CHECK(r.sent == kBytes);
    CHECK(r.received == kBytes);
    CHECK(r.eof);
    CHECK(r.mismatch.empty());
  }
  REQUIRE(waitMetric(admin, "spliced_connections_active", routeLabel("web"), 0));
  Metrics m = scrape(admin);
  INFO(m.error);
  const double total = static_cast<double>(kClients * kBytes);
  CHECK(m.get("spliced_bytes_in_total", routeLabel("web")) == total);
  CHECK(m.get("spliced_bytes_out_total", routeLabel("web")) == total);
  CHECK(m.get("spliced_upstream_bytes_total", routeLabel("web")) == total);
  CHECK(m.get("spliced_copy_fallback_bytes_total", routeLabel("web")) == 0);
  CHECK(m.get("spliced_connections_total", routeLabel("web")) == kClients);
  CHECK(m.get("spliced_upstream_errors_total", upstreamLabels("web", echo->address())) == 0);
  CHECK(m.get("spliced_upstream_active_connections", upstreamLabels("web", echo->address())) == 0);
  CHECK(echo->served() == kClients);
  CHECK(echo->bytesReceived() == kClients * kBytes);
  CHECK(daemon.countLogLines({"proxy route=web ", " end=eof"}, kClients) == kClients);

  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
}

TEST_CASE("proxy: upstreams at [::1]:P and unix:/path carry bytes both ways", "[e2e][proxy]") {
  auto six = TestUpstream::echo(AF_INET6);
  TempDir dir;
  UpstreamOptions uo;
  uo.mode = UpstreamMode::Echo;
  uo.family = AF_UNIX;
  uo.unix_path = (dir / "upstream.sock").string();
  TestUpstream unix_up(uo);
  Daemon daemon(dir, config(dir, proxyRoute("six", to({six->address()})) +
                                     proxyRoute("local", to({unix_up.address()}))));
  for (const char* route : {"six", "local"}) {
    INFO("route " << route);
    Conn c = connectTcp(daemon.port(route));
    REQUIRE(c.valid());
    ExchangeSpec spec;
    spec.send_seed = spec.recv_seed = 77;
    spec.send_bytes = 3 * kMiB + 17;
    Exchange x(c, spec);
    ExchangeResult r = x.join();
    INFO(r.mismatch << " send errno " << r.send_err << " recv errno " << r.recv_err);
    CHECK(r.received == spec.send_bytes);
    CHECK(r.eof);
    CHECK(r.mismatch.empty());
    CHECK(accessLine(daemon, route, clientName(c)).find(" end=eof") != std::string::npos);
  }
  CHECK(six->served() == 1);
  CHECK(unix_up.served() == 1);
}

// =============================================================================================
// Half-close, and which side ends first

TEST_CASE("proxy half-close: the client shuts down its side and still receives the whole reply",
          "[e2e][proxy]") {
  const std::string request = randomPayload(21, kMiB + 3);
  UpstreamOptions uo;
  uo.mode = UpstreamMode::Reply;
  uo.read_first = kToEof;  // the reply starts only once the request has ended
  uo.body = randomPayload(22, 8 * kMiB);
  uo.keep = 2 * kMiB;
  TestUpstream up(uo);
  TempDir dir;
  Daemon daemon(dir, config(dir, proxyRoute("web", to({up.address()}))));
  const uint16_t port = daemon.port("web");

  Conn c = connectTcp(port);
  REQUIRE(c.valid());
  const std::string client = clientName(c);
  ExchangeSpec spec;
  spec.send_seed = 21;
  spec.send_bytes = request.size();
  spec.shut_write = true;
  spec.recv_seed = 22;
  Exchange x(c, spec);
  ExchangeResult r = x.join();
  INFO(r.mismatch << " send errno " << r.send_err << " recv errno " << r.recv_err);
  CHECK(r.sent == request.size());
  CHECK(r.received == 8 * kMiB);
  CHECK(r.eof);
  CHECK(r.mismatch.empty());

  REQUIRE(up.waitDone(1, 5s));
  auto recs = up.records();
  REQUIRE(recs.size() == 1);
  CHECK(firstDifference(recs[0].data, request) == "");
  CHECK(recs[0].end == 0);  // the upstream saw the client's EOF
  const std::string line = accessLine(daemon, "web", client);
  INFO(line);
  CHECK(line.find(" end=eof") != std::string::npos);
  CHECK(line.find(" bytes_in=" + std::to_string(request.size()) +
                  " bytes_out=" + std::to_string(8 * kMiB) + " ") != std::string::npos);
}

TEST_CASE("proxy: the upstream closes first, the client gets the whole body and EOF",
          "[e2e][proxy]") {
  const std::string first = randomPayload(31, 64 * kKiB);
  UpstreamOptions uo;
  uo.mode = UpstreamMode::Reply;
  uo.read_first = first.size();
  uo.body = randomPayload(32, 2 * kMiB + 5);
  uo.keep = 4 * kMiB;
  TestUpstream up(uo);
  TempDir dir;
  Daemon daemon(dir, config(dir, proxyRoute("web", to({up.address()}))));
  const uint16_t port = daemon.port("web");

  Conn c = connectTcp(port);
  REQUIRE(c.valid());
  const std::string client = clientName(c);
  ExchangeSpec spec;
  spec.send_seed = 31;
  spec.send_bytes = first.size();
  spec.shut_write = false;  // the client is not done: the upstream closes on it
  spec.recv_seed = 32;
  Exchange x(c, spec);
  ExchangeResult r = x.join();
  INFO(r.mismatch << " recv errno " << r.recv_err);
  CHECK(r.received == uo.body.size());
  CHECK(r.eof);
  CHECK(r.mismatch.empty());
  REQUIRE(up.waitDone(1, 5s));
  CHECK(firstDifference(up.records()[0].data, first) == "");
  c.close();
  const std::string line = accessLine(daemon, "web", client);
  INFO(line);
  CHECK(line.find(" end=eof") != std::string::npos);
}

TEST_CASE("proxy: the upstream half-closes first, the client reads EOF then goes on sending",
          "[e2e][proxy]") {
  const std::string first = randomPayload(33, 64 * kKiB);
  const std::string more = randomPayload(34, kMiB);
  UpstreamOptions uo;
  uo.mode = UpstreamMode::Reply;
  uo.read_first = first.size();
  uo.body = randomPayload(35, 2 * kMiB);
  uo.half_close = true;
  uo.keep = 4 * kMiB;
  TestUpstream up(uo);
  TempDir dir;
  Daemon daemon(dir, config(dir, proxyRoute("web", to({up.address()}))));
  const uint16_t port = daemon.port("web");

  Conn c = connectTcp(port);
  REQUIRE(c.valid());
  const std::string client = clientName(c);
  ExchangeSpec spec;
  spec.send_seed = 33;
  spec.send_bytes = first.size();
  spec.shut_write = false;
  spec.recv_seed = 35;
  Exchange x(c, spec);
  ExchangeResult r = x.join();
  INFO(r.mismatch << " recv errno " << r.recv_err);
  CHECK(r.received == uo.body.size());
  CHECK(r.eof);
  CHECK(r.mismatch.empty());

  // The other direction is still open: a megabyte more, then the client's own EOF.
  REQUIRE(c.sendAll(more) == 0);
  c.shutdownWrite();
  CHECK(c.waitClosed(5s) == 0);
  REQUIRE(up.waitDone(1, 5s));
  auto recs = up.records();
  CHECK(recs[0].end == 0);
  CHECK(firstDifference(recs[0].data, first + more) == "");
  const std::string line = accessLine(daemon, "web", client);
  INFO(line);
  CHECK(line.find(" end=eof") != std::string::npos);
  CHECK(line.find(" bytes_in=" + std::to_string(first.size() + more.size()) + " ") !=
        std::string::npos);
}

// =============================================================================================
// Resets

TEST_CASE("proxy: an upstream reset mid-stream reaches the client promptly and is counted",
          "[e2e][proxy]") {
  UpstreamOptions uo;
  uo.mode = UpstreamMode::ResetAfter;
  uo.reset_after = 256 * kKiB;
  TestUpstream up(uo);
  TempDir dir;
  Daemon daemon(dir, config(dir, proxyRoute("web", to({up.address()}))));
  const uint16_t port = daemon.port("web");
  const std::string admin = daemon.waitAdmin();

  Conn c = connectTcp(port);
  REQUIRE(c.valid());
  const std::string client = clientName(c);
  ExchangeSpec spec;
  spec.send_seed = 41;
  spec.send_bytes = 256 * kMiB;  // far more than the buffers on the way hold
  spec.timeout = 10s;
  Exchange x(c, spec);
  ExchangeResult r = x.join();
  INFO("sent " << r.sent << " send errno " << r.send_err << ", received " << r.received
               << " recv errno " << r.recv_err << " eof " << r.eof << " after "
               << r.recv_elapsed.count() << " ms");
  const bool reset_seen =
      r.send_err == ECONNRESET || r.send_err == EPIPE || r.recv_err == ECONNRESET || r.eof;
  CHECK(reset_seen);
  CHECK(r.recv_err != ETIMEDOUT);
  CHECK(r.send_err != ETIMEDOUT);
  CHECK(r.recv_elapsed < 3s);
  CHECK(r.sent < spec.send_bytes);
  CHECK(r.received == 0);

  const std::string line = accessLine(daemon, "web", client);
  INFO(line);
  CHECK(line.find(" end=upstream_error") != std::string::npos);
  CHECK(waitMetric(admin, "spliced_upstream_errors_total", upstreamLabels("web", up.address()), 1));
  CHECK(metric(admin, "spliced_connections_active", routeLabel("web")) == 0);
  CHECK(metric(admin, "spliced_upstream_active_connections", upstreamLabels("web", up.address())) ==
        0);
}

TEST_CASE("proxy: a client reset mid-stream reaches the upstream as a reset or EOF",
          "[e2e][proxy]") {
  auto sink = TestUpstream::sink();
  TempDir dir;
  Daemon daemon(dir, config(dir, proxyRoute("web", to({sink->address()}))));
  const uint16_t port = daemon.port("web");
  const std::string admin = daemon.waitAdmin();

  Conn c = connectTcp(port);
  REQUIRE(c.valid());
  const std::string client = clientName(c);
  REQUIRE(c.sendAll(randomPayload(42, kMiB)) == 0);
  REQUIRE(waitUntil([&] { return sink->bytesReceived() >= kMiB; }, 5s));
  resetClose(c);

  REQUIRE(sink->waitDone(1, 3s));
  const int end = sink->records()[0].end;
  INFO("upstream connection ended with " << end);
  CHECK((end == 0 || end == ECONNRESET));
  const std::string line = accessLine(daemon, "web", client);
  INFO(line);
  CHECK(line.find(" end=client_error") != std::string::npos);
  CHECK(metric(admin, "spliced_upstream_errors_total", upstreamLabels("web", sink->address())) ==
        0);
  CHECK(waitMetric(admin, "spliced_connections_active", routeLabel("web"), 0));
}

// =============================================================================================
// Back-pressure

TEST_CASE("proxy: a stalled upstream stops the client without growing the daemon's memory",
          "[e2e][proxy]") {
  UpstreamOptions uo;
  uo.mode = UpstreamMode::Stall;
  TestUpstream up(uo);
  TempDir dir;
  Daemon daemon(dir, config(dir, proxyRoute("web", to({up.address()}))));
  const uint16_t port = daemon.port("web");
  const std::string admin = daemon.waitAdmin();
  REQUIRE(scrape(admin).error.empty());  // the admin path has run once
  std::this_thread::sleep_for(100ms);
  const uint64_t idle_rss = rssKiB(daemon.pid());
  REQUIRE(idle_rss > 0);

  Conn c = connectTcp(port);
  REQUIRE(c.valid());
  constexpr uint64_t kGoal = 1024 * kMiB;
  std::atomic<uint64_t> written{0};
  std::atomic<int> send_err{0};
  const std::string chunk = randomPayload(51, kMiB);
  std::jthread pusher([&](std::stop_token stop) {
    while (!stop.stop_requested() && written.load() < kGoal) {
      ssize_t w = ::send(c.fd(), chunk.data(), chunk.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w > 0) {
        written += static_cast<uint64_t>(w);
      } else if (w < 0 && errno == EAGAIN) {
        std::this_thread::sleep_for(1ms);
      } else if (!(w < 0 && errno == EINTR)) {
        send_err = w < 0 ? errno : EPIPE;
        return;
      }
    }
  });

  // Sample until the bytes the kernel accepts stop growing for a second (or 8 s pass).
  uint64_t max_rss = idle_rss;
  uint64_t last = 0;
  auto last_change = Clock::now();
  const auto deadline = Clock::now() + 8s;
  bool plateau = false;
  while (Clock::now() < deadline) {
    std::this_thread::sleep_for(100ms);
    max_rss = std::max(max_rss, rssKiB(daemon.pid()));
    const uint64_t now = written.load();
    if (now != last) {
      last = now;
      last_change = Clock::now();
    } else if (Clock::now() - last_change >= 1s) {
      plateau = true;
      break;
    }
  }
  pusher.request_stop();
  pusher.join();
  INFO("accepted by the kernel: " << written.load() << " bytes; daemon RSS idle " << idle_rss
                                  << " KiB, max " << max_rss << " KiB");
  CHECK(send_err.load() == 0);
  CHECK(plateau);
  CHECK(written.load() < kGoal / 4);
  if (rssIsMeaningful()) CHECK(max_rss <= idle_rss + 8 * 1024);
  // Still one session, waiting for its upstream; the daemon answers.
  CHECK(metric(admin, "spliced_connections_active", routeLabel("web")) == 1);
  CHECK(metric(admin, "spliced_upstream_bytes_total", routeLabel("web")) < kGoal / 4);
}

// =============================================================================================
// Health

TEST_CASE("proxy: a refusing upstream is skipped, counted and marked down after max_fails",
          "[e2e][proxy]") {
  auto echo = TestUpstream::echo();
  const std::string refusing = "127.0.0.1:" + std::to_string(refusingPort());
  TempDir dir;
  Daemon daemon(dir, config(dir, proxyRoute("web", to({refusing, echo->address()}))));
  const uint16_t port = daemon.port("web");
  const std::string admin = daemon.waitAdmin();

  for (int i = 0; i < 50; ++i) {
    INFO("session " << i);
    REQUIRE(shortSession(port, "hello " + std::to_string(i) + "\n") == "");
  }
  CHECK(echo->served() == 50);
  Metrics m = scrape(admin);
  INFO(m.error);
  // Round robin puts the refusing one first for the first sessions until max_fails (3) in a row
  // mark it down; fail_timeout (10s) keeps it out for the rest.
  CHECK(m.get("spliced_upstream_errors_total", upstreamLabels("web", refusing)) == 3);
  CHECK(m.get("spliced_upstream_up", upstreamLabels("web", refusing)) == 0);
  CHECK(m.get("spliced_upstream_up", upstreamLabels("web", echo->address())) == 1);
  CHECK(m.get("spliced_upstream_errors_total", upstreamLabels("web", echo->address())) == 0);
  CHECK(m.get("spliced_connections_rejected_total", reasonLabels("web", "no_upstream")) == 0);
  CHECK(httpGet(admin, "/healthz").status == 200);
  CHECK(daemon.countLogLines({"proxy route=web ", " end=eof"}, 50) == 50);
  CHECK(logLines(daemon.log(), {"upstream=" + refusing, "marked down"}).size() == 1);
}

TEST_CASE("proxy: with every upstream down clients are closed quickly, counted, /healthz 503",
          "[e2e][proxy]") {
  const std::string a = "127.0.0.1:" + std::to_string(refusingPort());
  const std::string b = "127.0.0.1:" + std::to_string(refusingPort());
  Blackhole hole;
  REQUIRE(hole.ok());
  TempDir dir;
  Daemon daemon(
      dir, config(dir, proxyRoute("web", to({a, b})) + proxyRoute("hole", to({hole.address()}))));
  const uint16_t port = daemon.port("web");
  const uint16_t hole_port = daemon.port("hole");
  const std::string admin = daemon.waitAdmin();
  CHECK(httpGet(admin, "/healthz").status == 200);

  for (int i = 0; i < 6; ++i) {
    INFO("client " << i);
    Conn c = connectTcp(port);
    REQUIRE(c.valid());
    const auto t0 = Clock::now();
    CHECK(closedByDaemon(c.waitClosed(3s)));
    CHECK(Clock::now() - t0 < 500ms + 1s);  // connect_timeout + margin
  }
  CHECK(waitMetric(admin, "spliced_connections_rejected_total", reasonLabels("web", "no_upstream"),
                   6));
  Metrics m = scrape(admin);
  // Each of the first three clients tried both; then max_fails (3) marked both down and the next
  // clients were closed without a try.
  CHECK(m.get("spliced_upstream_errors_total", upstreamLabels("web", a)) == 3);
  CHECK(m.get("spliced_upstream_errors_total", upstreamLabels("web", b)) == 3);
  CHECK(m.get("spliced_upstream_up", upstreamLabels("web", a)) == 0);
  CHECK(m.get("spliced_upstream_up", upstreamLabels("web", b)) == 0);
  CHECK(daemon.countLogLines({"proxy route=web ", " end=no_upstream"}, 6) == 6);
  HttpResponse h = httpGet(admin, "/healthz");
  INFO(h.body);
  CHECK(h.status == 503);
  CHECK(h.body.find("route web: no upstream available") != std::string::npos);
  CHECK(h.body.find("route hole") == std::string::npos);

  // A connect that never completes: the client is closed after connect_timeout.
  Conn c = connectTcp(hole_port);
  REQUIRE(c.valid());
  const auto t0 = Clock::now();
  CHECK(closedByDaemon(c.waitClosed(5s)));
  const auto took = Clock::now() - t0;
  INFO("closed after " << std::chrono::duration_cast<Millis>(took).count() << " ms");
  CHECK(took >= 400ms);
  CHECK(took < 500ms + 1s);
  CHECK(waitMetric(admin, "spliced_connections_rejected_total", reasonLabels("hole", "no_upstream"),
                   1));
  CHECK(metric(admin, "spliced_upstream_errors_total", upstreamLabels("hole", hole.address())) ==
        1);
  CHECK(daemon.countLogLines({"proxy route=hole ", " end=no_upstream"}, 1) == 1);
}

TEST_CASE(
    "proxy health_check: a dead upstream is marked down within fall x interval and back "
    "after rise x interval",
    "[e2e][proxy]") {
  auto a = TestUpstream::echo();
  auto b = TestUpstream::echo();
  std::vector<TestUpstream*> ups = {a.get(), b.get()};
  TempDir dir;
  Forward f = to({a->address(), b->address()});
  f.health_check = "{ interval: 200ms, timeout: 100ms, fall: 2, rise: 2 }";
  Daemon daemon(dir, config(dir, proxyRoute("web", f)));
  const uint16_t port = daemon.port("web");
  const std::string admin = daemon.waitAdmin();
  const Labels up_a = upstreamLabels("web", a->address());
  const Labels up_b = upstreamLabels("web", b->address());
  REQUIRE(metric(admin, "spliced_upstream_up", up_a) == 1);

  a->stopListening();
  auto t0 = Clock::now();
  REQUIRE(waitMetric(admin, "spliced_upstream_up", up_a, 0, 5s));
  auto took = std::chrono::duration_cast<Millis>(Clock::now() - t0);
  INFO("marked down after " << took.count() << " ms");
  CHECK(took < 400ms + 1s);
  CHECK(metric(admin, "spliced_upstream_up", up_b) == 1);
  CHECK(httpGet(admin, "/healthz").status == 200);
  for (int i = 0; i < 6; ++i) {
    auto before = servedCounts(ups);
    INFO("session " << i);
    REQUIRE(shortSession(port, "while a is down\n") == "");
    CHECK(whichServed(ups, before) == 1);
  }
  // The active check kept sessions away from it: no session tried it and failed.
  CHECK(metric(admin, "spliced_upstream_errors_total", up_a) == 0);
  CHECK(logLines(daemon.log(), {"upstream=" + a->address() + " health check failed"}).size() == 1);

  REQUIRE(a->listenAgain());
  t0 = Clock::now();
  REQUIRE(waitMetric(admin, "spliced_upstream_up", up_a, 1, 5s));
  took = std::chrono::duration_cast<Millis>(Clock::now() - t0);
  INFO("up again after " << took.count() << " ms");
  CHECK(took < 400ms + 1s);
  std::vector<int> hits(2, 0);
  for (int i = 0; i < 4; ++i) {
    auto before = servedCounts(ups);
    REQUIRE(shortSession(port, "both up\n") == "");
    int w = whichServed(ups, before);
    REQUIRE(w >= 0);
    ++hits[static_cast<size_t>(w)];
  }
  CHECK(hits[0] == 2);
  CHECK(hits[1] == 2);
}

// =============================================================================================
// Balance

TEST_CASE("proxy balance round_robin: 30 sessions over 3 upstreams, 10 each", "[e2e][proxy]") {
  auto u0 = TestUpstream::echo();
  auto u1 = TestUpstream::echo();
  auto u2 = TestUpstream::echo();
  TempDir dir;
  Daemon daemon(dir,
                config(dir, proxyRoute("web", to({u0->address(), u1->address(), u2->address()}))));
  const uint16_t port = daemon.port("web");
  for (int i = 0; i < 30; ++i) {
    INFO("session " << i);
    REQUIRE(shortSession(port, "rr " + std::to_string(i)) == "");
  }
  CHECK(u0->accepted() == 10);
  CHECK(u1->accepted() == 10);
  CHECK(u2->accepted() == 10);
}

TEST_CASE("proxy balance source_hash: one client address, one upstream", "[e2e][proxy]") {
  auto u0 = TestUpstream::echo();
  auto u1 = TestUpstream::echo();
  auto u2 = TestUpstream::echo();
  std::vector<TestUpstream*> ups = {u0.get(), u1.get(), u2.get()};
  TempDir dir;
  Forward f = to({u0->address(), u1->address(), u2->address()});
  f.balance = "source_hash";
  Daemon daemon(dir, config(dir, proxyRoute("web", f)));
  const uint16_t port = daemon.port("web");
  for (const char* source : {"127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"}) {
    INFO("client address " << source);
    std::set<int> chosen;
    for (int i = 0; i < 10; ++i) {
      auto before = servedCounts(ups);
      REQUIRE(shortSession(port, "sh", source) == "");
      chosen.insert(whichServed(ups, before));
    }
    CHECK(chosen.size() == 1);
    CHECK(*chosen.begin() >= 0);
  }
}

TEST_CASE("proxy balance least_connections: a new session goes to the upstream with fewer",
          "[e2e][proxy]") {
  auto a = TestUpstream::echo();
  auto b = TestUpstream::echo();
  std::vector<TestUpstream*> ups = {a.get(), b.get()};
  TempDir dir;
  Forward f = to({a->address(), b->address()});
  f.balance = "least_connections";
  Daemon daemon(dir, config(dir, proxyRoute("web", f)));
  const uint16_t port = daemon.port("web");
  const std::string admin = daemon.waitAdmin();

  // Four held sessions spread two and two.
  std::vector<Conn> held;
  std::vector<int> where;
  for (int i = 0; i < 4; ++i) {
    auto before = servedCounts(ups);
    held.push_back(connectTcp(port));
    REQUIRE(held.back().valid());
    REQUIRE(echoOnce(held.back(), "held") == "");
    where.push_back(whichServed(ups, before));
  }
  CHECK(std::count(where.begin(), where.end(), 0) == 2);
  CHECK(std::count(where.begin(), where.end(), 1) == 2);
  // Close the two on a; b keeps two.
  for (size_t i = 0; i < held.size(); ++i) {
    if (where[i] != 0) continue;
    held[i].shutdownWrite();
    CHECK(held[i].waitClosed(5s) == 0);
    held[i].close();
  }
  REQUIRE(waitMetric(admin, "spliced_upstream_active_connections",
                     upstreamLabels("web", a->address()), 0));
  REQUIRE(metric(admin, "spliced_upstream_active_connections",
                 upstreamLabels("web", b->address())) == 2);
  // a has 0, b has 2: the next two sessions both go to a (round robin would alternate).
  for (int i = 0; i < 2; ++i) {
    auto before = servedCounts(ups);
    held.push_back(connectTcp(port));
    REQUIRE(held.back().valid());
    REQUIRE(echoOnce(held.back(), "fewer") == "");
    CHECK(whichServed(ups, before) == 0);
  }
  CHECK(metric(admin, "spliced_upstream_active_connections", upstreamLabels("web", a->address())) ==
        2);
}

// =============================================================================================
// PROXY protocol towards the upstream

TEST_CASE("proxy_protocol v1/v2: the upstream gets the exact header, then the stream",
          "[e2e][proxy]") {
  struct Case {
    std::string route, version, listen, client_ip;
  };
  const std::vector<Case> cases = {{"pp1", "v1", "127.0.0.1:0", "127.0.0.1"},
                                   {"pp2", "v2", "127.0.0.1:0", "127.0.0.1"},
                                   {"pp1six", "v1", "[::1]:0", "::1"},
                                   {"pp2six", "v2", "[::1]:0", "::1"}};
  std::vector<std::unique_ptr<TestUpstream>> ups;
  std::string routes;
  for (const auto& k : cases) {
    ups.push_back(TestUpstream::sink(kMiB));
    Forward f = to({ups.back()->address()});
    f.proxy_protocol = k.version;
    routes += proxyRoute(k.route, f, "", k.listen);
  }
  TempDir dir;
  Daemon daemon(dir, config(dir, routes));
  const std::string admin = daemon.waitAdmin();
  const std::string payload = randomPayload(61, 100 * kKiB + 1);

  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& k = cases[i];
    INFO("route " << k.route);
    const uint16_t listen_port = daemon.port(k.route);
    int err = 0;
    Conn c = connectIp(k.client_ip, listen_port, "", &err);
    INFO("connect errno " << err);
    REQUIRE(c.valid());
    const Endpoint me = localEndpoint(c.fd());
    REQUIRE(c.sendAll(payload) == 0);
    c.shutdownWrite();
    CHECK(c.waitClosed(5s) == 0);
    REQUIRE(ups[i]->waitDone(1, 5s));

    const bool six = k.client_ip == "::1";
    std::string header;
    if (k.version == "v1") {
      header = std::string("PROXY ") + (six ? "TCP6 " : "TCP4 ") + k.client_ip + " " + k.client_ip +
               " " + std::to_string(me.port) + " " + std::to_string(listen_port) + "\r\n";
    } else {
      header = v2Header(six ? AF_INET6 : AF_INET, k.client_ip, k.client_ip, me.port, listen_port);
    }
    const std::string got = ups[i]->records()[0].data;
    INFO("header received (hex): " << hex(got.substr(0, header.size()))
                                   << "\nwanted: " << hex(header));
    CHECK(got.substr(0, header.size()) == header);
    CHECK(firstDifference(got, header + payload) == "");
    CHECK(waitMetric(admin, "spliced_bytes_in_total", routeLabel(k.route),
                     static_cast<double>(payload.size())));
    CHECK(metric(admin, "spliced_upstream_bytes_total", routeLabel(k.route)) ==
          static_cast<double>(header.size() + payload.size()));
  }
}

// =============================================================================================
// accept_proxy: a front load balancer's PROXY header on the way in

TEST_CASE("accept_proxy: the header is taken off the stream and its source goes on upstream",
          "[e2e][proxy][accept_proxy]") {
  auto fwd_up = TestUpstream::sink(kMiB);
  auto plain_up = TestUpstream::sink(kMiB);
  Forward fwd = to({fwd_up->address()});
  fwd.proxy_protocol = "v1";
  TempDir dir;
  Daemon daemon(dir, config(dir, proxyRoute("fwd", fwd, "    accept_proxy: true\n") +
                                     proxyRoute("plain", to({plain_up->address()}),
                                                "    accept_proxy: true\n")));
  const uint16_t fwd_port = daemon.port("fwd");
  const uint16_t plain_port = daemon.port("plain");
  const std::string payload = randomPayload(71, 64 * kKiB + 9);

  auto send = [&](uint16_t port, const std::string& header, Endpoint* me) {
    Conn c = connectTcp(port);
    REQUIRE(c.valid());
    if (me) *me = localEndpoint(c.fd());
    REQUIRE(c.sendAll(header + payload) == 0);
    c.shutdownWrite();
    CHECK(c.waitClosed(5s) == 0);
  };

  SECTION("v1 in, v1 out: the upstream sees the original addresses") {
    send(fwd_port, "PROXY TCP4 192.0.2.7 198.51.100.9 5555 443\r\n", nullptr);
    REQUIRE(fwd_up->waitDone(1, 5s));
    CHECK(firstDifference(fwd_up->records()[0].data,
                          "PROXY TCP4 192.0.2.7 198.51.100.9 5555 443\r\n" + payload) == "");
  }
  SECTION("v2 in, v1 out") {
    send(fwd_port, v2Header(AF_INET, "192.0.2.8", "198.51.100.9", 6000, 443), nullptr);
    REQUIRE(fwd_up->waitDone(1, 5s));
    CHECK(firstDifference(fwd_up->records()[0].data,
                          "PROXY TCP4 192.0.2.8 198.51.100.9 6000 443\r\n" + payload) == "");
  }
  SECTION("v1 TCP6 in, v1 out") {
    send(fwd_port, "PROXY TCP6 2001:db8::7 2001:db8::1 7000 8443\r\n", nullptr);
    REQUIRE(fwd_up->waitDone(1, 5s));
    CHECK(firstDifference(fwd_up->records()[0].data,
                          "PROXY TCP6 2001:db8::7 2001:db8::1 7000 8443\r\n" + payload) == "");
  }
  SECTION("UNKNOWN in: the real connection's addresses go on") {
    Endpoint me;
    send(fwd_port, "PROXY UNKNOWN\r\n", &me);
    REQUIRE(fwd_up->waitDone(1, 5s));
    CHECK(firstDifference(fwd_up->records()[0].data,
                          "PROXY TCP4 127.0.0.1 127.0.0.1 " + std::to_string(me.port) + " " +
                              std::to_string(fwd_port) + "\r\n" + payload) == "");
  }
  SECTION("no proxy_protocol on the forward side: the upstream gets the stream only") {
    send(plain_port, "PROXY TCP4 192.0.2.7 198.51.100.9 5555 443\r\n", nullptr);
    REQUIRE(plain_up->waitDone(1, 5s));
    CHECK(firstDifference(plain_up->records()[0].data, payload) == "");
  }
}

TEST_CASE("accept_proxy: the allow list applies to the proxied source",
          "[e2e][proxy][accept_proxy]") {
  auto echo = TestUpstream::echo();
  TempDir dir;
  Daemon daemon(dir,
                config(dir, proxyRoute("guarded", to({echo->address()}),
                                       "    accept_proxy: true\n    allow: [192.0.2.0/24]\n")));
  const uint16_t port = daemon.port("guarded");
  const std::string admin = daemon.waitAdmin();

  Conn ok = connectTcp(port);
  REQUIRE(ok.valid());
  REQUIRE(ok.sendAll("PROXY TCP4 192.0.2.7 198.51.100.9 5555 443\r\n") == 0);
  CHECK(echoOnce(ok, "inside the allow list") == "");
  ok.close();

  Conn denied = connectTcp(port);
  REQUIRE(denied.valid());
  REQUIRE(denied.sendAll("PROXY TCP4 198.51.100.1 198.51.100.9 5555 443\r\nhello") == 0);
  CHECK(closedByDaemon(denied.waitClosed(3s)));
  CHECK(waitMetric(admin, "spliced_connections_rejected_total", reasonLabels("guarded", "denied"),
                   1));
  CHECK(metric(admin, "spliced_connections_rejected_total",
               reasonLabels("guarded", "bad_proxy_header")) == 0);
  CHECK(echo->accepted() == 1);
}

TEST_CASE("accept_proxy: malformed, oversized, late or cut headers are refused and counted",
          "[e2e][proxy][accept_proxy]") {
  auto echo = TestUpstream::echo();
  TempDir dir;
  Daemon daemon(dir, config(dir, proxyRoute("strict", to({echo->address()}),
                                            "    accept_proxy: true\n"
                                            "    accept_proxy_timeout: 300ms\n")));
  const uint16_t port = daemon.port("strict");
  const std::string admin = daemon.waitAdmin();
  const Labels bad = reasonLabels("strict", "bad_proxy_header");

  std::string bad_version =
      kV2Signature + std::string("\x11\x11\x00\x0c", 4) + std::string(12, 'x');
  struct Case {
    std::string name;
    std::string bytes;
    bool waits_for_timeout;  // a valid prefix: only accept_proxy_timeout ends it
  };
  const std::vector<Case> cases = {
      {"garbage", "GET / HTTP/1.1\r\nHost: example\r\n\r\n", false},
      {"v1 without CRLF, then silence", "PROXY TCP4 1.2.3.4 5.6.7.8 1 2", true},
      {"v2 with version 1", bad_version, false},
      {"a 600-byte line", "PROXY UNKNOWN " + std::string(584, 'x') + "\r\n", false},
      {"a port with a leading zero", "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", false},
      {"TCP4 with IPv6 addresses", "PROXY TCP4 ::1 ::1 1 2\r\n", false},
      {"two spaces", "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", false},
  };
  double counted = 0;
  for (const auto& k : cases) {
    INFO(k.name);
    Conn c = connectTcp(port);
    REQUIRE(c.valid());
    const std::string client = clientName(c);
    REQUIRE(c.sendAll(k.bytes) == 0);
    const auto t0 = Clock::now();
    CHECK(closedByDaemon(c.waitClosed(3s)));
    const auto took = Clock::now() - t0;
    INFO("closed after " << std::chrono::duration_cast<Millis>(took).count() << " ms");
    if (k.waits_for_timeout) CHECK(took >= 250ms);
    CHECK(took < 300ms + 1s);
    counted += 1;
    CHECK(waitMetric(admin, "spliced_connections_rejected_total", bad, counted));
    // Why it was refused: an invalid header at once, a valid prefix only at the deadline.
    auto lines = logLines(daemon.log(), {"route=strict refused " + client + ":"});
    REQUIRE(lines.size() == 1);
    INFO(lines[0]);
    const bool timed_out =
        lines[0].find("no complete PROXY header within 300ms") != std::string::npos;
    CHECK(timed_out == k.waits_for_timeout);
  }
  {
    INFO("a header cut in the middle, then close");
    Conn c = connectTcp(port);
    REQUIRE(c.valid());
    REQUIRE(c.sendAll("PROXY TCP4 192.0.2.") == 0);
    c.close();
    counted += 1;
    CHECK(waitMetric(admin, "spliced_connections_rejected_total", bad, counted, 2s));
  }
  CHECK(echo->accepted() == 0);
  CHECK(metric(admin, "spliced_connections_active", routeLabel("strict")) == 0);
  CHECK(logLines(daemon.log(), {"route=strict refused"}).size() == cases.size() + 1);
}

TEST_CASE("accept_proxy on a collect route: the segment is named after the proxied source",
          "[e2e][proxy][accept_proxy]") {
  TempDir dir;
  Daemon daemon(dir, withDir(R"(log: { level: info }
routes:
  - name: col
    listen: 127.0.0.1:0
    accept_proxy: true
    archive:
      dir: @DIR@/archive
      name: "{route}-{peer}-{peer_port}-{seq}.log"
)",
                             dir));
  const uint16_t port = daemon.port("col");
  const fs::path archive = dir / "archive";
  const std::string p4 = randomPayload(81, 200 * kKiB + 3);
  const std::string p6 = randomPayload(82, 10 * kKiB);
  for (const auto& [header, payload] : std::vector<std::pair<std::string, std::string>>{
           {"PROXY TCP4 192.0.2.7 198.51.100.9 5555 443\r\n", p4},
           {v2Header(AF_INET6, "2001:db8::7", "2001:db8::1", 6000, 443), p6}}) {
    Conn c = connectTcp(port);
    REQUIRE(c.valid());
    REQUIRE(c.sendAll(header + payload) == 0);
    c.shutdownWrite();
    CHECK(c.waitClosed(5s) == 0);
  }
  REQUIRE(waitUntil([&] { return closedSegments(archive).size() == 2; }, 5s));
  std::map<std::string, std::string> files;
  for (const auto& f : closedSegments(archive)) files[f.filename().string()] = readFile(f);
  INFO("segments: " << [&] {
    std::string s;
    for (const auto& [n, _] : files) s += n + " ";
    return s;
  }());
  REQUIRE(files.count("col-192.0.2.7-5555-000000.log") == 1);
  REQUIRE(files.count("col-2001_db8__7-6000-000000.log") == 1);
  CHECK(firstDifference(files["col-192.0.2.7-5555-000000.log"], p4) == "");
  CHECK(firstDifference(files["col-2001_db8__7-6000-000000.log"], p6) == "");
}

TEST_CASE("accept_proxy: the access log and source_hash use the proxied source",
          "[e2e][proxy][accept_proxy]") {
  // Behind a front load balancer every connection comes from the balancer: the client is known
  // only from the PROXY header (the allow list, the forwarded header and collect segment names
  // already use it). HAProxy's logs and `balance source` use it too.
  auto u0 = TestUpstream::echo();
  auto u1 = TestUpstream::echo();
  std::vector<TestUpstream*> ups = {u0.get(), u1.get()};
  Forward f = to({u0->address(), u1->address()});
  f.balance = "source_hash";
  TempDir dir;
  Daemon daemon(dir, config(dir, proxyRoute("lb", f, "    accept_proxy: true\n")));
  const uint16_t port = daemon.port("lb");
  constexpr int kSources = 8;
  std::set<int> used;
  for (int i = 1; i <= kSources; ++i) {
    INFO("source 192.0.2." << i);
    std::set<int> chosen;
    for (int rep = 0; rep < 2; ++rep) {
      auto before = servedCounts(ups);
      Conn c = connectTcp(port);
      REQUIRE(c.valid());
      // Appended piece by piece: GCC 12 warns falsely (array-bounds) on "..." + to_string(..).
      std::string header = "PROXY TCP4 192.0.2.";
      header += std::to_string(i);
      header += " 198.51.100.9 ";
      header += std::to_string(5000 + 10 * i + rep);
      header += " 443\r\n";
      REQUIRE(c.sendAll(header) == 0);
      REQUIRE(echoOnce(c, "hello") == "");
      chosen.insert(whichServed(ups, before));
    }
    CHECK(chosen.size() == 1);
    used.insert(*chosen.begin());
  }
  // Eight different clients all on one of two upstreams means the hash saw one address.
  CHECK(used.size() == 2);
  REQUIRE(waitUntil(
      [&] {
        return logLines(daemon.log(), {"proxy route=lb ", " end="}).size() == 2 * kSources;
      },
      5s));
  const auto lines = logLines(daemon.log(), {"proxy route=lb ", " end="});
  INFO("first access-log line: " << lines[0]);
  CHECK(logLines(daemon.log(), {"proxy route=lb ", " client=192.0.2."}).size() == 2 * kSources);
}

// =============================================================================================
// Shutdown and resources

TEST_CASE("proxy SIGTERM drain: new connections are refused, the session in flight completes",
          "[e2e][proxy]") {
  auto echo = TestUpstream::echo();
  TempDir dir;
  Daemon daemon(dir, config(dir, proxyRoute("web", to({echo->address()})), "5s"));
  const uint16_t port = daemon.port("web");

  Conn c = connectTcp(port);
  REQUIRE(c.valid());
  const std::string client = clientName(c);
  ExchangeSpec spec;
  spec.send_seed = spec.recv_seed = 91;
  spec.send_bytes = 8 * kMiB;
  spec.pause = 10ms;  // 128 chunks of 64 KiB: more than a second in flight
  Exchange x(c, spec);
  REQUIRE(waitUntil([&] { return x.received() >= kMiB; }, 10s));
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitLog("shutting down", 5s));
  CHECK(x.received() < spec.send_bytes);  // still mid-transfer

  int err = 0;
  Conn late = connectTcp(port, &err);
  CHECK_FALSE(late.valid());
  CHECK(err == ECONNREFUSED);

  ExchangeResult r = x.join();
  INFO(r.mismatch << " send errno " << r.send_err << " recv errno " << r.recv_err);
  CHECK(r.sent == spec.send_bytes);
  CHECK(r.received == spec.send_bytes);
  CHECK(r.eof);
  CHECK(r.mismatch.empty());
  CHECK(daemon.waitExit(8s) == 0);
  CHECK(
      logLines(daemon.log(), {"proxy route=web ", " client=" + client + " ", " end=eof"}).size() ==
      1);
}

TEST_CASE("proxy: 2000 short sessions leave the daemon's fd count at its baseline",
          "[e2e][proxy][fds]") {
  // Enough that every worker's pool is warm (the kernel spreads connections by their ports).
  constexpr int kWarmup = 50;
  constexpr int kSessions = 2000;
  auto echo = TestUpstream::echo();
  TempDir dir;
  Daemon daemon(dir, config(dir, proxyRoute("web", to({echo->address()}))));
  const uint16_t port = daemon.port("web");
  const std::string admin = daemon.waitAdmin();

  auto wait_idle = [&] {
    return waitMetric(admin, "spliced_connections_active", routeLabel("web"), 0, 10s);
  };
  // Pipes go back to the daemon's pool and stay there by design: the baseline is taken warm.
  for (int i = 0; i < kWarmup; ++i)
    REQUIRE(shortSession(port, "warm-up " + std::to_string(i)) == "");
  REQUIRE(wait_idle());
  const size_t baseline = settledFdCount(daemon);

  for (int i = 0; i < kSessions; ++i) {
    const std::string msg = "session" + std::to_string(1000 + i % 1000).substr(1);  // 10 bytes
    const std::string e = shortSession(port, msg);
    if (!e.empty()) FAIL("session " << i << ": " << e);
  }
  REQUIRE(wait_idle());
  const bool settled = waitUntil([&] { return daemon.fdCount() == baseline; }, 10s);
  INFO("fd count " << daemon.fdCount() << ", baseline " << baseline << "; open fds:\n"
                   << daemon.fdListing());
  CHECK(settled);
  CHECK(echo->served() == kWarmup + kSessions);
  CHECK(metric(admin, "spliced_connections_total", routeLabel("web")) == kWarmup + kSessions);
  CHECK(daemon.countLogLines({"proxy route=web ", " end=eof"}, kWarmup + kSessions) ==
        kWarmup + kSessions);
}
