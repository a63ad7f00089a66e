// End-to-end: the archive lifecycle of the real binary. Retention (max_files, max_bytes, max_age)
// with exact deletion counters, compression (zstd, gzip) checked with the codecs' own libraries,
// crash recovery after kill -9 (with and without compression), the archive dir lock, and a real
// small filesystem (tmpfs) filled to ENOSPC and freed again while a client streams.
#include <signal.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <iomanip>
#include <memory>
#include <optional>
#include <regex>
#include <sstream>
#include <thread>
#include <utility>

#include "harness.hpp"

using namespace e2e;
using namespace std::chrono_literals;

namespace {

using Metrics = MetricValues;

// ---------------------------------------------------------------------------------------------
// Configs

// Segment names of every test here: one flat chain per connection, {seq} zero-padded.
constexpr const char* kName = "{route}-{conn}-{seq}.log";

// A collect route "app" on 127.0.0.1:0 archiving per connection into `archive_dir` (default
// @DIR@/archive), with the admin endpoint on 127.0.0.1:0. `archive_keys` are extra lines of the
// archive block, indented by 6 spaces.
std::string lifecycleConfig(const TempDir& dir, const std::string& archive_keys,
                            const std::string& archive_dir = "@DIR@/archive",
                            const std::string& name = kName) {
  return withDir(R"(log: { level: info }
drain_timeout: 5s
admin: { listen: 127.0.0.1:0 }
routes:
  - name: app
    listen: 127.0.0.1:0
    archive:
      dir: )" + archive_dir +
                     R"(
      layout: per_connection
      name: ")" + name +
                     "\"\n" + archive_keys,
                 dir);
}

// The value of `name` (with {route="app"} unless `labelled` is false); -1 when absent, so that
// a missing family fails every comparison with a count.
double metric(const Metrics& m, const std::string& name, bool labelled = true) {
  auto it = m.find(labelled ? name + "{route=\"app\"}" : name);
  return it == m.end() ? -1 : it->second;
}

// Scrapes until `pred` holds (returns the scrape that satisfied it) or `timeout` passes (returns
// the last scrape, and `*ok` is false).
Metrics waitMetrics(const std::string& admin, const std::function<bool(const Metrics&)>& pred,
                    Millis timeout, bool* ok) {
  Metrics m;
  *ok = waitUntil(
      [&] {
        m = scrapeMetrics(admin);
        return pred(m);
      },
      timeout, Millis(20));
  return m;
}

std::string describe(const Metrics& m) {
  std::ostringstream out;
  out << std::setprecision(17);
  for (const auto& [k, v] : m) {
    if (k.starts_with("spliced_archive") || k.starts_with("spliced_storage")) {
      out << k << " " << v << "\n";
    }
  }
  return out.str();
}

// The lifecycle thread has nothing queued and `n` segments were deleted by retention.
bool deletedAndIdle(const Metrics& m, double n) {
  return metric(m, "spliced_archive_queue_length", false) == 0 &&
         metric(m, "spliced_archive_deleted_segments_total") == n;
}

// ---------------------------------------------------------------------------------------------
// Segments named kName, plain or compressed

struct Segment {
  uint64_t conn = 0;
  uint64_t seq = 0;
  std::string ext;  // "", ".zst" or ".gz"
  fs::path path;
};

// Every closed file below `dir` (closedSegments(): no .open, no hidden name; .tmp files are
// listed), parsed as kName with an optional .zst/.gz; sorted by (conn, seq). The others go to
// `*other`.
std::vector<Segment> segments(const fs::path& dir, std::vector<std::string>* other = nullptr) {
  static const std::regex kRe(R"(app-(\d+)-(\d{6})\.log(\.zst|\.gz)?)");
  std::vector<Segment> out;
  for (const auto& f : closedSegments(dir)) {
    const std::string name = f.filename().string();
    std::smatch m;
    if (!std::regex_match(name, m, kRe)) {
      if (other) other->push_back(f.lexically_relative(dir).string());
      continue;
    }
    out.push_back({std::stoull(m[1]), std::stoull(m[2]), m[3], f});
  }
  std::sort(out.begin(), out.end(), [](const Segment& a, const Segment& b) {
    return a.conn != b.conn ? a.conn < b.conn : a.seq < b.seq;
  });
  return out;
}

std::string names(const std::vector<Segment>& segs) {
  std::string out;
  for (const auto& s : segs) out += s.path.filename().string() + " ";
  return out;
}

// The seqs of `segs` are first, first + 1, ... (one connection, nothing missing).
bool contiguousFrom(const std::vector<Segment>& segs, uint64_t first) {
  for (size_t i = 0; i < segs.size(); ++i) {
    if (segs[i].conn != segs[0].conn || segs[i].seq != first + i) return false;
  }
  return true;
}

