// The pump and the segment chain on real socketpairs and files, with faults forced through the
// syscall seam: EAGAIN, short transfers, EINVAL (copy fallback, counted), ENOSPC, and EOF while
// bytes are still in the pipe.
#include <poll.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <map>
#include <set>
#include <vector>

#include "fixtures.hpp"
#include "spliced/archive/line_framer.hpp"
#include "spliced/archive/segment_chain.hpp"
#include "spliced/core/pipe_pool.hpp"
#include "spliced/core/pump.hpp"

using namespace spliced;
using namespace spliced::testing;
namespace fs = std::filesystem;

namespace {

struct Rig {
  TempDir tmp;
  FaultySysCalls sys;
  RouteMetrics metrics;
  ArchiveConfig cfg;
  ArchiveDir dir;
  UniqueFd client;  // the test writes here
  UniqueFd server;  // the pump reads here (non-blocking)

  explicit Rig(uint64_t max_bytes = 0, const char* name = "seg-{seq}.log") {
    cfg.dir = tmp.path;
    cfg.name = NameTemplate::compile(name).value();
    cfg.rotate.max_bytes = max_bytes;
    dir.reset(UniqueFd(::open(tmp.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)));
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    client.reset(sv[0]);
    server.reset(sv[1]);
    ::fcntl(server.get(), F_SETFL, O_NONBLOCK);
  }

  // Closed segments, sorted by name, concatenated.
  std::string archived() const {
    std::vector<fs::path> files;
    for (auto& e : fs::recursive_directory_iterator(tmp.path)) {
      if (e.is_regular_file()) files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());
    std::string all;
    for (auto& f : files) {
      REQUIRE(f.extension() != ".open");
      all += readFile(f);
    }
    return all;
  }

  std::vector<uintmax_t> segmentSizes() const {
    std::vector<std::pair<fs::path, uintmax_t>> files;
    for (auto& e : fs::recursive_directory_iterator(tmp.path)) {
      if (e.is_regular_file()) files.emplace_back(e.path(), e.file_size());
    }
    std::sort(files.begin(), files.end());
    std::vector<uintmax_t> out;
    for (auto& f : files) out.push_back(f.second);
    return out;
  }
};

// Runs the pump until end of stream, waiting for the socket between wake-ups. Sink faults are
// retried (as the session's backoff does). Returns the statuses seen.
std::map<PumpStatus, int> pumpToEnd(Pump& pump, int fd, size_t budget = 256 * 1024) {
  std::map<PumpStatus, int> seen;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  PumpResult r = pump.run(budget);
  while (true) {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    seen[r.status]++;
    if (r.status == PumpStatus::Eof) break;
    REQUIRE(r.status != PumpStatus::SourceError);
    if (r.status == PumpStatus::SinkBlocked || r.status == PumpStatus::SinkError) {
      r = pump.flush();
      if (r.status == PumpStatus::Drained || r.status == PumpStatus::Eof) r = pump.run(budget);
      continue;
    }
    if (r.status == PumpStatus::Drained) {
      pollfd p{fd, POLLIN, 0};
      ::poll(&p, 1, 100);
    }
    r = pump.run(budget);
  }
  return seen;
}

}  // namespace

TEST_CASE("splice path moves a stream byte-exactly with no copy", "[pump]") {
  Rig rig;
  PipePool pool(rig.sys, 1 << 20, 4);
  std::string data = payload(4 << 20, 1);
  {
    SegmentChain chain(rig.cfg, rig.dir, NameVars{"t"}, rig.sys, rig.metrics);
    Pump pump(rig.server.get(), chain, pool, rig.sys, rig.metrics);
    auto t = writer(rig.client.get(), data, 100000);
    pumpToEnd(pump, rig.server.get());
    t.join();
    CHECK(pump.heldBytes() == 0);
  }
  CHECK(rig.archived() == data);
  CHECK(rig.metrics.bytes_in == data.size());
  CHECK(rig.metrics.archive_bytes == data.size());
  CHECK(rig.metrics.copy_fallback_bytes == 0);
  CHECK(rig.metrics.archive_segments == 1);
  CHECK(pool.inUse() == 0);
  CHECK(pool.pooled() == 1);  // an empty pipe goes back to the pool
}

