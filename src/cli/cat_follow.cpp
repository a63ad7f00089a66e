#include "spliced/cli/cat_follow.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <unordered_map>
#include <vector>

#include "spliced/archive/segment_files.hpp"
#include "spliced/core/fd.hpp"

namespace spliced::cli {
namespace {

constexpr uint32_t kWatchMask = IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_MODIFY |
                                IN_CLOSE_WRITE | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF |
                                IN_ONLYDIR | IN_EXCL_UNLINK;
constexpr int kMaxDepth = 64;

// The follow loop. A chain's segments are read strictly in order: segment n is finished (read to
// its end and closed) before a byte of n+1 is written. A segment is finished once it is known to
// be complete: its closed name (or a compressed one) was seen, its .open name is gone, or a later
// segment of its chain exists (a chain writes one segment at a time, so n+1 existing means n
// got its last byte). The descriptor opened on NAME.open stays valid across the rename to NAME
// (same inode), so reading goes on from the same offset without reopening: nothing is read
// twice or skipped.
//
// Ownership: owns the inotify fd and the open segments' fds; the dir fd and the output are
// borrowed.
class Follower {
 public:
  Follower(int dir_fd, std::string dir_path, const ArchiveNames& names, const Selection& sel,
           Output& out)
      : dir_fd_(dir_fd), dir_path_(std::move(dir_path)), names_(names), sel_(sel), out_(out) {}

  int run();

 private:
  struct Seg {
    std::string stem;
    SegmentForm seen = SegmentForm::Plain;  // the latest form seen
    bool closed = false;                    // seen under a closed name: complete
    bool done = false;                      // read to its end
    UniqueFd fd;
    SegmentForm opened = SegmentForm::Plain;
    std::string rel;
    uint64_t offset = 0;
  };
  struct FChain {
    // By {seq}, or by arrival when the name has none. Finished segments are dropped from the
    // front, so a long follow keeps only what is still to read.
    std::map<uint64_t, Seg> segs;
    bool any = false;        // a segment was ever added
    uint64_t max_order = 0;  // the highest key ever added (a new run starts at or below it)
    bool ended = false;      // a later run of the same key began: nothing more comes
    std::optional<std::string> peer;
    std::optional<uint64_t> conn;
  };
  struct Where {
    size_t chain = 0;
    bool ignored = false;
  };

  // Adds inotify watches on `rel` and the directories below it; appends the files found.
  void watchTree(const std::string& rel, std::vector<std::string>& files, int depth);
  // Makes SegmentFiles of `rels` and adds them in an order that keeps each chain's seqs rising.
  void addFiles(const std::vector<std::string>& rels);
  void addFile(const SegmentFile& f);
  // Writes what chain `ci` has ready. False when the output is closed or failed.
  bool pump(size_t ci);
  bool handleEvents();
  int status() const { return problems_ ? 1 : 0; }
  void problem(const std::string& msg) {
    std::fprintf(stderr, "spliced cat: %s\n", msg.c_str());
    problems_ = true;
  }

