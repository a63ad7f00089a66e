#include "spliced/cli/verify.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <thread>

#include "spliced/archive/manifest.hpp"
#include "spliced/archive/segment_files.hpp"
#include "spliced/config/config.hpp"
#include "spliced/core/fd.hpp"
#include "spliced/core/units.hpp"

namespace spliced {
namespace {

const char* kUsage =
    "usage: spliced verify DIR\n"
    "       spliced verify -c FILE ROUTE\n"
    "\n"
    "Checks an archive dir against its manifest (DIR/.spliced/manifest.jsonl): the hash chain of\n"
    "the manifest's lines, then every segment it holds (size and hash; each file is read once)\n"
    "and every segment file it does not hold. With -c, DIR is the archive dir of ROUTE in the\n"
    "config FILE. Segments still being written (NAME.open) are not checked.\n"
    "\n"
    "Output: one line per problem on stdout, KIND NAME: DETAIL, where KIND is\n"
    "  missing       the manifest holds the segment, the file is not there\n"
    "  extra         a segment file the manifest never recorded (a foreign file)\n"
    "  out-of-chain  a file the manifest recorded as deleted or compressed is there again\n"
    "  truncated     shorter than recorded\n"
    "  appended      longer than recorded, the recorded bytes intact (something appended to it)\n"
    "  modified      content differs from the recorded hash\n"
    "  broken-link   a manifest line does not follow the one before it (a line was removed,\n"
    "                inserted or changed); NAME is the manifest and its line\n"
    "  cut-line      the last manifest line was cut by a crash (spliced removes it and redoes\n"
    "                its event at its next start)\n"
    "  bad-line      a manifest line that is not a valid record\n"
    "  bad-record    a record about a segment the manifest does not hold\n"
    "  unreadable    a segment that cannot be read\n"
    "  no-manifest   the archive dir has no manifest\n"
    "then a summary line. Exit status: 0 all good, 1 problems found, 2 usage error or a\n"
    "directory that cannot be verified (missing, unreadable, not an archive dir).\n";

struct Check {
  std::string name;
  ManifestEntry entry;
  FileDigest digest;
};

std::string manifestLineName(uint64_t line) { return fmt::format("{}:{}", kManifestPath, line); }

// Reads the manifest and checks its chain; fills `state`.
void readManifest(int dir_fd, VerifyReport& report, ManifestState& state) {
  const std::string path(kManifestPath);
  UniqueFd fd(::openat(dir_fd, path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.valid()) {
    report.problems.push_back(
        {"no-manifest", path,
         errno == ENOENT ? std::string("the archive dir has no manifest (spliced creates it when "
                                       "the route starts; segments written before that are "
                                       "adopted then)")
                         : fmt::format("cannot open it: {}", std::strerror(errno))});
    return;
  }
  std::string text;
  char buf[65536];
  while (true) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      report.problems.push_back(
          {"no-manifest", path, fmt::format("cannot read: {}", std::strerror(errno))});
      return;
    }
    if (n == 0) break;
    text.append(buf, static_cast<size_t>(n));
  }
  size_t pos = 0;
  uint64_t line_no = 0;
  std::string prev_line;
  bool have_prev = false;
  uint64_t expect_seq = 1;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    ++line_no;
    if (nl == std::string::npos) {
      std::string cut = text.substr(pos);
      std::string error;
      report.problems.push_back(
          {"cut-line", manifestLineName(line_no),
           fmt::format("the last line has no end ({} bytes: {:.60}...): cut by a crash during an "
                       "append; spliced removes it and redoes its event at its next start",
                       cut.size(), cut)});
      break;
    }
    std::string_view line(text.data() + pos, nl - pos);
    pos = nl + 1;
    std::string error;
    auto rec = parseRecord(line, error);
    if (!rec) {
      report.problems.push_back({"bad-line", manifestLineName(line_no), error});
      prev_line = line;
      have_prev = true;
      continue;
    }
    ++report.lines;
    // The chain: each line names the hash of the one before it.
    bool linked = true;
    if (!have_prev) {
      linked = rec->prev.empty() && rec->seq == 1;
    } else {
      ManifestHash alg = hashAlgOf(rec->prev);
      linked = !rec->prev.empty() && linkHash(alg, prev_line) == rec->prev;
    }
    if (!linked || rec->seq != expect_seq) {
      std::string why;
      if (rec->seq > expect_seq) {
        why = fmt::format("seq {} follows seq {}: {} line(s) before it were removed", rec->seq,
                          expect_seq - 1, rec->seq - expect_seq);
      } else if (rec->seq < expect_seq) {
        why = fmt::format("seq {} follows seq {}: a line was inserted or repeated", rec->seq,
                          expect_seq - 1);
      } else {
        why =
            "its prev hash does not match the line before it: that line was changed, or lines "
            "were removed";
      }
      report.problems.push_back(
          {"broken-link", manifestLineName(line_no), fmt::format("{} ({})", why, rec->name)});
    }
    expect_seq = rec->seq + 1;
    if (std::string p = state.apply(*rec, line_no); !p.empty()) {
      report.problems.push_back({"bad-record", manifestLineName(line_no), p});
    }
    prev_line = line;
    have_prev = true;
  }
}