TEST_CASE("EAGAIN and short splices in both legs lose nothing", "[pump]") {
  Rig rig;
  PipePool pool(rig.sys, 64 * 1024, 4);
  int n = 0;
  rig.sys.hook = [&n](Call c, size_t& len) {
    ++n;
    if (c == Call::SpliceFromSocket && n % 3 == 0) {
      errno = EAGAIN;  // spurious "nothing to read"
      return -1;
    }
    if (c == Call::SpliceToFile && n % 5 == 0) {
      errno = EAGAIN;  // sink pushes back with bytes in the pipe
      return -1;
    }
    len = std::min<size_t>(len, 1 + (static_cast<size_t>(n) * 7919) % 4096);  // short transfers
    return 0;
  };
  std::string data = payload(1 << 20, 2);
  {
    SegmentChain chain(rig.cfg, rig.dir, NameVars{"t"}, rig.sys, rig.metrics);
    Pump pump(rig.server.get(), chain, pool, rig.sys, rig.metrics);
    auto t = writer(rig.client.get(), data, 3001);
    auto seen = pumpToEnd(pump, rig.server.get());
    t.join();
    CHECK(seen[PumpStatus::SinkBlocked] > 0);
  }
  CHECK(rig.archived() == data);
  CHECK(rig.metrics.copy_fallback_bytes == 0);
}

TEST_CASE("EINVAL from splice on the socket falls back to copying, counted", "[pump]") {
  Rig rig;
  PipePool pool(rig.sys, 1 << 20, 4);
  rig.sys.hook = [](Call c, size_t&) {
    if (c == Call::SpliceFromSocket) {
      errno = EINVAL;
      return -1;
    }
    return 0;
  };
  std::string data = payload(3 << 20, 3);
  {
    SegmentChain chain(rig.cfg, rig.dir, NameVars{"t"}, rig.sys, rig.metrics);
    Pump pump(rig.server.get(), chain, pool, rig.sys, rig.metrics);
    auto t = writer(rig.client.get(), data, 65536);
    pumpToEnd(pump, rig.server.get());
    t.join();
    CHECK(pump.copying());
  }
  CHECK(rig.archived() == data);
  CHECK(rig.metrics.copy_fallback_bytes == data.size());
  CHECK(rig.sys.calls_from_socket == 1);  // the fallback sticks for the connection
}

TEST_CASE("a file system that refuses splice gets the bytes by copy, counted", "[pump]") {
  Rig rig;
  PipePool pool(rig.sys, 1 << 20, 4);
  rig.sys.hook = [](Call c, size_t&) {
    if (c == Call::SpliceToFile) {
      errno = EINVAL;
      return -1;
    }
    return 0;
  };
  std::string data = payload(2 << 20, 4);
  {
    SegmentChain chain(rig.cfg, rig.dir, NameVars{"t"}, rig.sys, rig.metrics);
    Pump pump(rig.server.get(), chain, pool, rig.sys, rig.metrics);
    auto t = writer(rig.client.get(), data, 65536);
    pumpToEnd(pump, rig.server.get());
    t.join();
    CHECK(pump.copying());
  }
  CHECK(rig.archived() == data);
  CHECK(rig.metrics.copy_fallback_bytes == data.size());
}

TEST_CASE("no pipe to be had (pipes.max: 0) copies, counted", "[pump]") {
  Rig rig;
  PipePool pool(rig.sys, 1 << 20, 0);
  std::string data = payload(1 << 20, 5);
  {
    SegmentChain chain(rig.cfg, rig.dir, NameVars{"t"}, rig.sys, rig.metrics);
    Pump pump(rig.server.get(), chain, pool, rig.sys, rig.metrics);
    auto t = writer(rig.client.get(), data, 65536);
    pumpToEnd(pump, rig.server.get());
    t.join();
  }
  CHECK(rig.archived() == data);
  CHECK(rig.metrics.copy_fallback_bytes == data.size());
  CHECK(rig.sys.calls_from_socket == 0);
}