// A whole zstd file: one or more complete frames, nothing else. nullopt when it is not.
std::optional<std::string> unzstd(const std::string& data) {
  std::unique_ptr<ZSTD_DCtx, size_t (*)(ZSTD_DCtx*)> dctx(ZSTD_createDCtx(), ZSTD_freeDCtx);
  if (!dctx || data.empty()) return std::nullopt;
  std::string out;
  std::string buf(256 * kKiB, '\0');
  ZSTD_inBuffer in{data.data(), data.size(), 0};
  while (true) {
    const size_t before = in.pos;
    ZSTD_outBuffer ob{buf.data(), buf.size(), 0};
    const size_t hint = ZSTD_decompressStream(dctx.get(), &ob, &in);
    if (ZSTD_isError(hint)) return std::nullopt;
    out.append(buf.data(), ob.pos);
    if (hint == 0 && in.pos == in.size) return out;            // a frame ends with the input
    if (ob.pos == 0 && in.pos == before) return std::nullopt;  // no progress: truncated
  }
}

// A whole gzip file: one or more complete members, nothing after the last. nullopt otherwise.
std::optional<std::string> ungzip(const std::string& data) {
  z_stream z{};
  if (data.empty() || inflateInit2(&z, 15 + 16) != Z_OK) return std::nullopt;
  std::unique_ptr<z_stream, int (*)(z_stream*)> end(&z, inflateEnd);
  std::string out;
  std::string buf(256 * kKiB, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(data.data()));
  z.avail_in = static_cast<uInt>(data.size());
  while (true) {
    z.next_out = reinterpret_cast<Bytef*>(buf.data());
    z.avail_out = static_cast<uInt>(buf.size());
    const int rc = inflate(&z, Z_NO_FLUSH);
    const size_t produced = buf.size() - z.avail_out;
    out.append(buf.data(), produced);
    if (rc == Z_STREAM_END) {
      if (z.avail_in == 0) return out;
      if (inflateReset(&z) != Z_OK) return std::nullopt;  // the next member
      continue;
    }
    if (rc != Z_OK) return std::nullopt;
    if (z.avail_in == 0 && produced < buf.size()) return std::nullopt;  // truncated member
  }
}

// The content of a segment: as it is, or decompressed (FAILs on a file that does not decode).
std::string content(const Segment& s) {
  const std::string raw = readFile(s.path);
  if (s.ext.empty()) return raw;
  INFO("decoding " << s.path.filename().string() << " (" << raw.size() << " bytes)");
  std::optional<std::string> plain = s.ext == ".zst" ? unzstd(raw) : ungzip(raw);
  REQUIRE(plain.has_value());
  return *plain;
}

std::string contents(const std::vector<Segment>& segs) {
  std::string out;
  for (const auto& s : segs) out += content(s);
  return out;
}

// Log-like text (compresses well, unlike randomPayload), exactly `n` bytes.
std::string textPayload(uint64_t seed, size_t n) {
  Prng prng(seed);
  std::string out;
  out.reserve(n + 200);
  for (uint64_t i = 0; out.size() < n; ++i) {
    out += "2026-01-0" + std::to_string(1 + i % 9) + "T12:00:00Z host-" +
           std::to_string(prng.between(1, 9)) + " app[" + std::to_string(prng.between(100, 999)) +
           "]: request " + std::to_string(i) + " status=" + (prng.between(0, 9) ? "200" : "500") +
           " bytes=" + std::to_string(prng.between(0, 99999)) + "\n";
  }
  out.resize(n);
  return out;
}

// ---------------------------------------------------------------------------------------------
// A client thread that sends `payload` in `chunk`-sized sends with `pause` between them, until
// all is sent, a send fails, or it is stopped. The Conn and payload are borrowed. Destroying it
// while a send blocks (a test that failed while the daemon pushes back) shuts the socket down
// so that the thread returns at once.
class Sender {
 public:
  Sender(Conn& conn, const std::string& payload, size_t chunk, Millis pause)
      : fd_(conn.fd()), thread_([this, &payload, chunk, pause](std::stop_token stop) {
          size_t off = 0;
          while (off < payload.size() && !stop.stop_requested()) {
            const size_t n = std::min(chunk, payload.size() - off);
            ssize_t w = ::send(fd_, payload.data() + off, n, MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR) continue;
            if (w < 0) {
              error_ = errno;
              break;
            }
            off += static_cast<size_t>(w);
            sent_ = off;
            if (pause.count() > 0) std::this_thread::sleep_for(pause);
          }
          finished_ = true;
        }) {}
  ~Sender() {
    if (!thread_.joinable()) return;
    thread_.request_stop();
    if (!finished_) ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
  }
  Sender(const Sender&) = delete;
  Sender& operator=(const Sender&) = delete;

