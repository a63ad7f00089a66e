#include "spliced/cli/cat.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "spliced/archive/naming.hpp"
#include "spliced/cli/cat_follow.hpp"
#include "spliced/cli/cat_output.hpp"
#include "spliced/cli/segment_index.hpp"
#include "spliced/config/config.hpp"
#include "spliced/core/fd.hpp"

namespace spliced::cli {
namespace {

constexpr const char* kDefaultPerConnection = "%Y/%m/%d/{route}-{peer}-{conn}-%H%M%S-{seq}.log";
constexpr const char* kDefaultShared = "%Y/%m/%d/{route}-%H%M%S-{seq}.log";

constexpr const char* kUsage =
    "usage: spliced cat [OPTIONS] DIR\n"
    "       spliced cat [OPTIONS] -c FILE ROUTE\n"
    "\n"
    "Writes a route's archive to standard output in order: each connection's chain of segments\n"
    "by {seq} (chains ordered by their first segment's open time, then connection id), a\n"
    "shared route's chain in time order. Compressed segments (.zst, .gz) are decoded; the\n"
    "active segment (.open) is read as far as it is written.\n"
    "\n"
    "  DIR               an archive dir; names are read with the default templates unless\n"
    "                    --name says otherwise\n"
    "  -c FILE ROUTE     the archive of ROUTE in the config FILE (its dir, name and localtime)\n"
    "  -f, --follow      keep going like tail -F: new segments and the growing .open one,\n"
    "                    across rotation, until SIGINT/SIGTERM or the output closes\n"
    "  --since T         only segments with bytes written at or after T\n"
    "  --until T         only segments opened at or before T (not with --follow)\n"
    "                    T: RFC 3339 (2026-12-02T14:00:00Z, 2026-12-02T15:00:00+01:00), a date\n"
    "                    (2026-12-02, midnight UTC) or unix seconds (1764684000)\n"
    "  --peer IP         only connections from IP (per_connection names with {peer})\n"
    "  --conn N          only connection N (per_connection names with {conn})\n"
    "  --name TEMPLATE   with DIR: the segment name template of the route (archive.name)\n"
    "  -h, --help        this text\n"
    "\n"
    "Exit status: 0 all good; 1 problems found (a segment that could not be read or decoded:\n"
    "named on stderr with the offset, what could be read was written, the other segments\n"
    "follow; or writing the output failed, e.g. a full disk); 2 usage (a bad option or time,\n"
    "an invalid config, no such route, DIR missing or not an archive). A closed output (EPIPE,\n"
    "as with head) ends it quietly with 0.\n";

int usageError(const std::string& message) {
  if (!message.empty()) std::fprintf(stderr, "spliced cat: %s\n", message.c_str());
  std::fputs(kUsage, stderr);
  return 2;
}

int fail(const std::string& message) {
  std::fprintf(stderr, "spliced cat: %s\n", message.c_str());
  return 2;
}

struct Options {
  bool follow = false;
  Selection sel;
  std::optional<std::string> config;
  std::optional<std::string> name;
  std::string target;  // DIR, or ROUTE with -c
};

// The names of subdirectories of `dir_fd` that hold a .spliced.lock (for "did you mean").
std::vector<std::string> archivesBelow(int dir_fd) {
  std::vector<std::string> found;
  UniqueFd fd(::openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  DIR* d = fd.valid() ? ::fdopendir(fd.get()) : nullptr;
  if (d == nullptr) return found;
  fd.release();
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::string lock = std::string(e->d_name) + "/.spliced.lock";
    if (::faccessat(::dirfd(d), lock.c_str(), F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
      found.emplace_back(e->d_name);
      if (found.size() >= 5) break;
    }
  }
  ::closedir(d);
  return found;
}

const char* formName(SegmentForm f) {
  switch (f) {
    case SegmentForm::Zstd:
      return "zstd";
    case SegmentForm::Gzip:
      return "gzip";
    default:
      return "plain";
  }
}

// The archive once: every selected chain in order. Returns the exit status.
int catOnce(int dir_fd, const std::string& dir_path, std::vector<SegmentFile> files,
            const Selection& sel, Output& out) {
  bool problems = false;
  size_t unnamed = 0;
  std::string first_unnamed;
  for (const auto& f : files) {
    if (!f.name) {
      if (unnamed++ == 0) first_unnamed = f.rel;
    }
  }
  if (unnamed > 0 && !sel.conn && !sel.peer) {
    std::fprintf(stderr,
                 "spliced cat: %s: %zu file(s) are not named like segments of this archive "
                 "(first: '%s'); each is read as a chain of its own, by modification time\n",
                 dir_path.c_str(), unnamed, first_unnamed.c_str());
  }
  for (const Chain& chain : buildChains(std::move(files))) {
    if (!chainSelected(chain, sel)) continue;
    for (const SegmentFile& seg : chain.segments) {
      if (!segmentSelected(seg, sel)) continue;
      OpenedSegment o = openSegment(dir_fd, seg.stem, seg.form);
      if (!o.fd.valid()) {
        if (o.err == ENOENT) continue;  // deleted by retention since it was listed
        std::fprintf(stderr, "spliced cat: %s/%s: %s\n", dir_path.c_str(), seg.rel.c_str(),
                     std::strerror(o.err));
        problems = true;
        continue;
      }
      uint64_t offset = 0;
      CopyResult r = copySegment(out, o.fd.get(), o.form, offset, dir_path + "/" + o.rel);
      switch (r.status) {
        case CopyStatus::Ok:
          break;
        case CopyStatus::OutputClosed:
          return problems ? 1 : 0;
        case CopyStatus::OutputError:
          std::fprintf(stderr, "spliced cat: %s\n", r.message.c_str());
          return 1;
        case CopyStatus::InputError:
        case CopyStatus::Corrupt:
          std::fprintf(stderr, "spliced cat: %s (%s segment; going on with the next one)\n",
                       r.message.c_str(), formName(o.form));
          problems = true;
          break;
      }
    }
  }
  return problems ? 1 : 0;
}

}  // namespace

int runCat(int argc, char** argv) {
  enum { kSince = 1000, kUntil, kPeer, kConn, kName };
  static const option kOptions[] = {{"follow", no_argument, nullptr, 'f'},
                                    {"since", required_argument, nullptr, kSince},
                                    {"until", required_argument, nullptr, kUntil},
                                    {"peer", required_argument, nullptr, kPeer},
                                    {"conn", required_argument, nullptr, kConn},
                                    {"name", required_argument, nullptr, kName},
                                    {"config", required_argument, nullptr, 'c'},
                                    {"help", no_argument, nullptr, 'h'},
                                    {nullptr, 0, nullptr, 0}};
  Options o;
  // getopt's own messages name the program as this.
  static char kProgram[] = "spliced cat";
  argv[0] = kProgram;
  optind = 1;
  int opt;
  while ((opt = getopt_long(argc, argv, "+fc:h", kOptions, nullptr)) != -1) {
    switch (opt) {
      case 'f':
        o.follow = true;
        break;
      case 'c':
        o.config = optarg;
        break;
      case 'h':
        std::fputs(kUsage, stdout);
        return 0;
      case kSince:
      case kUntil: {
        auto t = parseTimeArg(optarg);
        if (!t.ok())
          return usageError(fmt::format("--{}: {}", opt == kSince ? "since" : "until", t.error()));
        (opt == kSince ? o.sel.since_ns : o.sel.until_ns) = t.value();
        break;
      }
      case kPeer:
        o.sel.peer = fileSafePeer(optarg);
        break;
      case kConn: {
        char* end = nullptr;
        errno = 0;
        unsigned long long v = std::strtoull(optarg, &end, 10);
        if (errno != 0 || end == optarg || *end != '\0' || optarg[0] == '-') {
          return usageError(fmt::format("--conn: '{}' is not a connection id", optarg));
        }
        o.sel.conn = v;
        break;
      }
      case kName:
        o.name = optarg;
        break;
      default:
        return usageError("");
    }
  }
  if (optind + 1 != argc) {
    return usageError(optind >= argc ? (o.config ? "no ROUTE given" : "no DIR given")
                                     : "too many arguments");
  }
  o.target = argv[optind];
  if (o.follow && o.sel.until_ns) return usageError("--until cannot be used with --follow");
  if (o.config && o.name) return usageError("--name is for DIR; with -c the route's name is used");
  if (o.sel.since_ns && o.sel.until_ns && *o.sel.since_ns > *o.sel.until_ns) {
    return usageError("--since is after --until");
  }

  std::string dir_path;
  std::vector<std::string> templates;
  bool localtime = false;
  if (o.config) {
    ConfigResult loaded = loadConfigFile(*o.config);
    if (!loaded.errors.empty()) {
      for (const auto& e : loaded.errors) std::fprintf(stderr, "%s\n", e.format().c_str());
      return fail(fmt::format("{}: configuration is invalid", *o.config));
    }
    const RouteConfig* route = nullptr;
    std::string names;
    for (const auto& r : loaded.config->routes) {
      if (r.name == o.target) route = &r;
      if (!names.empty()) names += ", ";
      names += r.name;
    }
    if (route == nullptr) {
      return fail(fmt::format("{}: no route named '{}' (routes: {})", *o.config, o.target, names));
    }
    if (!route->archive) {
      return fail(
          fmt::format("{}: route '{}' has no archive (it forwards only)", *o.config, o.target));
    }
    dir_path = route->archive->dir.string();
    templates.push_back(route->archive->name.text());
    localtime = route->archive->localtime;
  } else {
    dir_path = o.target;
    if (o.name) {
      auto t = NameTemplate::compile(*o.name);
      if (!t.ok()) return usageError(fmt::format("--name: {}", t.error()));
      templates.push_back(*o.name);
    } else {
      templates = {kDefaultPerConnection, kDefaultShared};
    }
  }
  ArchiveNames names(templates, localtime);

  UniqueFd dir(::open(dir_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir.valid()) {
    const int err = errno;
    if (err == ENOENT) return fail(fmt::format("{}: no such directory", dir_path));
    if (err == ENOTDIR) return fail(fmt::format("{}: not a directory", dir_path));
    return fail(fmt::format("{}: cannot open: {}", dir_path, std::strerror(err)));
  }
  std::vector<std::string> problems;
  std::vector<SegmentFile> files = listArchive(dir.get(), names, problems);
  for (const auto& p : problems)
    std::fprintf(stderr, "spliced cat: %s: %s\n", dir_path.c_str(), p.c_str());
  const bool locked = ::faccessat(dir.get(), ".spliced.lock", F_OK, AT_SYMLINK_NOFOLLOW) == 0;
  if (!locked) {
    size_t named = 0;
    std::string example;
    for (const auto& f : files) {
      if (f.name) ++named;
      if (example.empty()) example = f.rel;
    }
    if (named == 0 && (!files.empty() || !o.follow)) {
      std::string why =
          files.empty() ? "it is empty and has no .spliced.lock"
                        : fmt::format(
                              "it has no .spliced.lock and none of its {} file(s) is named like a "
                              "segment (e.g. '{}'; segment names follow {})",
                              files.size(), example, names.describe());
      std::string hint;
      if (auto below = archivesBelow(dir.get()); !below.empty()) {
        hint = "; archive dirs below it: ";
        for (size_t i = 0; i < below.size(); ++i) {
          if (i > 0) hint += ", ";
          hint += dir_path;
          hint += '/';
          hint += below[i];
        }
      } else if (!files.empty() && !o.name && !o.config) {
        hint = "; if the route sets archive.name, give it with --name or use -c FILE ROUTE";
      }
      return fail(fmt::format("{}: not a spliced archive dir: {}{}", dir_path, why, hint));
    }
  }

  ::signal(SIGPIPE, SIG_IGN);
  // A terminal gets the mmap path at once (sendfile to a tty fails anyway).
  Output out(STDOUT_FILENO, ::isatty(STDOUT_FILENO) != 0);
  int rc = problems.empty() ? 0 : 1;
  if (o.follow) {
    int f = followArchive(dir.get(), dir_path, names, o.sel, out);
    return f != 0 ? f : rc;
  }
  int c = catOnce(dir.get(), dir_path, std::move(files), o.sel, out);
  return c != 0 ? c : rc;
}

}  // namespace spliced::cli