TEST_CASE("EOF while bytes are still in the pipe: they are written before the end", "[pump]") {
  Rig rig;
  PipePool pool(rig.sys, 1 << 20, 4);
  bool blocked = true;
  rig.sys.hook = [&blocked](Call c, size_t&) {
    if (c == Call::SpliceToFile && blocked) {
      errno = EAGAIN;
      return -1;
    }
    return 0;
  };
  std::string data = payload(200000, 6);
  SegmentChain chain(rig.cfg, rig.dir, NameVars{"t"}, rig.sys, rig.metrics);
  Pump pump(rig.server.get(), chain, pool, rig.sys, rig.metrics);
  auto t = writer(rig.client.get(), data, data.size());
  t.join();  // all bytes and the EOF are queued on the socket
  PumpResult r = pump.run(1 << 30);
  REQUIRE(r.status == PumpStatus::SinkBlocked);
  CHECK(pump.heldBytes() > 0);
  // The sink is blocked: the pump must not read on (it holds at most one pipe's worth).
  CHECK(pump.heldBytes() <= (1u << 20));
  blocked = false;
  auto seen = pumpToEnd(pump, rig.server.get());
  CHECK(pump.sawEof());
  CHECK(pump.heldBytes() == 0);
  chain.rotate();
  CHECK(rig.archived() == data);
}

TEST_CASE("ENOSPC mid-stream stops reading, keeps the bytes, and resumes", "[pump]") {
  Rig rig;
  PipePool pool(rig.sys, 64 * 1024, 4);
  std::atomic<bool> full{false};
  rig.sys.hook = [&full](Call c, size_t&) {
    if (c == Call::SpliceToFile && full) {
      errno = ENOSPC;
      return -1;
    }
    return 0;
  };
  std::string data = payload(2 << 20, 7);
  SegmentChain chain(rig.cfg, rig.dir, NameVars{"t"}, rig.sys, rig.metrics);
  Pump pump(rig.server.get(), chain, pool, rig.sys, rig.metrics);
  auto t = writer(rig.client.get(), data, 65536);
  // Let some bytes through, then fill the disk.
  while (rig.metrics.archive_bytes < 300000) {
    PumpResult r = pump.run(65536);
    REQUIRE(r.status != PumpStatus::SinkError);
  }
  full = true;
  // The next bytes to arrive hit the full disk (the writer thread may not have refilled the
  // socket yet: wait for it rather than assume it).
  PumpResult r = pump.run(1 << 30);
  for (int i = 0; i < 200 && r.status == PumpStatus::Drained; ++i) {
    pollfd p{rig.server.get(), POLLIN, 0};
    ::poll(&p, 1, 50);
    r = pump.run(1 << 30);
  }
  REQUIRE(r.status == PumpStatus::SinkError);
  CHECK(r.err == ENOSPC);
  uint64_t in_at_fault = rig.metrics.bytes_in;
  CHECK(pump.heldBytes() > 0);
  // While the disk is full, retries fail and the socket is not read any further.
  for (int i = 0; i < 3; ++i) CHECK(pump.flush().status == PumpStatus::SinkError);
  CHECK(rig.metrics.bytes_in == in_at_fault);
  full = false;
  pumpToEnd(pump, rig.server.get());
  t.join();
  chain.rotate();
  CHECK(rig.archived() == data);
  CHECK(rig.metrics.storage_errors >= 4);
}

TEST_CASE("max_bytes splits a chunk at the boundary: no segment is larger", "[pump][rotation]") {
  Rig rig(64 * 1024);
  PipePool pool(rig.sys, 1 << 20, 4);
  std::string data = payload((1 << 20) + 12345, 8);
  {
    SegmentChain chain(rig.cfg, rig.dir, NameVars{"t"}, rig.sys, rig.metrics);
    Pump pump(rig.server.get(), chain, pool, rig.sys, rig.metrics);
    auto t = writer(rig.client.get(), data, 1 << 20);
    pumpToEnd(pump, rig.server.get());
    t.join();
  }
  auto sizes = rig.segmentSizes();
  REQUIRE(sizes.size() == 17);
  for (size_t i = 0; i + 1 < sizes.size(); ++i) CHECK(sizes[i] == 64 * 1024);
  CHECK(sizes.back() == 12345);
  CHECK(rig.archived() == data);
  CHECK(rig.metrics.archive_segments == 17);
}