  uint64_t sent() const { return sent_.load(); }
  int error() const { return error_.load(); }
  bool finished() const { return finished_.load(); }

 private:
  const int fd_;
  std::atomic<uint64_t> sent_{0};
  std::atomic<int> error_{0};
  std::atomic<bool> finished_{false};
  std::jthread thread_;  // last: started after, and joined before, what it updates
};

// Sends `payload` on a new connection, ends the stream and waits for the daemon to close it.
void sendStream(uint16_t port, std::string_view payload) {
  Conn c = connectTcp(port);
  REQUIRE(c.valid());
  REQUIRE(c.sendAll(payload) == 0);
  c.shutdownWrite();
  REQUIRE(c.waitClosed(20s) == 0);
}

// ---------------------------------------------------------------------------------------------

}  // namespace

// ---------------------------------------------------------------------------------------------
// Retention

TEST_CASE(
    "lifecycle retention by max_files and max_bytes: the newest segments stay, counters exact",
    "[e2e][lifecycle][retention]") {
  // 2 MiB + 1000 bytes in 64 KiB segments: 32 full ones and one of 1000 bytes (seq 0..32).
  constexpr size_t kSeg = 64 * kKiB;
  constexpr size_t kTotal = 2 * kMiB + 1000;
  constexpr size_t kSegments = 33;
  struct Case {
    const char* retain;
    size_t kept;  // the newest this many stay
    const char* reason;
  };
  // max_bytes 200 KiB: 1000 + 3 x 64 KiB = 197,608 fits, one more 64 KiB does not.
  const Case c = GENERATE(Case{"{ max_files: 3 }", 3, "reason=max_files"},
                          Case{"{ max_bytes: 200KiB }", 4, "reason=max_bytes"});
  INFO("retain: " << c.retain);
  TempDir dir;
  Daemon daemon(dir, lifecycleConfig(dir, "      rotate: { max_bytes: 64KiB }\n      retain: " +
                                              std::string(c.retain) + "\n"));
  const std::string admin = daemon.waitAdmin();
  const uint16_t port = daemon.port("app");
  const std::string payload = randomPayload(11, kTotal);
  sendStream(port, payload);

  const size_t deleted = kSegments - c.kept;
  bool ok = false;
  const Metrics m = waitMetrics(
      admin, [&](const Metrics& x) { return deletedAndIdle(x, static_cast<double>(deleted)); }, 10s,
      &ok);
  INFO(describe(m));
  CHECK(ok);
  CHECK(metric(m, "spliced_archive_segments_total") == kSegments);
  CHECK(metric(m, "spliced_archive_deleted_segments_total") == deleted);
  CHECK(metric(m, "spliced_archive_deleted_bytes_total") == deleted * kSeg);

  const fs::path archive = dir / "archive";
  std::vector<std::string> other;
  const auto segs = segments(archive, &other);
  INFO("segments: " << names(segs));
  CHECK(other.empty());
  CHECK(openSegments(archive).empty());
  REQUIRE(segs.size() == c.kept);
  CHECK(contiguousFrom(segs, kSegments - c.kept));  // the newest: the last {seq} numbers
  const size_t tail = (c.kept - 1) * kSeg + 1000;
  CHECK(firstDifference(contents(segs), std::string_view(payload).substr(kTotal - tail)) == "");
  CHECK(logLines(daemon.log(), {"route=app retention: deleted", c.reason}).size() == deleted);

  daemon.signal(SIGTERM);
  CHECK(daemon.waitExit(10s) == 0);
}

