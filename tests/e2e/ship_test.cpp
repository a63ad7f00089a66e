// End-to-end: store-and-forward. A route with archive: and forward: archives every byte and ships
// the archive to its upstream from the segment files: byte-exact when nothing fails; a backlog
// while the upstream is down that drains once it is up; upstreams that close mid-stream (bytes
// they did not read are sent again, duplicates are whole lines, counted); spliced itself killed
// with SIGKILL and restarted (it resumes from the cursor); retention that keeps or drops
// unshipped segments; a damaged cursor; and the config rules.
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdio>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "harness.hpp"
#include "ship_helpers.hpp"
#include "upstreams.hpp"

using namespace e2e;
using namespace e2e::ship;
using namespace std::chrono_literals;

TEST_CASE("ship: every archived byte reaches the upstream, in order and byte-exact",
          "[e2e][ship]") {
  auto up = TestUpstream::sink(64u << 20);
  TempDir dir;
  Daemon daemon(dir, config(dir, up->address()));
  const uint16_t port = daemon.port("app");
  const std::string admin = daemon.waitAdmin();
  std::vector<std::string> payloads;
  for (int c = 0; c < 4; ++c) payloads.push_back(lines(c, 2u << 20));
  sendClients(port, payloads);
  MetricValues m;
  INFO(describe(m));
  REQUIRE(waitShipped(admin, 30s, &m));
  const std::string archive = archiveOf(dir);
  uint64_t sent = 0;
  for (const auto& p : payloads) sent += p.size();
  CHECK(archive.size() == sent);
  // One connection carried it all, and it is the archive byte for byte.
  auto recs = up->records();
  REQUIRE(recs.size() == 1);
  CHECK(firstDifference(recs[0].data, archive) == "");
  CHECK(metric(m, "spliced_ship_bytes_total") == static_cast<double>(sent));
  CHECK(metric(m, "spliced_ship_acked_bytes_total") == static_cast<double>(sent));
  CHECK(metric(m, "spliced_ship_resent_bytes_total") == 0);
  CHECK(metric(m, "spliced_ship_dropped_bytes_total") == 0);
  CHECK(metric(m, "spliced_ship_lag_seconds") == 0);
  CHECK(m.count("spliced_ship_reconnects_total{route=\"app\",upstream=\"" + up->address() +
                "\"}") == 1);
  // The cursor is saved within checkpoint_interval (1 s): nothing is waiting.
  REQUIRE(waitUntil(
      [&] {
        const fs::path p = dir / "archive/.spliced/ship/shared.cursor";
        // Nothing waits: the cursor is at the end of the open segment, nothing after it.
        if (!fs::exists(p)) return false;
        const std::string c = readFile(p);
        return c.find("\nsegment app-") != std::string::npos &&
               c.find("\npending ") == std::string::npos;
      },
      5s));
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(20s) == 0);
}

TEST_CASE(
    "ship: with the upstream down the backlog grows, /healthz says so past max_lag, and it "
    "drains byte-exact once the upstream is up",
    "[e2e][ship]") {
  TempDir dir;
  UnixSink sink((dir / "up.sock").string());
  Daemon daemon(dir, config(dir, sink.address(), "", "      max_lag: 1s\n"));
  const uint16_t port = daemon.port("app");
  const std::string admin = daemon.waitAdmin();
  std::vector<std::string> payloads;
  for (int c = 0; c < 3; ++c) payloads.push_back(lines(c, 1u << 20));
  sendClients(port, payloads);
  MetricValues m;
  REQUIRE(waitUntil(
      [&] {
        m = scrapeMetrics(admin);
        return metric(m, "spliced_ship_lag_bytes") == metric(m, "spliced_archive_bytes_total") &&
               metric(m, "spliced_ship_lag_seconds") > 1;
      },
      10s));
  INFO(describe(m));
  CHECK(metric(m, "spliced_ship_acked_bytes_total") == 0);
  HttpResponse h = httpGet(admin, "/healthz");
  INFO(h.body);
  CHECK(h.status == 503);
  CHECK(h.body.find("route app: shipping lags") != std::string::npos);
  CHECK(daemon.countLogLines({"error=upstream route=app ship: no upstream takes the archive"}, 1) ==
        1);

  sink.start();
  REQUIRE(waitShipped(admin, 30s, &m));
  const std::string archive = archiveOf(dir);
  CHECK(firstDifference(sink.joined(), archive) == "");
  CHECK(httpGet(admin, "/healthz").status == 200);
  CHECK(daemon.countLogLines({"route=app ship: connected to " + sink.address() + " again"}, 1) ==
        1);
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(20s) == 0);
}