TEST_CASE("a segment file is created only when the first byte arrives", "[pump]") {
  Rig rig;
  PipePool pool(rig.sys, 1 << 20, 4);
  SegmentChain chain(rig.cfg, rig.dir, NameVars{"t"}, rig.sys, rig.metrics);
  Pump pump(rig.server.get(), chain, pool, rig.sys, rig.metrics);
  CHECK(pump.run(1 << 20).status == PumpStatus::Drained);
  CHECK(fs::is_empty(rig.tmp.path));
  ::send(rig.client.get(), "x", 1, 0);
  pollfd p{rig.server.get(), POLLIN, 0};
  ::poll(&p, 1, 1000);
  CHECK(pump.run(1 << 20).status == PumpStatus::Drained);
  CHECK(fs::exists(rig.tmp.path / "seg-000000.log.open"));
  chain.rotate();
  CHECK(fs::exists(rig.tmp.path / "seg-000000.log"));
  CHECK_FALSE(fs::exists(rig.tmp.path / "seg-000000.log.open"));
}

TEST_CASE("an existing file is never overwritten: a suffix is added", "[archive]") {
  Rig rig(0, "fixed.log");
  { std::ofstream(rig.tmp.path / "fixed.log") << "old"; }
  SegmentChain chain(rig.cfg, rig.dir, NameVars{"t"}, rig.sys, rig.metrics);
  CHECK(chain.fromBuffer("new1", 4).status == IoStatus::Ok);
  chain.rotate();
  CHECK(chain.fromBuffer("new2", 4).status == IoStatus::Ok);
  // Someone creates the next final name while the segment is open: the rename must not clobber.
  { std::ofstream(rig.tmp.path / "fixed.2.log") << "other"; }
  chain.rotate();
  CHECK(readFile(rig.tmp.path / "fixed.log") == "old");
  CHECK(readFile(rig.tmp.path / "fixed.1.log") == "new1");
  CHECK(readFile(rig.tmp.path / "fixed.2.log") == "other");
  CHECK(readFile(rig.tmp.path / "fixed.2.1.log") == "new2");
}

TEST_CASE("line framing keeps lines of interleaved writers whole", "[lines]") {
  Rig rig(4096);
  SegmentChain chain(rig.cfg, rig.dir, NameVars{"t"}, rig.sys, rig.metrics);
  LineFramer a(chain, 1, 1 << 20, rig.metrics);
  LineFramer b(chain, 2, 1 << 20, rig.metrics);
  std::string la, lb;
  for (int i = 0; i < 200; ++i) {
    la += "alpha-" + std::to_string(i) + std::string(40, 'a') + "\n";
    lb += "beta-" + std::to_string(i) + std::string(70, 'b') + "\n";
  }
  // Feed both in odd, interleaved slices so lines straddle calls.
  size_t ia = 0, ib = 0;
  while (ia < la.size() || ib < lb.size()) {
    size_t na = std::min<size_t>(37, la.size() - ia);
    size_t nb = std::min<size_t>(53, lb.size() - ib);
    REQUIRE(a.fromBuffer(la.data() + ia, na).status == IoStatus::Ok);
    REQUIRE(b.fromBuffer(lb.data() + ib, nb).status == IoStatus::Ok);
    ia += na;
    ib += nb;
  }
  REQUIRE(a.fromBuffer("tail-without-newline", 20).status == IoStatus::Ok);
  REQUIRE(a.finish().status == IoStatus::Ok);
  REQUIRE(b.finish().status == IoStatus::Ok);
  chain.rotate();
  std::multiset<std::string> got;
  std::istringstream all(rig.archived());
  for (std::string line; std::getline(all, line);) got.insert(line);
  std::multiset<std::string> want;
  std::istringstream sa(la + lb + "tail-without-newline\n");
  for (std::string line; std::getline(sa, line);) want.insert(line);
  CHECK(got == want);
  // Size rotation happened only at line boundaries.
  for (auto& e : fs::directory_iterator(rig.tmp.path)) {
    std::string s = readFile(e.path());
    CHECK(s.size() <= 4096);
    CHECK(s.back() == '\n');
  }
  CHECK(rig.segmentSizes().size() > 3);
}

