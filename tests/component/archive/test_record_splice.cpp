// framing: octet_counted: record bodies spliced socket -> pipe -> segment (RecordFramer::pull)
// on real socketpairs, pipes and segment files, with faults forced through the syscall seam:
// short splices in both legs, EAGAIN in the middle of a body, the end of the stream in the middle
// of a body (kept as a frame cut short, as the copy path keeps it), a pipe that takes no more, a
// segment file that refuses splice, a record that does not fit in the segment's room, small and
// large records mixed, and two connections writing one shared chain. Every archive is compared
// byte for byte, and the bytes are counted by the path they took.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

#include "fixtures.hpp"
#include "spliced/archive/record_framer.hpp"
#include "spliced/archive/segment_chain.hpp"
#include "spliced/core/pipe_pool.hpp"
#include "spliced/core/pump.hpp"

using namespace spliced;
using namespace spliced::testing;
namespace fs = std::filesystem;

namespace {

struct Conn {
  UniqueFd client;  // the test writes here
  UniqueFd server;  // the pump reads here (non-blocking)
  Conn() {
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    client.reset(sv[0]);
    server.reset(sv[1]);
    ::fcntl(server.get(), F_SETFL, O_NONBLOCK);
    int big = 4 << 20;
    ::setsockopt(client.get(), SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
  }
  void send(const std::string& s) const {
    size_t off = 0;
    while (off < s.size()) {
      ssize_t n = ::send(client.get(), s.data() + off, s.size() - off, MSG_NOSIGNAL);
      REQUIRE(n > 0);
      off += static_cast<size_t>(n);
    }
  }
};

struct Rig {
  TempDir tmp;
  FaultySysCalls sys;
  RouteMetrics metrics;
  ArchiveConfig cfg;
  ArchiveDir dir;

  explicit Rig(RecordOutput output = RecordOutput::AsReceived, uint64_t max_bytes = 0) {
    cfg.dir = tmp.path;
    cfg.name = NameTemplate::compile("seg-{seq}.log").value();
    cfg.rotate.max_bytes = max_bytes;
    cfg.framing = Framing::OctetCounted;
    cfg.output = output;
    dir.reset(UniqueFd(::open(tmp.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)));
  }

  // Closed segments, sorted by name (seg-0 .. seg-9 here).
  std::vector<std::string> segments() const {
    std::vector<fs::path> files;
    for (auto& e : fs::directory_iterator(tmp.path)) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    std::vector<std::string> out;
    for (auto& f : files) {
      REQUIRE(f.extension() != ".open");
      out.push_back(readFile(f));
    }
    return out;
  }
  std::string archived() const {
    std::string all;
    for (auto& s : segments()) all += s;
    return all;
  }
  // Every byte read went one way or the other.
  void checkCounted() const {
    CHECK(metrics.framing_copied_bytes + metrics.framing_spliced_bytes == metrics.bytes_in);
    CHECK(metrics.copy_fallback_bytes == metrics.framing_copied_bytes);
  }
};

std::string frameOf(const std::string& msg) { return std::to_string(msg.size()) + " " + msg; }

// A message of `n` bytes, different per seed, with newlines and spaces in it.
std::string message(size_t n, uint64_t seed) {
  std::string m = payload(n, seed);
  for (size_t i = 0; i < n; i += 97) m[i] = i % 2 ? '\n' : ' ';
  return m;
}

// The messages of an octet-counted stream; fails the test when it is not one.
std::vector<std::string> messagesOf(const std::string& s) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t sp = s.find(' ', pos);
    REQUIRE(sp != std::string::npos);
    REQUIRE(sp > pos);
    size_t len = std::stoul(s.substr(pos, sp - pos));
    REQUIRE(sp + 1 + len <= s.size());
    out.push_back(s.substr(sp + 1, len));
    pos = sp + 1 + len;
  }
  return out;
}

