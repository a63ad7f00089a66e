// End-to-end: the guarantees of one loop, kept with `workers: 2`. Each test pins `workers: 2`
// (not `auto`, which depends on the machine), connects until both workers hold clients (read from
// spliced_worker_connections_active{worker="0"|"1"}), and then checks the guarantee byte by byte:
// the shared raw chain interleaves whole chunks only, shared lines stay whole across SIGUSR1,
// interval and size rotation, SIGTERM drains every worker, idle_timeout closes on every worker,
// a full disk pauses clients of both workers and loses nothing, and pipes held are visible per
// worker. `workers: auto` follows the process's CPU affinity.
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/statvfs.h>

#include <linux/sockios.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"
#include "upstreams.hpp"

using namespace e2e;
using namespace std::chrono_literals;

namespace {

std::string workerKey(const std::string& family, int worker) {
  return family + "{worker=\"" + std::to_string(worker) + "\"}";
}

double value(const MetricValues& m, const std::string& key) {
  auto it = m.find(key);
  return it == m.end() ? -1 : it->second;
}

// A collect route `app` with `workers: 2`; `route_extra` and `archive_extra` are indented keys.
std::string collectConfig(const std::string& layout_and_name, const std::string& route_extra = "",
                          const std::string& archive_extra = "",
                          const std::string& archive_dir = "@DIR@/archive") {
  return "workers: 2\n" + std::string(R"(log: { level: info }
admin: { listen: 127.0.0.1:0 }
drain_timeout: 5s
routes:
  - name: app
    listen: 127.0.0.1:0
)") + route_extra +
         "    archive:\n      dir: " + archive_dir + "\n" + layout_and_name + archive_extra;
}

const std::string kShared = "      layout: shared\n      name: \"{route}-{seq}.log\"\n";
const std::string kPerConn =
    "      layout: per_connection\n      name: \"" + std::string(kPerConnName) + "\"\n";

// Connects clients one at a time (each counted by the daemon before the next) until there are at
// least `min` and both workers hold some of them; `before` connections were open already. At
// most 64: the kernel's SO_REUSEPORT hash never putting 64 connections on one worker would be a
// failure in itself.
std::vector<Conn> connectOnBothWorkers(const std::function<Conn()>& connect,
                                       const std::string& admin, size_t min, size_t before = 0) {
  std::vector<Conn> conns;
  double w0 = 0, w1 = 0;
  while (true) {
    conns.push_back(connect());
    REQUIRE(conns.back().valid());
    const bool counted = waitUntil(
        [&] {
          const MetricValues m = scrapeMetrics(admin);
          w0 = value(m, workerKey("spliced_worker_connections_active", 0));
          w1 = value(m, workerKey("spliced_worker_connections_active", 1));
          return w0 + w1 == static_cast<double>(conns.size() + before);
        },
        10s);
    INFO("worker 0 holds " << w0 << ", worker 1 holds " << w1 << " of " << conns.size());
    REQUIRE(counted);
    if (conns.size() >= min && w0 > 0 && w1 > 0) break;
    REQUIRE(conns.size() < 64);
  }
  return conns;
}

// Waits until every byte sent on `fd` has been acknowledged by the daemon's kernel (SIOCOUTQ is
// 0): a chunk sent after that is a TCP segment of its own, never merged with or split from the
// previous one. False after 10 s.
bool waitAcked(int fd) {
  const auto deadline = Clock::now() + 10s;
  while (Clock::now() < deadline) {
    int queued = 0;
    if (::ioctl(fd, SIOCOUTQ, &queued) != 0) return false;
    if (queued == 0) return true;
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// framing: raw

constexpr size_t kChunk = 4 * kKiB;

// Chunk `seq` of client `client`: a header naming both, then bytes from a seed of its own.
std::string rawChunk(size_t client, size_t seq) {
  char head[32];
  std::snprintf(head, sizeof head, "client %03zu chunk %05zu\n", client, seq);
  std::string out(head);
  out += randomPayload(client * 100000 + seq + 1, kChunk - out.size());
  return out;
}

// Each client's per_connection chain below `archive` (found by its port) holds exactly
// `expected[i]`, its segments numbered without a gap, and there is no other chain.
void checkChains(const fs::path& archive, const std::vector<Conn>& conns,
                 const std::vector<std::string>& expected) {
  const auto chains = chainsByConn(archive);
  CHECK(chains.size() == conns.size());
  for (size_t i = 0; i < conns.size(); ++i) {
    INFO("client " << i);
    const Chain* chain = findByPort(chains, conns[i].localPort());
    REQUIRE(chain != nullptr);
    CHECK(chain->seqsContiguous());
    CHECK(firstDifference(concatFiles(chain->files()), expected[i]) == "");
  }
}

}  // namespace

TEST_CASE("workers: 2 - a shared raw chain interleaves the clients of both workers in whole chunks",
          "[e2e][workers][guarantees]") {
  // Each client's stream stays far below a pipe (1 MiB, 256 slots; a chunk takes at most 3), so a
  // splice from its socket never stops inside a chunk: what the daemon reads at once is whole
  // chunks, and each read goes into the chain in one piece.
  const bool long_run = std::getenv("SPLICED_LONG_TESTS") != nullptr;
  const size_t kChunks = 32;
  const size_t kMinClients = long_run ? 48 : 8;
  const size_t kRounds = long_run ? 8 : 1;  // streams per client, one after another
  TempDir dir;
  Daemon daemon(dir, withDir(collectConfig(kShared + "      framing: raw\n"), dir));
  const uint16_t port = daemon.port("app");
  const std::string admin = daemon.waitAdmin();

  size_t clients_total = 0;
  for (size_t round = 0; round < kRounds; ++round) {
    std::vector<Conn> conns =
        connectOnBothWorkers([&] { return connectTcp(port); }, admin, kMinClients);
    const size_t first = clients_total;
    clients_total += conns.size();
    std::atomic<size_t> failed{0};
    {
      std::vector<std::jthread> senders;
      for (size_t i = 0; i < conns.size(); ++i) {
        senders.emplace_back([&, i] {
          Conn& c = conns[i];
          for (size_t s = 0; s < kChunks; ++s) {
            const std::string chunk = rawChunk(first + i, s);
            // One send per chunk, once the previous one is acknowledged.
            if (!waitAcked(c.fd()) || c.sendAll(chunk) != 0) {
              ++failed;
              return;
            }
          }
          c.shutdownWrite();
          if (c.waitClosed(20s) != 0) ++failed;
        });
      }
    }
    REQUIRE(failed.load() == 0);
  }
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);

  const std::string all = concatFiles(closedSegments(dir / "archive"));
  REQUIRE(all.size() == clients_total * kChunks * kChunk);
  std::vector<size_t> next(clients_total, 0);  // the next chunk expected of each client
  size_t bad = 0, out_of_order = 0, runs = 0;
  size_t last_client = SIZE_MAX;
  for (size_t off = 0; off < all.size(); off += kChunk) {
    size_t client = 0, seq = 0;
    if (std::sscanf(all.c_str() + off, "client %zu chunk %zu\n", &client, &seq) != 2 ||
        client >= clients_total || seq >= kChunks ||
        all.compare(off, kChunk, rawChunk(client, seq)) != 0) {
      if (++bad <= 3) UNSCOPED_INFO("not a whole chunk at offset " << off);
      last_client = SIZE_MAX;
      continue;
    }
    if (client != last_client) ++runs;
    last_client = client;
    if (seq != next[client]) ++out_of_order;
    next[client] = seq + 1;
  }
  INFO(runs << " runs of one client's chunks for " << clients_total << " clients");
  CHECK(bad == 0);
  CHECK(out_of_order == 0);
  CHECK(std::count(next.begin(), next.end(), kChunks) == static_cast<long>(clients_total));
  // The clients did write at the same time: some stream was cut by another's chunks.
  CHECK(runs > clients_total);
  auto totals = parseTotals(daemon.log(), "app");
  CHECK(totals["bytes_in"] == all.size());
  CHECK(totals["archive_bytes"] == all.size());
}

// ---------------------------------------------------------------------------------------------
// framing: lines, rotated under load

namespace {

std::string line(size_t client, size_t seq) {
  char head[32];
  std::snprintf(head, sizeof head, "c%03zu l%06zu ", client, seq);
  std::string out(head);
  out.append((seq * 37 + client * 11) % 300, static_cast<char>('a' + (client + seq) % 26));
  out += '\n';
  return out;
}

uint64_t segmentSeq(const fs::path& p) {
  const std::string name = p.filename().string();  // app-SEQ.log
  return std::stoull(name.substr(4, name.size() - 8));
}

enum class Rotation { Signal, Interval, Size };

// Clients on both workers write lines in odd-sized pieces until stopped, while `during` runs;
// then every line must be whole and exactly once, in each client's order, in the chain.
void sharedLinesUnderLoad(Rotation how) {
  constexpr uint64_t kMaxBytes = 64 * kKiB;
  std::string rotate;
  switch (how) {
    case Rotation::Signal:
      rotate = "      rotate: { max_bytes: 0 }\n";
      break;
    case Rotation::Interval:
      rotate = "      rotate: { max_bytes: 0, interval: 1s }\n";
      break;
    case Rotation::Size:
      rotate = "      rotate: { max_bytes: 64KiB }\n";
      break;
  }
  TempDir dir;
  Daemon daemon(dir, withDir(collectConfig(kShared + "      framing: lines\n" + rotate), dir));
  const uint16_t port = daemon.port("app");
  const std::string admin = daemon.waitAdmin();
  std::vector<Conn> conns = connectOnBothWorkers([&] { return connectTcp(port); }, admin, 8);
  const size_t clients = conns.size();

  std::atomic<bool> stop{false};
  std::vector<size_t> lines_sent(clients, 0);
  std::atomic<size_t> failed{0};
  {
    std::vector<std::jthread> writers;
    for (size_t i = 0; i < clients; ++i) {
      writers.emplace_back([&, i] {
        Prng rng(i + 7);
        std::string pending;
        size_t seq = 0;
        while (true) {
          const bool last = stop.load();
          if (!last) {
            while (pending.size() < 4 * kKiB) pending += line(i, seq++);
          }
          // Odd-sized pieces: lines are cut between sends.
          const size_t n =
              last ? pending.size() : std::min<size_t>(pending.size(), rng.between(1, 3000));
          if (conns[i].sendAll(pending.data(), n) != 0) {
            ++failed;
            return;
          }
          pending.erase(0, n);
          if (last) break;
          std::this_thread::sleep_for(std::chrono::microseconds(rng.between(0, 500)));
        }
        lines_sent[i] = seq;
        conns[i].shutdownWrite();
        if (conns[i].waitClosed(20s) != 0) ++failed;
      });
    }
    switch (how) {
      case Rotation::Signal:
        for (int k = 0; k < 3; ++k) {
          std::this_thread::sleep_for(150ms);
          daemon.signal(SIGUSR1);
        }
        std::this_thread::sleep_for(150ms);
        break;
      case Rotation::Interval:
        // Two boundaries of the wall clock's seconds at least.
        std::this_thread::sleep_for(2100ms);
        break;
      case Rotation::Size:
        std::this_thread::sleep_for(400ms);
        break;
    }
    stop = true;
  }
  REQUIRE(failed.load() == 0);
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);

