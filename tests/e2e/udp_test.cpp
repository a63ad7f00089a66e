// End-to-end: collect routes on udp: listeners. Real senders from Debian (util-linux's
// logger --udp, rsyslog's omfwd with protocol="udp") and the test's own sockets (IPv6, a second
// sender address, oversized datagrams). Every message must land exactly once and whole.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <map>
#include <regex>
#include <sstream>

#include "harness.hpp"
#include "rsyslogd.hpp"

using namespace e2e;

namespace {

constexpr int kMessages = 3000;

double value(const MetricValues& m, const std::string& key) {
  auto it = m.find(key);
  return it == m.end() ? -1 : it->second;
}

std::string routeKey(const std::string& family, const std::string& extra = "") {
  std::string k = family;
  k += "{route=\"app\"";
  k += extra;
  k += "}";
  return k;
}

// A UDP socket bound to `bind_ip` (port 0), sending to `to_ip`:`port`. Owns its fd.
class UdpSender {
 public:
  UdpSender(const std::string& bind_ip, const std::string& to_ip, uint16_t port) {
    const bool v6 = to_ip.find(':') != std::string::npos;
    fd_ = ::socket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (v6) {
      auto* a = reinterpret_cast<sockaddr_in6*>(&to_);
      a->sin6_family = AF_INET6;
      a->sin6_port = htons(port);
      ::inet_pton(AF_INET6, to_ip.c_str(), &a->sin6_addr);
      len_ = sizeof(sockaddr_in6);
      sockaddr_in6 b{};
      b.sin6_family = AF_INET6;
      ::inet_pton(AF_INET6, bind_ip.c_str(), &b.sin6_addr);
      ok_ = fd_ >= 0 && ::bind(fd_, reinterpret_cast<sockaddr*>(&b), sizeof b) == 0;
    } else {
      auto* a = reinterpret_cast<sockaddr_in*>(&to_);
      a->sin_family = AF_INET;
      a->sin_port = htons(port);
      ::inet_pton(AF_INET, to_ip.c_str(), &a->sin_addr);
      len_ = sizeof(sockaddr_in);
      sockaddr_in b{};
      b.sin_family = AF_INET;
      ::inet_pton(AF_INET, bind_ip.c_str(), &b.sin_addr);
      ok_ = fd_ >= 0 && ::bind(fd_, reinterpret_cast<sockaddr*>(&b), sizeof b) == 0;
    }
  }
  ~UdpSender() {
    if (fd_ >= 0) ::close(fd_);
  }
  UdpSender(const UdpSender&) = delete;
  UdpSender& operator=(const UdpSender&) = delete;

  bool ok() const { return ok_; }
  bool send(const std::string& d) {
    return ::sendto(fd_, d.data(), d.size(), 0, reinterpret_cast<const sockaddr*>(&to_), len_) ==
           static_cast<ssize_t>(d.size());
  }

 private:
  int fd_ = -1;
  sockaddr_storage to_{};
  socklen_t len_ = 0;
  bool ok_ = false;
};

// The messages of an octet-counted stream, or an empty list with `ok` false.
std::vector<std::string> octetMessages(const std::string& s, bool& ok) {
  std::vector<std::string> out;
  ok = false;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t sp = s.find(' ', pos);
    if (sp == std::string::npos || sp == pos || s[pos] == '0' || sp - pos > 10) return {};
    for (size_t i = pos; i < sp; ++i) {
      if (s[i] < '0' || s[i] > '9') return {};
    }
    size_t len = std::stoul(s.substr(pos, sp - pos));
    if (sp + 1 + len > s.size()) return {};
    out.push_back(s.substr(sp + 1, len));
    pos = sp + 1 + len;
  }
  ok = true;
  return out;
}

std::vector<std::string> linesOf(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  return lines;
}

// Every line of every segment below `dir` (closed ones, in name order).
std::vector<std::string> archivedLines(const fs::path& dir) {
  return linesOf(concatFiles(closedSegments(dir)));
}