// Runs the pump until the end of the stream, waiting for the socket between wake-ups and
// retrying a sink that refused (as the session's backoff does).
void pumpToEnd(Pump& pump, int fd, size_t budget = 256 * 1024) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  PumpResult r = pump.run(budget);
  while (r.status != PumpStatus::Eof) {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    REQUIRE(r.status != PumpStatus::SourceError);
    if (r.status == PumpStatus::SinkBlocked || r.status == PumpStatus::SinkError) {
      r = pump.flush();
      if (r.status == PumpStatus::Drained) r = pump.run(budget);
      continue;
    }
    if (r.status == PumpStatus::Drained) {
      pollfd p{fd, POLLIN, 0};
      ::poll(&p, 1, 100);
    }
    r = pump.run(budget);
  }
}

// `msgs` sent as one octet-counted stream over one connection into a chain of its own;
// returns what was sent.
std::string archiveStream(Rig& rig, const std::vector<std::string>& msgs, PipePool& pool,
                          size_t chunk = 1 << 20) {
  std::string stream;
  for (auto& m : msgs) stream += frameOf(m);
  Conn conn;
  {
    SegmentChain chain(rig.cfg, rig.dir, NameVars{"t"}, rig.sys, rig.metrics);
    RecordFramer f(chain, 1, rig.cfg, rig.metrics);
    Pump pump(conn.server.get(), f, pool, rig.sys, rig.metrics);
    auto t = writer(conn.client.get(), stream, chunk);
    pumpToEnd(pump, conn.server.get());
    t.join();
    CHECK(pump.heldBytes() == 0);
  }
  return stream;
}

// As archiveStream, but the whole stream waits in the socket before the pump runs: every record
// starts at a peek.
std::string archiveWaiting(Rig& rig, const std::vector<std::string>& msgs, PipePool& pool) {
  std::string stream;
  for (auto& m : msgs) stream += frameOf(m);
  Conn conn;
  conn.send(stream);
  conn.client.reset();
  {
    SegmentChain chain(rig.cfg, rig.dir, NameVars{"t"}, rig.sys, rig.metrics);
    RecordFramer f(chain, 1, rig.cfg, rig.metrics);
    Pump pump(conn.server.get(), f, pool, rig.sys, rig.metrics);
    pumpToEnd(pump, conn.server.get());
    CHECK(pump.heldBytes() == 0);
  }
  return stream;
}

std::string asLines(const std::vector<std::string>& msgs) {
  std::string out;
  for (auto& m : msgs) out += m + "\n";
  return out;
}

size_t headerBytes(const std::vector<std::string>& msgs) {
  size_t n = 0;
  for (auto& m : msgs) n += std::to_string(m.size()).size() + 1;
  return n;
}

}  // namespace