  std::vector<fs::path> segs = closedSegments(dir / "archive");
  std::sort(segs.begin(), segs.end(),
            [](const fs::path& a, const fs::path& b) { return segmentSeq(a) < segmentSeq(b); });
  INFO(segs.size() << " segments");
  switch (how) {
    case Rotation::Signal:
      // Each SIGUSR1 closed the segment being written, one point in the chain: 3 signals, 4.
      CHECK(segs.size() == 4);
      break;
    case Rotation::Interval:
      CHECK(segs.size() >= 3);
      break;
    case Rotation::Size:
      CHECK(segs.size() > 1);
      break;
  }
  std::vector<size_t> next(clients, 0);
  size_t bad = 0, out_of_order = 0, too_big = 0, torn = 0;
  uint64_t bytes = 0;
  for (const auto& s : segs) {
    const std::string text = readFile(s);
    bytes += text.size();
    if (how == Rotation::Size && text.size() > kMaxBytes) ++too_big;
    if (!text.empty() && text.back() != '\n') ++torn;
    size_t start = 0;
    while (start < text.size()) {
      size_t nl = text.find('\n', start);
      if (nl == std::string::npos) break;
      const std::string l = text.substr(start, nl + 1 - start);
      start = nl + 1;
      size_t client = 0, seq = 0;
      if (std::sscanf(l.c_str(), "c%zu l%zu ", &client, &seq) != 2 || client >= clients ||
          l != line(client, seq)) {
        if (++bad <= 3) UNSCOPED_INFO("not a line of the clients: " << l);
        continue;
      }
      if (seq != next[client]) ++out_of_order;
      next[client] = seq + 1;
    }
  }
  CHECK(bad == 0);
  CHECK(torn == 0);
  CHECK(too_big == 0);
  CHECK(out_of_order == 0);
  CHECK(next == lines_sent);
  auto totals = parseTotals(daemon.log(), "app");
  CHECK(totals["bytes_in"] == bytes);
}

}  // namespace

