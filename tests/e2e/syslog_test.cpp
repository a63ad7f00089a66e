// End-to-end: syslog senders that speak octet counting (RFC 6587), real programs from Debian:
// util-linux's logger (--octet-count, and plain TCP to a framing: auto route) and rsyslog's
// omfwd with TCP_Framing="octet-counted". Every message must land exactly once and whole.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <regex>
#include <sstream>
#include <thread>

#include "harness.hpp"
#include "rsyslogd.hpp"

using namespace e2e;

namespace {

constexpr int kMessages = 3000;

// The messages of an octet-counted stream, or nullopt when `s` is not one.
std::optional<std::vector<std::string>> octetMessages(const std::string& s) {
  std::vector<std::string> out;
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
  return out;
}

// Counts the messages ending in "n=NNNNNN" (1..kMessages); anything else is malformed.
struct Tally {
  std::map<int, int> seen;
  std::vector<std::string> malformed;
  size_t unique() const { return seen.size(); }
  bool exactlyOnce() const {
    if (seen.size() != static_cast<size_t>(kMessages)) return false;
    for (auto& [n, times] : seen) {
      if (times != 1) return false;
    }
    return true;
  }
};

void count(Tally& t, const std::vector<std::string>& msgs) {
  static const std::regex re(".* n=([0-9]{6})\\n?$");
  for (const auto& m : msgs) {
    std::smatch match;
    if (std::regex_match(m, match, re)) {
      int n = std::stoi(match[1]);
      if (n >= 1 && n <= kMessages) {
        t.seen[n]++;
        continue;
      }
    }
    t.malformed.push_back(m);
  }
}

// Every chain below `dir` (per connection or shared: sorted segment contents per chain joined),
// each parsed as octet counted when `octet`, else as lines.
Tally tallyChains(const fs::path& dir) {
  Tally t;
  for (const auto& [conn, chain] : chainsByConn(dir)) {
    const std::string text = concatFiles(chain.files());
    if (auto msgs = octetMessages(text)) {
      count(t, *msgs);
    } else {
      std::vector<std::string> lines;
      std::istringstream in(text);
      for (std::string l; std::getline(in, l);) lines.push_back(l);
      count(t, lines);
    }
  }
  return t;
}

// Messages "n=" seen so far in every segment, open or closed (to wait for the senders).
size_t arrived(const fs::path& dir) {
  const std::string all = concatFiles(openSegments(dir)) + concatFiles(closedSegments(dir));
  size_t n = 0;
  for (size_t at = all.find(" n="); at != std::string::npos; at = all.find(" n=", at + 1)) ++n;
  return n;
}

bool haveLogger() { return ::access("/usr/bin/logger", X_OK) == 0; }

std::string config(const TempDir& dir, const std::string& archive_extra,
                   const std::string& name = kPerConnName) {
  return withDir(
      "routes:\n"
      "  - name: app\n"
      "    listen: 127.0.0.1:0\n"
      "    archive: { dir: @DIR@/archive, name: \"" +
          name + "\", " + archive_extra + " }\n",
      dir);
}

// A file of kMessages lines "syslog e2e n=NNNNNN", for logger -f.
fs::path messageFile(const TempDir& dir) {
  std::string text;
  for (int n = 1; n <= kMessages; ++n) {
    char line[64];
    std::snprintf(line, sizeof line, "syslog e2e n=%06d\n", n);
    text += line;
  }
  const fs::path p = dir / "messages.txt";
  writeFile(p, text);
  return p;
}

int runLogger(const std::string& flags, uint16_t port, const fs::path& file) {
  const std::string cmd = "logger " + flags + " -n 127.0.0.1 -P " + std::to_string(port) +
                          " -t e2e -f " + file.string();
  return std::system(cmd.c_str());
}

}  // namespace

TEST_CASE("syslog: logger --octet-count: every message archived once and whole, as received",
          "[e2e][syslog]") {
  if (!haveLogger()) {
    WARN("SKIPPED: logger is not installed (Debian's bsdutils)");
    return;
  }
  TempDir dir;
  Daemon d(dir, config(dir, "framing: octet_counted"));
  const uint16_t port = d.port("app");
  REQUIRE(runLogger("--octet-count -T", port, messageFile(dir)) == 0);
  waitUntil([&] { return arrived(dir / "archive") >= kMessages; }, Millis(20000));
  d.signal(SIGTERM);
  REQUIRE(d.waitExit(Millis(10000)) == 0);
  // The archive is a valid octet-counted stream (length prefixes kept).
  for (const auto& [conn, chain] : chainsByConn(dir / "archive")) {
    CHECK(octetMessages(concatFiles(chain.files())).has_value());
  }
  const Tally t = tallyChains(dir / "archive");
  INFO("malformed: " << t.malformed.size()
                     << (t.malformed.empty() ? "" : ", first: " + t.malformed.front()));
  CHECK(t.malformed.empty());
  CHECK(t.exactlyOnce());
}