void checkOne(int dir_fd, Check& c) {
  ManifestHash alg = hashAlgOf(c.entry.hash);
  c.digest = hashFile(dir_fd, c.name, alg, c.entry.size);
}

void judge(const Check& c, VerifyReport& report) {
  const FileDigest& d = c.digest;
  const std::string at = fmt::format("manifest line {}", c.entry.line);
  if (d.err != 0) {
    report.problems.push_back({d.err == ENOENT ? "missing" : "unreadable", c.name,
                               d.err == ENOENT ? fmt::format("recorded at {}, not there", at)
                                               : std::string(std::strerror(d.err))});
    return;
  }
  const bool same = c.entry.hash.empty() || d.hash == c.entry.hash;
  if (d.size < c.entry.size) {
    report.problems.push_back(
        {"truncated", c.name, fmt::format("{} bytes, {} records {}", d.size, at, c.entry.size)});
  } else if (d.longer) {
    if (same) {
      report.problems.push_back(
          {"appended", c.name,
           fmt::format("longer than the {} bytes {} records; those bytes are intact", c.entry.size,
                       at)});
    } else {
      report.problems.push_back(
          {"modified", c.name,
           fmt::format("longer than the {} bytes {} records, and they differ", c.entry.size, at)});
    }
  } else if (!same) {
    report.problems.push_back(
        {"modified", c.name,
         fmt::format("same size ({} bytes), content differs from the hash of {}", d.size, at)});
  }
}

}  // namespace

