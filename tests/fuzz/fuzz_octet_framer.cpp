// libFuzzer target: the octet-count framer (framing: octet_counted and auto) on a stream of
// mixed, partial, oversize and malformed frames, written into real segment files. The first
// three bytes choose the settings (output, auto, oversize: close; the slice size; max_line), the
// rest is the stream. Properties:
//  - the archive is the same whether the stream arrives whole or in slices;
//  - output: as_received (octet counted): the archive is a valid octet-counted stream, and no
//    record in it is longer than max_line as written;
//  - a stream of well-formed frames that all fit is archived byte for byte, nothing refused.
#include <fcntl.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "fuzz_check.hpp"
#include "spliced/archive/record_framer.hpp"
#include "spliced/archive/segment_chain.hpp"

namespace {

namespace fs = std::filesystem;
using namespace spliced;

const fs::path& workDir() {
  static const fs::path dir = [] {
    char tmpl[] = "/tmp/fuzz-octet-XXXXXX";
    const char* d = ::mkdtemp(tmpl);
    if (d == nullptr) std::abort();
    return fs::path(d);
  }();
  return dir;
}

struct Outcome {
  std::string archive;
  bool refused = false;
};

Outcome run(const ArchiveConfig& cfg, const std::string& stream, size_t slice) {
  const fs::path& dir = workDir();
  for (auto& e : fs::directory_iterator(dir)) fs::remove_all(e.path());
  ArchiveDir adir;
  adir.reset(UniqueFd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)));
  RouteMetrics metrics;
  Outcome out;
  {
    SegmentChain chain(cfg, adir, NameVars{"f"}, SysCalls::kernel(), metrics);
    RecordFramer f(chain, 7, cfg, metrics);
    for (size_t off = 0; off < stream.size(); off += slice) {
      const size_t n = std::min(slice, stream.size() - off);
      SinkResult r = f.fromBuffer(stream.data() + off, n);
      FUZZ_CHECK(r.status == IoStatus::Ok && r.bytes == n, "the framer takes every byte");
    }
    out.refused = !f.refused().empty();
    FUZZ_CHECK(f.finish().status == IoStatus::Ok, "the end of the stream is written");
  }
  std::ifstream in(dir / "f.log", std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  out.archive = s.str();
  return out;
}

// True when `s` is a sequence of well-formed frames; `longest` gets the longest as written.
bool octetStream(const std::string& s, size_t& longest) {
  size_t pos = 0;
  longest = 0;
  while (pos < s.size()) {
    size_t sp = pos;
    while (sp < s.size() && sp - pos <= 10 && s[sp] >= '0' && s[sp] <= '9') ++sp;
    if (sp == pos || sp >= s.size() || s[sp] != ' ' || s[pos] == '0' || sp - pos > 10) {
      return false;
    }
    const uint64_t len = std::stoull(s.substr(pos, sp - pos));
    if (len > s.size() - sp - 1) return false;
    longest = std::max<size_t>(longest, sp + 1 + len - pos);
    pos = sp + 1 + len;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 3 || size > 64 * 1024) return 0;
  ArchiveConfig cfg;
  cfg.dir = workDir();
  cfg.name = NameTemplate::compile("f.log").value();
  cfg.rotate.max_bytes = 0;
  cfg.output = (data[0] & 1) != 0 ? RecordOutput::Lines : RecordOutput::AsReceived;
  cfg.framing = (data[0] & 2) != 0 ? Framing::Auto : Framing::OctetCounted;
  cfg.oversize = (data[0] & 4) != 0 ? Oversize::Close : Oversize::Split;
  const size_t slice = std::max<size_t>(data[1], 1);
  cfg.max_line = 64 + static_cast<size_t>(data[2]) * 3;
  const std::string stream(reinterpret_cast<const char*>(data) + 3, size - 3);

  const Outcome whole = run(cfg, stream, std::max<size_t>(stream.size(), 1));
  const Outcome sliced = run(cfg, stream, slice);
  FUZZ_CHECK(whole.archive == sliced.archive, "read boundaries do not change the archive");
  FUZZ_CHECK(whole.refused == sliced.refused, "read boundaries do not change a refusal");

  size_t longest = 0;
  const bool input_ok = octetStream(stream, longest);
  if (cfg.output == RecordOutput::AsReceived && cfg.framing == Framing::OctetCounted) {
    size_t written_longest = 0;
    FUZZ_CHECK(octetStream(whole.archive, written_longest),
               "the archive is an octet-counted stream");
    FUZZ_CHECK(written_longest <= cfg.max_line, "no record is longer than max_line as written");
  }
  if (input_ok && longest <= cfg.max_line && cfg.output == RecordOutput::AsReceived) {
    FUZZ_CHECK(!whole.refused, "well-formed frames that fit are not refused");
    FUZZ_CHECK(whole.archive == stream, "well-formed frames that fit are archived unchanged");
  }
  return 0;
}
