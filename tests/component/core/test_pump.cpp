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

TEST_CASE("a line longer than max_line is split and counted", "[lines]") {
  Rig rig;
  SegmentChain chain(rig.cfg, rig.dir, NameVars{"t"}, rig.sys, rig.metrics);
  LineFramer f(chain, 1, 100, rig.metrics);
  std::string big(250, 'x');
  REQUIRE(f.fromBuffer(big.data(), big.size()).status == IoStatus::Ok);
  REQUIRE(f.finish().status == IoStatus::Ok);
  chain.rotate();
  CHECK(rig.archived() ==
        std::string(100, 'x') + "\n" + std::string(100, 'x') + "\n" + std::string(50, 'x') + "\n");
  CHECK(rig.metrics.lines_split == 2);
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