TEST_CASE("syslog: framing: auto takes logger's octet counting and plain lines side by side",
          "[e2e][syslog]") {
  if (!haveLogger()) {
    WARN("SKIPPED: logger is not installed (Debian's bsdutils)");
    return;
  }
  TempDir dir;
  Daemon d(dir, config(dir, "framing: auto, output: lines, layout: shared", "{route}-{seq}.log"));
  const uint16_t port = d.port("app");
  const fs::path file = messageFile(dir);
  REQUIRE(runLogger("--octet-count -T", port, file) == 0);
  REQUIRE(runLogger("-T", port, file) == 0);
  auto lines = [&] {
    std::vector<std::string> out;
    std::istringstream in(concatFiles(openSegments(dir / "archive")) +
                          concatFiles(closedSegments(dir / "archive")));
    for (std::string l; std::getline(in, l);) out.push_back(l);
    return out;
  };
  waitUntil([&] { return lines().size() >= 2 * kMessages; }, Millis(20000));
  d.signal(SIGTERM);
  REQUIRE(d.waitExit(Millis(10000)) == 0);
  // output: lines: one line per message, whichever framing the sender used.
  std::map<int, int> seen;
  std::vector<std::string> bad;
  static const std::regex re(".* n=([0-9]{6})$");
  for (const auto& l : lines()) {
    std::smatch m;
    if (std::regex_match(l, m, re)) {
      seen[std::stoi(m[1])]++;
    } else {
      bad.push_back(l);
    }
  }
  INFO("malformed: " << bad.size() << (bad.empty() ? "" : ", first: " + bad.front()));
  CHECK(bad.empty());
  CHECK(seen.size() == static_cast<size_t>(kMessages));
  for (auto& [n, times] : seen) {
    INFO("n=" << n);
    CHECK(times == 2);  // once by each connection
  }
}

TEST_CASE("syslog: rsyslog omfwd with TCP_Framing=octet-counted: every message once and whole",
          "[e2e][syslog]") {
  const std::string rsyslogd = findRsyslogd();
  if (rsyslogd.empty()) {
    WARN("SKIPPED: rsyslogd is not installed (tools/deps.sh installs Debian's rsyslog)");
    return;
  }
  TempDir dir;
  Daemon d(dir, config(dir, "framing: auto"));
  const uint16_t port = d.port("app");
  fs::create_directories(dir / "spool");
  writeFile(dir / "rsyslog.conf",
            "global(workDirectory=\"" + (dir / "spool").string() +
                "\")\n"
                "module(load=\"imtcp\")\n"
                "input(type=\"imtcp\" port=\"0\" listenPortFileName=\"" +
                (dir / "inport").string() +
                "\")\n"
                "action(type=\"omfwd\" target=\"127.0.0.1\" port=\"" +
                std::to_string(port) +
                "\" protocol=\"tcp\" TCP_Framing=\"octet-counted\"\n"
                "       action.resumeRetryCount=\"-1\" action.resumeInterval=\"1\")\n");
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
  }
  c.close();
  waitUntil([&] { return arrived(dir / "archive") >= kMessages; }, Millis(30000), Millis(200));
  CHECK(rsyslog.stop(Millis(10000)));
  d.signal(SIGTERM);
  REQUIRE(d.waitExit(Millis(10000)) == 0);
  for (const auto& [conn, chain] : chainsByConn(dir / "archive")) {
    CHECK(octetMessages(concatFiles(chain.files())).has_value());  // auto chose octet counting
  }
  const Tally t = tallyChains(dir / "archive");
  INFO("malformed: " << t.malformed.size()
                     << (t.malformed.empty() ? "" : ", first: " + t.malformed.front()));
  CHECK(t.malformed.empty());
  CHECK(t.exactlyOnce());
}

TEST_CASE("syslog: a malformed header closes that connection only", "[e2e][syslog]") {
  TempDir dir;
  Daemon d(dir, config(dir, "framing: octet_counted"));
  const uint16_t port = d.port("app");
  Conn bad = connectTcp(port);
  Conn good = connectTcp(port);
  REQUIRE(bad.valid());
  REQUIRE(good.valid());
  REQUIRE(good.sendAll("5 first") == 0);
  REQUIRE(bad.sendAll("6 before3 a\nbx9 garbage") == 0);
  const int closed = bad.waitClosed(Millis(10000));
  CHECK((closed == 0 || closed == ECONNRESET));
  CHECK(d.waitLog("malformed octet-count header at byte 13 of the stream: \"x9 garbage\"",
                  Millis(5000)));
  REQUIRE(good.sendAll("6 second") == 0);
  good.shutdownWrite();
  CHECK(good.waitClosed(Millis(10000)) == 0);
  d.signal(SIGTERM);
  REQUIRE(d.waitExit(Millis(10000)) == 0);
  CHECK(d.log().find("end=bad_frame") != std::string::npos);
  const auto chains = chainsByConn(dir / "archive");
  const Chain* b = findByPort(chains, bad.localPort());
  const Chain* g = findByPort(chains, good.localPort());
  REQUIRE(b != nullptr);
  REQUIRE(g != nullptr);
  CHECK(concatFiles(b->files()) == "6 before3 a\nb");  // the records before the bad header
  CHECK(concatFiles(g->files()) == "5 first6 second");
}

