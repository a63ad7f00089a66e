#pragma once
// The slow work on closed segments, off the event loop: compression and retention run in one
// background thread, at the lowest CPU priority (nice 19), fed by a bounded queue. The loop only
// enqueues and never waits; when the queue is full a segment stays uncompressed, is counted, and
// the next catch-up scan compresses it.
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "spliced/archive/archive_config.hpp"
#include "spliced/archive/archive_dir.hpp"
#include "spliced/archive/manifest.hpp"
#include "spliced/archive/publish_runner.hpp"
#include "spliced/archive/segment_chain.hpp"
#include "spliced/core/syscalls.hpp"

namespace spliced {

// Counters written by the lifecycle thread and read by the loop thread when scraped.
struct LifecycleMetrics {
  std::atomic<uint64_t> compressed{0};        // segments compressed
  std::atomic<uint64_t> compressed_in{0};     // their plain bytes
  std::atomic<uint64_t> compressed_out{0};    // their compressed bytes
  std::atomic<uint64_t> compress_errors{0};   // failed compressions (the plain file stays)
  std::atomic<uint64_t> compress_skipped{0};  // not queued: the queue was full
  std::atomic<uint64_t> deleted_files{0};     // removed by retention
  std::atomic<uint64_t> deleted_bytes{0};
  std::atomic<uint64_t> manifest_records{0};  // lines appended to the manifest
  std::atomic<uint64_t> manifest_errors{0};   // appends (or the open) that failed
  std::atomic<uint64_t> kept_unpublished{0};  // deletions retention put off (require_published)
  PublishMetrics publish;                     // on_publish runs
};

// What the lifecycle thread needs of a route. Owned by the route, which outlives the thread.
struct ArchiveTarget {
  std::string route;
  const ArchiveDir* dir = nullptr;  // each job holds its descriptor (hold()) while it runs
  LifecycleMetrics* metrics = nullptr;
  SysCalls* sys =
      &SysCalls::kernel();             // stateless in production; a test's seam must be thread-safe
  Manifest* manifest = nullptr;        // the route's manifest (written on the lifecycle thread)
  PublishRunner* publisher = nullptr;  // archive.on_publish, when configured
  // A shipping route: true while a segment (a published name) is not shipped whole. Such a
  // segment is neither compressed nor (retain.unshipped: keep) deleted. Any thread.
  std::function<bool(const std::string& rel)> unshipped;
  // retain.unshipped: drop: retention deleted a segment that was not shipped whole.
  std::function<void(const std::string& rel)> dropped_unshipped;
  // The route's archive config: a reload replaces it while jobs run, so a job takes it once
  // (config() returns a share of it) and uses that copy to its end. Any thread.
  std::shared_ptr<const ArchiveConfig> config() const {
    std::lock_guard lock(cfg_mu_);
    return cfg_;
  }
  void setConfig(std::shared_ptr<const ArchiveConfig> cfg) {
    std::lock_guard lock(cfg_mu_);
    cfg_ = std::move(cfg);
  }
  bool compresses() const { return config()->compress != Compress::None; }
  bool retains() const {
    const std::shared_ptr<const ArchiveConfig> c = config();
    return c->retain.max_files || c->retain.max_age.count() || c->retain.max_bytes;
  }

 private:
  mutable std::mutex cfg_mu_;
  std::shared_ptr<const ArchiveConfig> cfg_;
};

// An ArchiveLifecycle owns its thread (the archive lifecycle thread) and its queue; the targets
// are borrowed.
class ArchiveLifecycle {
 public:
  explicit ArchiveLifecycle(size_t max_queue = 4096);
  // Stops after the job in progress and the queued manifest jobs; queued compression and retention
  // jobs are dropped (the next start's catch-up does them).
  ~ArchiveLifecycle();
  ArchiveLifecycle(const ArchiveLifecycle&) = delete;
  ArchiveLifecycle& operator=(const ArchiveLifecycle&) = delete;

  // Opens (and repairs) the route's manifest and queues again the on_publish runs that have no
  // `published` record; then records the segments recovery finalised (`recovered`, .open files
  // left by a crash). Queued first at start, and whenever the archive dir was replaced.
  void openManifest(ArchiveTarget* target, std::vector<std::string> recovered);
  // A segment was published (closed and renamed): hash it once, append its `closed` line to the
  // manifest, compress it (when configured) and hand its final name to on_publish. Never dropped
  // (the queue's bound is for compression only).
  void segmentClosed(ArchiveTarget* target, UnpublishedSegment seg);
  // Compress a just-closed segment. False (and counted as skipped) when the queue is full.
  bool compress(ArchiveTarget* target, std::string rel);
  // A retention pass for the route; at most one is queued per route at a time.
  void retain(ArchiveTarget* target);
  // Compress closed segments left plain (a full queue, a crash, compress newly turned on), then
  // apply retention. At most one is queued per route at a time.
  void catchUp(ArchiveTarget* target);

  // Jobs waiting: queued, or in the batch the thread took and not started yet.
  size_t queued() const {
    return queued_.load(std::memory_order_relaxed) + batch_left_.load(std::memory_order_relaxed);
  }
  // Blocks until the queue is empty and no job runs (tests, and a clean shutdown in tests).
  void waitIdle();

 private:
  enum class Kind { Compress, Retain, CatchUp, OpenManifest, Closed };
  struct Job {
    Kind kind;
    ArchiveTarget* target;
    std::string rel;
    UnpublishedSegment seg;              // Closed
    std::vector<std::string> recovered;  // OpenManifest
  };
  void run();
  void runJob(Job& job);
  void push(Job job);
  void doOpenManifest(ArchiveTarget* t, const std::vector<std::string>& recovered);
  // Appends the `closed` line of `seg` (origin: "", "recovered", "adopted"); false when the file
  // cannot be read.
  bool recordClosed(ArchiveTarget* t, int dir_fd, const UnpublishedSegment& seg,
                    const std::string& origin);
  void doClosed(ArchiveTarget* t, const UnpublishedSegment& seg);
  // Redoes the event of a manifest line that a crash cut (open() removed it).
  void redoCut(ArchiveTarget* t, int dir_fd, const std::string& cut);
  void appendRecord(ArchiveTarget* t, const ManifestRecord& rec);
  // Compresses `rel`; returns the segment's name afterwards (rel when it stays plain).
  std::string doCompress(ArchiveTarget* t, const std::string& rel);
  void doRetain(ArchiveTarget* t);
  void doCatchUp(ArchiveTarget* t);

  const size_t max_queue_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::condition_variable idle_cv_;
  std::deque<Job> queue_;
  std::set<std::pair<ArchiveTarget*, std::string>> pending_compress_;
  std::set<std::pair<ArchiveTarget*, Kind>> pending_scans_;
  // Segments whose `closed` job is queued: compression waits for their manifest line.
  std::set<std::pair<ArchiveTarget*, std::string>> pending_closed_;
  // The lifecycle thread's own: the closed jobs of its batch that have not started, and the routes
  // whose retention pass it queues at the end of the batch.
  std::set<std::pair<ArchiveTarget*, std::string>> batch_closed_;
  std::set<ArchiveTarget*> retain_after_;
  bool busy_ = false;
  bool stop_ = false;
  std::atomic<bool> draining_{false};  // the destructor runs: only manifest jobs are left
  std::atomic<size_t> queued_{0};
  std::atomic<size_t> batch_left_{0};
  std::thread thread_;  // last: started once everything it uses exists
};

}  // namespace spliced
