// End-to-end: a real rsyslogd (Debian's), configured with the rsyslog snippet of
// docs/OPERATIONS.md as written (only the port changed), forwards numbered messages to spliced
// while spliced is stopped (SIGTERM) and started again mid-stream. Every message must be archived:
// at least once (a restart may archive a few twice), and every archived line whole.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <cerrno>
#include <cstdlib>
#include <regex>
#include <sstream>

#include "harness.hpp"
#include "rsyslogd.hpp"

using namespace e2e;

namespace {

const fs::path kSource = SPLICED_SOURCE_DIR;
constexpr int kMessages = 20000;

// The code block that follows the line "<!-- sender: NAME -->" in docs/OPERATIONS.md.
std::string senderSnippet(const std::string& name) {
  const std::string doc = readFile(kSource / "docs/OPERATIONS.md");
  const std::string marker = "<!-- sender: " + name + " -->\n";
  auto at = doc.find(marker);
  if (at == std::string::npos) return "";
  auto open = doc.find("```", at + marker.size());
  auto body = doc.find('\n', open);
  auto close = doc.find("\n```", body);
  if (open == std::string::npos || body == std::string::npos || close == std::string::npos) {
    return "";
  }
  return doc.substr(body + 1, close - body);
}

// The archive's lines (all files below `dir`, closed or open, dot files left out).
std::vector<std::string> archivedLines(const fs::path& dir) {
  std::vector<std::string> out;
  if (!fs::exists(dir)) return out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    const std::string rel = e.path().lexically_relative(dir).string();
    if (!e.is_regular_file() || rel.front() == '.' || rel.find("/.") != std::string::npos) continue;
    std::string text;
    try {
      text = readFile(e.path());
    } catch (const std::exception&) {
      continue;  // renamed between listing and reading: read again next time
    }
    std::istringstream in(text);
    for (std::string l; std::getline(in, l);) out.push_back(l);
  }
  return out;
}

struct Tally {
  std::vector<int> seen = std::vector<int>(kMessages + 1, 0);  // times each n was archived
  size_t unique = 0;
  size_t duplicates = 0;
  std::vector<std::string> malformed;  // lines that are not one whole message
};

// Counts the messages "... senders: n=NNNNNN" archived below `dir`.
Tally tally(const fs::path& dir) {
  static const std::regex line_re("^<13>.* senders: n=([0-9]{6})$");
  Tally t;
  for (const std::string& l : archivedLines(dir)) {
    std::smatch m;
    int n = 0;
    if (std::regex_match(l, m, line_re)) n = std::stoi(m[1]);
    if (n < 1 || n > kMessages) {
      t.malformed.push_back(l);
      continue;
    }
    if (t.seen[n]++ == 0) {
      ++t.unique;
    } else {
      ++t.duplicates;
    }
  }
  return t;
}

std::string splicedConfig(const fs::path& archive, const std::string& listen) {
  // drain_timeout as spliced's default (10 s): rsyslog notices the FIN and ends its stream well
  // before, even in a slow (sanitized) build, where 1 s once cut it short and lost a batch.
  return "log: { level: info }\n"
         "routes:\n"
         "  - name: app\n"
         "    listen: " +
         listen +
         "\n"
         "    archive: { dir: " +
         archive.string() + ", name: \"{route}-{conn}-{seq}.log\" }\n";
}

}  // namespace

