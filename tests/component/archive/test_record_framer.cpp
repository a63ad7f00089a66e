// framing: octet_counted and auto (RecordFramer) on real segment files: records whole whatever
// the read boundaries (partial headers, a record split across reads, EAGAIN between header and
// body on a real socket), rotation only at record boundaries, oversize split or refused,
// malformed headers refused, frames cut short by the end of the stream.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <catch2/catch.hpp>
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

struct Rig {
  TempDir tmp;
  FaultySysCalls sys;
  RouteMetrics metrics;
  ArchiveConfig cfg;
  ArchiveDir dir;

  explicit Rig(uint64_t max_bytes = 0) {
    cfg.dir = tmp.path;
    cfg.name = NameTemplate::compile("seg-{seq}.log").value();
    cfg.rotate.max_bytes = max_bytes;
    cfg.framing = Framing::OctetCounted;
    dir.reset(UniqueFd(::open(tmp.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)));
  }

  // Closed segments, sorted by name.
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
};

std::string frameOf(const std::string& msg) { return std::to_string(msg.size()) + " " + msg; }

// The messages of an octet-counted stream; fails the test when it is not one.
std::vector<std::string> messages(const std::string& s) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < s.size()) {
    size_t sp = s.find(' ', pos);
    REQUIRE(sp != std::string::npos);
    REQUIRE(sp > pos);
    REQUIRE(s[pos] != '0');
    size_t len = std::stoul(s.substr(pos, sp - pos));
    REQUIRE(sp + 1 + len <= s.size());
    out.push_back(s.substr(sp + 1, len));
    pos = sp + 1 + len;
  }
  return out;
}

// Feeds `text` in slices of `slice` bytes (0: all at once), then ends the stream.
void feed(RecordFramer& f, const std::string& text, size_t slice = 0) {
  if (slice == 0) slice = std::max<size_t>(text.size(), 1);
  for (size_t off = 0; off < text.size(); off += slice) {
    REQUIRE(f.fromBuffer(text.data() + off, std::min(slice, text.size() - off)).status ==
            IoStatus::Ok);
  }
  REQUIRE(f.finish().status == IoStatus::Ok);
}

std::string frame(Rig& rig, const std::string& text, size_t slice = 0, uint64_t id = 7) {
  {
    SegmentChain chain(rig.cfg, rig.dir, NameVars{"t"}, rig.sys, rig.metrics);
    RecordFramer f(chain, id, rig.cfg, rig.metrics);
    feed(f, text, slice);
  }
  return rig.archived();
}

// Messages with newlines, spaces, digits and binary bytes in them, 1 to 300 bytes.
std::vector<std::string> sampleMessages() {
  std::vector<std::string> out;
  for (int i = 0; i < 60; ++i) {
    std::string m = "<13>1 2026-01-01T00:00:00Z host app - - - msg " + std::to_string(i);
    if (i % 3 == 0) m += "\nsecond line\n";
    if (i % 5 == 0) m += std::string(static_cast<size_t>(i * 4), static_cast<char>('0' + i % 10));
    if (i % 7 == 0) m += std::string("\0\x1e\xff 12 ", 8);
    out.push_back(m);
  }
  out.push_back("x");
  return out;
}

std::string marker(uint64_t id) { return LineFramer::continuationMarker(id); }

}  // namespace

TEST_CASE("octet counted: records land whole and unchanged, whatever the read boundaries",
          "[records]") {
  const auto msgs = sampleMessages();
  std::string stream;
  for (auto& m : msgs) stream += frameOf(m);
  for (size_t slice : {size_t{0}, size_t{1}, size_t{2}, size_t{3}, size_t{7}, size_t{64}}) {
    INFO("slices of " << slice);
    Rig rig;
    CHECK(frame(rig, stream, slice) == stream);  // as_received: byte for byte
    CHECK(rig.metrics.frames_incomplete == 0);
    Rig lines;
    lines.cfg.output = RecordOutput::Lines;
    std::string want;
    for (auto& m : msgs) want += m + "\n";
    CHECK(frame(lines, stream, slice) == want);
  }
}