TEST_CASE("octet counted: large records are spliced whole, header and body, into the segment",
          "[records][splice]") {
  std::vector<std::string> msgs;
  for (size_t i = 0; i < 8; ++i) msgs.push_back(message(RecordFramer::kSpliceMin + i * 1500, i));
  SECTION("output: as_received: not a byte of them is copied") {
    Rig rig;
    PipePool pool(rig.sys, 64 * 1024, 4);
    std::string stream;
    for (auto& m : msgs) stream += frameOf(m);
    Conn conn;
    conn.send(stream);  // all of it waits in the socket: every record starts at a peek
    conn.client.reset();
    {
      SegmentChain chain(rig.cfg, rig.dir, NameVars{"t"}, rig.sys, rig.metrics);
      RecordFramer f(chain, 1, rig.cfg, rig.metrics);
      Pump pump(conn.server.get(), f, pool, rig.sys, rig.metrics);
      pumpToEnd(pump, conn.server.get());
    }
    CHECK(rig.archived() == stream);
    CHECK(rig.metrics.framing_spliced_bytes == stream.size());
    CHECK(rig.metrics.framing_copied_bytes == 0);
    CHECK(rig.metrics.copy_fallback_bytes == 0);
    CHECK(rig.sys.calls(Call::Pwrite) == 0);
    rig.checkCounted();
    CHECK(pool.inUse() == 0);
  }
  SECTION("output: lines: only the headers are copied; the newline goes into the pipe") {
    Rig rig(RecordOutput::Lines);
    PipePool pool(rig.sys, 64 * 1024, 4);
    std::string stream;
    for (auto& m : msgs) stream += frameOf(m);
    Conn conn;
    conn.send(stream);
    conn.client.reset();
    {
      SegmentChain chain(rig.cfg, rig.dir, NameVars{"t"}, rig.sys, rig.metrics);
      RecordFramer f(chain, 1, rig.cfg, rig.metrics);
      Pump pump(conn.server.get(), f, pool, rig.sys, rig.metrics);
      pumpToEnd(pump, conn.server.get());
    }
    CHECK(rig.archived() == asLines(msgs));
    CHECK(rig.metrics.framing_copied_bytes == headerBytes(msgs));
    CHECK(rig.metrics.framing_spliced_bytes == stream.size() - headerBytes(msgs));
    CHECK(rig.sys.calls(Call::Pwrite) == 0);
    rig.checkCounted();
  }
}

TEST_CASE("octet counted: small and large records mixed land whole and in order",
          "[records][splice]") {
  std::vector<std::string> msgs;
  for (size_t i = 0; i < 120; ++i) {
    size_t n = i % 3 == 0 ? 20000 + i * 7 : i % 3 == 1 ? 40 + i : 3000 + i;
    msgs.push_back(message(n, 100 + i));
  }
  for (size_t chunk : {size_t{1000}, size_t{4096}, size_t{65536}, size_t{1} << 20}) {
    INFO("sent in writes of " << chunk);
    Rig rig;
    // Slots enough for a 20 KB body in writes of 1,000 bytes (a socket buffer per slot).
    PipePool pool(rig.sys, 1 << 20, 4);
    std::string stream = archiveStream(rig, msgs, pool, chunk);
    CHECK(rig.archived() == stream);
    CHECK(rig.metrics.framing_spliced_bytes > 0);
    rig.checkCounted();
    Rig lines(RecordOutput::Lines);
    archiveStream(lines, msgs, pool, chunk);
    CHECK(lines.archived() == asLines(msgs));
    lines.checkCounted();
  }
}

TEST_CASE("octet counted: short splices in both legs keep spliced records whole",
          "[records][splice]") {
  std::vector<std::string> msgs;
  for (size_t i = 0; i < 10; ++i) msgs.push_back(message(9000 + i * 333, 200 + i));
  for (auto output : {RecordOutput::AsReceived, RecordOutput::Lines}) {
    Rig rig(output);
    int n = 0;
    rig.sys.hook = [&n](Call c, size_t& len) {
      ++n;
      if (c == Call::SpliceFromSocket || c == Call::SpliceToFile) {
        len = std::min<size_t>(len, 1 + (static_cast<size_t>(n) * 7919) % 3000);
      }
      return 0;
    };
    PipePool pool(rig.sys, 64 * 1024, 4);
    std::string stream = archiveStream(rig, msgs, pool);
    CHECK(rig.archived() == (output == RecordOutput::Lines ? asLines(msgs) : stream));
    CHECK(rig.metrics.framing_spliced_bytes > 0);
    CHECK(rig.metrics.frames_incomplete == 0);
    rig.checkCounted();
  }
}