// Counts lines that are exactly `prefix` + "n=NNNNNN" as syslog senders write them (anything
// before `marker` is the sender's header, checked by `header`).
struct Tally {
  std::map<int, int> seen;
  std::vector<std::string> malformed;
  bool exactlyOnce(int n) const {
    if (seen.size() != static_cast<size_t>(n)) return false;
    for (auto& [k, times] : seen) {
      if (times != 1 || k < 1 || k > n) return false;
    }
    return true;
  }
};

Tally tally(const std::vector<std::string>& lines, const std::regex& re) {
  Tally t;
  for (const auto& l : lines) {
    std::smatch m;
    if (std::regex_match(l, m, re)) {
      t.seen[std::stoi(m[1])]++;
    } else {
      t.malformed.push_back(l);
    }
  }
  return t;
}

fs::path messageFile(const TempDir& dir) {
  std::string text;
  for (int n = 1; n <= kMessages; ++n) {
    char line[64];
    std::snprintf(line, sizeof line, "syslog udp e2e n=%06d\n", n);
    text += line;
  }
  const fs::path p = dir / "messages.txt";
  writeFile(p, text);
  return p;
}

bool haveLogger() { return ::access("/usr/bin/logger", X_OK) == 0; }

// A config with an admin endpoint and one collect route "app" on `listen`; `top` goes before
// routes (e.g. "workers: 2\n"), `route_extra` into the route (indented lines), `archive_extra`
// into the archive block (", key: value" pieces).
std::string udpConfig(const TempDir& dir, const std::string& listen, const std::string& top,
                      const std::string& route_extra, const std::string& archive_extra) {
  std::string c = "admin: { listen: 127.0.0.1:0 }\n";
  c += top;
  c += "routes:\n  - name: app\n    listen: ";
  c += listen;
  c += "\n";
  c += route_extra;
  c += "    archive: { dir: @DIR@/archive";
  c += archive_extra;
  c += " }\n";
  return withDir(c, dir);
}

// Waits until the route has received `n` datagrams.
bool waitDatagrams(const std::string& admin, double n, Millis timeout = Millis(20000)) {
  return waitUntil(
      [&] { return value(scrapeMetrics(admin), routeKey("spliced_udp_datagrams_total")) >= n; },
      timeout, Millis(50));
}

}  // namespace

TEST_CASE("udp: logger --udp: every message archived once and whole, one line each", "[e2e][udp]") {
  if (!haveLogger()) {
    WARN("SKIPPED: logger is not installed (Debian's bsdutils)");
    return;
  }
  TempDir dir;
  Daemon d(dir, udpConfig(dir, "udp:127.0.0.1:0", "", "", ""));
  const std::string admin = d.waitAdmin();
  const std::string addr = d.waitListening("app");
  CHECK(addr.rfind("udp:127.0.0.1:", 0) == 0);
  const uint16_t port = d.port("app");
  const std::string cmd = "logger --udp -n 127.0.0.1 -P " + std::to_string(port) + " -t e2e -f " +
                          messageFile(dir).string();
  REQUIRE(std::system(cmd.c_str()) == 0);
  REQUIRE(waitDatagrams(admin, kMessages));
  const MetricValues m = scrapeMetrics(admin);
  d.signal(SIGTERM);
  REQUIRE(d.waitExit(Millis(10000)) == 0);
  // RFC 5424 as logger writes it: "<13>1 TIMESTAMP HOST e2e - - [...] MSG", one datagram each,
  // archived as one line each (framing: lines by default on udp: routes).
  const Tally t = tally(archivedLines(dir / "archive"),
                        std::regex("<13>1 \\S+ \\S+ e2e - - .*syslog udp e2e n=([0-9]{6})"));
  INFO("malformed: " << t.malformed.size()
                     << (t.malformed.empty() ? "" : ", first: " + t.malformed.front()));
  CHECK(t.malformed.empty());
  CHECK(t.exactlyOnce(kMessages));
  CHECK(value(m, routeKey("spliced_udp_datagrams_total")) == kMessages);
  CHECK(value(m, routeKey("spliced_udp_dropped_total")) == 0);
  CHECK(value(m, routeKey("spliced_udp_truncated_total")) == 0);
  // The copy path is the only path: every byte received was copied.
  CHECK(value(m, routeKey("spliced_copy_fallback_bytes_total")) ==
        value(m, routeKey("spliced_bytes_in_total")));
  CHECK(value(m, routeKey("spliced_bytes_in_total")) > 0);
}

