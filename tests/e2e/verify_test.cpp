// End-to-end: the archive manifest written by the real binary, `spliced verify` on it (a clean
// archive passes; each kind of damage is named), the repair of a manifest line cut by a crash,
// and archive.on_publish with a real upload tool (rclone) and with scripts that fail, hang, or
// fail twice before succeeding, through a restart, with retain.require_published.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "harness.hpp"

using namespace e2e;
using namespace std::chrono_literals;

namespace {

constexpr const char* kName = "{route}-{conn}-{seq}.log";

// A collect route "app" on 127.0.0.1:0 archiving per connection into @DIR@/archive, with the
// admin endpoint on 127.0.0.1:0; `archive_keys` are extra lines of the archive block.
std::string config(const TempDir& dir, const std::string& archive_keys) {
  return withDir(R"(log: { level: info }
drain_timeout: 5s
admin: { listen: 127.0.0.1:0 }
routes:
  - name: app
    listen: 127.0.0.1:0
    archive:
      dir: @DIR@/archive
      layout: per_connection
      name: ")" + std::string(kName) +
                     "\"\n" + archive_keys,
                 dir);
}

double metric(const MetricValues& m, const std::string& name, const std::string& labels = "") {
  auto it = m.find(name + "{route=\"app\"" + labels + "}");
  return it == m.end() ? -1 : it->second;
}

double runs(const MetricValues& m, const char* result) {
  return metric(m, "spliced_publish_runs_total", std::string(",result=\"") + result + "\"");
}

// Scrapes until `pred` holds; false on timeout. `*last` gets the last scrape.
bool waitMetrics(const std::string& admin, const std::function<bool(const MetricValues&)>& pred,
                 Millis timeout, MetricValues* last) {
  return waitUntil(
      [&] {
        *last = scrapeMetrics(admin);
        return pred(*last);
      },
      timeout, Millis(20));
}

std::string describe(const MetricValues& m) {
  std::ostringstream out;
  for (const auto& [k, v] : m) {
    if (k.starts_with("spliced_archive") || k.starts_with("spliced_publish")) {
      out << k << " " << v << "\n";
    }
  }
  return out.str();
}

std::string textPayload(uint64_t seed, size_t n) {
  Prng prng(seed);
  std::string out;
  for (uint64_t i = 0; out.size() < n; ++i) {
    // Appended piece by piece (GCC 12 at -O3 warns falsely on "literal" + std::string).
    out += "2026-12-02T14:00:00Z host-";
    out += std::to_string(prng.between(1, 9));
    out += " request ";
    out += std::to_string(i);
    out += " bytes=";
    out += std::to_string(prng.between(0, 99999));
    out += '\n';
  }
  out.resize(n);
  return out;
}

void sendStream(uint16_t port, std::string_view payload) {
  Conn c = connectTcp(port);
  REQUIRE(c.valid());
  REQUIRE(c.sendAll(payload) == 0);
  c.shutdownWrite();
  REQUIRE(c.waitClosed(20s) == 0);
}

std::vector<std::string> manifestLines(const fs::path& archive) {
  std::vector<std::string> out;
  std::istringstream in(readFile(archive / ".spliced/manifest.jsonl"));
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

size_t countLines(const std::vector<std::string>& lines, const std::string& needle) {
  return static_cast<size_t>(std::count_if(lines.begin(), lines.end(), [&](const std::string& l) {
    return l.find(needle) != std::string::npos;
  }));
}

std::string rel(const fs::path& archive, const fs::path& file) {
  return file.lexically_relative(archive).string();
}

// A script in `dir` (mode 0755).
fs::path script(const TempDir& dir, const std::string& name, const std::string& body) {
  fs::path p = dir / name;
  writeFile(p, "#!/bin/sh\n" + body);
  ::chmod(p.c_str(), 0755);
  return p;
}

bool haveProgram(const char* name) {
  std::string cmd = std::string("command -v ") + name + " >/dev/null 2>&1";
  return std::system(cmd.c_str()) == 0;
}

// A copy of the archive `from` in a fresh directory below `dir`.
fs::path copyArchive(const TempDir& dir, const fs::path& from, const std::string& name) {
  fs::path to = dir / name;
  fs::copy(from, to, fs::copy_options::recursive);
  return to;
}

CommandResult verify(const TempDir& dir, const fs::path& archive) {
  return runSpliced(dir, {"verify", archive.string()}, 30s);
}

// Three connections of 150 KiB each, rotated at 64 KiB and compressed with zstd: 9 segments.
constexpr size_t kConns = 3;
constexpr size_t kPerConn = 150 * kKiB;
constexpr size_t kSegments = 9;

// Archives three chains with rotation and compression, stops the daemon, and returns the archive.
fs::path cleanArchive(const TempDir& dir) {
  Daemon daemon(dir, config(dir, "      rotate: { max_bytes: 64KiB }\n      compress: zstd\n"));
  const std::string admin = daemon.waitAdmin();
  const uint16_t port = daemon.port("app");
  for (size_t i = 0; i < kConns; ++i) sendStream(port, textPayload(i + 1, kPerConn));
  MetricValues m;
  bool ok = waitMetrics(
      admin,
      [](const MetricValues& x) {
        return metric(x, "spliced_archive_compressed_total") == kSegments &&
               metric(x, "spliced_archive_manifest_records_total") == 2 * kSegments;
      },
      20s, &m);
  INFO(describe(m));
  REQUIRE(ok);
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
  return dir / "archive";
}

}  // namespace

TEST_CASE("verify: a clean archive passes, by directory and by config and route", "[e2e][verify]") {
  TempDir dir;
  const fs::path archive = cleanArchive(dir);
  const auto segs = closedSegments(archive);
  REQUIRE(segs.size() == kSegments);
  for (const auto& s : segs) CHECK(s.extension() == ".zst");

  const auto lines = manifestLines(archive);
  CHECK(lines.size() == 2 * kSegments);
  CHECK(countLines(lines, "\"event\":\"closed\"") == kSegments);
  CHECK(countLines(lines, "\"event\":\"compressed\"") == kSegments);
  CHECK(countLines(lines, "\"hash\":\"xxh3:") == 2 * kSegments);  // the default hash
  CHECK(countLines(lines, "\"peer\":\"127.0.0.1\"") == kSegments);

  CommandResult r = verify(dir, archive);
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("all good: 18 manifest line(s), 9 segment(s)") != std::string::npos);