TEST_CASE("lifecycle retention by max_age: segments go once older than max_age, with their dirs",
          "[e2e][lifecycle][retention]") {
  // 256 KiB + 100 bytes in 64 KiB segments: 5 of them, in a dated directory.
  constexpr size_t kTotal = 256 * kKiB + 100;
  TempDir dir;
  Daemon daemon(dir, lifecycleConfig(dir,
                                     "      rotate: { max_bytes: 64KiB }\n"
                                     "      retain: { max_age: 2s }\n",
                                     "@DIR@/archive", std::string("%Y%m%d/") + kName));
  const std::string admin = daemon.waitAdmin();
  const uint16_t port = daemon.port("app");
  const fs::path archive = dir / "archive";
  const std::string payload = randomPayload(12, kTotal);

  const auto t0 = Clock::now();
  sendStream(port, payload);
  const auto segs = segments(archive);
  INFO("segments: " << names(segs));
  if (Clock::now() - t0 < 1500ms) {
    // Younger than max_age whatever the clock granularity: nothing may be gone yet.
    REQUIRE(segs.size() == 5);
    CHECK(contiguousFrom(segs, 0));
    CHECK(firstDifference(contents(segs), payload) == "");
  } else {
    WARN("the stream took over 1.5 s: the check that nothing is deleted early is skipped");
  }

  // The maintenance timer runs every max(1 s, max_age / 10): gone by 2 s + 1 s after the last
  // write, with slack for a loaded machine.
  bool ok = false;
  const Metrics m = waitMetrics(
      admin, [](const Metrics& x) { return deletedAndIdle(x, 5); }, 8s, &ok);
  const auto elapsed = std::chrono::duration_cast<Millis>(Clock::now() - t0);
  INFO(describe(m) << "after " << elapsed.count() << " ms");
  CHECK(ok);
  CHECK(elapsed >= 1900ms);  // not before max_age
  CHECK(metric(m, "spliced_archive_deleted_bytes_total") == kTotal);
  CHECK(segments(archive).empty());
  CHECK(logLines(daemon.log(), {"route=app retention: deleted", "reason=max_age"}).size() == 5);
  // The dated directory the deletions emptied is removed; the archive dir itself stays.
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(archive)) {
    const std::string name = e.path().filename().string();
    if (name[0] != '.') left.push_back(name);
  }
  INFO("left in the archive dir: " << left.size());
  CHECK(left.empty());
  CHECK(fs::is_directory(archive));

  // A new client after that: its dated directory is made again.
  const std::string more = randomPayload(13, 1000);
  sendStream(port, more);
  const auto again = segments(archive);
  REQUIRE(again.size() == 1);
  CHECK(content(again[0]) == more);

  daemon.signal(SIGTERM);
  CHECK(daemon.waitExit(10s) == 0);
}

// ---------------------------------------------------------------------------------------------
// Compression

TEST_CASE(
    "lifecycle compression: every closed segment becomes NAME.zst or NAME.gz, decoding to the "
    "stream",
    "[e2e][lifecycle][compress]") {
  // 1 MiB + 12345 bytes in 256 KiB segments: 5 of them.
  constexpr size_t kTotal = kMiB + 12345;
  constexpr size_t kSegments = 5;
  struct Case {
    const char* codec;
    const char* ext;
    const char* extra;
  };
  const Case c = GENERATE(Case{"zstd", ".zst", ""},
                          Case{"gzip", ".gz", "      compress_level: 9\n      fsync: on_close\n"});
  INFO("compress: " << c.codec << "\n" << c.extra);
  TempDir dir;
  Daemon daemon(dir, lifecycleConfig(dir, "      rotate: { max_bytes: 256KiB }\n      compress: " +
                                              std::string(c.codec) + "\n" + c.extra));
  const std::string admin = daemon.waitAdmin();
  const uint16_t port = daemon.port("app");
  const std::string payload = textPayload(21, kTotal);
  sendStream(port, payload);

  bool ok = false;
  const Metrics m = waitMetrics(
      admin,
      [&](const Metrics& x) {
        return metric(x, "spliced_archive_queue_length", false) == 0 &&
               metric(x, "spliced_archive_compressed_total") == kSegments;
      },
      10s, &ok);
  INFO(describe(m));
  CHECK(ok);
  CHECK(metric(m, "spliced_archive_compress_errors_total") == 0);
  CHECK(metric(m, "spliced_archive_compress_skipped_total") == 0);
  CHECK(metric(m, "spliced_archive_deleted_segments_total") == 0);

  const fs::path archive = dir / "archive";
  std::vector<std::string> other;  // a .tmp left behind would be here
  const auto segs = segments(archive, &other);
  INFO("segments: " << names(segs));
  CHECK(other.empty());
  CHECK(openSegments(archive).empty());
  REQUIRE(segs.size() == kSegments);
  CHECK(contiguousFrom(segs, 0));
  uint64_t compressed_bytes = 0;
  for (const auto& s : segs) {
    INFO(s.path.filename().string());
    CHECK(s.ext == c.ext);  // no plain file left
    compressed_bytes += fs::file_size(s.path);
  }
  CHECK(firstDifference(contents(segs), payload) == "");
  CHECK(compressed_bytes < kTotal / 2);  // log-like text: actually compressed

  daemon.signal(SIGTERM);
  CHECK(daemon.waitExit(10s) == 0);
}

