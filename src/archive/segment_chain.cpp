#include "spliced/archive/segment_chain.hpp"

#include "spliced/core/check.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "spliced/archive/rotation.hpp"
#include "spliced/archive/segment_files.hpp"

namespace spliced {
std::string rescueName(const NameVars& vars, std::chrono::system_clock::time_point now) {
  time_t t = std::chrono::system_clock::to_time_t(now);
  tm utc{};
  ::gmtime_r(&t, &utc);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &utc);
  return fmt::format("rescue/{}-{}-{}-{}.log", vars.route, vars.conn, stamp, vars.seq);
}

bool isNameError(int err) {
  return err == EINVAL || err == ENAMETOOLONG || err == EEXIST || err == ENOTDIR || err == ELOOP ||
         err == EISDIR;
}

SegmentChain::SegmentChain(const ArchiveConfig& cfg, ArchiveDir& dir, NameVars vars, SysCalls& sys,
                           RouteMetrics& metrics)
    : cfg_(&cfg), dir_(dir), vars_(std::move(vars)), sys_(sys), metrics_(metrics) {}

SegmentChain::~SegmentChain() {
  closeSegment();
  if (observer_ != nullptr) observer_->chainEnded();
}

int SegmentChain::ensureOpen() {
  if (segmentLost()) dropLostSegment();
  if (fd_.valid()) return 0;
  // Removed: nothing can be created in it; the bytes wait for the route to reopen it.
  if (dir_.gone()) return ENOENT;
  if (rescue_next_) {
    int err = openRescue(0, "the last try before exit");
    if (err == 0) rescue_next_ = false;
    return err;
  }
  int err = 0;
  std::string detail;
  auto name = cfg_->name.expand(vars_, std::chrono::system_clock::now(), cfg_->localtime);
  if (!name.ok()) {
    err = EINVAL;
    detail = name.error();
  } else {
    err = openNamed(name.value());
    if (err == 0) {
      if (auto n = rescue_log_.end(); n && *n > 0) {
        spdlog::info(
            "route={} conn={} segments open under their configured name again ({} "
            "more rescue segment(s) were not logged)",
            vars_.route, vars_.conn, *n);
      }
      return 0;
    }
    detail = fmt::format("{}: {}", name.value(), std::strerror(err));
  }
  if (err == ENOENT && dir_.checkRemoved()) return ENOENT;
  if (!isNameError(err)) return err;
  return openRescue(err, detail);
}