TEST_CASE("udp: rsyslog omfwd protocol=udp: every message once and whole", "[e2e][udp]") {
  const std::string rsyslogd = findRsyslogd();
  if (rsyslogd.empty()) {
    WARN("SKIPPED: rsyslogd is not installed (tools/deps.sh installs Debian's rsyslog)");
    return;
  }
  TempDir dir;
  Daemon d(dir, udpConfig(dir, "udp:127.0.0.1:0", "", "", ", layout: per_peer"));
  const std::string admin = d.waitAdmin();
  const uint16_t port = d.port("app");
  fs::create_directories(dir / "spool");
  writeFile(dir / "rsyslog.conf", "global(workDirectory=\"" + (dir / "spool").string() +
                                      "\")\n"
                                      "module(load=\"imtcp\")\n"
                                      "input(type=\"imtcp\" port=\"0\" listenPortFileName=\"" +
                                      (dir / "inport").string() +
                                      "\")\n"
                                      "action(type=\"omfwd\" target=\"127.0.0.1\" port=\"" +
                                      std::to_string(port) + "\" protocol=\"udp\")\n");
  Rsyslogd rsyslog(rsyslogd, dir / "rsyslog.conf", dir / "rsyslog.pid", dir / "rsyslog.log");
  std::string inport;
  REQUIRE(waitUntil(
      [&] {
        if (!fs::exists(dir / "inport")) return false;
        inport = readFile(dir / "inport");
        return !inport.empty() && inport.back() != ' ';
      },
      Millis(10000)));
  INFO("rsyslog's log:\n" << readFile(dir / "rsyslog.log"));
  Conn c = connectTcp(static_cast<uint16_t>(std::stoi(inport)));
  REQUIRE(c.valid());
  for (int n = 1; n <= kMessages; ++n) {
    char line[80];
    int len = std::snprintf(line, sizeof line, "<13>Jan  1 00:00:00 host syslog: e2e n=%06d\n", n);
    REQUIRE(c.sendAll(line, static_cast<size_t>(len)) == 0);
    // rsyslog sends as fast as it reads: a short pause now and then keeps the burst inside the
    // receive buffer of a loaded test machine (drops would be counted, not hidden).
    if (n % 500 == 0) std::this_thread::sleep_for(Millis(20));
  }
  c.close();
  const bool all = waitDatagrams(admin, kMessages, Millis(30000));
  CHECK(rsyslog.stop(Millis(10000)));
  const MetricValues m = scrapeMetrics(admin);
  d.signal(SIGTERM);
  REQUIRE(d.waitExit(Millis(10000)) == 0);
  CHECK(all);
  CHECK(value(m, routeKey("spliced_udp_dropped_total")) == 0);
  // layout: per_peer: one chain for 127.0.0.1, named with {peer}.
  const auto files = closedSegments(dir / "archive");
  REQUIRE(!files.empty());
  for (const auto& f : files) CHECK(f.filename().string().find("-127.0.0.1-") != std::string::npos);
  // omfwd forwards the message as rsyslog formats it for the wire
  // (RSYSLOG_TraditionalForwardFormat).
  const Tally t = tally(archivedLines(dir / "archive"),
                        std::regex("<13>Jan  1 00:00:00 host syslog: e2e n=([0-9]{6})"));
  INFO("malformed: " << t.malformed.size()
                     << (t.malformed.empty() ? "" : ", first: " + t.malformed.front()));
  CHECK(t.malformed.empty());
  CHECK(t.exactlyOnce(kMessages));
}