TEST_CASE("workers: 2 - SIGUSR1 rotates a shared lines chain under load, every line once",
          "[e2e][workers][guarantees]") {
  sharedLinesUnderLoad(Rotation::Signal);
}

TEST_CASE("workers: 2 - rotate.interval rotates a shared lines chain under load, every line once",
          "[e2e][workers][guarantees]") {
  sharedLinesUnderLoad(Rotation::Interval);
}

TEST_CASE("workers: 2 - size rotation of a shared lines chain under load never passes max_bytes",
          "[e2e][workers][guarantees]") {
  sharedLinesUnderLoad(Rotation::Size);
}

// ---------------------------------------------------------------------------------------------
// SIGTERM, idle_timeout

TEST_CASE("workers: 2 - SIGTERM drains the clients of both workers, every byte archived",
          "[e2e][workers][guarantees]") {
  TempDir dir;
  Daemon daemon(dir, withDir(collectConfig(kPerConn), dir));
  const uint16_t port = daemon.port("app");
  const std::string admin = daemon.waitAdmin();
  std::vector<Conn> conns = connectOnBothWorkers([&] { return connectTcp(port); }, admin, 8);
  std::vector<std::string> before, after;
  uint64_t sent_before = 0;
  for (size_t i = 0; i < conns.size(); ++i) {
    before.push_back(randomPayload(300 + i, 96 * kKiB + i * 13));
    after.push_back(randomPayload(400 + i, 32 * kKiB + i));
    REQUIRE(conns[i].sendAll(before[i]) == 0);
    sent_before += before[i].size();
  }
  // Everything sent before the signal has been read by the daemon.
  REQUIRE(waitUntil(
      [&] {
        return metricValue(admin, "spliced_bytes_in_total{route=\"app\"}") ==
               static_cast<double>(sent_before);
      },
      10s));
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitLog("shutting down", 5s));
  // The streams end within drain_timeout: the rest of each, then EOF.
  for (size_t i = 0; i < conns.size(); ++i) {
    CHECK(conns[i].sendAll(after[i]) == 0);
    conns[i].shutdownWrite();
  }
  for (auto& c : conns) CHECK(c.waitClosed(10s) == 0);
  REQUIRE(daemon.waitExit(10s) == 0);

  std::vector<std::string> whole;
  for (size_t i = 0; i < conns.size(); ++i) whole.push_back(before[i] + after[i]);
  checkChains(dir / "archive", conns, whole);
  CHECK(openSegments(dir / "archive").empty());
}