int SegmentChain::openNamed(const std::string& first) {
  std::string rel = first;
  int dir_fd = dir_.fd();
  if (int err = makeParents(sys_, dir_fd, rel)) return err;
  // O_EXCL on NAME.open, and NAME itself must not exist either: never truncate or overwrite.
  bool remade = false;
  for (int k = 1; k < kMaxNumericSuffix; ++k) {
    if (!segmentNameTaken(dir_fd, rel)) {
      std::string open_path = rel + std::string(kOpenSuffix);
      int fd =
          sys_.openat(dir_fd, open_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
      if (fd >= 0) {
        fd_.reset(fd);
        rel_ = rel;
        size_ = 0;
        observed_size_ = 0;
        seg_generation_ = dir_.generation();
        opened_ms_ = std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
        if (observer_ != nullptr) observer_->segmentOpened(rel_, fd_.get());
        return 0;
      }
      if (errno == ENOENT && !remade) {
        // Retention may have removed a directory it had emptied just after it was created.
        remade = true;
        if (int err = makeParents(sys_, dir_fd, rel)) return err;
        --k;
        continue;
      }
      if (errno != EEXIST) return errno;
    }
    rel = withNumericSuffix(first, k);
  }
  return EEXIST;
}

int SegmentChain::openRescue(int why, const std::string& detail) {
  const std::string rel = rescueName(vars_, std::chrono::system_clock::now());
  int err = openNamed(rel);
  if (err != 0) {
    spdlog::error("error=storage route={} conn={} cannot open the rescue segment {}: {}",
                  vars_.route, vars_.conn, rel, std::strerror(err));
    return err;
  }
  ++metrics_.archive_rescued_segments;
  if (why == 0) {
    spdlog::warn("route={} conn={} writing held bytes to the rescue segment {} ({})", vars_.route,
                 vars_.conn, rel_, detail);
  } else if (rescue_log_.hit()) {
    spdlog::error(
        "error=storage route={} conn={} cannot open a segment under the configured name ({}); "
        "writing to the rescue segment {} instead",
        vars_.route, vars_.conn, detail, rel_);
  }
  return 0;
}

void SegmentChain::dropLostSegment() {
  // Its fd still writes to a file that no directory holds any more: what it holds is gone.
  spdlog::error(
      "error=storage route={} conn={} segment {}{} ({} bytes) went with the removed archive dir; "
      "what follows goes to a new segment",
      vars_.route, vars_.conn, rel_, kOpenSuffix, size_);
  ++metrics_.storage_errors;
  // An observer holding its own descriptor can still read what the segment holds.
  if (observer_ != nullptr) observer_->segmentDone(size_);
  fd_.reset();
  rel_.clear();
  size_ = 0;
  ++vars_.seq;
}

void SegmentChain::rescueNext() {
  ChainLock lock(mu_.get());
  closeSegment();
  rescue_next_ = true;
}

void SegmentChain::reconfigure(std::shared_ptr<const ArchiveConfig> next) {
  ChainLock lock(mu_.get());
  cfg_ = next.get();
  cfg_hold_ = std::move(next);
}

void SegmentChain::rotate() {
  ChainLock lock(mu_.get());
  if (!fd_.valid()) return;
  if (incomplete_owner_ != 0) {
    // A record is half written (a write failed in its middle): closing now would split it
    // across two segments. The owner's completing write (or its going away) rotates.
    rotate_pending_ = true;
    spdlog::debug("route={} rotation of {} waits for a half-written record", vars_.route, rel_);
    return;
  }
  closeSegment();
}

void SegmentChain::releaseOwner(uint64_t owner) {
  ChainLock lock(mu_.get());
  if (owner == 0 || incomplete_owner_ != owner) return;
  incomplete_owner_ = 0;
  if (rotate_pending_) rotate();
}

namespace {

// fsync: on_close: the directory holding `rel`, after its rename. Returns 0 or the errno (logged).
int syncDirOf(SysCalls& sys, int dir_fd, const std::string& route, const std::string& rel) {
  const std::string parent = parentOf(rel);
  int err = 0;
  UniqueFd dfd(sys.openat(dir_fd, parent.empty() ? "." : parent.c_str(),
                          O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0));
  if (!dfd.valid() || sys.fsync(dfd.get()) != 0) err = errno;
  if (err != 0) {
    spdlog::error("error=storage route={} fsync of the directory of {}: {}", route, rel,
                  std::strerror(err));
  }
  return err;
}

// The rename (and directory sync) of publishSegment, counting only into `storage_errors`.
Published publishQuiet(SysCalls& sys, int dir_fd, const ArchiveConfig& cfg,
                       const std::string& route, const UnpublishedSegment& seg,
                       uint64_t& storage_errors) {
  const std::string from = seg.rel + std::string(kOpenSuffix);
  Published pub = publishNoReplace(sys, dir_fd, from, seg.rel,
                                   seg.unsynced ? kUnsyncedSuffix : std::string_view());
  if (pub.err != 0) return pub;
  // publishNoReplace keeps the directory of the stem: pub.name is relative to dir_fd too.
  if (cfg.fsync == FsyncPolicy::OnClose && syncDirOf(sys, dir_fd, route, pub.name) != 0) {
    ++storage_errors;
  }
  spdlog::debug("route={} segment closed {} bytes={}", route, pub.name, seg.bytes);
  return pub;
}

// On the loop: counts a close's outcome and hands the segment on (published, or to be published
// later by the chain's owner).
void deliverClose(RouteMetrics& metrics, const std::string& route, const SegmentClosedFn& on_closed,
                  const SegmentUnpublishedFn& on_unpublished, CloseOutcome o) {
  metrics.storage_errors += o.storage_errors;
  if (o.pub.err != 0) {
    // The bytes stay complete under the .open name. It is not a closed segment yet: not counted
    // as one, and not handed to compression until it is published.
    ++metrics.storage_errors;
    o.seg.err = o.pub.err;
    spdlog::error("error=storage route={} cannot rename {}{} to {}: {}; {}", route, o.seg.rel,
                  kOpenSuffix, o.pub.name, std::strerror(o.pub.err),
                  on_unpublished ? "retrying" : "recovery publishes it at the next start");
    if (on_unpublished) on_unpublished(std::move(o.seg));
    return;
  }
  ++metrics.archive_segments;
  if (o.seg.unsynced) ++metrics.unsynced_segments;
  if (on_closed) on_closed(o.pub.name, o.seg);
}

}  // namespace

CloseOutcome finishSegment(SysCalls& sys, int dir_fd, const ArchiveConfig& cfg,
                           const std::string& route, UniqueFd fd, UnpublishedSegment seg) {
  CloseOutcome out;
  if (cfg.fsync == FsyncPolicy::OnClose && sys.fdatasync(fd.get()) != 0) {
    // After a failed fdatasync the kernel may already have dropped the dirty pages ("fsyncgate"):
    // retrying the sync would prove nothing. The segment is published under a name that says so.
    ++out.storage_errors;
    seg.unsynced = true;
    spdlog::error("error=storage route={} fdatasync {}: {}; publishing it as {}{}", route, seg.rel,
                  std::strerror(errno), seg.rel, kUnsyncedSuffix);
  }
  fd.reset();
  out.pub = publishQuiet(sys, dir_fd, cfg, route, seg, out.storage_errors);
  out.seg = std::move(seg);
  return out;
}

Published publishSegment(SysCalls& sys, int dir_fd, const ArchiveConfig& cfg,
                         const std::string& route, RouteMetrics& metrics,
                         const UnpublishedSegment& seg) {
  uint64_t errors = 0;
  Published pub = publishQuiet(sys, dir_fd, cfg, route, seg, errors);
  if (pub.err != 0) return pub;
  metrics.storage_errors += errors;
  ++metrics.archive_segments;
  if (seg.unsynced) ++metrics.unsynced_segments;
  return pub;
}

void SegmentChain::closeSegment() {
  ChainLock lock(mu_.get());
  rotate_pending_ = false;
  if (!fd_.valid()) return;
  if (segmentLost()) return dropLostSegment();
  UnpublishedSegment seg{rel_, size_, false, 0};
  seg.opened_ms = opened_ms_;
  seg.closed_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count();
  if (vars_.conn != 0) {
    seg.peer = vars_.peer;
    seg.conn = vars_.conn;
  }
  if (observer_ != nullptr) observer_->segmentDone(size_);
  UniqueFd fd = std::move(fd_);
  ++closed_;
  rel_.clear();
  size_ = 0;
  ++vars_.seq;
  if (close_worker_ != nullptr && cfg_->fsync == FsyncPolicy::OnClose) {
    // The worker gets its own descriptor of the archive dir: the route may reopen its own.
    UniqueFd dir(::fcntl(dir_.fd(), F_DUPFD_CLOEXEC, 0));
    if (dir.valid()) {
      struct Work {
        UniqueFd fd, dir;
        UnpublishedSegment seg;
      };
      auto work = std::make_shared<Work>(Work{std::move(fd), std::move(dir), std::move(seg)});
      SysCalls* sys = &sys_;
      const ArchiveConfig* cfg = cfg_;
      std::shared_ptr<const ArchiveConfig> hold = cfg_hold_;  // alive until the close is done
      RouteMetrics* metrics = &metrics_;
      std::string route = vars_.route;
      SegmentClosedFn on_closed = on_closed_;
      SegmentUnpublishedFn on_unpublished = on_unpublished_;
      bool posted = close_worker_->post([=]() -> LoopWorker::Completion {
        (void)hold;
        CloseOutcome o = finishSegment(*sys, work->dir.get(), *cfg, route, std::move(work->fd),
                                       std::move(work->seg));
        work->dir.reset();
        return [=, o = std::move(o)]() mutable {
          deliverClose(*metrics, route, on_closed, on_unpublished, std::move(o));
        };
      });
      if (posted) return;
      // Not taken (the worker is stopping): closed here instead.
      fd = std::move(work->fd);
      seg = std::move(work->seg);
    }
  }
  deliverClose(metrics_, vars_.route, on_closed_, on_unpublished_,
               finishSegment(sys_, dir_.fd(), *cfg_, vars_.route, std::move(fd), std::move(seg)));
}

SinkResult SegmentChain::fail(size_t done, int err) {
  notifyAppended();
  last_err_ = err;
  ++metrics_.storage_errors;
  return {done, IoStatus::Error, err};
}

SinkResult SegmentChain::fromPipe(Pipe& pipe, size_t n) {
  ChainLock lock(mu_.get());
  size_t done = 0;
  n = std::min(n, pipe.bytes);
  while (done < n) {
    if (int err = ensureOpen()) return fail(done, err);
    uint64_t room = roomInSegment(size_, cfg_->rotate.max_bytes);
    if (room == 0) {
      closeSegment();
      continue;
    }
    size_t chunk = static_cast<size_t>(std::min<uint64_t>(n - done, room));
    loff_t off = static_cast<loff_t>(size_);
    ssize_t w = sys_.splice(pipe.rd.get(), nullptr, fd_.get(), &off, chunk, SPLICE_F_MOVE);
    if (w > 0) {
      SPLICED_ASSERT(static_cast<size_t>(w) <= chunk && static_cast<size_t>(w) <= pipe.bytes,
                     "splice moves at most what was asked and what the pipe holds");
      size_ += static_cast<uint64_t>(w);
      total_ += static_cast<uint64_t>(w);
      metrics_.archive_bytes += static_cast<uint64_t>(w);
      pipe.bytes -= static_cast<size_t>(w);
      done += static_cast<size_t>(w);
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
      int err = errno;
      notifyAppended();
      return {done, IoStatus::Unsupported, err};
    }
    if (w < 0 && errno == EAGAIN) {
      notifyAppended();
      return {done, IoStatus::Blocked, EAGAIN};
    }
    return fail(done, w == 0 ? EIO : errno);
  }
  notifyAppended();
  last_err_ = 0;
  return {done, IoStatus::Ok, 0};
}

SinkResult SegmentChain::fromBuffer(const char* data, size_t n) {
  ChainLock lock(mu_.get());
  return writeBuffer(data, n, false);
}

SinkResult SegmentChain::writeLines(uint64_t owner, const char* data, size_t n) {
  return writeOwned(owner, data, n, true, {});
}

SinkResult SegmentChain::writeRecords(uint64_t owner, const char* data, size_t n,
                                      std::span<const size_t> ends) {
  SPLICED_ASSERT(!ends.empty() && ends.back() == n, "the bytes written are whole records");
  return writeOwned(owner, data, n, false, ends);
}

SinkResult SegmentChain::writeRecordFromPipe(uint64_t owner, Pipe& pipe, size_t n, bool continued) {
  ChainLock lock(mu_.get());
  if (incomplete_owner_ != 0 && incomplete_owner_ != owner) return {0, IoStatus::Blocked, 0};
  SPLICED_ASSERT(n <= pipe.bytes, "the record waits whole in the pipe");
  size_t done = 0;
  SinkResult r{0, IoStatus::Ok, 0};
  while (done < n) {
    if (int err = ensureOpen()) {
      r = fail(done, err);
      break;
    }
    uint64_t room = roomInSegment(size_, cfg_->rotate.max_bytes);
    if (room == 0 || (!continued && done == 0 && room < n && size_ > 0)) {
      closeSegment();  // the record starts in a segment of its own room
      continue;
    }
    size_t chunk = static_cast<size_t>(std::min<uint64_t>(n - done, room));
    loff_t off = static_cast<loff_t>(size_);
    ssize_t w = sys_.splice(pipe.rd.get(), nullptr, fd_.get(), &off, chunk, SPLICE_F_MOVE);
    if (w > 0) {
      SPLICED_ASSERT(static_cast<size_t>(w) <= chunk, "splice moves at most what was asked");
      size_ += static_cast<uint64_t>(w);
      total_ += static_cast<uint64_t>(w);
      metrics_.archive_bytes += static_cast<uint64_t>(w);
      pipe.bytes -= static_cast<size_t>(w);
      done += static_cast<size_t>(w);
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && (errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
      r = {done, IoStatus::Unsupported, errno};
      notifyAppended();
      break;
    }
    r = fail(done, w == 0 || errno == EAGAIN ? EIO : errno);
    break;
  }
  if (r.status == IoStatus::Ok) {
    notifyAppended();
    last_err_ = 0;
    r.bytes = done;
  }
  // As writeOwned: a record cut short must be completed by its owner before anyone else writes.
  if (done < n && (done > 0 || continued)) {
    incomplete_owner_ = owner;
  } else if (done == n && incomplete_owner_ != 0) {
    incomplete_owner_ = 0;
    if (rotate_pending_) rotate();
  }
  return r;
}

SinkResult SegmentChain::writeOwned(uint64_t owner, const char* data, size_t n, bool whole_lines,
                                    std::span<const size_t> ends) {
  ChainLock lock(mu_.get());
  if (incomplete_owner_ != 0 && incomplete_owner_ != owner) return {0, IoStatus::Blocked, 0};
  SinkResult r = writeBuffer(data, n, whole_lines, ends);
  // A record cut short by an error must be completed by its owner before anyone else writes.
  if (r.bytes < n && r.bytes > 0) {
    incomplete_owner_ = owner;
  } else if (r.bytes == n && incomplete_owner_ != 0) {
    incomplete_owner_ = 0;
    if (rotate_pending_) rotate();  // the rotation asked for meanwhile
  }
  return r;
}

SinkResult SegmentChain::writeBuffer(const char* data, size_t n, bool whole_lines,
                                     std::span<const size_t> ends) {
  size_t done = 0;
  while (done < n) {
    if (int err = ensureOpen()) return fail(done, err);
    uint64_t room = roomInSegment(size_, cfg_->rotate.max_bytes);
    if (room == 0) {
      closeSegment();
      continue;
    }
    size_t chunk = static_cast<size_t>(std::min<uint64_t>(n - done, room));
    SPLICED_ASSERT(chunk > 0, "a write always has room in an open segment");
    if (whole_lines && chunk < n - done) {
      // The rest does not fit: cut after the last whole line that does, or start a new
      // segment; only a line longer than a whole segment is split.
      const char* nl = static_cast<const char*>(memrchr(data + done, '\n', chunk));
      if (nl != nullptr) {
        chunk = static_cast<size_t>(nl - (data + done)) + 1;
      } else if (size_ > 0) {
        closeSegment();  // only a line longer than a whole segment is split
        continue;
      }
    } else if (!ends.empty() && chunk < n - done) {
      // The same at record ends: the last one that fits, or a new segment.
      auto it = std::upper_bound(ends.begin(), ends.end(), done + chunk);
      if (it != ends.begin() && *(it - 1) > done) {
        chunk = *(it - 1) - done;
      } else if (size_ > 0) {
        closeSegment();  // only a record longer than a whole segment is split
        continue;
      }
    }
    ssize_t w = sys_.pwrite(fd_.get(), data + done, chunk, static_cast<off_t>(size_));
    if (w > 0) {
      size_ += static_cast<uint64_t>(w);
      total_ += static_cast<uint64_t>(w);
      metrics_.archive_bytes += static_cast<uint64_t>(w);
      done += static_cast<size_t>(w);
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    return fail(done, w == 0 ? EIO : errno);
  }
  notifyAppended();
  last_err_ = 0;
  return {done, IoStatus::Ok, 0};
}

}  // namespace spliced