TEST_CASE("udp: IPv6, octet_counted: datagrams with newlines kept byte for byte, in order",
          "[e2e][udp]") {
  TempDir dir;
  Daemon d(dir, udpConfig(dir, "\"udp:[::1]:0\"", "", "",
                          ", layout: per_peer, framing: octet_counted, name: "
                          "\"{route}-{peer}-{seq}.log\""));
  const std::string admin = d.waitAdmin();
  CHECK(d.waitListening("app").rfind("udp:[::1]:", 0) == 0);
  const uint16_t port = d.port("app");
  UdpSender s("::1", "::1", port);
  REQUIRE(s.ok());
  std::vector<std::string> sent;
  for (int i = 0; i < 500; ++i) {
    std::string msg =
        randomPayload(static_cast<uint64_t>(i) + 1, 1 + static_cast<size_t>(i * 37 % 1400));
    msg += "\nsecond line of ";
    msg += std::to_string(i);
    sent.push_back(msg);
    REQUIRE(s.send(msg));
    if (i % 100 == 99) std::this_thread::sleep_for(Millis(5));
  }
  REQUIRE(waitDatagrams(admin, static_cast<double>(sent.size())));
  d.signal(SIGTERM);
  REQUIRE(d.waitExit(Millis(10000)) == 0);
  const auto files = closedSegments(dir / "archive");
  REQUIRE(files.size() == 1);
  CHECK(files.front().filename().string() == "app-__1-000000.log");
  bool ok = false;
  const std::vector<std::string> got = octetMessages(readFile(files.front()), ok);
  CHECK(ok);
  REQUIRE(got.size() == sent.size());
  for (size_t i = 0; i < sent.size(); ++i) {
    INFO("datagram " << i << ": " << firstDifference(got[i], sent[i]));
    CHECK(got[i] == sent[i]);
  }
}

TEST_CASE("udp: a datagram longer than max_line is truncated and counted - the next is whole",
          "[e2e][udp]") {
  TempDir dir;
  Daemon d(dir, udpConfig(dir, "udp:127.0.0.1:0", "", "", ", max_line: 100"));
  const std::string admin = d.waitAdmin();
  UdpSender s("127.0.0.1", "127.0.0.1", d.port("app"));
  REQUIRE(s.ok());
  const std::string big(300, 'x');
  REQUIRE(s.send(big));
  REQUIRE(s.send("short one"));
  REQUIRE(s.send("ends with a newline\n"));
  REQUIRE(waitDatagrams(admin, 3));
  const MetricValues m = scrapeMetrics(admin);
  d.signal(SIGTERM);
  REQUIRE(d.waitExit(Millis(10000)) == 0);
  CHECK(value(m, routeKey("spliced_udp_truncated_total")) == 1);
  // 99 bytes and its '\n' make a record of max_line; one '\n' is added only where missing.
  std::string want(99, 'x');
  want += "\nshort one\nends with a newline\n";
  CHECK(concatFiles(closedSegments(dir / "archive")) == want);
  CHECK(d.log().find("a datagram longer than 99 bytes was truncated") != std::string::npos);
}

TEST_CASE("udp: the allow list applies per datagram", "[e2e][udp]") {
  TempDir dir;
  Daemon d(dir, udpConfig(dir, "udp:127.0.0.1:0", "", "    allow: [127.0.0.2/32]\n", ""));
  const std::string admin = d.waitAdmin();
  const uint16_t port = d.port("app");
  UdpSender denied("127.0.0.1", "127.0.0.1", port);
  UdpSender allowed("127.0.0.2", "127.0.0.1", port);
  REQUIRE(denied.ok());
  REQUIRE(allowed.ok());
  for (int i = 0; i < 5; ++i) REQUIRE(denied.send("denied " + std::to_string(i)));
  REQUIRE(allowed.send("allowed 0"));
  REQUIRE(waitDatagrams(admin, 6));
  const MetricValues m = scrapeMetrics(admin);
  d.signal(SIGTERM);
  REQUIRE(d.waitExit(Millis(10000)) == 0);
  CHECK(value(m, routeKey("spliced_udp_rejected_total", ",reason=\"denied\"")) == 5);
  CHECK(concatFiles(closedSegments(dir / "archive")) == "allowed 0\n");
}