TEST_CASE(
    "ship: an upstream that closes mid-stream gets what it did not read again, from the "
    "start of a line, and duplicates are whole lines, counted",
    "[e2e][ship]") {
  TempDir dir;
  // Closes each connection after 300 KiB: bytes in its receive queue are lost with it.
  UnixSink sink((dir / "up.sock").string(), 300u << 10);
  sink.start();
  Daemon daemon(dir, config(dir, sink.address()));
  const uint16_t port = daemon.port("app");
  const std::string admin = daemon.waitAdmin();
  std::vector<std::string> payloads;
  for (int c = 0; c < 2; ++c) payloads.push_back(lines(c, 1u << 20));
  sendClients(port, payloads);
  MetricValues m;
  REQUIRE(waitShipped(admin, 60s, &m));
  INFO(describe(m));
  const std::string archive = archiveOf(dir);
  std::string why;
  const int64_t dup = duplicatedWholeLines(sink.joinedWholeLines(), archive, why);
  INFO(why);
  REQUIRE(dup >= 0);
  CHECK(sink.connections() >= 6);
  // Every connection after the first starts on a line.
  auto streams = sink.streams();
  for (size_t i = 1; i < streams.size(); ++i) {
    INFO("connection " << i);
    CHECK((streams[i].empty() || streams[i].starts_with("client ")));
  }
  // What was resent is at least what arrived twice (the rest was lost unread with a connection).
  CHECK(metric(m, "spliced_ship_resent_bytes_total") >= static_cast<double>(dup));
  CHECK(m.at("spliced_ship_reconnects_total{route=\"app\",upstream=\"" + sink.address() + "\"}") >=
        5);
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(20s) == 0);
}

TEST_CASE(
    "ship: spliced killed with SIGKILL while shipping resumes from the cursor after a "
    "restart, nothing missing, duplicates bounded",
    "[e2e][ship]") {
  TempDir dir;
  UnixSink sink((dir / "up.sock").string());
  sink.throttle(2ms);  // about 8 MB/s: each kill lands mid-shipping
  sink.start();
  std::string cfg = config(dir, sink.address(), "", "      checkpoint_interval: 100ms\n");
  // Each run's chain has its own names ({pid}), so that `spliced cat` puts the runs in order.
  cfg.replace(cfg.find("{route}-{seq}"), 13, "{route}-{pid}-{seq}");
  constexpr size_t kRound = 3u << 20;
  constexpr int kKills = 3;
  uint64_t archived = 0;
  for (int round = 0; round < kKills; ++round) {
    INFO("round " << round);
    auto daemon = std::make_unique<Daemon>(dir, cfg);
    const uint16_t port = daemon->port("app");
    const std::string admin = daemon->waitAdmin();
    Conn c = connectTcp(port);
    REQUIRE(c.valid());
    const std::string p = lines(round, kRound);
    REQUIRE(c.sendAll(p) == 0);
    archived += p.size();
    // Archived whole (the daemon has read every byte), then killed while the upstream has a
    // third of this round to go.
    REQUIRE(waitUntil(
        [&] {
          return metric(scrapeMetrics(admin), "spliced_archive_bytes_total") ==
                 static_cast<double>(p.size());
        },
        20s));
    const uint64_t base = sink.joinedWholeLines().size();
    REQUIRE(waitUntil([&] { return sink.joined().size() >= base + kRound / 3; }, 20s));
    daemon.reset();  // SIGKILL, reaped
  }
  // A last start ships what is left.
  sink.throttle(0ms);
  Daemon daemon(dir, cfg);
  const std::string admin = daemon.waitAdmin();
  CHECK(daemon.countLogLines({"recovered after an unclean stop"}, 1) == 1);
  MetricValues m;
  REQUIRE(waitUntil(
      [&] {
        m = scrapeMetrics(admin);
        return metric(m, "spliced_ship_lag_bytes") == 0;
      },
      30s));
  const std::string archive = archiveOf(dir);
  REQUIRE(archive.size() == archived);
  REQUIRE(waitUntil([&] { return sink.joined().size() >= archive.size(); }, 10s));
  std::string why;
  const int64_t dup = duplicatedWholeLines(sink.joinedWholeLines(), archive, why);
  INFO(why);
  CHECK(dup >= 0);
  if (dup < 0) {
    for (const auto& st : sink.streams()) {
      std::cout << "stream of " << st.size() << " starts " << st.substr(0, 30) << " ends "
                << st.substr(st.size() > 30 ? st.size() - 30 : 0) << "\n";
    }
    std::cout << daemon.log() << "\n";
  }
  // Each kill resends what was acknowledged since the cursor's last save (100 ms at ~8 MB/s)
  // plus what the socket held: far less than a round.
  CHECK(dup < static_cast<int64_t>(kKills * kRound / 2));
  std::cout << "SIGKILL x" << kKills << " while shipping: " << dup
            << " duplicated byte(s) in whole lines of " << archive.size() << "\n";
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(20s) == 0);
}