namespace {

// The continuation marker of connection `id` (docs/OPERATIONS.md, "Long lines").
std::string marker(uint64_t id) {
  return "\x1e"
         "c" +
         std::to_string(id) + "+";
}

// The length of the marker at the start of `line` (0 when none); its id goes to `*id`.
size_t leadingMarker(std::string_view line, std::string* id) {
  if (line.size() < 4 || line[0] != '\x1e' || line[1] != 'c') return 0;
  size_t i = 2;
  while (i < line.size() && line[i] >= '0' && line[i] <= '9') ++i;
  if (i == 2 || i == line.size() || line[i] != '+') return 0;
  *id = std::string(line.substr(2, i - 2));
  return i + 1;
}

// The length of the marker at the end of `line` (0 when none); its id goes to `*id`.
size_t trailingMarker(std::string_view line, std::string* id) {
  size_t rs = line.rfind('\x1e');
  if (rs == std::string_view::npos) return 0;
  std::string_view tail = line.substr(rs);
  std::string tid;
  if (leadingMarker(tail, &tid) != tail.size()) return 0;
  *id = tid;
  return tail.size();
}

// The archive's lines with the pieces of cut lines joined, as the awk program in
// docs/OPERATIONS.md does: a piece that begins with a marker is appended to what its connection
// left open; one that ends with a marker stays open. Each line without its '\n'.
std::vector<std::string> joinPieces(const std::string& archive) {
  std::vector<std::string> out;
  std::map<std::string, std::string> open;
  size_t start = 0;
  while (start < archive.size()) {
    size_t nl = archive.find('\n', start);
    REQUIRE(nl != std::string::npos);  // the framer ends every line with '\n'
    std::string line = archive.substr(start, nl - start);
    start = nl + 1;
    std::string id;
    if (size_t m = leadingMarker(line, &id)) {
      line = open[id] + line.substr(m);
      open.erase(id);
    }
    if (size_t m = trailingMarker(line, &id)) {
      if (open.count(id)) out.push_back(open[id]);
      open[id] = line.substr(0, line.size() - m);
      continue;
    }
    out.push_back(line);
  }
  for (auto& [id, rest] : open) out.push_back(rest);
  return out;
}

// The lines of `text`, each without its '\n' (a last one without '\n' too).
std::vector<std::string> linesOf(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    if (nl == std::string::npos) nl = text.size();
    out.push_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  return out;
}

// The longest line of `archive`, its '\n' counted.
size_t longestLine(const std::string& archive) {
  size_t longest = 0, start = 0;
  while (start < archive.size()) {
    size_t nl = archive.find('\n', start);
    size_t end = nl == std::string::npos ? archive.size() : nl + 1;
    longest = std::max(longest, end - start);
    start = end;
  }
  return longest;
}

// Feeds `text` to `f` in slices of `slice` bytes (0: all at once), then ends the stream.
void feed(LineFramer& f, const std::string& text, size_t slice = 0) {
  if (slice == 0) slice = text.size();
  for (size_t off = 0; off < text.size(); off += slice) {
    REQUIRE(f.fromBuffer(text.data() + off, std::min(slice, text.size() - off)).status ==
            IoStatus::Ok);
  }
  REQUIRE(f.finish().status == IoStatus::Ok);
}

// What one framer with `max_line` and connection id `id` archives for `text` fed in `slice`s.
std::string frame(const std::string& text, size_t max_line, uint64_t id, size_t slice = 0,
                  uint64_t* split = nullptr) {
  Rig rig;
  {
    SegmentChain chain(rig.cfg, rig.dir, NameVars{"t"}, rig.sys, rig.metrics);
    LineFramer f(chain, id, max_line, rig.metrics);
    feed(f, text, slice);
  }
  if (split != nullptr) *split = rig.metrics.lines_split;
  return rig.archived();
}

}  // namespace

TEST_CASE("a line longer than max_line is cut into marked pieces of at most max_line", "[lines]") {
  // A 250-byte line arriving whole with its '\n'; max_line 100, connection 7 (marker "\x1ec7+",
  // 4 bytes): the first piece keeps 95 bytes, a middle one 91, the last the rest.
  const std::string m = marker(7);
  const std::string line = payload(250, 1);
  std::string safe = line;
  for (char& c : safe) {
    if (c == '\n' || c == '\x1e') c = '.';
  }
  uint64_t split = 0;
  const std::string got = frame(safe + "\n", 100, 7, 0, &split);
  CHECK(got == safe.substr(0, 95) + m + "\n" + m + safe.substr(95, 91) + m + "\n" + m +
                   safe.substr(186) + "\n");
  CHECK(longestLine(got) == 100);
  CHECK(joinPieces(got) == std::vector<std::string>{safe});
  CHECK(split == 1);  // one line cut (into three pieces)
}