TEST_CASE("workers: 2 - idle_timeout closes idle clients on both workers, each byte archived",
          "[e2e][workers][guarantees]") {
  TempDir dir;
  Daemon daemon(dir, withDir(collectConfig(kPerConn, "    idle_timeout: 1s\n"), dir));
  const uint16_t port = daemon.port("app");
  const std::string admin = daemon.waitAdmin();
  std::vector<Conn> conns = connectOnBothWorkers([&] { return connectTcp(port); }, admin, 8);
  std::vector<std::string> payloads;
  for (size_t i = 0; i < conns.size(); ++i) {
    payloads.push_back(randomPayload(500 + i, 1000 + i * 7));
    REQUIRE(conns[i].sendAll(payloads[i]) == 0);
  }
  // The clients send nothing more and do not close: the daemon closes each of them.
  for (auto& c : conns) CHECK(c.waitClosed(10s) == 0);
  CHECK(daemon.countLogLines({"close route=app ", "end=idle_timeout"}, conns.size()) ==
        conns.size());
  const MetricValues m = scrapeMetrics(admin);
  CHECK(value(m, workerKey("spliced_worker_connections_active", 0)) == 0);
  CHECK(value(m, workerKey("spliced_worker_connections_active", 1)) == 0);
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
  checkChains(dir / "archive", conns, payloads);
}

// ---------------------------------------------------------------------------------------------
// A full disk