TEST_CASE("lifecycle compression with retain.max_files: the count applies to the compressed files",
          "[e2e][lifecycle][compress][retention]") {
  // 1 MiB + 1000 bytes in 64 KiB segments: 17 (seq 0..16); 3 stay, compressed. Which 3 is not
  // checked here: see the next test (it depends on how far compression lags behind).
  constexpr size_t kSeg = 64 * kKiB;
  constexpr size_t kTotal = kMiB + 1000;
  constexpr size_t kSegments = 17;
  constexpr size_t kKept = 3;
  TempDir dir;
  Daemon daemon(dir, lifecycleConfig(dir,
                                     "      rotate: { max_bytes: 64KiB }\n"
                                     "      retain: { max_files: 3 }\n"
                                     "      compress: zstd\n"));
  const std::string admin = daemon.waitAdmin();
  const uint16_t port = daemon.port("app");
  const fs::path archive = dir / "archive";
  const std::string payload = textPayload(22, kTotal);
  sendStream(port, payload);

  // Retention may delete a plain segment before its compression job runs (that job then finds
  // nothing to do): compressed_total lies between 3 and 17, deletions are exact.
  bool ok = false;
  const Metrics m = waitMetrics(
      admin,
      [&](const Metrics& x) {
        if (!deletedAndIdle(x, kSegments - kKept)) return false;
        const auto segs = segments(archive);
        return std::all_of(segs.begin(), segs.end(),
                           [](const Segment& s) { return s.ext == ".zst"; });
      },
      10s, &ok);
  INFO(describe(m));
  CHECK(ok);
  CHECK(metric(m, "spliced_archive_compressed_total") >= kKept);
  CHECK(metric(m, "spliced_archive_compressed_total") <= kSegments);
  CHECK(metric(m, "spliced_archive_compress_errors_total") == 0);
  CHECK(metric(m, "spliced_archive_deleted_bytes_total") > 0);

  std::vector<std::string> other;
  const auto segs = segments(archive, &other);
  INFO("segments: " << names(segs));
  CHECK(other.empty());
  CHECK(openSegments(archive).empty());
  REQUIRE(segs.size() == kKept);
  for (const auto& s : segs) {
    INFO(s.path.filename().string());
    CHECK(s.ext == ".zst");
    REQUIRE(s.seq < kSegments);
    CHECK(firstDifference(content(s), std::string_view(payload).substr(s.seq * kSeg, kSeg)) == "");
  }

  daemon.signal(SIGTERM);
  CHECK(daemon.waitExit(10s) == 0);
}

// Known bug (see the report of the lifecycle tests): a compressed segment gets the mtime of its
// compression, not of its close, and retention orders by mtime. When compression lags behind
// the closes, retention deletes newer plain segments and keeps an older compressed one.
TEST_CASE("lifecycle compression lagging behind: retain.max_files still keeps the newest segments",
          "[e2e][lifecycle][compress][retention]") {
  // 8 MiB of text in 1 MiB segments (seq 0..7) arrive in a few ms; zstd level 19 takes a few
  // hundred ms per segment, so segment 0 is compressed after 7 has closed.
  constexpr size_t kSeg = kMiB;
  constexpr size_t kTotal = 8 * kMiB;
  constexpr size_t kSegments = 8;
  constexpr size_t kKept = 3;
  TempDir dir;
  Daemon daemon(dir, lifecycleConfig(dir,
                                     "      rotate: { max_bytes: 1MiB }\n"
                                     "      retain: { max_files: 3 }\n"
                                     "      compress: zstd\n"
                                     "      compress_level: 19\n"));
  const std::string admin = daemon.waitAdmin();
  const uint16_t port = daemon.port("app");
  const fs::path archive = dir / "archive";
  const std::string payload = textPayload(23, kTotal);
  sendStream(port, payload);

  bool ok = false;
  const Metrics m = waitMetrics(
      admin,
      [&](const Metrics& x) {
        if (!deletedAndIdle(x, kSegments - kKept)) return false;
        const auto segs = segments(archive);
        return std::all_of(segs.begin(), segs.end(),
                           [](const Segment& s) { return s.ext == ".zst"; });
      },
      15s, &ok);
  INFO(describe(m));
  CHECK(ok);
  const auto segs = segments(archive);
  INFO("segments: " << names(segs) << "\n" << daemon.log());
  REQUIRE(segs.size() == kKept);
  CHECK(contiguousFrom(segs, kSegments - kKept));  // 5, 6, 7 (the bug keeps 0, 6, 7)
  CHECK(firstDifference(contents(segs), std::string_view(payload).substr(kTotal - kKept * kSeg)) ==
        "");

  daemon.signal(SIGTERM);
  CHECK(daemon.waitExit(10s) == 0);
}