TEST_CASE("octet counted: size rotation falls only between records", "[records][rotation]") {
  const auto msgs = sampleMessages();
  std::string stream;
  for (int round = 0; round < 20; ++round) {
    for (auto& m : msgs) stream += frameOf(m);
  }
  Rig rig(4096);
  REQUIRE(frame(rig, stream, 1000) == stream);
  auto segs = rig.segments();
  CHECK(segs.size() > 10);
  size_t total = 0;
  for (auto& s : segs) {
    CHECK(s.size() <= 4096);
    total += messages(s).size();  // each segment is a whole octet-counted stream
  }
  CHECK(total == 20 * msgs.size());
}

TEST_CASE(
    "octet counted: a record is written only once its last byte came (EAGAIN between "
    "header and body, body split across reads)",
    "[records]") {
  Rig rig;
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  UniqueFd client(sv[0]), server(sv[1]);
  ::fcntl(server.get(), F_SETFL, O_NONBLOCK);
  PipePool pool(rig.sys, 64 * 1024, 4);
  std::string seg;
  {
    SegmentChain chain(rig.cfg, rig.dir, NameVars{"t"}, rig.sys, rig.metrics);
    RecordFramer f(chain, 1, rig.cfg, rig.metrics);
    Pump pump(server.get(), f, pool, rig.sys, rig.metrics);
    auto send = [&](const std::string& s) {
      REQUIRE(::write(client.get(), s.data(), s.size()) == static_cast<ssize_t>(s.size()));
      PumpResult r = pump.run(1 << 20);
      REQUIRE(r.status == PumpStatus::Drained);  // read all, then EAGAIN
      REQUIRE(r.moved == s.size());
    };
    send("1");
    send("1 ");  // "11 ": the header, then EAGAIN
    CHECK(chain.segmentBytes() == 0);
    send("hello");
    CHECK(chain.segmentBytes() == 0);  // 5 of 11 bytes: nothing written yet
    send(" world9 ");
    CHECK(chain.segmentBytes() == 14);  // "11 hello world"
    send("partial");
    CHECK(chain.segmentBytes() == 14);
    CHECK(pump.heldBytes() > 0);
    client.reset();
    PumpResult r = pump.run(1 << 20);
    CHECK(r.status == PumpStatus::Eof);
    CHECK(rig.metrics.copy_fallback_bytes == rig.metrics.bytes_in);  // all of it copied
  }
  // The last frame said 9 bytes and 7 came: they are kept, with a header that says 7.
  CHECK(rig.archived() == "11 hello world7 partial");
  CHECK(rig.metrics.frames_incomplete == 1);
}

TEST_CASE("octet counted: an oversize record is split into marked frames of at most max_line",
          "[records]") {
  const std::string big(1000, 'B');
  const std::string stream = frameOf("before") + frameOf(big) + frameOf("after");
  for (size_t slice : {size_t{0}, size_t{1}, size_t{33}}) {
    INFO("slices of " << slice);
    Rig rig;
    rig.cfg.max_line = 100;
    const std::string got = frame(rig, stream, slice, 42);
    auto msgs = messages(got);
    REQUIRE(msgs.size() > 3);
    CHECK(msgs.front() == "before");
    CHECK(msgs.back() == "after");
    std::string joined;
    const std::string m = marker(42);
    for (size_t i = 1; i + 1 < msgs.size(); ++i) {
      CHECK(frameOf(msgs[i]).size() <= 100);
      std::string p = msgs[i];
      if (i > 1) {
        REQUIRE(p.rfind(m, 0) == 0);
        p.erase(0, m.size());
      }
      if (i + 2 < msgs.size()) {
        REQUIRE(p.size() >= m.size());
        REQUIRE(p.substr(p.size() - m.size()) == m);
        p.resize(p.size() - m.size());
      }
      joined += p;
    }
    CHECK(joined == big);
    CHECK(rig.metrics.frames_oversize == 1);
    CHECK(rig.cfg.max_line == 100);

    Rig lines;
    lines.cfg.max_line = 100;
    lines.cfg.output = RecordOutput::Lines;
    const std::string got_lines = frame(lines, stream, slice, 42);
    size_t start = 0, longest = 0;
    while (start < got_lines.size()) {
      size_t nl = got_lines.find('\n', start);
      REQUIRE(nl != std::string::npos);
      longest = std::max(longest, nl + 1 - start);
      start = nl + 1;
    }
    CHECK(longest == 100);
    CHECK(got_lines.rfind("before\n", 0) == 0);
    CHECK(got_lines.substr(got_lines.size() - 6) == "after\n");
  }
}