namespace {

// FNV-1a, 64 bits: archives are compared by hash (and length), so a failure prints two numbers.
uint64_t fnv(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// Client `c`'s messages: mostly large (4 KiB to 60 KiB, spliced), some small (copied), printable,
// no '\n' (so output: lines reads back one per line), each naming its client and number.
std::vector<std::string> largeMessages(int c, size_t total) {
  std::vector<std::string> out;
  size_t sent = 0;
  uint64_t x = 0x9e3779b97f4a7c15ull * static_cast<uint64_t>(c + 1);
  for (int k = 0; sent < total; ++k) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    size_t n = k % 5 == 4 ? 40 + (x >> 58) : 4096 + (x >> 33) % (56 * 1024);
    std::string m = "<14>c" + std::to_string(c) + " k" + std::to_string(k) + " ";
    while (m.size() < n) m.push_back(static_cast<char>('A' + (m.size() * 7 + k + c) % 26));
    sent += m.size();
    out.push_back(std::move(m));
  }
  return out;
}

std::string octetStream(const std::vector<std::string>& msgs) {
  std::string s;
  for (const auto& m : msgs) s += std::to_string(m.size()) + " " + m;
  return s;
}

// Several clients at once send large octet-counted records; the archive is compared with what
// each sent: per connection, its chain byte for byte; shared, each client's records in order,
// whole, every segment made of whole records.
void largeRecords(const std::string& layout, const std::string& output, size_t per_client) {
  constexpr int kClients = 4;
  TempDir dir;
  const bool shared = layout == "shared";
  const bool lines = output == "lines";
  Daemon d(dir, "admin: { listen: 127.0.0.1:0 }\n" +
                    config(dir,
                           "framing: octet_counted, layout: " + layout + ", output: " + output +
                               ", max_line: 64KiB, rotate: { max_bytes: 1MiB }",
                           shared ? "{route}-{seq}.log" : kPerConnName));
  const uint16_t port = d.port("app");
  const std::string admin = d.waitAdmin();
  std::vector<std::vector<std::string>> msgs;
  std::vector<uint16_t> ports(kClients);
  for (int c = 0; c < kClients; ++c) msgs.push_back(largeMessages(c, per_client));
  std::vector<std::thread> senders;
  std::atomic<int> failed{0};
  for (int c = 0; c < kClients; ++c) {
    senders.emplace_back([&, c] {
      Conn conn = connectTcp(port);
      ports[c] = conn.localPort();
      const std::string stream = octetStream(msgs[c]);
      // Writes of odd sizes, so that headers and bodies fall anywhere in a read.
      for (size_t off = 0; off < stream.size();) {
        const size_t n = std::min<size_t>(stream.size() - off, 1000 + (off * 31) % 70000);
        if (conn.sendAll(stream.data() + off, n) != 0) {
          ++failed;
          return;
        }
        off += n;
      }
      conn.shutdownWrite();
      if (conn.waitClosed(Millis(60000)) != 0) ++failed;
    });
  }
  for (auto& t : senders) t.join();
  REQUIRE(failed == 0);
  const MetricValues m = scrapeMetrics(admin);
  d.signal(SIGTERM);
  REQUIRE(d.waitExit(Millis(20000)) == 0);
  const std::string route = "{route=\"app\"}";
  const double in = m.at("spliced_bytes_in_total" + route);
  const double spliced = m.at("spliced_framing_spliced_bytes_total" + route);
  const double copied = m.at("spliced_framing_copied_bytes_total" + route);
  CHECK(copied + spliced == in);
  // Most bytes are in large records, and they are spliced: unless the kernel granted smaller
  // pipes than asked (pipe-user-pages-soft counts every pipe of the user, other tests' too), which
  // spliced says, and then records larger than the pipe are copied.
  CHECK(spliced > 0);
  if (d.log().find("kernel granted") == std::string::npos) CHECK(spliced > in / 2);
  CHECK(m.at("spliced_copy_fallback_bytes_total" + route) == copied);
  if (!shared) {
    const auto chains = chainsByConn(dir / "archive");
    REQUIRE(chains.size() == kClients);
    for (int c = 0; c < kClients; ++c) {
      INFO("client " << c);
      const Chain* chain = findByPort(chains, ports[c]);
      REQUIRE(chain != nullptr);
      std::string want;
      if (lines) {
        for (const auto& msg : msgs[c]) want += msg + "\n";
      } else {
        want = octetStream(msgs[c]);
      }
      const std::string got = concatFiles(chain->files());
      CHECK(got.size() == want.size());
      CHECK(fnv(got) == fnv(want));
    }
    return;
  }
  // Shared: each segment whole records; each client's records in order.
  std::vector<std::vector<std::string>> got(kClients);
  std::vector<fs::path> segs = closedSegments(dir / "archive");
  auto seq = [](const fs::path& p) { return std::stoi(p.stem().string().substr(4)); };  // app-N
  std::sort(segs.begin(), segs.end(),
            [&](const fs::path& a, const fs::path& b) { return seq(a) < seq(b); });
  CHECK(segs.size() > 4);  // rotated: records never torn by it
  for (const auto& seg : segs) {
    const std::string text = readFile(seg);
    std::vector<std::string> records;
    if (lines) {
      REQUIRE(!text.empty());
      REQUIRE(text.back() == '\n');
      std::istringstream in(text);
      for (std::string l; std::getline(in, l);) records.push_back(l);
    } else {
      auto parsed = octetMessages(text);
      REQUIRE(parsed.has_value());
      records = *parsed;
    }
    for (auto& r : records) {
      REQUIRE(r.size() > 6);
      const int c = r[5] - '0';
      REQUIRE(c >= 0);
      REQUIRE(c < kClients);
      got[static_cast<size_t>(c)].push_back(r);
    }
  }
  for (int c = 0; c < kClients; ++c) {
    INFO("client " << c);
    CHECK(got[c].size() == msgs[c].size());
    CHECK(fnv(octetStream(got[c])) == fnv(octetStream(msgs[c])));
  }
}

size_t largePerClient() {
  // 4 x 4 MB in the regular runs; 4 x 64 MB under the ctest label `long`.
  const char* long_env = std::getenv("SPLICED_LONG_TESTS");
  return long_env != nullptr && std::string(long_env) == "1" ? 64'000'000 : 4'000'000;
}

}  // namespace