TEST_CASE(
    "workers: 2 - ENOSPC pauses the clients of both workers, nothing is lost, they resume once "
    "freed",
    "[e2e][workers][guarantees][enospc]") {
  constexpr size_t kPerClient = kMiB;
  constexpr size_t kFree = 256 * kKiB;  // left free by the filler: less than one client's stream
  TempDir dir;
  TmpfsMount mnt(dir / "fs", "size=24m,mode=0755");
  if (!mnt.mounted()) {
    WARN("cannot mount a tmpfs (" << mnt.error()
                                  << "; needs root or CAP_SYS_ADMIN): the ENOSPC test is SKIPPED");
    return;
  }
  const fs::path archive = dir / "fs" / "archive";
  const fs::path filler = dir / "fs" / "filler";
  Daemon daemon(dir, withDir(collectConfig(kPerConn, "", "      rotate: { max_bytes: 256KiB }\n",
                                           archive.string()),
                             dir));
  const uint16_t port = daemon.port("app");
  const std::string admin = daemon.waitAdmin();
  std::vector<Conn> conns = connectOnBothWorkers([&] { return connectTcp(port); }, admin, 8);
  const size_t clients = conns.size();
  REQUIRE(clients * kPerClient + kMiB < 24 * kMiB);  // it all fits once the filler is gone

  struct statvfs sv {};
  REQUIRE(::statvfs((dir / "fs").c_str(), &sv) == 0);
  const uint64_t avail = static_cast<uint64_t>(sv.f_bavail) * sv.f_frsize;
  REQUIRE(avail > kFree);
  writeFile(filler, std::string(avail - kFree, 'F'));

  std::vector<std::string> payloads;
  for (size_t i = 0; i < clients; ++i) payloads.push_back(randomPayload(600 + i, kPerClient));
  std::atomic<size_t> failed{0};
  std::atomic<size_t> finished{0};
  std::vector<std::jthread> senders;
  for (size_t i = 0; i < clients; ++i) {
    senders.emplace_back([&, i] {
      if (conns[i].sendAll(payloads[i]) != 0) {
        ++failed;
        return;
      }
      conns[i].shutdownWrite();
      ++finished;
    });
  }
  // Full: every client is paused, on both workers, and its pipe keeps what it held.
  MetricValues m;
  const bool all_paused = waitUntil(
      [&] {
        m = scrapeMetrics(admin);
        return value(m, "spliced_archive_stalled_connections{route=\"app\"}") ==
               static_cast<double>(clients);
      },
      10s);
  INFO("stalled: " << value(m, "spliced_archive_stalled_connections{route=\"app\"}") << " of "
                   << clients);
  CHECK(all_paused);
  CHECK(httpGet(admin, "/healthz").status == 503);
  CHECK(value(m, workerKey("spliced_worker_pipes_in_use", 0)) > 0);
  CHECK(value(m, workerKey("spliced_worker_pipes_in_use", 1)) > 0);
  CHECK(value(m, "spliced_archive_bytes_total{route=\"app\"}") < 2.0 * kFree);
  // Paused: nothing more is read.
  const double read_before = value(m, "spliced_bytes_in_total{route=\"app\"}");
  std::this_thread::sleep_for(300ms);
  CHECK(metricValue(admin, "spliced_bytes_in_total{route=\"app\"}") == read_before);
  CHECK(metricValue(admin, "spliced_connections_active{route=\"app\"}") ==
        static_cast<double>(clients));

  fs::remove(filler);
  for (auto& t : senders) t.join();
  CHECK(failed.load() == 0);
  CHECK(finished.load() == clients);
  for (auto& c : conns) CHECK(c.waitClosed(20s) == 0);
  CHECK(httpGet(admin, "/healthz").status == 200);
  m = scrapeMetrics(admin);
  CHECK(value(m, "spliced_archive_stalled_connections{route=\"app\"}") == 0);
  CHECK(value(m, "spliced_archive_bytes_total{route=\"app\"}") ==
        static_cast<double>(clients * kPerClient));
  CHECK(value(m, workerKey("spliced_worker_pipes_in_use", 0)) == 0);
  CHECK(value(m, workerKey("spliced_worker_pipes_in_use", 1)) == 0);
  CHECK(daemon.countLogLines({"archive writable again; resuming"}, clients) == clients);

  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
  CHECK(openSegments(archive).empty());
  REQUIRE(conns.size() == clients);
  checkChains(archive, conns, payloads);
}

// ---------------------------------------------------------------------------------------------
// Pipes per worker, workers: auto