// The same bug seen through max_age: a segment compressed late (here by the catch-up at start)
// starts its max_age over.
TEST_CASE("lifecycle retention by max_age: a segment compressed late is deleted by its close time",
          "[e2e][lifecycle][compress][retention]") {
  TempDir dir;
  const fs::path archive = dir / "archive";
  {
    Daemon plain(dir, lifecycleConfig(dir, ""));
    sendStream(plain.port("app"), randomPayload(24, 1000));
    plain.signal(SIGTERM);
    REQUIRE(plain.waitExit(10s) == 0);
  }
  auto segs = segments(archive);
  REQUIRE(segs.size() == 1);
  fs::last_write_time(segs[0].path, fs::last_write_time(segs[0].path) - 1h);

  // Restarted with compression and a max_age it is well past.
  Daemon daemon(dir, lifecycleConfig(dir,
                                     "      retain: { max_age: 30m }\n"
                                     "      compress: zstd\n"));
  const std::string admin = daemon.waitAdmin();
  bool ok = false;
  const Metrics m = waitMetrics(
      admin, [](const Metrics& x) { return deletedAndIdle(x, 1); }, 2s, &ok);
  segs = segments(archive);
  INFO(describe(m) << "segments: " << names(segs) << "\n" << daemon.log());
  CHECK(ok);
  CHECK(segs.empty());  // the bug: app-1-000000.log.zst, with a fresh mtime

  daemon.signal(SIGTERM);
  CHECK(daemon.waitExit(10s) == 0);
}

// ---------------------------------------------------------------------------------------------
// Crash recovery

TEST_CASE(
    "lifecycle kill -9 mid-stream: the restart finalises the .open segment, a prefix of the stream",
    "[e2e][lifecycle][recovery]") {
  constexpr size_t kTotal = 20 * kMiB;
  constexpr size_t kSeg = 4 * kMiB;
  const bool zstd = GENERATE(false, true);
  INFO((zstd ? "compress: zstd" : "compress: none"));
  TempDir dir;
  const std::string cfg =
      lifecycleConfig(dir, "      rotate: { max_bytes: 4MiB }\n" +
                               std::string(zstd ? "      compress: zstd\n" : ""));
  const fs::path archive = dir / "archive";
  const std::string payload = randomPayload(31, kTotal);

  std::optional<Daemon> first(std::in_place, dir, cfg);
  const std::string admin1 = first->waitAdmin();
  const uint16_t port1 = first->port("app");
  Conn conn = connectTcp(port1);
  REQUIRE(conn.valid());
  uint64_t archived = 0;  // archive_bytes_total last seen before the kill
  uint64_t sent = 0;
  {
    // 64 KiB every 2 ms or slower: 20 MiB take well over half a second.
    Sender sender(conn, payload, 64 * kKiB, Millis(2));
    bool ok = false;
    const Metrics m = waitMetrics(
        admin1,
        [](const Metrics& x) { return metric(x, "spliced_archive_bytes_total") > 5.0 * kMiB; }, 10s,
        &ok);
    REQUIRE(ok);
    archived = static_cast<uint64_t>(metric(m, "spliced_archive_bytes_total"));
    INFO("sent " << sender.sent() << " bytes when killed");
    CHECK_FALSE(sender.finished());  // mid-stream
    first.reset();                   // SIGKILL, reaped
    REQUIRE(waitUntil([&] { return sender.finished(); }, 10s));
    sent = sender.sent();
  }
  INFO("archived (metric) " << archived << ", sent " << sent);

  const auto open = openSegments(archive);
  REQUIRE(open.size() == 1);
  const std::string open_name = open[0].filename().string();
  const std::string final_name = open_name.substr(0, open_name.size() - 5);
  const uint64_t open_size = fs::file_size(open[0]);
  // An interrupted compression of some earlier run.
  const std::string stale = "app-9-000000.log.zst.tmp";
  writeFile(archive / stale, "not a zstd frame");
  size_t plain = 0;  // what the restart has to compress: plain closed segments and the .open
  for (const auto& s : segments(archive)) plain += s.ext.empty() ? 1 : 0;
  ++plain;

  Daemon second(dir, cfg);
  const std::string admin2 = second.waitAdmin();
  second.port("app");
  const std::string log = second.log();
  INFO(log);
  CHECK(log.find("route=app recovered after an unclean stop: 1 segment(s) finalised") !=
        std::string::npos);
  CHECK(log.find("route=app recovery: finalised " + open_name + " as " + final_name +
                 " size=" + std::to_string(open_size)) != std::string::npos);
  CHECK(log.find("route=app recovery: removed " + stale + " (interrupted compression)") !=
        std::string::npos);
  CHECK(openSegments(archive).empty());
  CHECK_FALSE(fs::exists(archive / stale));

  if (zstd) {
    bool ok = false;
    const Metrics m = waitMetrics(
        admin2,
        [&](const Metrics& x) {
          return metric(x, "spliced_archive_queue_length", false) == 0 &&
                 metric(x, "spliced_archive_compressed_total") == plain;
        },
        15s, &ok);
    INFO(describe(m) << "plain segments at restart: " << plain);
    CHECK(ok);
    CHECK(metric(m, "spliced_archive_compress_errors_total") == 0);
  }

  std::vector<std::string> other;
  const auto segs = segments(archive, &other);
  INFO("segments: " << names(segs));
  CHECK(other.empty());  // no .tmp of any kind
  REQUIRE(!segs.empty());
  // The recovered segment is the last of the chain, whole (and compressed with zstd).
  CHECK(segs.back().path.filename().string() == final_name + (zstd ? ".zst" : ""));
  CHECK(content(segs.back()).size() == open_size);
  CHECK(contiguousFrom(segs, 0));
  for (const auto& s : segs) {
    INFO(s.path.filename().string());
    CHECK(s.ext == (zstd ? ".zst" : ""));
  }
  std::string got;
  for (size_t i = 0; i < segs.size(); ++i) {
    const std::string part = content(segs[i]);
    INFO(segs[i].path.filename().string() << ": " << part.size() << " bytes");
    CHECK(part.size() <= kSeg);
    if (i + 1 < segs.size()) CHECK(part.size() == kSeg);
    got += part;
  }
  // Every byte that reached a file is there, in order: a prefix of the stream, at least what the
  // daemon had counted as archived, at most what the client sent.
  CHECK(got.size() >= archived);
  CHECK(got.size() <= sent);
  CHECK(firstDifference(got, std::string_view(payload).substr(0, got.size())) == "");

  second.signal(SIGTERM);
  CHECK(second.waitExit(10s) == 0);
}