TEST_CASE("max_line counts the newline: lines of max_line - 1, max_line and max_line + 1 bytes",
          "[lines]") {
  constexpr size_t kMax = 100;
  const std::string m = marker(3);
  const std::string a(kMax - 2, 'a');  // with '\n': 99
  const std::string b(kMax - 1, 'b');  // 100
  const std::string c(kMax, 'c');      // 101: cut, 95 + marker + '\n', then marker + 5 + '\n'
  const std::string text = a + "\n" + b + "\n" + c + "\n" + "end\n";
  const std::string want = a + "\n" + b + "\n" + c.substr(0, kMax - 1 - m.size()) + m + "\n" + m +
                           c.substr(kMax - 1 - m.size()) + "\n" + "end\n";
  for (size_t slice : {size_t{0}, size_t{1}, size_t{7}, kMax - 1, kMax, kMax + 1}) {
    INFO("slices of " << slice);
    uint64_t split = 0;
    CHECK(frame(text, kMax, 3, slice, &split) == want);
    CHECK(split == 1);
  }
  // A last line without '\n' gets one, and counts it too.
  CHECK(frame(b, kMax, 3) == b + "\n");
  CHECK(frame(c, kMax, 3) ==
        c.substr(0, kMax - 1 - m.size()) + m + "\n" + m + c.substr(kMax - 1 - m.size()) + "\n");
}

TEST_CASE("a long line among short ones, fed whole, in odd slices or byte by byte, joins back",
          "[lines]") {
  constexpr size_t kMax = 128;
  // Short lines around long ones; line ends at every distance from a cut; an unterminated long
  // last line (finish() ends it).
  std::string text;
  for (size_t len : {0,   5,   500, 3,   127, 126, 128, 129, 1000, 0, 0,    250, 251,
                     252, 253, 254, 255, 256, 257, 258, 259, 260,  1, 4000, 2,   700}) {
    std::string line = payload(len, len + 11);
    for (char& ch : line) {
      if (ch == '\n' || ch == '\x1e') ch = '#';
    }
    text += line + "\n";
  }
  text += std::string(333, 'z');  // no '\n'
  const std::string whole = frame(text, kMax, 42, 0);
  CHECK(longestLine(whole) <= kMax);
  CHECK(joinPieces(whole) == linesOf(text));
  for (size_t slice : {1, 2, 3, 63, 64, 127, 128, 129, 4096}) {
    INFO("slices of " << slice);
    CHECK(frame(text, kMax, 42, slice) == whole);
  }
}

TEST_CASE("pieces of concurrent connections interleave and join back per connection", "[lines]") {
  // Three connections (one with the largest id, whose marker is 23 bytes), max_line 64 (the
  // config's minimum: a middle piece then carries 17 bytes), segments of 4 KiB: pieces land
  // among other connections' lines and across segments.
  constexpr size_t kMax = 64;
  Rig rig(4096);
  const std::vector<uint64_t> ids = {1, 99, UINT64_MAX};
  std::vector<std::string> texts(ids.size());
  {
    SegmentChain chain(rig.cfg, rig.dir, NameVars{"t"}, rig.sys, rig.metrics);
    std::vector<std::unique_ptr<LineFramer>> framers;
    for (uint64_t id : ids)
      framers.push_back(std::make_unique<LineFramer>(chain, id, kMax, rig.metrics));
    for (size_t k = 0; k < ids.size(); ++k) {
      std::string sizes = payload(400, 100 + k);
      for (size_t i = 0; i < 400; ++i) {
        size_t len = static_cast<unsigned char>(sizes[i]) % 4 == 0
                         ? static_cast<unsigned char>(sizes[i]) * 3  // up to 765
                         : static_cast<unsigned char>(sizes[i]) % 70;
        std::string line = payload(len, 1000 * k + i);
        for (char& ch : line) {
          if (ch == '\n' || ch == '\x1e') ch = '=';
        }
        // Appended piece by piece: GCC 12 at -O3 misjudges `"L" + std::to_string(k)`
        // (-Wstringop-overflow, a false positive).
        texts[k] += 'L';
        texts[k] += std::to_string(k);
        texts[k] += ' ';
        texts[k] += line;
        texts[k] += '\n';
      }
    }
    std::vector<size_t> off(ids.size(), 0);
    std::string steps = payload(100000, 5);
    size_t step = 0;
    bool more = true;
    while (more) {
      more = false;
      for (size_t k = 0; k < ids.size(); ++k) {
        size_t n = std::min<size_t>(1 + static_cast<unsigned char>(steps[step++ % steps.size()]),
                                    texts[k].size() - off[k]);
        if (n == 0) continue;
        REQUIRE(framers[k]->fromBuffer(texts[k].data() + off[k], n).status == IoStatus::Ok);
        off[k] += n;
        more = true;
      }
    }
    for (auto& f : framers) REQUIRE(f->finish().status == IoStatus::Ok);
    framers.clear();
    chain.rotate();
  }
  // Segments in the order written (seg-0, seg-1, ..., seg-10: by number, not by name).
  std::map<int, fs::path> segs;
  for (auto& e : fs::directory_iterator(rig.tmp.path)) {
    std::string name = e.path().filename().string();
    REQUIRE(name.rfind("seg-", 0) == 0);
    segs[std::stoi(name.substr(4))] = e.path();
  }
  REQUIRE(segs.size() > 3);
  std::string all;
  for (auto& [seq, p] : segs) all += readFile(p);
  CHECK(longestLine(all) <= kMax);
  CHECK(all.find(marker(UINT64_MAX)) != std::string::npos);
  // Joined, each connection's lines come back in order and byte for byte.
  std::vector<std::string> per(ids.size());
  for (const std::string& line : joinPieces(all)) {
    REQUIRE(line.size() >= 2);
    size_t k = static_cast<size_t>(line[1] - '0');
    REQUIRE(k < ids.size());
    per[k] += line + "\n";
  }
  for (size_t k = 0; k < ids.size(); ++k) {
    INFO("connection " << ids[k]);
    CHECK(per[k] == texts[k]);
  }
}