TEST_CASE("octet counted: EAGAIN in the middle of a spliced body writes nothing until it is whole",
          "[records][splice]") {
  for (auto output : {RecordOutput::AsReceived, RecordOutput::Lines}) {
    Rig rig(output);
    PipePool pool(rig.sys, 64 * 1024, 4);
    const std::string m = message(10000, 7);
    const std::string f = frameOf(m);
    Conn conn;
    {
      SegmentChain chain(rig.cfg, rig.dir, NameVars{"t"}, rig.sys, rig.metrics);
      RecordFramer framer(chain, 1, rig.cfg, rig.metrics);
      Pump pump(conn.server.get(), framer, pool, rig.sys, rig.metrics);
      conn.send(f.substr(0, 5000));
      PumpResult r = pump.run(1 << 20);
      CHECK(r.status == PumpStatus::Drained);
      CHECK(r.moved == 5000);
      CHECK(chain.segmentBytes() == 0);  // half a record: nothing written
      // The half record waits in the pipe (output: lines has read and dropped its header).
      CHECK(pump.heldBytes() == (output == RecordOutput::Lines ? 4994 : 5000));
      CHECK(pool.inUse() == 1);
      conn.send(f.substr(5000));
      r = pump.run(1 << 20);
      CHECK(r.status == PumpStatus::Drained);
      CHECK(chain.segmentBytes() == (output == RecordOutput::Lines ? m.size() + 1 : f.size()));
      CHECK(pump.heldBytes() == 0);
      CHECK(pool.inUse() == 0);
      conn.client.reset();
      CHECK(pump.run(1 << 20).status == PumpStatus::Eof);
    }
    CHECK(rig.archived() == (output == RecordOutput::Lines ? m + "\n" : f));
    CHECK(rig.metrics.framing_spliced_bytes ==
          m.size() + (output == RecordOutput::Lines ? 0 : f.size() - m.size()));
    rig.checkCounted();
  }
}

TEST_CASE("octet counted: the end of the stream in the middle of a spliced body keeps what came",
          "[records][splice]") {
  for (auto output : {RecordOutput::AsReceived, RecordOutput::Lines}) {
    Rig rig(output);
    PipePool pool(rig.sys, 64 * 1024, 4);
    const std::string whole = message(6000, 1);
    const std::string cut = message(12000, 2);
    Conn conn;
    {
      SegmentChain chain(rig.cfg, rig.dir, NameVars{"t"}, rig.sys, rig.metrics);
      RecordFramer framer(chain, 1, rig.cfg, rig.metrics);
      Pump pump(conn.server.get(), framer, pool, rig.sys, rig.metrics);
      conn.send(frameOf(whole) + "12000 " + cut.substr(0, 7000));
      conn.client.reset();
      pumpToEnd(pump, conn.server.get());
      CHECK(pool.inUse() == 0);
    }
    // As the copy path keeps a frame cut short: the bytes that came, a header that says how
    // many (or a newline).
    if (output == RecordOutput::Lines) {
      CHECK(rig.archived() == whole + "\n" + cut.substr(0, 7000) + "\n");
    } else {
      CHECK(rig.archived() == frameOf(whole) + frameOf(cut.substr(0, 7000)));
    }
    CHECK(rig.metrics.frames_incomplete == 1);
    rig.checkCounted();
  }
}

TEST_CASE("octet counted: a reset in the middle of a spliced body keeps what came",
          "[records][splice]") {
  Rig rig;
  PipePool pool(rig.sys, 64 * 1024, 4);
  const std::string cut = message(12000, 3);
  Conn conn;
  {
    SegmentChain chain(rig.cfg, rig.dir, NameVars{"t"}, rig.sys, rig.metrics);
    RecordFramer framer(chain, 1, rig.cfg, rig.metrics);
    Pump pump(conn.server.get(), framer, pool, rig.sys, rig.metrics);
    conn.send("12000 " + cut.substr(0, 5000));
    CHECK(pump.run(1 << 20).status == PumpStatus::Drained);
    int calls = 0;
    rig.sys.hook = [&calls](Call c, size_t&) {
      if (c == Call::SpliceFromSocket && ++calls == 1) {
        errno = ECONNRESET;
        return -1;
      }
      return 0;
    };
    conn.send(cut.substr(5000, 100));
    PumpResult r = pump.run(1 << 20);
    CHECK(r.status == PumpStatus::SourceError);
    CHECK(r.err == ECONNRESET);
    CHECK(pool.inUse() == 0);
    r = pump.endStream();  // the session's finishStream
    CHECK(r.status != PumpStatus::SinkBlocked);
    CHECK(r.status != PumpStatus::SinkError);
  }
  CHECK(rig.archived() == frameOf(cut.substr(0, 5000)));
  CHECK(rig.metrics.frames_incomplete == 1);
  rig.checkCounted();
}