TEST_CASE("udp: per_peer chains close after idle_timeout - max_connections caps senders",
          "[e2e][udp]") {
  TempDir dir;
  Daemon d(dir, udpConfig(dir, "udp:127.0.0.1:0", "",
                          "    max_connections: 1\n    idle_timeout: 300ms\n",
                          ", layout: per_peer, name: \"{route}-{peer}-{conn}-{seq}.log\""));
  const std::string admin = d.waitAdmin();
  const uint16_t port = d.port("app");
  UdpSender a("127.0.0.1", "127.0.0.1", port);
  UdpSender b("127.0.0.2", "127.0.0.1", port);
  REQUIRE(a.ok());
  REQUIRE(b.ok());
  REQUIRE(a.send("a 1"));
  REQUIRE(waitDatagrams(admin, 1));
  REQUIRE(b.send("b refused"));  // a's chain is open: the limit is reached
  REQUIRE(waitDatagrams(admin, 2));
  CHECK(value(scrapeMetrics(admin), routeKey("spliced_udp_rejected_total", ",reason=\"limit\"")) ==
        1);
  CHECK(value(scrapeMetrics(admin), routeKey("spliced_connections_active")) == 1);
  // Quiet for idle_timeout: a's chain closes and its segment is published.
  REQUIRE(waitUntil([&] { return closedSegments(dir / "archive").size() == 1; }, Millis(5000)));
  CHECK(d.waitLog("end=idle_timeout", Millis(2000)));
  REQUIRE(b.send("b 1"));
  REQUIRE(waitDatagrams(admin, 3));
  d.signal(SIGTERM);
  REQUIRE(d.waitExit(Millis(10000)) == 0);
  std::map<std::string, std::string> by_peer;
  for (const auto& f : closedSegments(dir / "archive")) {
    const std::string name = f.filename().string();
    by_peer[name.substr(0, name.find('-', 4))] += readFile(f);
  }
  CHECK(by_peer["app-127.0.0.1"] == "a 1\n");
  CHECK(by_peer["app-127.0.0.2"] == "b 1\n");
  CHECK(by_peer.size() == 2);
}

TEST_CASE("udp: workers: 2, many senders: every datagram once in the shared chain", "[e2e][udp]") {
  TempDir dir;
  Daemon d(dir, udpConfig(dir, "udp:127.0.0.1:0", "workers: 2\n", "", ""));
  const std::string admin = d.waitAdmin();
  const uint16_t port = d.port("app");
  constexpr int kSenders = 8;
  constexpr int kEach = 400;
  std::vector<std::unique_ptr<UdpSender>> senders;
  for (int i = 0; i < kSenders; ++i) {
    senders.push_back(std::make_unique<UdpSender>("127.0.0.1", "127.0.0.1", port));
    REQUIRE(senders.back()->ok());
  }
  for (int n = 0; n < kEach; ++n) {
    for (int i = 0; i < kSenders; ++i) {
      char msg[64];
      std::snprintf(msg, sizeof msg, "sender %d n=%06d", i, i * kEach + n + 1);
      REQUIRE(senders[static_cast<size_t>(i)]->send(msg));
    }
    if (n % 100 == 99) std::this_thread::sleep_for(Millis(5));
  }
  REQUIRE(waitDatagrams(admin, kSenders * kEach));
  d.signal(SIGTERM);
  REQUIRE(d.waitExit(Millis(10000)) == 0);
  const Tally t = tally(archivedLines(dir / "archive"), std::regex("sender [0-7] n=([0-9]{6})"));
  CHECK(t.malformed.empty());
  CHECK(t.exactlyOnce(kSenders * kEach));
}