  CommandResult c = runSpliced(dir, {"verify", "-c", (dir / "spliced.yaml").string(), "app"});
  INFO(c.out << c.err);
  CHECK(c.exit_code == 0);
  CHECK(c.out.find("all good") != std::string::npos);
}

TEST_CASE("verify: a line-framed chain's closed lines record its line count, times and connection",
          "[e2e][verify]") {
  const bool shared = GENERATE(false, true);
  TempDir dir;
  const std::string layout = shared ? "shared" : "per_connection";
  std::string cfg = config(dir, "      framing: lines\n      rotate: { max_bytes: 16KiB }\n");
  cfg.replace(cfg.find("per_connection"), std::string("per_connection").size(), layout);
  if (shared) cfg.replace(cfg.find(kName), std::string(kName).size(), "{route}-{seq}.log");
  Daemon daemon(dir, cfg);
  const uint16_t port = daemon.port("app");
  constexpr size_t kLinesPerConn = 1000;  // 40-byte lines: 40,000 bytes, three segments or more
  for (size_t c = 0; c < 2; ++c) {
    std::string payload;
    for (size_t i = 0; i < kLinesPerConn; ++i) {
      std::string line = std::to_string(c);
      line += " line ";
      line += std::to_string(100000 + i);
      line.resize(39, '.');
      payload += line;
      payload += '\n';
    }
    sendStream(port, payload);
  }
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);

  const fs::path archive = dir / "archive";
  uint64_t counted = 0;
  size_t closed = 0;
  for (const auto& l : manifestLines(archive)) {
    if (l.find("\"event\":\"closed\"") == std::string::npos) continue;
    ++closed;
    INFO(l);
    CHECK(l.find("\"opened\":") != std::string::npos);
    CHECK(l.find("\"closed\":") != std::string::npos);
    CHECK((l.find("\"conn\":") != std::string::npos) == !shared);
    const auto at = l.find("\"lines\":");
    REQUIRE(at != std::string::npos);
    counted += std::stoull(l.substr(at + 8));
    // Each segment's count is the newlines it holds.
    const auto name_at = l.find("\"name\":\"") + 8;
    const std::string name = l.substr(name_at, l.find('"', name_at) - name_at);
    const std::string text = readFile(archive / name);
    CHECK(std::stoull(l.substr(at + 8)) ==
          static_cast<uint64_t>(std::count(text.begin(), text.end(), '\n')));
  }
  CHECK(closed >= 3);
  CHECK(counted == 2 * kLinesPerConn);
  CommandResult r = verify(dir, archive);
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
}