TEST_CASE("octet counted: a pipe that takes no more in the middle of a body: the copy path goes on",
          "[records][splice]") {
  Rig rig;
  PipePool pool(rig.sys, 64 * 1024, 4);
  std::vector<std::string> msgs;
  for (size_t i = 0; i < 6; ++i) msgs.push_back(message(20000, 300 + i));
  // The second and third splices from the socket say EAGAIN while bytes wait: the pipe is "full"
  // (one EAGAIN alone is tried again: see the next test).
  int calls = 0;
  rig.sys.hook = [&calls](Call c, size_t& len) {
    if (c != Call::SpliceFromSocket) return 0;
    ++calls;
    if (calls == 1) len = std::min<size_t>(len, 5000);
    if (calls == 2 || calls == 3) {
      errno = EAGAIN;
      return -1;
    }
    return 0;
  };
  std::string stream;
  for (auto& m : msgs) stream += frameOf(m);
  Conn conn;
  conn.send(stream);
  conn.client.reset();
  {
    SegmentChain chain(rig.cfg, rig.dir, NameVars{"t"}, rig.sys, rig.metrics);
    RecordFramer f(chain, 1, rig.cfg, rig.metrics);
    Pump pump(conn.server.get(), f, pool, rig.sys, rig.metrics);
    pumpToEnd(pump, conn.server.get());
  }
  CHECK(rig.archived() == stream);
  // The pipe took 5,000 bytes: records as long as these are copied from then on.
  CHECK(rig.metrics.framing_spliced_bytes == 0);
  CHECK(rig.metrics.framing_copied_bytes == stream.size());
  rig.checkCounted();
}

TEST_CASE(
    "octet counted: one EAGAIN while bytes wait (they came just after it) is tried again, "
    "the record stays spliced",
    "[records][splice]") {
  Rig rig;
  PipePool pool(rig.sys, 64 * 1024, 4);
  std::vector<std::string> msgs;
  for (size_t i = 0; i < 6; ++i) msgs.push_back(message(20000, 400 + i));
  // The second splice from the socket says EAGAIN although bytes wait, as when they came between
  // the splice and the peek that follows it; later EAGAINs are the kernel's own.
  int calls = 0;
  rig.sys.hook = [&calls](Call c, size_t& len) {
    if (c != Call::SpliceFromSocket) return 0;
    ++calls;
    if (calls == 1) len = std::min<size_t>(len, 5000);
    if (calls == 2) {
      errno = EAGAIN;
      return -1;
    }
    return 0;
  };
  std::string stream;
  size_t bodies = 0;
  for (auto& m : msgs) {
    stream += frameOf(m);
    bodies += m.size();
  }
  Conn conn;
  conn.send(stream);
  conn.client.reset();
  {
    SegmentChain chain(rig.cfg, rig.dir, NameVars{"t"}, rig.sys, rig.metrics);
    RecordFramer f(chain, 1, rig.cfg, rig.metrics);
    Pump pump(conn.server.get(), f, pool, rig.sys, rig.metrics);
    pumpToEnd(pump, conn.server.get());
  }
  CHECK(calls > 2);
  CHECK(rig.archived() == stream);
  CHECK(rig.metrics.framing_spliced_bytes == stream.size());  // header and body, every record
  CHECK(rig.metrics.framing_copied_bytes == 0);
  CHECK(bodies < stream.size());
  rig.checkCounted();
}