TEST_CASE(
    "ship: retention keeps unshipped segments (unshipped: keep) or drops and counts them "
    "(unshipped: drop)",
    "[e2e][ship]") {
  for (const std::string policy : {"keep", "drop"}) {
    DYNAMIC_SECTION("unshipped: " << policy) {
      TempDir dir;
      const std::string up = "127.0.0.1:" + std::to_string(refusingPort());
      Daemon daemon(dir,
                    config(dir, up, "      retain: { max_files: 2, unshipped: " + policy + " }\n"));
      const uint16_t port = daemon.port("app");
      const std::string admin = daemon.waitAdmin();
      sendClients(port, {lines(0, 2u << 20)});  // 8 segments of 256 KiB
      MetricValues m;
      if (policy == "keep") {
        // Rotation and retention passes have run; nothing was deleted.
        REQUIRE(waitUntil(
            [&] {
              m = scrapeMetrics(admin);
              return metric(m, "spliced_archive_segments_total") >= 8;
            },
            10s));
        std::this_thread::sleep_for(500ms);
        m = scrapeMetrics(admin);
        CHECK(metric(m, "spliced_archive_deleted_segments_total") == 0);
        CHECK(closedSegments(dir / "archive").size() >= 8);
        CHECK(metric(m, "spliced_ship_dropped_bytes_total") == 0);
      } else {
        // The lifecycle thread counts a deletion first; the shipper hears of it on its loop, a
        // moment later: the two counters agree once both have run.
        const bool agreed = waitUntil(
            [&] {
              m = scrapeMetrics(admin);
              return metric(m, "spliced_archive_deleted_segments_total") >= 6 &&
                     metric(m, "spliced_ship_dropped_bytes_total") ==
                         metric(m, "spliced_archive_deleted_bytes_total");
            },
            10s);
        INFO(describe(m));
        CHECK(agreed);
        CHECK(metric(m, "spliced_archive_deleted_segments_total") >= 6);
        CHECK(closedSegments(dir / "archive").size() <= 3);
        CHECK(daemon.countLogLines({"ship: retention deleted", "retain.unshipped: drop"}, 6) >= 6);
      }
      daemon.signal(SIGTERM);
      REQUIRE(daemon.waitExit(20s) == 0);
    }
  }
}

TEST_CASE(
    "ship: a damaged or removed cursor is said and everything uncompressed is shipped "
    "again, never skipped",
    "[e2e][ship]") {
  TempDir dir;
  UnixSink sink((dir / "up.sock").string());
  sink.start();
  const std::string cfg = config(dir, sink.address());
  std::string archive;
  {
    Daemon daemon(dir, cfg);
    const std::string admin = daemon.waitAdmin();
    sendClients(daemon.port("app"), {lines(5, 600u << 10)});
    MetricValues m;
    REQUIRE(waitShipped(admin, 20s, &m));
    daemon.signal(SIGTERM);
    REQUIRE(daemon.waitExit(20s) == 0);
    archive = archiveOf(dir);
    CHECK(firstDifference(sink.joined(), archive) == "");
  }
  const fs::path cursor = dir / "archive/.spliced/ship/shared.cursor";
  std::string text = readFile(cursor);
  text[text.find("offset ") + 7] = '9';
  writeFile(cursor, text);
  {
    Daemon daemon(dir, cfg);
    const std::string admin = daemon.waitAdmin();
    CHECK(daemon.countLogLines({"error=storage route=app ship: .spliced/ship/shared.cursor is "
                                "unusable: line ",
                                "check mismatch", "shipping every uncompressed segment"},
                               1) == 1);
    REQUIRE(waitUntil([&] { return sink.joined().size() == 2 * archive.size(); }, 20s));
    CHECK(sink.joined() == archive + archive);
    daemon.signal(SIGTERM);
    REQUIRE(daemon.waitExit(20s) == 0);
  }
  fs::remove(cursor);
  {
    Daemon daemon(dir, cfg);
    daemon.waitAdmin();
    CHECK(daemon.countLogLines({"ship: the cursor .spliced/ship/shared.cursor is missing"}, 1) ==
          1);
    REQUIRE(waitUntil([&] { return sink.joined().size() == 3 * archive.size(); }, 20s));
    daemon.signal(SIGTERM);
    REQUIRE(daemon.waitExit(20s) == 0);
  }
}