TEST_CASE("verify: each kind of damage is reported on its own line naming the file",
          "[e2e][verify]") {
  TempDir dir;
  const fs::path clean = cleanArchive(dir);
  const std::string victim = rel(clean, closedSegments(clean)[4]);
  struct Case {
    const char* what;
    std::function<void(const fs::path&)> damage;
    std::string expect;  // a line of verify's output
  };
  const std::vector<Case> cases = {
      {"one byte flipped",
       [&](const fs::path& a) {
         std::string s = readFile(a / victim);
         s[s.size() / 2] ^= 0x01;
         writeFile(a / victim, s);
       },
       "modified " + victim + ": same size"},
      {"a segment deleted", [&](const fs::path& a) { fs::remove(a / victim); },
       "missing " + victim + ": "},
      {"a segment appended to",
       [&](const fs::path& a) { writeFile(a / victim, readFile(a / victim) + "more\n"); },
       "appended " + victim + ": "},
      {"a segment truncated",
       [&](const fs::path& a) { fs::resize_file(a / victim, fs::file_size(a / victim) - 1); },
       "truncated " + victim + ": "},
      {"a foreign file dropped in",
       [&](const fs::path& a) { writeFile(a / "foreign.log", "not spliced's\n"); },
       "extra foreign.log: not in the manifest"},
      {"a compressed-away file back again",
       [&](const fs::path& a) {
         const std::string plain = victim.substr(0, victim.size() - 4);  // without .zst
         writeFile(a / plain, "back\n");
       },
       "out-of-chain " + victim.substr(0, victim.size() - 4) + ": "},
  };
  int n = 0;
  for (const auto& c : cases) {
    INFO("damage: " << c.what);
    const fs::path a = copyArchive(dir, clean, "copy" + std::to_string(n++));
    c.damage(a);
    CommandResult r = verify(dir, a);
    INFO(r.out << r.err);
    CHECK(r.exit_code == 1);
    CHECK(("\n" + r.out).find("\n" + c.expect) != std::string::npos);
    // Exactly one problem: the damaged file, nothing else.
    CHECK(r.out.find(": 1 problem(s)") != std::string::npos);
  }

  SECTION("a manifest line removed: the broken link and the file it recorded") {
    const fs::path a = copyArchive(dir, clean, "removed-line");
    auto lines = manifestLines(a);
    const std::string gone = lines[6];
    lines.erase(lines.begin() + 6);
    std::string text;
    for (const auto& l : lines) text += l + "\n";
    writeFile(a / ".spliced/manifest.jsonl", text);
    CommandResult r = verify(dir, a);
    INFO("removed: " << gone << "\n" << r.out << r.err);
    CHECK(r.exit_code == 1);
    CHECK(r.out.find("broken-link .spliced/manifest.jsonl:7: seq 8 follows seq 6: 1 line(s) "
                     "before it were removed") != std::string::npos);
  }
}

TEST_CASE("verify: a manifest line cut by a crash is reported, then repaired at the next start",
          "[e2e][verify]") {
  TempDir dir;
  // Compression off: the last line is a segment's closed record.
  Daemon first(dir, config(dir, "      rotate: { max_bytes: 64KiB }\n"));
  const std::string admin = first.waitAdmin();
  sendStream(first.port("app"), textPayload(7, 100 * kKiB));
  MetricValues m;
  REQUIRE(waitMetrics(
      admin,
      [](const MetricValues& x) {
        return metric(x, "spliced_archive_manifest_records_total") == 2;
      },
      10s, &m));
  first.signal(SIGTERM);
  REQUIRE(first.waitExit(10s) == 0);

  const fs::path archive = dir / "archive";
  const fs::path manifest = archive / ".spliced/manifest.jsonl";
  const std::string whole = readFile(manifest);
  const auto lines = manifestLines(archive);
  REQUIRE(lines.size() == 2);
  // A crash in the middle of the second append.
  writeFile(manifest, whole.substr(0, lines[0].size() + 1 + lines[1].size() / 2));
  CommandResult r = verify(dir, archive);
  INFO(r.out << r.err);
  CHECK(r.exit_code == 1);
  CHECK(r.out.find("cut-line .spliced/manifest.jsonl:2: the last line has no end") !=
        std::string::npos);

  // The next start truncates the cut line, logs it, and records that segment again.
  Daemon second(dir, config(dir, "      rotate: { max_bytes: 64KiB }\n"));
  second.port("app");
  CHECK(second.waitLog("removing a line cut by a crash", 10s));
  CHECK(second.waitLog("redid the closed record", 10s));
  second.signal(SIGTERM);
  REQUIRE(second.waitExit(10s) == 0);
  CommandResult again = verify(dir, archive);
  INFO(again.out << again.err);
  CHECK(again.exit_code == 0);
  const auto repaired = manifestLines(archive);
  REQUIRE(repaired.size() == 2);
  CHECK(repaired[1].find("\"origin\":\"recovered\"") != std::string::npos);
}