TEST_CASE("udp: config errors at -t", "[e2e][udp]") {
  TempDir dir;
  struct Case {
    std::string config;
    std::string message;
  };
  const std::vector<Case> cases{
      {"routes:\n  - name: p\n    listen: udp:127.0.0.1:0\n"
       "    forward: { upstreams: [127.0.0.1:9] }\n",
       "spliced.yaml:3:13: routes[0].listen: udp: listeners are for collect routes"},
      {"routes:\n  - name: a\n    listen: udp:127.0.0.1:0\n"
       "    archive: { dir: @DIR@/a, layout: per_connection }\n",
       "routes[0].archive.layout: a udp: listener has no connections"},
      {"routes:\n  - name: a\n    listen: 127.0.0.1:0\n"
       "    archive: { dir: @DIR@/a, layout: per_peer }\n",
       "routes[0].archive.layout: per_peer is for udp: listeners"},
      {"routes:\n  - name: a\n    listen: 127.0.0.1:0\n    udp_rcvbuf: 8MiB\n"
       "    archive: { dir: @DIR@/a }\n",
       "spliced.yaml:4:17: routes[0].udp_rcvbuf: applies to udp: listeners only"},
      {"routes:\n  - name: a\n    listen: udp:127.0.0.1:0\n"
       "    archive: { dir: @DIR@/a, framing: auto }\n",
       "routes[0].archive.framing: auto has no meaning on a udp: listener"},
      {"routes:\n  - name: a\n    listen: udp:unix:/tmp/x.sock\n    archive: { dir: @DIR@/a }\n",
       "routes[0].listen: udp: takes HOST:PORT"},
      {"routes:\n  - name: a\n    listen: udp:127.0.0.1:0\n    accept_proxy: true\n"
       "    archive: { dir: @DIR@/a }\n",
       "routes[0].accept_proxy: has no meaning on a udp: listener"},
  };
  for (const auto& c : cases) {
    writeFile(dir / "spliced.yaml", withDir(c.config, dir));
    const CommandResult r = runSpliced(dir, {"-t", "-c", "spliced.yaml"});
    INFO(c.config << "\n" << r.out << r.err);
    CHECK(r.exit_code == 1);
    CHECK((r.out + r.err).find(c.message) != std::string::npos);
  }
  // The same route is valid with udp_rcvbuf and a per_peer layout.
  writeFile(dir / "spliced.yaml",
            withDir("routes:\n  - name: a\n    listen: \"udp:[::1]:0\"\n    udp_rcvbuf: 8MiB\n"
                    "    archive: { dir: @DIR@/a, layout: per_peer }\n",
                    dir));
  const CommandResult ok = runSpliced(dir, {"-t", "-c", "spliced.yaml"});
  INFO(ok.out << ok.err);
  CHECK(ok.exit_code == 0);
}

TEST_CASE("udp: a reload adds a udp: route and a later one removes it, its records published",
          "[e2e][udp][reload]") {
  TempDir dir;
  const std::string tcp =
      "admin: { listen: 127.0.0.1:0 }\n"
      "routes:\n"
      "  - name: app\n"
      "    listen: 127.0.0.1:0\n"
      "    archive: { dir: @DIR@/archive }\n";
  const std::string udp =
      "  - name: dgram\n"
      "    listen: udp:127.0.0.1:0\n"
      "    archive: { dir: @DIR@/udp }\n";
  Daemon d(dir, withDir(tcp, dir));
  d.waitListening("app");
  writeFile(d.configPath(), withDir(tcp + udp, dir));
  d.signal(SIGHUP);
  const std::string addr = d.waitListening("dgram");
  REQUIRE(addr.rfind("udp:127.0.0.1:", 0) == 0);
  UdpSender s("127.0.0.1", "127.0.0.1",
              static_cast<uint16_t>(std::stoi(addr.substr(addr.rfind(':') + 1))));
  REQUIRE(s.send("one"));
  REQUIRE(s.send("two"));
  REQUIRE(waitUntil([&] { return concatFiles(openSegments(dir / "udp")) == "one\ntwo\n"; },
                    Millis(5000)));
  writeFile(d.configPath(), withDir(tcp, dir));
  d.signal(SIGHUP);
  REQUIRE(d.waitLog("route=dgram removed: its last connection has closed", Millis(5000)));
  CHECK(openSegments(dir / "udp").empty());
  CHECK(concatFiles(closedSegments(dir / "udp")) == "one\ntwo\n");
  d.signal(SIGTERM);
  REQUIRE(d.waitExit(Millis(10000)) == 0);
}