TEST_CASE("octet counted: oversize: close refuses the connection after the records before it",
          "[records]") {
  Rig rig;
  rig.cfg.max_line = 100;
  rig.cfg.oversize = Oversize::Close;
  const std::string stream = frameOf("one") + frameOf(std::string(98, 'x')) + frameOf("two");
  std::string refused;
  {
    SegmentChain chain(rig.cfg, rig.dir, NameVars{"t"}, rig.sys, rig.metrics);
    RecordFramer f(chain, 1, rig.cfg, rig.metrics);
    REQUIRE(f.fromBuffer(stream.data(), stream.size()).bytes == stream.size());
    refused = f.refused();
    REQUIRE(f.finish().status == IoStatus::Ok);
  }
  CHECK(refused.find("longer than max_line") != std::string::npos);
  CHECK(rig.archived() == "3 one");
  CHECK(rig.metrics.frames_oversize == 1);
}

TEST_CASE("octet counted: a malformed header refuses the connection, records before it stay",
          "[records]") {
  for (const std::string& bad :
       std::vector<std::string>{"x5 hello", "05 hello", "12345678901 x", "5\nhello", "-1 a"}) {
    INFO(bad);
    for (size_t slice : {size_t{0}, size_t{1}}) {
      Rig rig;
      const std::string stream = frameOf("good") + bad + frameOf("never");
      std::string refused;
      {
        SegmentChain chain(rig.cfg, rig.dir, NameVars{"t"}, rig.sys, rig.metrics);
        RecordFramer f(chain, 1, rig.cfg, rig.metrics);
        if (slice == 0) slice = stream.size();
        for (size_t off = 0; off < stream.size(); off += slice) {
          REQUIRE(f.fromBuffer(stream.data() + off, std::min(slice, stream.size() - off)).bytes ==
                  std::min(slice, stream.size() - off));
        }
        refused = f.refused();
        REQUIRE(f.finish().status == IoStatus::Ok);
      }
      CHECK(refused.find("malformed octet-count header at byte 6") != std::string::npos);
      CHECK(rig.archived() == "4 good");
      CHECK(rig.metrics.frames_malformed == 1);
    }
  }
}

TEST_CASE("octet counted: a frame cut short by the end of the stream is kept as a record",
          "[records]") {
  Rig rig;
  CHECK(frame(rig, "3 abc10 01234") == "3 abc5 01234");
  CHECK(rig.metrics.frames_incomplete == 1);
  Rig header;
  CHECK(frame(header, "3 abc12") == "3 abc2 12");
  Rig lines;
  lines.cfg.output = RecordOutput::Lines;
  CHECK(frame(lines, "3 abc10 01234") == "abc\n01234\n");
}

TEST_CASE("framing: auto chooses per connection from the first bytes, and counts", "[records]") {
  const std::string octet = frameOf("a\nb") + frameOf("c");
  for (size_t slice : {size_t{0}, size_t{1}}) {
    Rig rig;
    rig.cfg.framing = Framing::Auto;
    CHECK(frame(rig, octet, slice) == octet);
    CHECK(rig.metrics.framing_auto_octet == 1);
    CHECK(rig.metrics.framing_auto_lines == 0);
  }
  for (const std::string& text : std::vector<std::string>{
           "<13>hello\nworld\n", "Dec  2 host app: x\n", "12345678901 x\n", "0 zero\n", "42\n"}) {
    INFO(text);
    for (size_t slice : {size_t{0}, size_t{1}}) {
      Rig rig;
      rig.cfg.framing = Framing::Auto;
      CHECK(frame(rig, text, slice) == text);
      CHECK(rig.metrics.framing_auto_lines == 1);
      CHECK(rig.metrics.framing_auto_octet == 0);
    }
  }
  Rig unterminated;
  unterminated.cfg.framing = Framing::Auto;
  CHECK(frame(unterminated, "123") == "123\n");  // ended before deciding: a line
}