VerifyReport verifyArchive(const std::string& dir, unsigned threads) {
  VerifyReport report;
  UniqueFd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir_fd.valid()) {
    report.fatal = fmt::format("cannot open {}: {}", dir, std::strerror(errno));
    return report;
  }
  struct stat st;
  const bool has_state = ::fstatat(dir_fd.get(), std::string(kStateDirName).c_str(), &st, 0) == 0;
  const bool has_lock = ::fstatat(dir_fd.get(), ".spliced.lock", &st, 0) == 0;
  if (!has_state && !has_lock) {
    report.fatal = fmt::format(
        "{} is not a spliced archive dir (it has neither .spliced/ nor .spliced.lock)", dir);
    return report;
  }
  ManifestState state;
  readManifest(dir_fd.get(), report, state);
  if (!report.problems.empty() && report.problems.front().kind == "no-manifest") return report;

  std::set<std::string> on_disk;
  auto errors = walkArchive(dir_fd.get(), [&](const std::string& rel, const struct stat&) {
    if (isOpenName(rel)) {
      ++report.active;
    } else if (isClosedSegmentName(rel)) {
      on_disk.insert(rel);
    }
  });
  for (const auto& e : errors) report.problems.push_back({"unreadable", dir, e});

  std::vector<Check> checks;
  for (const auto& [name, entry] : state.live()) {
    if (on_disk.count(name) == 0) {
      report.problems.push_back(
          {"missing", name, fmt::format("recorded at manifest line {}, not there", entry.line)});
      continue;
    }
    checks.push_back({name, entry, {}});
  }
  // Each file is read once; two readers keep a disk (or two cores) busy.
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i; (i = next.fetch_add(1)) < checks.size();) checkOne(dir_fd.get(), checks[i]);
  };
  std::vector<std::thread> pool;
  const unsigned n =
      std::max(1u, std::min<unsigned>(threads, static_cast<unsigned>(checks.size())));
  for (unsigned i = 1; i < n; ++i) pool.emplace_back(worker);
  worker();
  for (auto& t : pool) t.join();
  for (const auto& c : checks) {
    ++report.segments;
    report.bytes += c.digest.size;
    judge(c, report);
  }
  for (const auto& name : on_disk) {
    if (state.live().count(name) > 0) continue;
    auto gone = state.gone().find(name);
    if (gone != state.gone().end()) {
      report.problems.push_back(
          {"out-of-chain", name,
           fmt::format("manifest line {} says it was deleted or compressed, yet it is there",
                       gone->second)});
    } else {
      report.problems.push_back({"extra", name, "not in the manifest (a foreign file)"});
    }
  }
  return report;
}

int runVerify(int argc, char** argv) {
  std::string dir;
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() == 1 && (args[0] == "--help" || args[0] == "-h")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  if (args.size() == 1 && !args[0].empty() && args[0][0] != '-') {
    dir = args[0];
  } else if (args.size() == 3 && args[0] == "-c") {
    ConfigResult loaded = loadConfigFile(args[1]);
    if (!loaded.errors.empty()) {
      for (const auto& e : loaded.errors) std::fprintf(stderr, "%s\n", e.format().c_str());
      std::fprintf(stderr, "spliced verify: %s: configuration is invalid\n", args[1].c_str());
      return 2;
    }
    const RouteConfig* route = nullptr;
    for (const auto& r : loaded.config->routes) {
      if (r.name == args[2]) route = &r;
    }
    if (route == nullptr) {
      std::fprintf(stderr, "spliced verify: %s has no route named '%s'\n", args[1].c_str(),
                   args[2].c_str());
      return 2;
    }
    if (!route->archive) {
      std::fprintf(stderr, "spliced verify: route '%s' has no archive block (a proxy route)\n",
                   args[2].c_str());
      return 2;
    }
    dir = route->archive->dir.string();
  } else {
    std::fputs(kUsage, stderr);
    return 2;
  }
  VerifyReport report = verifyArchive(dir, 2);
  if (!report.fatal.empty()) {
    std::fprintf(stderr, "spliced verify: %s\n", report.fatal.c_str());
    return 2;
  }
  for (const auto& p : report.problems) {
    std::printf("%s %s: %s\n", p.kind.c_str(), p.name.c_str(), p.detail.c_str());
  }
  std::string active =
      report.active > 0 ? fmt::format(", {} active segment(s) not checked", report.active) : "";
  if (report.problems.empty()) {
    std::printf("verify %s: all good: %lu manifest line(s), %lu segment(s), %s checked%s\n",
                dir.c_str(), static_cast<unsigned long>(report.lines),
                static_cast<unsigned long>(report.segments), formatSize(report.bytes).c_str(),
                active.c_str());
    return 0;
  }
  std::printf("verify %s: %zu problem(s); %lu manifest line(s), %lu segment(s), %s checked%s\n",
              dir.c_str(), report.problems.size(), static_cast<unsigned long>(report.lines),
              static_cast<unsigned long>(report.segments), formatSize(report.bytes).c_str(),
              active.c_str());
  return 1;
}

}  // namespace spliced