TEST_CASE("octet counted: a segment file that refuses splice gets the record copied, whole",
          "[records][splice]") {
  for (auto output : {RecordOutput::AsReceived, RecordOutput::Lines}) {
    Rig rig(output);
    PipePool pool(rig.sys, 64 * 1024, 4);
    rig.sys.hook = [](Call c, size_t&) {
      if (c == Call::SpliceToFile) {
        errno = EINVAL;
        return -1;
      }
      return 0;
    };
    std::vector<std::string> msgs;
    for (size_t i = 0; i < 4; ++i) msgs.push_back(message(8000 + i, 400 + i));
    std::string stream = archiveStream(rig, msgs, pool);
    CHECK(rig.archived() == (output == RecordOutput::Lines ? asLines(msgs) : stream));
    CHECK(rig.metrics.framing_spliced_bytes == 0);
    CHECK(rig.sys.calls(Call::SpliceToFile) == 1);  // then never tried again
    rig.checkCounted();
  }
}

TEST_CASE("octet counted: a spliced record that does not fit the segment's room starts the next",
          "[records][splice][rotation]") {
  std::vector<std::string> msgs;
  for (size_t i = 0; i < 12; ++i) msgs.push_back(message(i % 2 ? 9000 : 5000, 500 + i));
  for (auto output : {RecordOutput::AsReceived, RecordOutput::Lines}) {
    Rig rig(output, 16 * 1024);
    PipePool pool(rig.sys, 64 * 1024, 4);
    std::string stream = archiveWaiting(rig, msgs, pool);
    auto segs = rig.segments();
    CHECK(segs.size() > 3);
    std::vector<std::string> got;
    for (auto& s : segs) {
      CHECK(s.size() <= 16 * 1024);
      if (output == RecordOutput::Lines) {
        // Each segment ends at a record's newline; the messages hold none at their ends.
        CHECK(s.back() == '\n');
      } else {
        for (auto& m : messagesOf(s)) got.push_back(m);  // each segment whole records
      }
    }
    if (output == RecordOutput::AsReceived) CHECK(got == msgs);
    CHECK(rig.archived() == (output == RecordOutput::Lines ? asLines(msgs) : stream));
    // Every record spliced (output: lines reads the headers).
    CHECK(rig.metrics.framing_spliced_bytes ==
          stream.size() - (output == RecordOutput::Lines ? headerBytes(msgs) : 0));
    rig.checkCounted();
  }
}

TEST_CASE("octet counted: records over max_line stay on the copy path, split as before",
          "[records][splice]") {
  Rig rig;
  rig.cfg.max_line = 8192;
  PipePool pool(rig.sys, 64 * 1024, 4);
  std::vector<std::string> msgs = {message(20000, 1), message(5000, 2)};
  archiveStream(rig, msgs, pool);
  CHECK(rig.metrics.frames_oversize == 1);
  auto pieces = messagesOf(rig.archived());
  CHECK(pieces.size() == 4);  // 20,000 bytes in three pieces of at most 8 KiB, then 5,000
  CHECK(pieces.back() == msgs[1]);
  for (auto& p : pieces) CHECK(p.size() + 5 <= 8192);
  CHECK(rig.metrics.framing_spliced_bytes <= 5005);  // at most the second one
  rig.checkCounted();
}