TEST_CASE("a pipe that becomes available mid-stream never lets spliced bytes overtake copied ones",
          "[pump]") {
  Rig rig;
  PipePool pool(rig.sys, 64 * 1024, 4);
  // The first pipe2 fails (EMFILE): that wake-up copies; later ones may splice again.
  rig.sys.pipe_fails = [](int call) { return call == 1; };
  std::string data = payload(2 << 20, 9);
  {
    SegmentChain chain(rig.cfg, rig.dir, NameVars{"t"}, rig.sys, rig.metrics);
    Pump pump(rig.server.get(), chain, pool, rig.sys, rig.metrics);
    auto t = writer(rig.client.get(), data, data.size());
    pollfd p{rig.server.get(), POLLIN, 0};
    ::poll(&p, 1, 1000);  // the first wake-up finds bytes, and no pipe
    pumpToEnd(pump, rig.server.get(), 1 << 20);
    t.join();
  }
  CHECK(rig.metrics.copy_fallback_bytes > 0);
  CHECK(rig.sys.pipe_calls >= 2);
  CHECK(rig.archived() == data);
}

TEST_CASE("a line-framed pump keeps no copy buffer while idle with a partial line",
          "[pump][lines]") {
  Rig rig;
  SegmentChain chain(rig.cfg, rig.dir, NameVars{"t"}, rig.sys, rig.metrics);
  LineFramer framer(chain, 1, 1 << 20, rig.metrics);
  PipePool pool(rig.sys, 65536, 16);
  Pump pump(rig.server.get(), framer, pool, rig.sys, rig.metrics);
  REQUIRE(pump.copying());  // the framer must see the bytes
  const std::string first = "one whole line\nand a partial";
  REQUIRE(::write(rig.client.get(), first.data(), first.size()) ==
          static_cast<ssize_t>(first.size()));
  PumpResult r = pump.run(256 * 1024);
  REQUIRE(r.status == PumpStatus::Drained);
  CHECK(r.moved == first.size());
  // The partial line waits in the framer; the pump's 64 KiB buffer is given back.
  CHECK_FALSE(pump.holdsCopyBuffer());
  const std::string rest = " line, then more";
  REQUIRE(::write(rig.client.get(), rest.data(), rest.size()) == static_cast<ssize_t>(rest.size()));
  rig.client.reset();
  pumpToEnd(pump, rig.server.get());
  CHECK_FALSE(pump.holdsCopyBuffer());
  chain.rotate();
  CHECK(rig.archived() == first + rest + "\n");
}
