// End-to-end: syslog senders that speak octet counting (RFC 6587), real programs from Debian:
// util-linux's logger (--octet-count, and plain TCP to a framing: auto route) and rsyslog's
// omfwd with TCP_Framing="octet-counted". Every message must land exactly once and whole.
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <map>
#include <optional>
#include <regex>

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
