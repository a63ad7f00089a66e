#include "spliced/archive/lifecycle.hpp"

#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>

#include "spliced/archive/compressor.hpp"
#include "spliced/archive/retention.hpp"
#include "spliced/archive/segment_files.hpp"

namespace spliced {

ArchiveLifecycle::ArchiveLifecycle(size_t max_queue)
    : max_queue_(max_queue), thread_([this] { run(); }) {}

ArchiveLifecycle::~ArchiveLifecycle() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
    queue_.clear();
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

void ArchiveLifecycle::retain(ArchiveTarget* target) {
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
  while (true) {
    Job job;
    {
      std::unique_lock lock(mu_);
      busy_ = false;
      idle_cv_.notify_all();
      cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
      if (stop_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
      queued_.store(queue_.size(), std::memory_order_relaxed);
      busy_ = true;
      // Taken off the pending sets now: a new request while this runs queues a fresh job.
      if (job.kind == Kind::Compress) {
        pending_compress_.erase({job.target, job.rel});
      } else {
        pending_scans_.erase({job.target, job.kind});
      }
    }
    switch (job.kind) {
      case Kind::Compress:
        doCompress(job.target, job.rel);
        // Retention counts compressed sizes: run it again now that this one shrank.
        if (job.target->retains()) retain(job.target);
        break;
      case Kind::Retain:
        doRetain(job.target);
        break;
      case Kind::CatchUp:
        doCatchUp(job.target);
        break;
    }
  }
}

void ArchiveLifecycle::doCompress(ArchiveTarget* t, const std::string& rel) {
  auto dir = t->dir->hold();
  CompressResult r = compressSegment(dir->get(), rel, t->cfg->compress, t->cfg->compress_level,
                                     t->cfg->fsync == FsyncPolicy::OnClose, *t->sys);
  if (r.err == ENOENT) return;  // gone already: retention, or a catch-up compressed it
  if (r.err != 0) {
    t->metrics->compress_errors.fetch_add(1, std::memory_order_relaxed);
    spdlog::error("error=storage route={} cannot compress {}: {}", t->route, rel, r.message);
    return;
  }
  t->metrics->compressed.fetch_add(1, std::memory_order_relaxed);
  t->metrics->compressed_in.fetch_add(r.in_bytes, std::memory_order_relaxed);
  t->metrics->compressed_out.fetch_add(r.out_bytes, std::memory_order_relaxed);
  spdlog::debug("route={} compressed {} -> {} ({} -> {} bytes)", t->route, rel, r.out_path,
                r.in_bytes, r.out_bytes);
}

void ArchiveLifecycle::doRetain(ArchiveTarget* t) {
  if (!t->retains()) return;
  auto dir = t->dir->hold();
  RetentionResult r =
      applyRetention(dir->get(), t->cfg->retain, std::chrono::system_clock::now(), t->route);
  t->metrics->deleted_files.fetch_add(r.files, std::memory_order_relaxed);
  t->metrics->deleted_bytes.fetch_add(r.bytes, std::memory_order_relaxed);
}

void ArchiveLifecycle::doCatchUp(ArchiveTarget* t) {
  if (t->compresses()) {
    for (const auto& seg : scanSegments(t->dir->hold()->get())) {
      {
        std::lock_guard lock(mu_);
        if (stop_) return;
      }
      // NAME.unsynced stays as written (its fdatasync failed): never compressed.
      if (isCompressedName(seg.path) || isUnsyncedName(seg.path)) continue;
      doCompress(t, seg.path);
    }
  }
  doRetain(t);
}

}  // namespace spliced