TEST_CASE("syslog: large octet-counted records from several clients, spliced, byte for byte",
          "[e2e][syslog][splice]") {
  SECTION("per_connection, as_received") {
    largeRecords("per_connection", "as_received", largePerClient());
  }
  SECTION("per_connection, output: lines") {
    largeRecords("per_connection", "lines", largePerClient());
  }
  SECTION("shared, as_received") { largeRecords("shared", "as_received", largePerClient()); }
  SECTION("shared, output: lines") { largeRecords("shared", "lines", largePerClient()); }
}

TEST_CASE("syslog: logger --octet-count with messages of 16 KiB: each archived whole",
          "[e2e][syslog][splice]") {
  if (!haveLogger()) {
    WARN("SKIPPED: logger is not installed (Debian's bsdutils)");
    return;
  }
  TempDir dir;
  Daemon d(dir, "admin: { listen: 127.0.0.1:0 }\n" +
                    config(dir, "framing: octet_counted, max_line: 64KiB"));
  const uint16_t port = d.port("app");
  const std::string admin = d.waitAdmin();
  // 20 messages of 16,000 bytes, one per line of the file.
  std::string text;
  std::vector<std::string> want;
  for (int n = 1; n <= 20; ++n) {
    char tail[32];
    std::snprintf(tail, sizeof tail, " n=%06d", n);
    std::string body(16000 - std::strlen(tail), static_cast<char>('a' + n % 26));
    want.push_back(body + tail);
    text += body + tail + "\n";
  }
  writeFile(dir / "big.txt", text);
  REQUIRE(runLogger("--octet-count --size 20000 -T", port, dir / "big.txt") == 0);
  waitUntil([&] { return arrived(dir / "archive") >= want.size(); }, Millis(20000));
  // Records this long are spliced into the segment.
  CHECK(scrapeMetrics(admin).at("spliced_framing_spliced_bytes_total{route=\"app\"}") > 0);
  d.signal(SIGTERM);
  REQUIRE(d.waitExit(Millis(10000)) == 0);
  std::vector<std::string> got;
  for (const auto& [conn, chain] : chainsByConn(dir / "archive")) {
    auto msgs = octetMessages(concatFiles(chain.files()));
    REQUIRE(msgs.has_value());
    for (auto& m : *msgs) got.push_back(m);
  }
  REQUIRE(got.size() == want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    INFO("message " << i + 1);
    // logger adds its syslog header; the message is the end of the record, whole.
    REQUIRE(got[i].size() >= want[i].size());
    CHECK(got[i].compare(got[i].size() - want[i].size(), want[i].size(), want[i]) == 0);
  }
}
