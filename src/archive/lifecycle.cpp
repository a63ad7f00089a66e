#include "spliced/archive/lifecycle.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "spliced/archive/compressor.hpp"
#include "spliced/archive/retention.hpp"
#include "spliced/archive/segment_files.hpp"

namespace spliced {

ArchiveLifecycle::ArchiveLifecycle(size_t max_queue)
    : max_queue_(max_queue), thread_([this] { run(); }) {}

ArchiveLifecycle::~ArchiveLifecycle() {
  {
    // Manifest lines are written before the thread stops (a segment closed at shutdown is
    // recorded); compression and retention are left to the next start's catch-up.
    std::unique_lock lock(mu_);
    draining_.store(true);
    std::erase_if(queue_, [](const Job& j) {
      return j.kind != Kind::OpenManifest && j.kind != Kind::Closed;
    });
    queued_.store(queue_.size(), std::memory_order_relaxed);
    cv_.notify_all();
    idle_cv_.wait(lock, [this] { return queue_.empty() && !busy_; });
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

bool ArchiveLifecycle::compress(ArchiveTarget* target, std::string rel) {
  {
    std::lock_guard lock(mu_);
    if (!pending_compress_.emplace(target, rel).second) return true;  // already queued
    if (queue_.size() >= max_queue_) {
      pending_compress_.erase({target, rel});
      target->metrics->compress_skipped.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    queue_.push_back({Kind::Compress, target, std::move(rel)});
    queued_.store(queue_.size(), std::memory_order_relaxed);
  }
  cv_.notify_one();
  return true;
}

void ArchiveLifecycle::push(Job job) {
  {
    std::lock_guard lock(mu_);
    if (stop_) return;
    queue_.push_back(std::move(job));
    queued_.store(queue_.size(), std::memory_order_relaxed);
  }
  cv_.notify_one();
}

void ArchiveLifecycle::openManifest(ArchiveTarget* target, std::vector<std::string> recovered) {
  push({Kind::OpenManifest, target, {}, {}, std::move(recovered)});
}

void ArchiveLifecycle::segmentClosed(ArchiveTarget* target, UnpublishedSegment seg) {
  std::string rel = seg.rel;
  {
    std::lock_guard lock(mu_);
    if (stop_) return;
    pending_closed_.emplace(target, rel);
  }
  push({Kind::Closed, target, std::move(rel), std::move(seg), {}});
}

void ArchiveLifecycle::retain(ArchiveTarget* target) {
  if (draining_.load()) return;
  {
    std::lock_guard lock(mu_);
    if (!pending_scans_.emplace(target, Kind::Retain).second) return;
    queue_.push_back({Kind::Retain, target, {}});
    queued_.store(queue_.size(), std::memory_order_relaxed);
  }
  cv_.notify_one();
}

void ArchiveLifecycle::catchUp(ArchiveTarget* target) {
  {
    std::lock_guard lock(mu_);
    if (!pending_scans_.emplace(target, Kind::CatchUp).second) return;
    queue_.push_back({Kind::CatchUp, target, {}});
    queued_.store(queue_.size(), std::memory_order_relaxed);
  }
  cv_.notify_one();
}

void ArchiveLifecycle::waitIdle() {
  std::unique_lock lock(mu_);
  idle_cv_.wait(lock, [this] { return stop_ || (queue_.empty() && !busy_); });
}

void ArchiveLifecycle::run() {
  // The splice path comes first: this thread only gets the CPU the loop leaves.
  ::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), 19);
  std::deque<Job> batch;
  while (true) {
    {
      // The whole queue at once: a thread at nice 19 holding the lock the loop needs may wait
      // long for the CPU, so it takes the lock once per batch, not once per job.
      std::unique_lock lock(mu_);
      busy_ = false;
      idle_cv_.notify_all();
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      batch.swap(queue_);
      batch_left_.store(batch.size(), std::memory_order_relaxed);
      queued_.store(0, std::memory_order_relaxed);
      busy_ = true;
      // Taken off the pending sets now: a new request meanwhile queues a fresh job. The closed
      // jobs of the batch stay known until each runs (doCompress waits for their lines).
      for (const Job& job : batch) {
        if (job.kind == Kind::Compress) {
          pending_compress_.erase({job.target, job.rel});
        } else if (job.kind == Kind::Retain || job.kind == Kind::CatchUp) {
          pending_scans_.erase({job.target, job.kind});
        } else if (job.kind == Kind::Closed) {
          pending_closed_.erase({job.target, job.rel});
          batch_closed_.emplace(job.target, job.rel);
        }
      }
    }
    for (Job& job : batch) {
      batch_left_.fetch_sub(1, std::memory_order_relaxed);
      if (job.kind == Kind::Closed) batch_closed_.erase({job.target, job.rel});
      // Stopping: only the manifest's jobs still run.
      if (draining_.load() && job.kind != Kind::OpenManifest && job.kind != Kind::Closed) continue;
      runJob(job);
    }
    batch.clear();
    // One retention pass per route that asked for one during the batch (queued: it runs in the
    // next batch, after what arrived meanwhile).
    for (ArchiveTarget* t : retain_after_) retain(t);
    retain_after_.clear();
  }
}

void ArchiveLifecycle::runJob(Job& job) {
  switch (job.kind) {
    case Kind::Compress:
      doCompress(job.target, job.rel);
      // Retention counts compressed sizes: run it again now that this one shrank.
      if (job.target->retains()) retain_after_.insert(job.target);
      break;
    case Kind::Retain:
      doRetain(job.target);
      break;
    case Kind::CatchUp:
      doCatchUp(job.target);
      break;
    case Kind::OpenManifest:
      doOpenManifest(job.target, job.recovered);
      break;
    case Kind::Closed:
      doClosed(job.target, job.seg);
      if (job.target->retains()) retain_after_.insert(job.target);
      break;
  }
}

std::string ArchiveLifecycle::doCompress(ArchiveTarget* t, const std::string& rel) {
  auto dir = t->dir->hold();
  Manifest* m = t->manifest != nullptr && t->manifest->isOpen() ? t->manifest : nullptr;
  // Not recorded yet: its `closed` job is queued and compresses it after writing that line.
  {
    std::lock_guard lock(mu_);
    if (pending_closed_.count({t, rel}) > 0 || batch_closed_.count({t, rel}) > 0) return rel;
  }
  // One config for the whole job (a reload may replace the route's meanwhile).
  const std::shared_ptr<const ArchiveConfig> cfg = t->config();
  if (cfg->compress == Compress::None) return rel;  // turned off by a reload since it was queued
  CompressResult r = compressSegment(dir->get(), rel, cfg->compress, cfg->compress_level,
                                     cfg->fsync == FsyncPolicy::OnClose, *t->sys);
  if (r.err == ENOENT) return rel;  // gone already: retention, or a catch-up compressed it
  if (r.err != 0 && r.out_path.empty()) {
    t->metrics->compress_errors.fetch_add(1, std::memory_order_relaxed);
    spdlog::error("error=storage route={} cannot compress {}: {}", t->route, rel, r.message);
    return rel;
  }
  if (m != nullptr) {
    FileDigest d = hashFile(dir->get(), r.out_path, cfg->manifest.hash);
    ManifestRecord rec;
    rec.event = ManifestEvent::Compressed;
    rec.name = rel;
    rec.to = r.out_path;
    rec.size = d.size;
    rec.hash = d.hash;
    rec.time = manifestTime(nowUnixMs());
    if (d.err != 0) {
      spdlog::error("error=storage route={} manifest: cannot read {}: {}", t->route, r.out_path,
                    std::strerror(d.err));
    }
    appendRecord(t, rec);
    // A segment compressed before its upload: the compressed file is what is published.
    if (t->publisher != nullptr && m->unpublished(r.out_path)) t->publisher->enqueue(r.out_path);
  }
  if (r.err != 0) {
    t->metrics->compress_errors.fetch_add(1, std::memory_order_relaxed);
    spdlog::error("error=storage route={} cannot compress {}: {}", t->route, rel, r.message);
    return r.out_path;
  }
  t->metrics->compressed.fetch_add(1, std::memory_order_relaxed);
  t->metrics->compressed_in.fetch_add(r.in_bytes, std::memory_order_relaxed);
  t->metrics->compressed_out.fetch_add(r.out_bytes, std::memory_order_relaxed);
  spdlog::debug("route={} compressed {} -> {} ({} -> {} bytes)", t->route, rel, r.out_path,
                r.in_bytes, r.out_bytes);
  return r.out_path;
}

void ArchiveLifecycle::appendRecord(ArchiveTarget* t, const ManifestRecord& rec) {
  if (t->manifest == nullptr || !t->manifest->isOpen()) return;
  if (int err = t->manifest->append(rec)) {
    t->metrics->manifest_errors.fetch_add(1, std::memory_order_relaxed);
    spdlog::error("error=storage route={} manifest: cannot append the {} record of {}: {}",
                  t->route, toString(rec.event), rec.name, std::strerror(err));
    return;
  }
  t->metrics->manifest_records.fetch_add(1, std::memory_order_relaxed);
}

bool ArchiveLifecycle::recordClosed(ArchiveTarget* t, int dir_fd, const UnpublishedSegment& seg,
                                    const std::string& origin) {
  // Line-framed chains (either layout) record their line count.
  const bool lines = t->config()->framing == Framing::Lines;
  FileDigest d = hashFile(dir_fd, seg.rel, t->config()->manifest.hash, UINT64_MAX, lines);
  if (d.err != 0) {
    if (d.err != ENOENT) {
      spdlog::error("error=storage route={} manifest: cannot read {}: {}", t->route, seg.rel,
                    std::strerror(d.err));
    }
    return false;
  }
  ManifestRecord rec;
  rec.event = ManifestEvent::Closed;
  rec.name = seg.rel;
  rec.size = d.size;
  rec.hash = d.hash;
  const int64_t now = nowUnixMs();
  rec.opened = manifestTime(seg.opened_ms != 0 ? seg.opened_ms : now);
  rec.closed = manifestTime(seg.closed_ms != 0 ? seg.closed_ms : now);
  rec.peer = seg.peer;
  rec.conn = seg.conn;
  if (lines) rec.lines = d.lines;
  rec.origin = origin;
  appendRecord(t, rec);
  return true;
}

void ArchiveLifecycle::doClosed(ArchiveTarget* t, const UnpublishedSegment& seg) {
  std::string final_name = seg.rel;
  // Recorded already: adopted by a manifest created while this job waited.
  if (t->manifest != nullptr && t->manifest->isOpen() && !t->manifest->adopted(seg.rel)) {
    auto dir = t->dir->hold();
    if (!recordClosed(t, dir->get(), seg, "")) return;
  }
  // A shipping route compresses a segment once it is shipped (the shipper queues it then).
  if (t->compresses() && !isUnsyncedName(seg.rel) && !draining_.load() &&
      !(t->unshipped && t->unshipped(seg.rel))) {
    final_name = doCompress(t, seg.rel);
  }
  if (t->publisher != nullptr && t->manifest->unpublished(final_name)) {
    t->publisher->enqueue(final_name);
  }
}

namespace {
// The value of "key":"..." in a (possibly cut) manifest line; "" when absent or cut.
std::string cutMember(const std::string& cut, const std::string& key) {
  const std::string tag = "\"" + key + "\":\"";
  size_t at = cut.find(tag);
  if (at == std::string::npos) return {};
  at += tag.size();
  size_t end = cut.find('"', at);
  if (end == std::string::npos) return {};
  return cut.substr(at, end - at);
}
}  // namespace

void ArchiveLifecycle::redoCut(ArchiveTarget* t, int dir_fd, const std::string& cut) {
  const std::string event = cutMember(cut, "event");
  const std::string name = cutMember(cut, "name");
  if (name.empty()) return;
  auto exists = [dir_fd](const std::string& rel) {
    struct stat st;
    return !rel.empty() && ::fstatat(dir_fd, rel.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
  };
  const int64_t now = nowUnixMs();
  bool redone = false;
  if (event == "closed" && exists(name)) {
    UnpublishedSegment seg;
    seg.rel = name;
    redone = recordClosed(t, dir_fd, seg, "recovered");
  } else if (event == "deleted" && !exists(name)) {
    ManifestRecord rec;
    rec.event = ManifestEvent::Deleted;
    rec.name = name;
    rec.reason = cutMember(cut, "reason");
    if (rec.reason.empty()) rec.reason = "retention";
    rec.time = manifestTime(now);
    appendRecord(t, rec);
    redone = true;
  } else if (event == "compressed") {
    if (exists(name)) {
      // compressSegment settles a half-done compression and records it.
      doCompress(t, name);
      redone = true;
    } else {
      for (const char* ext : {".zst", ".gz"}) {
        const std::string to = name + ext;
        if (!exists(to)) continue;
        FileDigest d = hashFile(dir_fd, to, t->config()->manifest.hash);
        ManifestRecord rec;
        rec.event = ManifestEvent::Compressed;
        rec.name = name;
        rec.to = to;
        rec.size = d.size;
        rec.hash = d.hash;
        rec.time = manifestTime(now);
        appendRecord(t, rec);
        redone = true;
        break;
      }
    }
  }
  // A cut `published` record is not redone: the segment stays unpublished and runs again.
  if (redone) {
    spdlog::info("route={} manifest: redid the {} record of {} that a crash cut", t->route, event,
                 name);
  }
}

void ArchiveLifecycle::doOpenManifest(ArchiveTarget* t, const std::vector<std::string>& recovered) {
  if (t->manifest == nullptr) return;
  auto dir = t->dir->hold();
  bool created = false;
  std::string cut;
  if (std::string err = t->manifest->open(dir->get(), created, cut); !err.empty()) {
    t->metrics->manifest_errors.fetch_add(1, std::memory_order_relaxed);
    spdlog::error("error=storage route={} manifest: {}; segments are not recorded", t->route, err);
    return;
  }
  if (!cut.empty()) redoCut(t, dir->get(), cut);
  if (created) {
    // A new manifest in an archive dir that already holds segments (the manifest is newer than
    // them): they are adopted as they are now.
    // Not the segments this process closed meanwhile: their own jobs record them, with more.
    uint64_t adopted = 0;
    for (const auto& seg : scanSegments(dir->get())) {
      UnpublishedSegment s;
      s.rel = seg.path;
      {
        std::lock_guard lock(mu_);
        if (pending_closed_.count({t, seg.path}) > 0 || batch_closed_.count({t, seg.path}) > 0) {
          continue;
        }
      }
      if (std::find(recovered.begin(), recovered.end(), seg.path) != recovered.end()) continue;
      if (recordClosed(t, dir->get(), s, "adopted")) {
        t->manifest->noteAdopted(seg.path);
        ++adopted;
      }
    }
    if (adopted > 0) {
      spdlog::info("route={} manifest created; {} segment(s) already there adopted", t->route,
                   adopted);
    }
  }
  for (const auto& rel : recovered) {
    UnpublishedSegment s;
    s.rel = rel;
    recordClosed(t, dir->get(), s, "recovered");
  }
  if (t->publisher != nullptr) {
    auto waiting = t->manifest->unpublished();
    if (!waiting.empty()) {
      spdlog::info("route={} on_publish: {} segment(s) without a published record queued", t->route,
                   waiting.size());
    }
    for (const auto& name : waiting) t->publisher->enqueue(name);
  }
}

void ArchiveLifecycle::doRetain(ArchiveTarget* t) {
  if (!t->retains()) return;
  auto dir = t->dir->hold();
  RetentionHooks hooks;
  Manifest* m = t->manifest != nullptr && t->manifest->isOpen() ? t->manifest : nullptr;
  const bool require_published =
      m != nullptr && t->config()->retain.require_published && t->publisher != nullptr;
  const bool keep_unshipped = t->unshipped && !t->config()->retain.drop_unshipped;
  if (require_published || keep_unshipped) {
    hooks.keep = [t, m, require_published, keep_unshipped](const std::string& rel) {
      if (keep_unshipped && t->unshipped(rel)) return true;
      if (!require_published || !m->unpublished(rel)) return false;
      t->metrics->kept_unpublished.fetch_add(1, std::memory_order_relaxed);
      return true;
    };
  }
  // With retain.unshipped: drop, whether a segment was unshipped is asked before it goes.
  std::set<std::string> unshipped_deleted;
  hooks.deleted = [this, t, m, &unshipped_deleted](const std::string& rel, const char* reason) {
    if (t->dropped_unshipped && t->unshipped && t->unshipped(rel)) unshipped_deleted.insert(rel);
    if (m == nullptr) return;
    ManifestRecord rec;
    rec.event = ManifestEvent::Deleted;
    rec.name = rel;
    rec.reason = reason;
    rec.time = manifestTime(nowUnixMs());
    appendRecord(t, rec);
  };
  RetentionResult r = applyRetention(dir->get(), t->config()->retain,
                                     std::chrono::system_clock::now(), t->route, hooks);
  t->metrics->deleted_files.fetch_add(r.files, std::memory_order_relaxed);
  t->metrics->deleted_bytes.fetch_add(r.bytes, std::memory_order_relaxed);
  for (const auto& rel : unshipped_deleted) t->dropped_unshipped(rel);
}

void ArchiveLifecycle::doCatchUp(ArchiveTarget* t) {
  if (t->compresses()) {
    for (const auto& seg : scanSegments(t->dir->hold()->get())) {
      if (draining_.load()) return;
      // NAME.unsynced stays as written (its fdatasync failed): never compressed.
      if (isCompressedName(seg.path) || isUnsyncedName(seg.path)) continue;
      if (t->unshipped && t->unshipped(seg.path)) continue;  // compressed once shipped
      doCompress(t, seg.path);
    }
  }
  doRetain(t);
}

}  // namespace spliced