TEST_CASE("verify: usage, a directory that is not an archive, a missing manifest",
          "[e2e][verify]") {
  TempDir dir;
  CommandResult help = runSpliced(dir, {"verify", "--help"});
  CHECK(help.exit_code == 0);
  CHECK(help.out.find("Exit status: 0 all good, 1 problems found, 2 usage") != std::string::npos);
  CHECK(runSpliced(dir, {"verify"}).exit_code == 2);
  CHECK(runSpliced(dir, {"verify", "a", "b"}).exit_code == 2);

  fs::create_directories(dir / "plain");
  CommandResult plain = verify(dir, dir / "plain");
  CHECK(plain.exit_code == 2);
  CHECK(plain.err.find("is not a spliced archive dir") != std::string::npos);
  CommandResult none = verify(dir, dir / "nowhere");
  CHECK(none.exit_code == 2);
  CHECK(none.err.find("No such file or directory") != std::string::npos);

  fs::create_directories(dir / "old");
  writeFile(dir / "old/.spliced.lock", "1\n");
  CommandResult old = verify(dir, dir / "old");
  CHECK(old.exit_code == 1);
  CHECK(old.out.find("no-manifest .spliced/manifest.jsonl: the archive dir has no manifest") !=
        std::string::npos);

  writeFile(dir / "c.yaml",
            "routes:\n  - name: app\n    listen: 127.0.0.1:0\n    archive: { dir: " +
                (dir / "a").string() + " }\n");
  CommandResult noroute = runSpliced(dir, {"verify", "-c", (dir / "c.yaml").string(), "web"});
  CHECK(noroute.exit_code == 2);
  CHECK(noroute.err.find("has no route named 'web'") != std::string::npos);
}

TEST_CASE("on_publish: rclone copies each published segment - the manifest records it",
          "[e2e][verify][on_publish]") {
  if (!haveProgram("rclone")) {
    WARN("SKIPPED: rclone is not installed (tools/deps.sh test)");
    return;
  }
  TempDir dir;
  Daemon daemon(dir, config(dir, withDir(R"(      rotate: { max_bytes: 64KiB }
      on_publish:
        exec: [rclone, copy, "{path}", "@DIR@/remote/{route}"]
        timeout: 60s
        concurrency: 2
)",
                                         dir)));
  const std::string admin = daemon.waitAdmin();
  const uint16_t port = daemon.port("app");
  sendStream(port, textPayload(11, 200 * kKiB));  // 4 segments
  sendStream(port, textPayload(12, 10 * kKiB));   // 1 more
  MetricValues m;
  bool ok = waitMetrics(
      admin,
      [](const MetricValues& x) {
        return runs(x, "success") == 5 && metric(x, "spliced_publish_queue") == 0;
      },
      60s, &m);
  INFO(describe(m) << daemon.log());
  REQUIRE(ok);
  CHECK(runs(m, "failure") == 0);
  CHECK(runs(m, "timeout") == 0);
  const fs::path archive = dir / "archive";
  const auto segs = closedSegments(archive);
  REQUIRE(segs.size() == 5);
  for (const auto& s : segs) {
    const fs::path copy = dir / "remote/app" / s.filename();
    INFO("segment " << s);
    REQUIRE(fs::exists(copy));
    std::string cmp = "cmp -s '" + s.string() + "' '" + copy.string() + "'";
    CHECK(std::system(cmp.c_str()) == 0);
  }
  CHECK(countLines(manifestLines(archive), "\"event\":\"published\"") == 5);
  CHECK(daemon.countLogLines({"on_publish", "result=success"}, 5) == 5);
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
  CommandResult r = verify(dir, archive);
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
}