// ---------------------------------------------------------------------------------------------
// The lock

TEST_CASE("lifecycle archive dir lock: a second daemon on the same dir exits 1 and touches nothing",
          "[e2e][lifecycle][lock]") {
  TempDir dir;
  TempDir dir2;
  const fs::path archive = dir / "archive";
  Daemon daemon(dir, lifecycleConfig(dir, ""));
  const std::string admin = daemon.waitAdmin();
  const uint16_t port = daemon.port("app");
  const std::string payload = randomPayload(41, 200 * kKiB);

  // A client in the middle of its stream: its segment is .open while the second daemon tries.
  Conn c = connectTcp(port);
  REQUIRE(c.valid());
  REQUIRE(c.sendAll(payload.data(), 1000) == 0);
  REQUIRE(waitUntil([&] { return openSegments(archive).size() == 1; }, 10s));
  const fs::path open = openSegments(archive)[0];

  // Its own config file (in another dir), the same archive dir.
  const std::string cfg2 =
      "log: { level: info }\nroutes:\n  - name: other\n    listen: 127.0.0.1:0\n"
      "    archive:\n      dir: " +
      archive.string() + "\n      name: \"" + kName + "\"\n";
  writeFile(dir2 / "spliced.yaml", cfg2);
  CommandResult r = runSpliced(dir2, {"-c", (dir2 / "spliced.yaml").string()}, 10s);
  INFO("stdout:\n" << r.out << "stderr:\n" << r.err);
  CHECK(r.exit_code == 1);
  CHECK(r.err.find("archive dir " + archive.string() +
                   " is in use by another spliced process (pid " + std::to_string(daemon.pid()) +
                   ")") != std::string::npos);
  CHECK(r.err.find("listening on") == std::string::npos);

  // The first daemon goes on, its active segment untouched.
  CHECK(daemon.running());
  CHECK(fs::exists(open));
  CHECK(httpGet(admin, "/healthz").status == 200);
  REQUIRE(c.sendAll(payload.data() + 1000, payload.size() - 1000) == 0);
  c.shutdownWrite();
  REQUIRE(c.waitClosed(10s) == 0);
  const auto segs = segments(archive);
  REQUIRE(segs.size() == 1);
  CHECK(firstDifference(contents(segs), payload) == "");
  daemon.signal(SIGTERM);
  CHECK(daemon.waitExit(10s) == 0);

  // Once the first has exited the dir is free again.
  Daemon next(dir2, cfg2);
  next.waitListening("other");
  next.signal(SIGTERM);
  CHECK(next.waitExit(10s) == 0);
}

// ---------------------------------------------------------------------------------------------
// A real full filesystem