TEST_CASE("ship: what a shipping route does not take is refused at -t with the reason",
          "[e2e][ship]") {
  TempDir dir;
  struct Case {
    std::string archive_extra, forward_extra, message;
  };
  const std::vector<Case> cases = {
      {"", "      proxy_protocol: v1\n", "there is no client to name in a PROXY header"},
      {"", "      checkpoint_interval: 1ms\n", "checkpoint_interval"},
  };
  for (const auto& c : cases) {
    std::string text = config(dir, "127.0.0.1:9", c.archive_extra, c.forward_extra);
    writeFile(dir / "bad.yaml", text);
    CommandResult r = runSpliced(dir, {"-t", "-c", (dir / "bad.yaml").string()});
    INFO(r.out << r.err);
    CHECK(r.exit_code == 1);
    CHECK((r.out + r.err).find(c.message) != std::string::npos);
  }
  CommandResult r;
  const std::string proxy_only = withDir(R"(routes:
  - name: web
    listen: 127.0.0.1:0
    forward: { upstreams: [127.0.0.1:9], max_lag: 5s }
)",
                                         dir);
  writeFile(dir / "bad.yaml", proxy_only);
  r = runSpliced(dir, {"-t", "-c", (dir / "bad.yaml").string()});
  CHECK(r.exit_code == 1);
  CHECK((r.out + r.err).find("applies to a shipping route") != std::string::npos);
  // A good one passes.
  writeFile(dir / "good.yaml", config(dir, "127.0.0.1:9", "", "      max_lag: 5m\n"));
  r = runSpliced(dir, {"-t", "-c", (dir / "good.yaml").string()});
  INFO(r.out << r.err);
  CHECK(r.exit_code == 0);
}

TEST_CASE(
    "ship: layout per_connection ships each client's chain on its own upstream connection, "
    "whole and in order, then forgets it",
    "[e2e][ship]") {
  auto up = TestUpstream::sink(16u << 20);
  TempDir dir;
  std::string cfg = config(dir, up->address());
  cfg.replace(cfg.find("layout: shared"), 14, "layout: per_connection");
  cfg.replace(cfg.find("{route}-{seq}"), 13, "{route}-{conn}-{peer_port}-{seq}");
  Daemon daemon(dir, cfg);
  const uint16_t port = daemon.port("app");
  const std::string admin = daemon.waitAdmin();
  std::vector<std::string> payloads;
  uint64_t total = 0;
  for (int c = 0; c < 4; ++c) {
    payloads.push_back(lines(c, (1u << 20) + 1000 * static_cast<size_t>(c)));
    total += payloads.back().size();
  }
  sendClients(port, payloads);
  MetricValues m;
  REQUIRE(waitShipped(admin, 30s, &m));
  INFO(describe(m));
  CHECK(metric(m, "spliced_ship_acked_bytes_total") == static_cast<double>(total));
  REQUIRE(up->waitDone(4, 10s));
  // Four upstream connections, each one client's stream byte for byte (in any order).
  auto recs = up->records();
  REQUIRE(recs.size() == 4);
  std::vector<std::string> got;
  for (const auto& r : recs) got.push_back(r.data);
  std::sort(got.begin(), got.end());
  std::vector<std::string> want = payloads;
  std::sort(want.begin(), want.end());
  for (size_t i = 0; i < want.size(); ++i) {
    INFO("stream " << i);
    CHECK(firstDifference(got[i], want[i]) == "");
  }
  // Shipped whole and the client gone: nothing is left in .spliced/ship.
  REQUIRE(waitUntil(
      [&] {
        size_t n = 0;
        for (const auto& e : fs::directory_iterator(dir / "archive/.spliced/ship")) {
          (void)e;
          ++n;
        }
        return n == 0;
      },
      5s));
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(20s) == 0);
}

