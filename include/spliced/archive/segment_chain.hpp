#pragma once
// A chain of archive segment files: the sink of a collect route. Segments are opened lazily on
// the first byte, written at offsets the chain owns (never O_APPEND: splice refuses it), named
// NAME.open while active and renamed to NAME (without replacing anything) when closed. A segment
// whose data sync failed (fsync: on_close) is published as NAME.unsynced instead; one whose rename
// failed is handed to the chain's owner (onUnpublished) to be published later.
//
// Closing a segment with `fsync: on_close` (fdatasync, rename, fsync of its directory) may take
// long on a busy disk: with a close worker (syncOffLoop) the chain hands the closed descriptor to
// it and the outcome comes back to the loop later (finishSegment below runs on the worker). With
// `fsync: never` the close is a rename on the loop, as before: no thread hop.
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>

#include "spliced/archive/archive_config.hpp"
#include "spliced/archive/archive_dir.hpp"
#include "spliced/archive/loop_worker.hpp"
#include "spliced/archive/naming.hpp"
#include "spliced/archive/segment_files.hpp"
#include "spliced/core/fd.hpp"
#include "spliced/core/log_limit.hpp"
#include "spliced/core/metrics.hpp"
#include "spliced/core/pump.hpp"
#include "spliced/core/syscalls.hpp"

namespace spliced {

// Holds a shared chain's lock (nothing for a chain of one thread).
class ChainLock {
 public:
  explicit ChainLock(std::recursive_mutex* m) : m_(m) {
    if (m_ != nullptr) m_->lock();
  }
  ~ChainLock() {
    if (m_ != nullptr) m_->unlock();
  }
  ChainLock(const ChainLock&) = delete;
  ChainLock& operator=(const ChainLock&) = delete;

 private:
  std::recursive_mutex* m_;
};

// A closed segment not published yet: still NAME.open, complete, never written again.
struct UnpublishedSegment {
  std::string rel;  // its final name (without .open), relative to the archive dir
  uint64_t bytes = 0;
  bool unsynced = false;  // its fdatasync failed: published as NAME.unsynced
  int err = 0;            // the errno of the last failed rename
  int64_t opened_ms = 0;  // when the segment was opened and closed (Unix ms, for the manifest)
  int64_t closed_ms = 0;
  std::string peer;  // per-connection chains: the client's IP and the connection id
  uint64_t conn = 0;
};

// Called when a segment is complete: its path relative to the archive dir (its published name)
// and what the manifest records of it.
using SegmentClosedFn =
    std::function<void(const std::string& rel_path, const UnpublishedSegment& seg)>;
using SegmentUnpublishedFn = std::function<void(UnpublishedSegment)>;

// The last step of a closed segment: NAME.open -> NAME (NAME.unsynced when its data sync failed),
// never replacing a file, then (fsync: on_close) an fsync of its directory. On success counts the
// segment (archive_segments, unsynced_segments) and returns the name it got; on failure
// (pub.err != 0) counts and logs nothing: the segment is still NAME.open and the caller decides.
Published publishSegment(SysCalls& sys, int dir_fd, const ArchiveConfig& cfg,
                         const std::string& route, RouteMetrics& metrics,
                         const UnpublishedSegment& seg);

// The rescue name of a segment whose configured name cannot be opened for a reason that waiting
// does not cure (see SegmentChain): rescue/ROUTE-CONN-YYYYmmddTHHMMSSZ-SEQ.log, below the
// archive root (CONN is 0 for a shared chain). Route names are short and file-safe, so this name
// cannot fail the same way.
std::string rescueName(const NameVars& vars, std::chrono::system_clock::time_point now);

// True for an errno of a segment open that waiting does not cure: the name is refused
// (EINVAL: expansion refused; ENAMETOOLONG; EEXIST: numeric suffixes exhausted; ENOTDIR, ELOOP,
// EISDIR: something else sits where the name's directories should be).
bool isNameError(int err);

// What closing one segment came to (finishSegment), for the loop to count and hand on.
struct CloseOutcome {
  UnpublishedSegment seg;       // seg.unsynced: its fdatasync failed
  Published pub;                // pub.err != 0: the rename failed, the segment is still NAME.open
  uint64_t storage_errors = 0;  // failed data or directory syncs (not the failed rename)
};

// The whole close of a segment whose writes are over: (fsync: on_close) fdatasync of `fd`, close
// it, rename NAME.open to its final name, (fsync: on_close) fsync of its directory. Logs what
// fails; touches no counter and no chain, so it may run on a close worker (`sys` must then be
// thread-safe, as SysCalls::kernel() is).
CloseOutcome finishSegment(SysCalls& sys, int dir_fd, const ArchiveConfig& cfg,
                           const std::string& route, UniqueFd fd, UnpublishedSegment seg);

// Hears what a chain does to its segments, as it does it (store-and-forward: the shipper follows
// the active segment without looking at the disk). Called with the chain's lock held, on the
// thread that writes: an observer must be quick and thread-safe.
class ChainObserver {
 public:
  virtual ~ChainObserver() = default;
  // A segment was opened as `rel` (its final name, without .open); `fd` is the chain's own
  // descriptor (an observer that reads the segment later dups it).
  virtual void segmentOpened(const std::string& rel, int fd) = 0;
  // The open segment holds `size` bytes now.
  virtual void segmentAppended(uint64_t size) = 0;
  // The open segment is complete at `size` bytes: closed, or lost with a removed directory.
  virtual void segmentDone(uint64_t size) = 0;
  // The chain is gone (its last call): no segment will be opened in it again.
  virtual void chainEnded() {}
};

// A SegmentChain owns the open segment's fd. The archive config, the archive dir, the syscalls
// and the counters are borrowed from the route and outlive it.
//
// The archive dir may be replaced meanwhile (it was removed and came back, see ArchiveDir): the
// chain always opens in the current one. A segment opened in a directory that is gone now is
// dropped at the chain's next write or close (its bytes went with that directory; logged), and
// the chain goes on with a new segment, in the new directory once there is one (until then,
// writes fail with ENOENT and the caller holds its bytes).
//
// When the configured name cannot be opened for a reason waiting does not cure (isNameError),
// the segment is opened under rescueName() instead, logged once per episode and counted
// (archive_rescued_segments); the next segment tries the configured name again.
//
// A shared chain (layout: shared) is written by the sessions of every worker: shareBetweenThreads()
// gives it a lock that each public call holds for its whole length (a write, a rotation), so
// chunks and lines interleave only whole, and a size rotation never lets a segment pass
// max_bytes. A per-connection chain is used by one thread and takes no lock.
class SegmentChain : public Sink {
 public:
  SegmentChain(const ArchiveConfig& cfg, ArchiveDir& dir, NameVars vars, SysCalls& sys,
               RouteMetrics& metrics);
  ~SegmentChain() override;  // closes (and publishes) the active segment