TEST_CASE("udp: a full file system pauses reading - every datagram is archived once there is room",
          "[e2e][udp][enospc]") {
  TempDir dir;
  TmpfsMount mnt(dir / "fs", "size=4m,mode=0755");
  if (!mnt.mounted()) {
    WARN("cannot mount a tmpfs (" << mnt.error()
                                  << "; needs root or CAP_SYS_ADMIN): the ENOSPC test is SKIPPED");
    return;
  }
  struct statvfs sv {};
  REQUIRE(::statvfs((dir / "fs").c_str(), &sv) == 0);
  const uint64_t avail = static_cast<uint64_t>(sv.f_bavail) * sv.f_frsize;
  constexpr uint64_t kFree = 64 * kKiB;
  REQUIRE(avail > kFree);
  writeFile(dir / "fs" / "filler", std::string(avail - kFree, 'F'));
  std::string c = "admin: { listen: 127.0.0.1:0 }\nroutes:\n  - name: app\n";
  c += "    listen: udp:127.0.0.1:0\n    archive: { dir: ";
  c += (dir / "fs" / "archive").string();
  c += " }\n";
  Daemon d(dir, c);
  const std::string admin = d.waitAdmin();
  UdpSender s("127.0.0.1", "127.0.0.1", d.port("app"));
  REQUIRE(s.ok());
  constexpr int kCount = 2000;  // 200 KB of records: three times what fits before the filler goes
  std::string want;
  for (int n = 1; n <= kCount; ++n) {
    char msg[128];
    std::snprintf(msg, sizeof msg, "<13>udp enospc n=%06d %s", n, std::string(70, 'y').c_str());
    want += msg;
    want += '\n';
    REQUIRE(s.send(msg));
    if (n % 200 == 0) std::this_thread::sleep_for(Millis(5));
  }
  // Full: reading stops, /healthz says why, the error is logged once.
  std::string body;
  REQUIRE(waitUntil(
      [&] {
        HttpResponse h = httpGet(admin, "/healthz");
        body = h.body;
        return h.status == 503;
      },
      Millis(10000)));
  CHECK(body ==
        "route app: archive writes failing (No space left on device) for 1 connection(s)\n");
  std::this_thread::sleep_for(Millis(300));
  const double received = value(scrapeMetrics(admin), routeKey("spliced_udp_datagrams_total"));
  CHECK(received < kCount);
  CHECK(logLines(d.log(), {"error=storage route=app archive write failed: No space left on "
                           "device; not reading the udp socket"})
            .size() == 1);
  // Room again: the held records and what waited in the socket are written, in order.
  fs::remove(dir / "fs" / "filler");
  REQUIRE(waitDatagrams(admin, kCount));
  REQUIRE(waitUntil([&] { return httpGet(admin, "/healthz").status == 200; }, Millis(10000)));
  const MetricValues m = scrapeMetrics(admin);
  d.signal(SIGTERM);
  REQUIRE(d.waitExit(Millis(10000)) == 0);
  CHECK(value(m, routeKey("spliced_udp_dropped_total")) == 0);
  const std::string got = concatFiles(closedSegments(dir / "fs" / "archive"));
  INFO(firstDifference(got, want));
  CHECK(got == want);
  CHECK(d.log().find("archive writable again; reading the udp socket again") != std::string::npos);
}