TEST_CASE("workers: 2 - spliced_worker_pipes_in_use shows the pipes held on each worker",
          "[e2e][workers][guarantees]") {
  // A proxy route to an upstream that never reads: each client's bytes wait in its pipe.
  UpstreamOptions uo;
  uo.mode = UpstreamMode::Stall;
  auto up = std::make_unique<TestUpstream>(uo);
  TempDir dir;
  Daemon daemon(dir,
                "workers: 2\nlog: { level: info }\nadmin: { listen: 127.0.0.1:0 }\n"
                "drain_timeout: 2s\nroutes:\n  - name: web\n    listen: 127.0.0.1:0\n"
                "    forward:\n      upstreams: [\"" +
                    up->address() + "\"]\n");
  const uint16_t port = daemon.port("web");
  const std::string admin = daemon.waitAdmin();
  {
    MetricValues m = scrapeMetrics(admin);
    CHECK(value(m, workerKey("spliced_worker_pipes_in_use", 0)) == 0);
    CHECK(value(m, workerKey("spliced_worker_pipes_in_use", 1)) == 0);
  }
  std::vector<Conn> conns = connectOnBothWorkers([&] { return connectTcp(port); }, admin, 4);
  std::vector<std::unique_ptr<EndlessWriter>> writers;
  for (size_t i = 0; i < conns.size(); ++i) {
    writers.push_back(std::make_unique<EndlessWriter>(conns[i], 700 + i));
  }
  MetricValues m;
  const bool both = waitUntil(
      [&] {
        m = scrapeMetrics(admin);
        return value(m, workerKey("spliced_worker_pipes_in_use", 0)) > 0 &&
               value(m, workerKey("spliced_worker_pipes_in_use", 1)) > 0;
      },
      10s);
  INFO("pipes in use: worker 0 " << value(m, workerKey("spliced_worker_pipes_in_use", 0))
                                 << ", worker 1 "
                                 << value(m, workerKey("spliced_worker_pipes_in_use", 1)));
  CHECK(both);
  // Never more than one per client here (the upstream sends nothing back).
  CHECK(value(m, workerKey("spliced_worker_pipes_in_use", 0)) +
            value(m, workerKey("spliced_worker_pipes_in_use", 1)) <=
        static_cast<double>(conns.size()));
  // The upstream goes: every session ends, every pipe is given back.
  writers.clear();
  up.reset();
  conns.clear();
  const bool freed = waitUntil(
      [&] {
        m = scrapeMetrics(admin);
        return value(m, "spliced_connections_active{route=\"web\"}") == 0 &&
               value(m, workerKey("spliced_worker_pipes_in_use", 0)) == 0 &&
               value(m, workerKey("spliced_worker_pipes_in_use", 1)) == 0;
      },
      10s);
  CHECK(freed);
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
}

TEST_CASE("workers: auto is the number of CPUs in the affinity mask", "[e2e][workers]") {
  // The daemon inherits the mask of the thread that forks it: CPU 0 only.
  cpu_set_t saved;
  CPU_ZERO(&saved);
  REQUIRE(::sched_getaffinity(0, sizeof saved, &saved) == 0);
  const int first = [&] {
    for (int c = 0; c < CPU_SETSIZE; ++c) {
      if (CPU_ISSET(c, &saved)) return c;
    }
    return 0;
  }();
  cpu_set_t one;
  CPU_ZERO(&one);
  CPU_SET(first, &one);
  REQUIRE(::sched_setaffinity(0, sizeof one, &one) == 0);
  TempDir dir;
  std::unique_ptr<Daemon> daemon;
  try {
    daemon = std::make_unique<Daemon>(
        dir, withDir("workers: auto\nlog: { level: info }\nadmin: { listen: 127.0.0.1:0 }\n"
                     "routes:\n  - name: app\n    listen: 127.0.0.1:0\n    archive:\n"
                     "      dir: @DIR@/archive\n",
                     dir));
  } catch (...) {
    ::sched_setaffinity(0, sizeof saved, &saved);
    throw;
  }
  REQUIRE(::sched_setaffinity(0, sizeof saved, &saved) == 0);
  const std::string admin = daemon->waitAdmin();
  CHECK(metricValue(admin, "spliced_workers") == 1);
  CHECK(metricValue(admin, workerKey("spliced_worker_connections_active", 0)) == 0);
  CHECK(metricValue(admin, workerKey("spliced_worker_connections_active", 1)) == -1);
  daemon->signal(SIGTERM);
  REQUIRE(daemon->waitExit(10s) == 0);
}