TEST_CASE("on_publish: a failing, a hanging and a flaky command are logged, counted and retried",
          "[e2e][verify][on_publish]") {
  TempDir dir;
  SECTION("a command that fails: exit status and stderr logged, retried with back-off") {
    const fs::path s =
        script(dir, "fail.sh", "echo 'upload refused: no credentials' >&2\nexit 3\n");
    Daemon daemon(dir,
                  config(dir, "      on_publish: { exec: [" + s.string() + ", \"{path}\"] }\n"));
    const std::string admin = daemon.waitAdmin();
    sendStream(daemon.port("app"), "one line\n");
    MetricValues m;
    bool ok = waitMetrics(
        admin, [](const MetricValues& x) { return runs(x, "failure") >= 2; }, 20s, &m);
    INFO(describe(m) << daemon.log());
    CHECK(ok);
    CHECK(runs(m, "success") == 0);
    CHECK(metric(m, "spliced_publish_queue") == 1);
    CHECK(daemon.waitLog("result=failure (exit status 3)", 1s));
    CHECK(daemon.waitLog("stderr: upload refused: no credentials", 1s));
    CHECK(daemon.waitLog("attempt=2; retrying in 2000 ms", 1s));
    CHECK(countLines(manifestLines(dir / "archive"), "\"event\":\"published\"") == 0);
  }
  SECTION("a command that hangs: killed at the timeout, with what it started") {
    const fs::path s = script(dir, "hang.sh", "echo 'connecting...' >&2\nsleep 601\n");
    Daemon daemon(dir, config(dir, "      on_publish: { exec: [" + s.string() +
                                       ", \"{path}\"], timeout: 1s }\n"));
    const std::string admin = daemon.waitAdmin();
    sendStream(daemon.port("app"), "one line\n");
    MetricValues m;
    bool ok = waitMetrics(
        admin, [](const MetricValues& x) { return runs(x, "timeout") >= 1; }, 20s, &m);
    INFO(describe(m) << daemon.log());
    CHECK(ok);
    CHECK(daemon.waitLog("result=timeout (killed after the timeout of 1000 ms)", 2s));
    CHECK(daemon.waitLog("stderr: connecting...", 1s));
    // The sleep it started was killed with it (its process group).
    CHECK(waitUntil([] { return std::system("pgrep -f 'sleep 60[1]' >/dev/null") != 0; }, 5s));
  }
  SECTION("a command that fails twice, then succeeds: retried, then recorded") {
    const fs::path s =
        script(dir, "flaky.sh",
               "n=$(cat \"$0.count\" 2>/dev/null || echo 0)\nn=$((n+1))\necho $n > \"$0.count\"\n"
               "[ $n -ge 3 ] || { echo \"try $n failed\" >&2; exit 1; }\n");
    Daemon daemon(dir,
                  config(dir, "      on_publish: { exec: [" + s.string() + ", \"{name}\"] }\n"));
    const std::string admin = daemon.waitAdmin();
    sendStream(daemon.port("app"), "one line\n");
    MetricValues m;
    bool ok = waitMetrics(
        admin, [](const MetricValues& x) { return runs(x, "success") == 1; }, 20s, &m);
    INFO(describe(m) << daemon.log());
    CHECK(ok);
    CHECK(runs(m, "failure") == 2);
    CHECK(metric(m, "spliced_publish_queue") == 0);
    CHECK(daemon.waitLog("attempt=3", 1s));
    const auto lines = manifestLines(dir / "archive");
    CHECK(countLines(lines, "\"event\":\"published\"") == 1);
  }
}