  int dir_fd_;
  std::string dir_path_;
  const ArchiveNames& names_;
  const Selection& sel_;
  Output& out_;
  UniqueFd inotify_;
  std::map<int, std::string> watches_;  // wd -> dir relative to the archive dir ("" = itself)
  std::vector<std::unique_ptr<FChain>> chains_;
  std::map<std::string, size_t> by_key_;
  std::unordered_map<std::string, Where> stems_;
  std::set<size_t> dirty_;
  uint64_t arrival_ = 0;
  bool problems_ = false;
  bool output_gone_ = false;  // EPIPE: end quietly
  bool fatal_ = false;        // the output failed, or the archive dir went away
};

void Follower::watchTree(const std::string& rel, std::vector<std::string>& files, int depth) {
  if (depth > kMaxDepth) return;
  const std::string path = rel.empty() ? dir_path_ : dir_path_ + "/" + rel;
  int wd = ::inotify_add_watch(inotify_.get(), path.c_str(), kWatchMask);
  if (wd < 0) {
    if (errno != ENOENT && errno != ENOTDIR) {
      problem(fmt::format("{}: cannot watch: {}", path, std::strerror(errno)));
    }
    return;
  }
  watches_[wd] = rel;
  UniqueFd fd(::openat(dir_fd_, rel.empty() ? "." : rel.c_str(),
                       O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) return;
  DIR* d = ::fdopendir(fd.get());
  if (d == nullptr) return;
  fd.release();
  std::vector<std::string> subdirs;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    unsigned char type = e->d_type;
    if (type == DT_UNKNOWN) {
      struct stat st {};
      if (::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
      type = S_ISDIR(st.st_mode) ? DT_DIR : S_ISREG(st.st_mode) ? DT_REG : DT_UNKNOWN;
    }
    std::string child = rel.empty() ? std::string(e->d_name) : rel + "/" + e->d_name;
    if (type == DT_DIR) {
      subdirs.push_back(std::move(child));
    } else if (type == DT_REG) {
      files.push_back(std::move(child));
    }
  }
  ::closedir(d);
  for (const auto& s : subdirs) watchTree(s, files, depth + 1);
}

void Follower::addFiles(const std::vector<std::string>& rels) {
  std::vector<SegmentFile> files;
  for (const auto& rel : rels) {
    SegmentFile f;
    if (!splitSegmentName(rel, f.stem, f.form)) continue;
    f.rel = rel;
    f.name = names_.parse(f.stem);
    struct stat st {};
    if (::fstatat(dir_fd_, rel.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
      f.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
      f.size = static_cast<uint64_t>(st.st_size);
    }
    files.push_back(std::move(f));
  }
  // buildChains puts each chain in order and the chains in reading order.
  for (Chain& c : buildChains(std::move(files))) {
    for (const SegmentFile& f : c.segments) addFile(f);
  }
}

void Follower::addFile(const SegmentFile& f) {
  if (auto it = stems_.find(f.stem); it != stems_.end()) {
    if (it->second.ignored) return;
    FChain& c = *chains_[it->second.chain];
    for (auto& [order, s] : c.segs) {
      if (s.stem != f.stem) continue;
      s.seen = f.form;
      if (f.form != SegmentForm::Open) s.closed = true;
    }
    dirty_.insert(it->second.chain);
    return;
  }
  const std::string key = f.name ? *chainKey(*f.name) : "file\n" + f.stem;
  auto known = by_key_.find(key);
  // --conn and --peer: by the name, or by the chain it joins (a rescue name has no peer).
  std::optional<uint64_t> conn = f.name ? f.name->conn : std::nullopt;
  std::optional<std::string> peer = f.name ? f.name->peer : std::nullopt;
  if (known != by_key_.end()) {
    if (!conn) conn = chains_[known->second]->conn;
    if (!peer) peer = chains_[known->second]->peer;
  }
  if ((sel_.conn && conn != sel_.conn) || (sel_.peer && peer != sel_.peer) ||
      !segmentSelected(f, sel_)) {
    stems_[f.stem] = Where{0, true};
    return;
  }
  const bool has_seq = f.name && f.name->seq;
  const uint64_t seq = has_seq ? *f.name->seq : 0;
  size_t ci = 0;
  if (known != by_key_.end()) {
    FChain& c = *chains_[known->second];
    const bool new_run = c.ended || (has_seq && c.any && seq <= c.max_order);
    if (new_run) {
      // The daemon started again (connection ids and {seq} restart): the old chain is over.
      c.ended = true;
      dirty_.insert(known->second);
    } else {
      ci = known->second;
    }
    if (new_run) known = by_key_.end();
  }
  if (known == by_key_.end()) {
    chains_.push_back(std::make_unique<FChain>());
    ci = chains_.size() - 1;
    by_key_[key] = ci;
  }
  FChain& c = *chains_[ci];
  if (!c.conn) c.conn = conn;
  if (!c.peer) c.peer = peer;
  const uint64_t order = has_seq ? seq : arrival_++;
  c.max_order = c.any ? std::max(c.max_order, order) : order;
  c.any = true;
  Seg& s = c.segs[order];
  s.stem = f.stem;
  s.seen = f.form;
  s.closed = f.form != SegmentForm::Open;
  stems_[f.stem] = Where{ci, false};
  dirty_.insert(ci);
}

bool Follower::pump(size_t ci) {
  FChain& c = *chains_[ci];
  while (!c.segs.empty() && c.segs.begin()->second.done) c.segs.erase(c.segs.begin());
  for (auto it = c.segs.begin(); it != c.segs.end(); ++it) {
    Seg& s = it->second;
    if (s.done) continue;
    const bool later = c.ended || std::next(it) != c.segs.end();
    if (!s.fd.valid()) {
      OpenedSegment o = openSegment(dir_fd_, s.stem, s.seen);
      if (!o.fd.valid()) {
        // ENOENT under every name: deleted (retention) before it could be read.
        if (o.err != ENOENT) {
          problem(fmt::format("{}/{}: {}", dir_path_, s.stem, std::strerror(o.err)));
        } else {
          std::fprintf(stderr, "spliced cat: %s/%s was deleted before it could be read\n",
                       dir_path_.c_str(), s.stem.c_str());
        }
        s.done = true;
        continue;
      }
      s.fd = std::move(o.fd);
      s.opened = o.form;
      s.rel = std::move(o.rel);
    }
    // Decided before the read: if it is complete now, this read gets its last byte.
    bool complete = later || s.closed || s.opened != SegmentForm::Open;
    if (!complete) {
      const std::string open_name = s.stem + std::string(kOpenSuffix);
      complete = ::faccessat(dir_fd_, open_name.c_str(), F_OK, AT_SYMLINK_NOFOLLOW) != 0 &&
                 errno == ENOENT;
    }
    CopyResult r = copySegment(out_, s.fd.get(), s.opened, s.offset, dir_path_ + "/" + s.rel);
    switch (r.status) {
      case CopyStatus::Ok:
        break;
      case CopyStatus::OutputClosed:
        output_gone_ = true;
        return false;
      case CopyStatus::OutputError:
        problem(r.message);
        fatal_ = true;
        return false;
      case CopyStatus::InputError:
      case CopyStatus::Corrupt:
        problem(r.message + " (going on with the next segment)");
        complete = true;
        break;
    }
    if (!complete) return true;
    s.done = true;
    s.fd.reset();
  }
  return true;
}

bool Follower::handleEvents() {
  alignas(inotify_event) char buf[64 * 1024];
  bool rescan = false;
  std::vector<std::string> added;
  for (;;) {
    ssize_t n = ::read(inotify_.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;  // EAGAIN: all read
    for (char* p = buf; p < buf + n;) {
      auto* ev = reinterpret_cast<inotify_event*>(p);
      p += sizeof(inotify_event) + ev->len;
      if ((ev->mask & IN_Q_OVERFLOW) != 0) {
        rescan = true;
        continue;
      }
      auto w = watches_.find(ev->wd);
      if (w == watches_.end()) continue;
      const std::string dir = w->second;
      if ((ev->mask & (IN_DELETE_SELF | IN_MOVE_SELF)) != 0 && dir.empty()) {
        problem(fmt::format("{}: the archive dir was removed or moved", dir_path_));
        fatal_ = true;
        return false;
      }
      if ((ev->mask & IN_IGNORED) != 0) {
        watches_.erase(w);
        continue;
      }
      if (ev->len == 0 || ev->name[0] == '.') continue;
      std::string rel = dir.empty() ? std::string(ev->name) : dir + "/" + ev->name;
      if ((ev->mask & IN_ISDIR) != 0) {
        if ((ev->mask & (IN_CREATE | IN_MOVED_TO)) != 0) watchTree(rel, added, 0);
        continue;
      }
      if ((ev->mask & (IN_CREATE | IN_MOVED_TO)) != 0) {
        added.push_back(std::move(rel));
        continue;
      }
      std::string stem;
      SegmentForm form{};
      if (!splitSegmentName(rel, stem, form)) continue;
      if (auto it = stems_.find(stem); it != stems_.end() && !it->second.ignored) {
        dirty_.insert(it->second.chain);
      }
    }
  }
  if (rescan) {
    // Events were lost: look at everything again (known segments keep their offsets).
    added.clear();
    watchTree("", added, 0);
    for (size_t i = 0; i < chains_.size(); ++i) dirty_.insert(i);
  }
  if (!added.empty()) addFiles(added);
  std::set<size_t> dirty;
  dirty.swap(dirty_);
  for (size_t ci : dirty) {
    if (!pump(ci)) return false;
  }
  return true;
}

int Follower::run() {
  inotify_.reset(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  if (!inotify_.valid()) {
    problem(fmt::format("cannot follow: inotify_init1: {}", std::strerror(errno)));
    return 1;
  }
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  ::sigprocmask(SIG_BLOCK, &mask, nullptr);
  UniqueFd sigfd(::signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC));
  if (!sigfd.valid()) {
    problem(fmt::format("cannot follow: signalfd: {}", std::strerror(errno)));
    return 1;
  }
  // Watches first, then the listing: whatever changes after a directory was read is an event.
  std::vector<std::string> files;
  watchTree("", files, 0);
  if (watches_.empty()) {
    problem(fmt::format("{}: cannot watch the archive dir", dir_path_));
    return 1;
  }
  addFiles(files);
  {
    std::set<size_t> dirty;
    dirty.swap(dirty_);
    for (size_t ci : dirty) {
      if (!pump(ci)) return output_gone_ ? status() : 1;
    }
  }
  pollfd fds[3] = {{inotify_.get(), POLLIN, 0}, {sigfd.get(), POLLIN, 0}, {STDOUT_FILENO, 0, 0}};
  for (;;) {
    if (::poll(fds, 3, -1) < 0) {
      if (errno == EINTR) continue;
      problem(fmt::format("poll: {}", std::strerror(errno)));
      return 1;
    }
    // The reader of a pipe went away while nothing was written (POLLERR on the write end).
    if ((fds[2].revents & (POLLERR | POLLHUP)) != 0) return status();
    if ((fds[1].revents & POLLIN) != 0) return status();
    if ((fds[0].revents & POLLIN) != 0 && !handleEvents()) {
      return output_gone_ && !fatal_ ? status() : 1;
    }
  }
}

}  // namespace

int followArchive(int dir_fd, const std::string& dir_path, const ArchiveNames& names,
                  const Selection& sel, Output& out) {
  Follower f(dir_fd, dir_path, names, sel, out);
  return f.run();
}

}  // namespace spliced::cli