TEST_CASE("ship: a segment is compressed only once it is shipped", "[e2e][ship]") {
  TempDir dir;
  UnixSink sink((dir / "up.sock").string());
  Daemon daemon(dir, config(dir, sink.address(), "      compress: zstd\n"));
  const std::string admin = daemon.waitAdmin();
  sendClients(daemon.port("app"), {lines(3, 1u << 20)});  // 4 closed segments of 256 KiB
  MetricValues m;
  REQUIRE(waitUntil(
      [&] {
        m = scrapeMetrics(admin);
        return metric(m, "spliced_archive_segments_total") >= 4;
      },
      10s));
  // The upstream is down: nothing shipped, nothing compressed (a catch-up pass included).
  daemon.signal(SIGUSR1);  // rotate: the last segment closes too
  std::this_thread::sleep_for(1s);
  m = scrapeMetrics(admin);
  CHECK(metric(m, "spliced_archive_compressed_total") == 0);
  for (const auto& p : closedSegments(dir / "archive")) {
    INFO(p);
    CHECK(p.extension() == ".log");
  }
  sink.start();
  REQUIRE(waitShipped(admin, 20s, &m));
  // Shipped: each is compressed now, and the upstream got the plain bytes.
  REQUIRE(waitUntil(
      [&] {
        for (const auto& p : closedSegments(dir / "archive")) {
          if (p.extension() != ".zst") return false;
        }
        return true;
      },
      10s));
  CHECK(firstDifference(sink.joined(), archiveOf(dir)) == "");
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(20s) == 0);
}

TEST_CASE(
    "ship: per_connection chains cut by SIGKILL are shipped after the restart, each on a "
    "connection of its own, nothing missing",
    "[e2e][ship]") {
  TempDir dir;
  UnixSink sink((dir / "up.sock").string());
  sink.throttle(2ms);  // about 8 MB/s: the kill lands mid-shipping
  sink.start();
  std::string cfg = config(dir, sink.address(), "", "      checkpoint_interval: 100ms\n");
  cfg.replace(cfg.find("layout: shared"), 14, "layout: per_connection");
  cfg.replace(cfg.find("{route}-{seq}"), 13, "{route}-{conn}-{pid}-{seq}");
  std::vector<std::string> payloads;
  for (int c = 0; c < 2; ++c) payloads.push_back(lines(10 + c, 2u << 20));
  {
    auto daemon = std::make_unique<Daemon>(dir, cfg);
    const std::string admin = daemon->waitAdmin();
    sendClients(daemon->port("app"), payloads);
    REQUIRE(waitUntil([&] { return sink.joined().size() >= (1u << 20); }, 20s));
    daemon.reset();  // SIGKILL, reaped
  }
  sink.throttle(0ms);
  Daemon daemon(dir, cfg);
  const std::string admin = daemon.waitAdmin();
  CHECK(daemon.countLogLines({"connection chain(s) of an earlier run resume shipping"}, 1) == 1);
  // Every chain shipped whole and forgotten: .spliced/ship empties.
  REQUIRE(waitUntil(
      [&] {
        size_t n = 0;
        for (const auto& e : fs::directory_iterator(dir / "archive/.spliced/ship")) {
          (void)e;
          ++n;
        }
        return n == 0;
      },
      30s));
  // Each upstream connection carried one client's lines; joined per client, they are that
  // client's stream with only whole lines repeated.
  std::map<std::string, std::string> per_client;
  for (const auto& st : sink.streams()) {
    const std::string whole = st.substr(0, st.rfind('\n') + 1);
    if (whole.empty()) continue;
    REQUIRE(whole.starts_with("client "));
    per_client[whole.substr(0, whole.find(" line "))] += whole;
  }
  REQUIRE(per_client.size() == payloads.size());
  for (size_t c = 0; c < payloads.size(); ++c) {
    std::string who = "client ";
    who += std::to_string(10 + c);
    INFO(who);
    std::string why;
    const int64_t dup = duplicatedWholeLines(per_client[who], payloads[c], why);
    INFO(why);
    CHECK(dup >= 0);
  }
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(20s) == 0);
}