TEST_CASE("on_publish: the queue survives a restart - require_published keeps a segment",
          "[e2e][verify][on_publish]") {
  TempDir dir;
  // Fails while @DIR@/block exists, and logs each success in @DIR@/done.
  const fs::path s = script(dir, "gate.sh",
                            withDir("[ -e @DIR@/block ] && { echo blocked >&2; exit 1; }\n"
                                    "echo \"$1\" >> @DIR@/done\n",
                                    dir));
  writeFile(dir / "block", "");
  const std::string keys =
      "      on_publish: { exec: [" + s.string() +
      ", \"{name}\"] }\n      retain: { max_files: 1, require_published: true }\n";
  {
    Daemon daemon(dir, config(dir, keys));
    const std::string admin = daemon.waitAdmin();
    const uint16_t port = daemon.port("app");
    for (int i = 0; i < 3; ++i) sendStream(port, "segment " + std::to_string(i) + "\n");
    MetricValues m;
    bool ok = waitMetrics(
        admin,
        [](const MetricValues& x) {
          return runs(x, "failure") >= 3 &&
                 metric(x, "spliced_archive_kept_unpublished_total") >= 2;
        },
        20s, &m);
    INFO(describe(m) << daemon.log());
    CHECK(ok);
    // Retention would keep one; the unpublished ones stay.
    CHECK(closedSegments(dir / "archive").size() == 3);
    CHECK(metric(m, "spliced_archive_deleted_segments_total") == 0);
    daemon.signal(SIGTERM);
    REQUIRE(daemon.waitExit(10s) == 0);
  }
  fs::remove(dir / "block");
  Daemon daemon(dir, config(dir, keys));
  const std::string admin = daemon.waitAdmin();
  CHECK(daemon.waitLog("on_publish: 3 segment(s) without a published record queued", 10s));
  MetricValues m;
  bool ok = waitMetrics(
      admin, [](const MetricValues& x) { return runs(x, "success") == 3; }, 20s, &m);
  INFO(describe(m) << daemon.log());
  CHECK(ok);
  CHECK(countLines(manifestLines(dir / "archive"), "\"event\":\"published\"") == 3);
  // Published now: the next retention pass (after the next close) applies max_files.
  sendStream(daemon.port("app"), "segment 3\n");
  ok = waitMetrics(
      admin,
      [](const MetricValues& x) {
        return runs(x, "success") == 4 && metric(x, "spliced_archive_deleted_segments_total") == 3;
      },
      20s, &m);
  INFO(describe(m) << daemon.log());
  CHECK(ok);
  CHECK(closedSegments(dir / "archive").size() == 1);
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
  // Retention explains what it removed: a `deleted` line for each of the three.
  CHECK(countLines(manifestLines(dir / "archive"), "\"event\":\"deleted\"") == 3);
  CommandResult r = verify(dir, dir / "archive");
  INFO(r.out << r.err << readFile(dir / "archive/.spliced/manifest.jsonl"));
  CHECK(r.exit_code == 0);
}

TEST_CASE("verify: a segment left open by kill -9 gets its manifest line at the next start",
          "[e2e][verify]") {
  TempDir dir;
  const fs::path archive = dir / "archive";
  {
    auto first = std::make_unique<Daemon>(dir, config(dir, "      rotate: { max_bytes: 64KiB }\n"));
    const std::string admin = first->waitAdmin();
    const uint16_t port = first->port("app");
    sendStream(port, textPayload(3, 100 * kKiB));  // two closed segments
    Conn c = connectTcp(port);
    REQUIRE(c.valid());
    REQUIRE(c.sendAll(textPayload(4, 10 * kKiB)) == 0);  // an active one
    REQUIRE(waitUntil([&] { return openSegments(archive).size() == 1; }, 10s));
    MetricValues m;
    REQUIRE(waitMetrics(
        admin,
        [](const MetricValues& x) {
          return metric(x, "spliced_archive_manifest_records_total") == 2 &&
                 metric(x, "spliced_archive_bytes_total") == (110 * kKiB);
        },
        10s, &m));
    first.reset();  // SIGKILL, reaped
  }
  REQUIRE(openSegments(archive).size() == 1);
  Daemon second(dir, config(dir, "      rotate: { max_bytes: 64KiB }\n"));
  const std::string admin = second.waitAdmin();
  MetricValues m;
  CHECK(waitMetrics(
      admin,
      [](const MetricValues& x) {
        return metric(x, "spliced_archive_manifest_records_total") == 1;
      },
      10s, &m));
  second.signal(SIGTERM);
  REQUIRE(second.waitExit(10s) == 0);
  const auto lines = manifestLines(archive);
  REQUIRE(lines.size() == 3);
  CHECK(lines[2].find("\"origin\":\"recovered\"") != std::string::npos);
  CHECK(lines[2].find("\"size\":10240,") != std::string::npos);
  CommandResult r = verify(dir, archive);
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
}