  SinkResult fromPipe(Pipe& pipe, size_t n) override;
  SinkResult fromBuffer(const char* data, size_t n) override;

  // Writes bytes of `owner` keeping lines whole: a size split falls after a '\n', and while one
  // owner's record is half written (a write error) other owners are told to wait.
  SinkResult writeLines(uint64_t owner, const char* data, size_t n);

  // Writes whole records of `owner`: `ends` (ascending, relative to `data`, the last one `n`)
  // says where each record ends; a size split falls only at one of them (a record longer than a
  // whole segment is split). Otherwise as writeLines.
  SinkResult writeRecords(uint64_t owner, const char* data, size_t n, std::span<const size_t> ends);

  // Writes one record of `owner` that waits whole in `pipe` (`n` bytes of it; `continued`: the
  // rest of a record an earlier call wrote in part). A new record goes into one segment: when
  // it does not fit in the active one's room, the next segment is opened first (only a record
  // longer than a whole segment is split). Bytes move by splice; a segment file that refuses
  // splice gives Unsupported (nothing more written). Otherwise as writeRecords.
  SinkResult writeRecordFromPipe(uint64_t owner, Pipe& pipe, size_t n, bool continued);

  // An owner that goes away gives up its claim on a half-written record (and a rotation that
  // waited for it happens now).
  void releaseOwner(uint64_t owner);
  // Closes the active segment, if any; the next byte opens the next one. While a record is half
  // written (writeLines) the rotation waits until its owner completes it or goes away.
  void rotate();
  // Closes the active segment now, even in the middle of a record (shutdown, destructor).
  void closeSegment();
  // The last try for bytes that cannot be written (shutdown): closes the active segment, and the
  // next segment opened takes a rescue name, whatever the error was.
  void rescueNext();
  bool rotationPending() const { return rotate_pending_; }
  bool active() const { return fd_.valid(); }
  uint64_t segmentBytes() const { return size_; }
  uint64_t totalBytes() const { return total_; }
  uint64_t segmentsClosed() const { return closed_; }
  const std::string& activePath() const { return rel_; }
  int lastError() const { return last_err_; }