TEST_CASE(
    "lifecycle ENOSPC on a real tmpfs: the client stalls, nothing is lost, it resumes once freed",
    "[e2e][lifecycle][enospc]") {
  constexpr size_t kTotal = 16 * kMiB;
  constexpr size_t kFree = kMiB;  // left free by the filler
  TempDir dir;
  // The stream has to fit once the filler is gone: 24 MiB for 16 MiB of segments.
  TmpfsMount mnt(dir / "fs", "size=24m,mode=0755");
  if (!mnt.mounted()) {
    WARN("cannot mount a tmpfs (" << mnt.error()
                                  << "; needs root or CAP_SYS_ADMIN): the ENOSPC test is SKIPPED");
    return;
  }
  const fs::path archive = dir / "fs" / "archive";
  const fs::path filler = dir / "fs" / "filler";
  struct statvfs sv {};
  REQUIRE(::statvfs((dir / "fs").c_str(), &sv) == 0);
  const uint64_t avail = static_cast<uint64_t>(sv.f_bavail) * sv.f_frsize;
  REQUIRE(avail > kFree + kTotal);
  writeFile(filler, std::string(avail - kFree, 'F'));

  Daemon daemon(dir, lifecycleConfig(dir, "      rotate: { max_bytes: 4MiB }\n", archive.string()));
  const std::string admin = daemon.waitAdmin();
  const uint16_t port = daemon.port("app");
  const std::string payload = randomPayload(51, kTotal);
  Conn conn = connectTcp(port);
  REQUIRE(conn.valid());
  // A small send buffer: what the kernels can hold (this one, the daemon's receive buffer, its
  // pipe) stays well below the stream, so the client must block.
  const int sndbuf = 128 * kKiB;
  REQUIRE(::setsockopt(conn.fd(), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf) == 0);
  Sender sender(conn, payload, 64 * kKiB, Millis(0));

  // Full: the connection is paused, /healthz names the route.
  std::string body;
  REQUIRE(waitUntil(
      [&] {
        HttpResponse h = httpGet(admin, "/healthz");
        body = h.body;
        return h.status == 503;
      },
      10s));
  INFO("healthz: " << body);
  CHECK(body ==
        "route app: archive writes failing (No space left on device) for 1 connection(s)\n");
  // A few retries (100 ms, then 200 ms...): still one error line for the episode.
  std::this_thread::sleep_for(500ms);
  Metrics m = scrapeMetrics(admin);
  INFO(describe(m));
  CHECK(metric(m, "spliced_archive_stalled_connections") == 1);
  CHECK(metric(m, "spliced_storage_errors_total") >= 2);
  CHECK(metric(m, "spliced_connections_active") == 1);
  CHECK(metric(m, "spliced_archive_bytes_total") < 2.0 * kFree);
  const std::string log = daemon.log();
  INFO(log);
  CHECK(logLines(log, {"error=storage", "route=app"}).size() == 1);
  CHECK(logLines(log, {"error=storage route=app conn=1 archive write failed: No space left on "
                       "device; pausing this client"})
            .size() == 1);

  // The daemon reads nothing more from the paused connection...
  const double read_before = metric(m, "spliced_bytes_in_total");
  std::this_thread::sleep_for(300ms);
  CHECK(metric(scrapeMetrics(admin), "spliced_bytes_in_total") == read_before);
  // ...so TCP pushes back: once the kernels' buffers are full (the receiver may still compact
  // its queue for a while), the client's sends block, and the connection stays up.
  uint64_t last = sender.sent();
  const bool blocked = waitUntil(
      [&] {
        std::this_thread::sleep_for(300ms);
        const uint64_t now = sender.sent();
        return std::exchange(last, now) == now;
      },
      10s, Millis(0));
  INFO("client sent " << sender.sent() << " of " << kTotal);
  CHECK(blocked);
  CHECK(sender.sent() < kTotal);
  CHECK_FALSE(sender.finished());
  CHECK(sender.error() == 0);
  CHECK(metric(scrapeMetrics(admin), "spliced_connections_active") == 1);

  // Space again: the stream completes by itself.
  fs::remove(filler);
  REQUIRE(waitUntil([&] { return sender.finished(); }, 30s));
  CHECK(sender.error() == 0);
  CHECK(sender.sent() == kTotal);
  conn.shutdownWrite();
  CHECK(conn.waitClosed(20s) == 0);

  HttpResponse h = httpGet(admin, "/healthz");
  CHECK(h.status == 200);
  CHECK(h.body == "ok\n");
  m = scrapeMetrics(admin);
  CHECK(metric(m, "spliced_archive_stalled_connections") == 0);
  CHECK(metric(m, "spliced_archive_bytes_total") == kTotal);
  const std::string log2 = daemon.log();
  CHECK(logLines(log2, {"error=storage"}).size() == 1);
  CHECK(logLines(log2, {"route=app conn=1 archive writable again; resuming"}).size() == 1);

  // No hole, no zero-filled gap, nothing twice: the chain is the stream.
  CHECK(openSegments(archive).empty());
  const auto segs = segments(archive);
  INFO("segments: " << names(segs));
  REQUIRE(segs.size() == 4);
  CHECK(contiguousFrom(segs, 0));
  for (const auto& s : segs) CHECK(fs::file_size(s.path) == 4 * kMiB);
  CHECK(firstDifference(contents(segs), payload) == "");

  daemon.signal(SIGTERM);
  CHECK(daemon.waitExit(10s) == 0);
}