TEST_CASE("senders: rsyslog with the documented snippet loses nothing while spliced restarts",
          "[e2e][senders]") {
  const std::string rsyslogd = findRsyslogd();
  if (rsyslogd.empty()) {
    WARN("SKIPPED: rsyslogd is not installed (tools/deps.sh installs Debian's rsyslog)");
    return;
  }
  std::string snippet = senderSnippet("rsyslog");
  REQUIRE_FALSE(snippet.empty());

  TempDir work;
  const fs::path archive = work / "archive";
  TempDir first_dir;
  auto first = std::make_unique<Daemon>(first_dir, splicedConfig(archive, "127.0.0.1:0"));
  const uint16_t port = first->port("app");

  // The snippet as written, pointed at this spliced.
  const std::string documented_port = "port=\"5140\"";
  const auto at = snippet.find(documented_port);
  REQUIRE(at != std::string::npos);
  snippet.replace(at, documented_port.size(), "port=\"" + std::to_string(port) + "\"");
  fs::create_directories(work / "spool");
  writeFile(work / "rsyslog.conf", "global(workDirectory=\"" + (work / "spool").string() +
                                       "\")\n"
                                       "module(load=\"imtcp\")\n"
                                       "input(type=\"imtcp\" port=\"0\" listenPortFileName=\"" +
                                       (work / "inport").string() + "\")\n" + snippet);
  Rsyslogd rsyslog(rsyslogd, work / "rsyslog.conf", work / "rsyslog.pid", work / "rsyslog.log");
  std::string inport;
  REQUIRE(waitUntil(
      [&] {
        if (!fs::exists(work / "inport")) return false;
        inport = readFile(work / "inport");
        return !inport.empty() && inport.back() != ' ';
      },
      Millis(10000)));
  INFO("rsyslog's log:\n" << readFile(work / "rsyslog.log"));
  const auto in_port = static_cast<uint16_t>(std::stoi(inport));

  // 20,000 numbered messages into rsyslog's TCP input, 50 every 10 ms (about 4 s).
  std::atomic<int> sent{0};
  std::atomic<int> send_error{0};
  std::jthread sender([&] {
    Conn c = connectTcp(in_port);
    if (!c.valid()) {
      send_error = -1;
      return;
    }
    char line[64];
    for (int n = 1; n <= kMessages; ++n) {
      int len = std::snprintf(line, sizeof line, "<13>Jan  1 00:00:00 host senders: n=%06d\n", n);
      if (int e = c.sendAll(line, static_cast<size_t>(len)); e != 0) {
        send_error = e;
        return;
      }
      sent = n;
      if (n % 50 == 0) std::this_thread::sleep_for(Millis(10));
    }
  });

  // Mid-stream: once a tenth has been archived, spliced is stopped and started again.
  REQUIRE(waitUntil([&] { return tally(archive).unique >= kMessages / 10; }, Millis(30000)));
  first->signal(SIGTERM);
  CHECK(first->waitExit(Millis(20000)) == 0);
  const size_t before_restart = tally(archive).unique;
  const int sent_at_restart = sent.load();
  first.reset();
  TempDir second_dir;
  Daemon second(second_dir, splicedConfig(archive, "127.0.0.1:" + std::to_string(port)));
  REQUIRE(second.port("app") == port);
  sender.join();
  REQUIRE(send_error.load() == 0);
  INFO("archived before the restart: " << before_restart
                                       << "; sent to rsyslog by then: " << sent_at_restart);
  // The restart fell inside the stream: rsyslog had more to forward.
  CHECK(before_restart < static_cast<size_t>(kMessages));
  CHECK(sent_at_restart < kMessages);

  // rsyslog retries at most every 10 s: all must be there well within a minute.
  waitUntil([&] { return tally(archive).unique >= static_cast<size_t>(kMessages); }, Millis(60000),
            Millis(200));
  CHECK(rsyslog.stop(Millis(10000)));
  second.signal(SIGTERM);
  CHECK(second.waitExit(Millis(20000)) == 0);

  const Tally t = tally(archive);
  std::string missing;
  size_t missing_count = 0;
  for (int n = 1; n <= kMessages; ++n) {
    if (t.seen[n] != 0) continue;
    if (++missing_count > 20) continue;
    missing += ' ';  // appended piece by piece: GCC 12 -O3 misjudges `" " + std::to_string(n)`
    missing += std::to_string(n);
  }
  INFO("missing (first 20):" << missing);
  INFO("malformed lines: " << t.malformed.size()
                           << (t.malformed.empty() ? "" : ", first: " + t.malformed.front()));
  WARN("rsyslog through a restart of spliced: "
       << t.unique << " of " << kMessages << " messages archived, " << t.duplicates
       << " twice or more, " << missing_count << " missing");
  CHECK(missing_count == 0);
  CHECK(t.unique == static_cast<size_t>(kMessages));
  CHECK(t.malformed.empty());
}