TEST_CASE("octet counted: a shared chain never interleaves a spliced record with another's",
          "[records][splice][shared]") {
  for (auto output : {RecordOutput::AsReceived, RecordOutput::Lines}) {
    Rig rig(output, 256 * 1024);
    PipePool pool(rig.sys, 64 * 1024, 8);
    std::vector<std::string> a_msgs, b_msgs;
    for (size_t i = 0; i < 40; ++i) {
      // Built piece by piece: GCC 12 at -O3 reports a false -Wstringop-overflow on "A" + string.
      std::string a_msg(1, 'A'), b_msg(1, 'B');
      a_msg += message(i % 2 ? 15000 : 300, 600 + i);
      b_msg += message(i % 3 ? 50 : 7000, 700 + i);
      a_msgs.push_back(std::move(a_msg));
      b_msgs.push_back(std::move(b_msg));
    }
    std::string a_stream, b_stream;
    for (auto& m : a_msgs) a_stream += frameOf(m);
    for (auto& m : b_msgs) b_stream += frameOf(m);
    Conn a, b;
    {
      SegmentChain chain(rig.cfg, rig.dir, NameVars{"t"}, rig.sys, rig.metrics);
      RecordFramer fa(chain, 1, rig.cfg, rig.metrics);
      RecordFramer fb(chain, 2, rig.cfg, rig.metrics);
      Pump pa(a.server.get(), fa, pool, rig.sys, rig.metrics);
      Pump pb(b.server.get(), fb, pool, rig.sys, rig.metrics);
      // Slices of the two streams arrive in turn, so each pump stops in the middle of records.
      size_t ao = 0, bo = 0;
      while (ao < a_stream.size() || bo < b_stream.size()) {
        size_t an = std::min<size_t>(7001, a_stream.size() - ao);
        size_t bn = std::min<size_t>(1333, b_stream.size() - bo);
        if (an) a.send(a_stream.substr(ao, an));
        if (bn) b.send(b_stream.substr(bo, bn));
        ao += an;
        bo += bn;
        CHECK(pa.run(1 << 20).status == PumpStatus::Drained);
        CHECK(pb.run(1 << 20).status == PumpStatus::Drained);
      }
      a.client.reset();
      b.client.reset();
      pumpToEnd(pa, a.server.get());
      pumpToEnd(pb, b.server.get());
    }
    std::vector<std::string> got_a, got_b;
    const std::string all = rig.archived();
    if (output == RecordOutput::Lines) {
      // Messages hold newlines: read them back by their known lengths and first byte.
      size_t pos = 0, ia = 0, ib = 0;
      while (pos < all.size()) {
        const std::string* want = nullptr;
        if (all[pos] == 'A' && ia < a_msgs.size()) want = &a_msgs[ia];
        if (all[pos] == 'B' && ib < b_msgs.size()) want = &b_msgs[ib];
        REQUIRE(want != nullptr);
        REQUIRE(all.compare(pos, want->size() + 1, *want + "\n") == 0);
        pos += want->size() + 1;
        (all[pos - want->size() - 1] == 'A' ? ia : ib)++;
      }
      CHECK(ia == a_msgs.size());
      CHECK(ib == b_msgs.size());
    } else {
      for (auto& m : messagesOf(all)) (m[0] == 'A' ? got_a : got_b).push_back(m);
      CHECK(got_a == a_msgs);
      CHECK(got_b == b_msgs);
    }
    CHECK(rig.metrics.framing_spliced_bytes > 0);
    rig.checkCounted();
  }
}

TEST_CASE("framing: auto splices once it has chosen octet counting", "[records][splice]") {
  Rig rig;
  rig.cfg.framing = Framing::Auto;
  PipePool pool(rig.sys, 1 << 20, 4);
  std::vector<std::string> msgs;
  for (size_t i = 0; i < 8; ++i) msgs.push_back(message(30000 + i, 800 + i));
  // The first read (copied) decides; the record it ends in has the rest of its body spliced,
  // and every later one is spliced whole.
  std::string stream = archiveWaiting(rig, msgs, pool);
  CHECK(rig.archived() == stream);
  CHECK(rig.metrics.framing_auto_octet == 1);
  CHECK(rig.metrics.framing_spliced_bytes >= stream.size() - 64 * 1024);
  rig.checkCounted();
}