  void onSegmentClosed(SegmentClosedFn fn) { on_closed_ = std::move(fn); }
  // A closed segment whose rename failed goes to `fn`, which must publish it later (it is still
  // NAME.open). Without one it stays NAME.open and recovery publishes it at the next start.
  void onUnpublished(SegmentUnpublishedFn fn) { on_unpublished_ = std::move(fn); }
  // fsync: on_close: closes segments on `worker` (borrowed; it outlives every close posted to it:
  // its owner drains it before the counters and callbacks given here go away). The outcome is
  // counted and handed to the callbacks on the loop, after the chain itself may be gone.
  void syncOffLoop(LoopWorker* worker) { close_worker_ = worker; }
  // `o` (borrowed; outlives the chain) hears of each segment opened, appended to and closed.
  void observe(ChainObserver* o) { observer_ = o; }
  // Several threads write into this chain from now on (before any of them does).
  void shareBetweenThreads() { mu_ = std::make_unique<std::recursive_mutex>(); }
  // A reload changed the route's archive block: the next size check and the next segment follow
  // `next` (its rotation); the keys a reload may not change (dir, name, layout, framing, fsync)
  // are the same in both. The chain holds `next` from now on.
  void reconfigure(std::shared_ptr<const ArchiveConfig> next);

 private:
  // Opens the next segment if none is open (dropping one whose directory is gone). Returns 0 or
  // an errno.
  int ensureOpen();
  // Opens `rel` (or a numeric-suffixed form of it) as the active segment. Returns 0 or an errno.
  int openNamed(const std::string& rel);
  int openRescue(int why, const std::string& detail);
  // The active segment lives in a directory that is not the archive dir any more.
  bool segmentLost() const {
    return fd_.valid() && (dir_.gone() || dir_.generation() != seg_generation_);
  }
  void dropLostSegment();
  // whole_lines: size splits fall after a '\n'; else, with `ends`, only at a record end.
  SinkResult writeBuffer(const char* data, size_t n, bool whole_lines,
                         std::span<const size_t> ends = {});
  SinkResult writeOwned(uint64_t owner, const char* data, size_t n, bool whole_lines,
                        std::span<const size_t> ends);
  SinkResult fail(size_t done, int err);
  // Tells the observer how far the open segment has grown (once per write call).
  void notifyAppended() {
    if (observer_ != nullptr && fd_.valid() && size_ != observed_size_) {
      observed_size_ = size_;
      observer_->segmentAppended(size_);
    }
  }

  const ArchiveConfig* cfg_;
  std::shared_ptr<const ArchiveConfig> cfg_hold_;  // set by reconfigure(): what cfg_ points into
  ArchiveDir& dir_;
  NameVars vars_;
  SysCalls& sys_;
  RouteMetrics& metrics_;
  UniqueFd fd_;
  std::string rel_;                // final name of the active segment, relative to dir
  uint64_t size_ = 0;              // bytes in the active segment = next write offset
  uint64_t total_ = 0;             // bytes written by this chain
  uint64_t closed_ = 0;            // segments closed by this chain
  uint64_t incomplete_owner_ = 0;  // writeLines: owner whose record is half written
  bool rotate_pending_ = false;    // rotate() waits for incomplete_owner_'s record
  uint64_t seg_generation_ = 0;    // dir_.generation() when the active segment was opened
  int64_t opened_ms_ = 0;          // when the active segment was opened (Unix ms)
  bool rescue_next_ = false;       // rescueNext(): the next segment takes a rescue name
  LogLimiter rescue_log_{"archive rescue"};
  int last_err_ = 0;
  SegmentClosedFn on_closed_;
  SegmentUnpublishedFn on_unpublished_;
  LoopWorker* close_worker_ = nullptr;
  ChainObserver* observer_ = nullptr;
  uint64_t observed_size_ = 0;                // the size the observer last heard of
  std::unique_ptr<std::recursive_mutex> mu_;  // shareBetweenThreads(): held by each public call
};

}  // namespace spliced
