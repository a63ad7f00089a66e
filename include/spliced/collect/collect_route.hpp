#pragma once
// The collect kind of route: what a route with an `archive:` block owns besides its listener.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "spliced/archive/archive_config.hpp"
#include "spliced/archive/archive_dir.hpp"
#include "spliced/archive/lifecycle.hpp"
#include "spliced/archive/loop_worker.hpp"
#include "spliced/archive/segment_chain.hpp"
#include "spliced/core/event.hpp"
#include "spliced/core/fd.hpp"
#include "spliced/core/session.hpp"
#include "spliced/proxy/forward_config.hpp"
#include "spliced/proxy/upstream_pool.hpp"
#include "spliced/ship/shipper.hpp"

namespace spliced {

// A CollectRoute owns the archive dir (ArchiveDir) and its lock, the shared chain (layout:
// shared), the interval, maintenance and dir-watch timers, the route's lifecycle counters, the
// closed segments of all its chains whose rename failed (retried on a timer with back-off, and once
// more at finish(): a session may end before its segment is published), and with fsync: on_close
// the close worker of its chains (drained at finish(): a clean stop leaves no NAME.open); it
// creates the route's
// CollectSessions, which borrow it. The RouteContext, the archive config (part of the config
// snapshot) and the lifecycle thread are borrowed and outlive it.
class CollectRoute : public RouteKind {
 public:
  // With `forward` (borrowed, part of the snapshot too) the route also ships what it archives
  // (store-and-forward): it owns the upstream pool and the shared chain's Shipper.
  // `cfg` shares the config snapshot it belongs to: the route keeps it (and `forward`, of the same
  // snapshot) for the keys a reload cannot change.
  CollectRoute(RouteContext& ctx, std::shared_ptr<const ArchiveConfig> cfg,
               ArchiveLifecycle& lifecycle, const ForwardConfig* forward = nullptr);
  ~CollectRoute() override;

  // Creates and locks the archive dir, finalises what a crash left, opens the shared chain
  // (lazily: its first segment comes with the first byte) and arms the timers.
  Status start() override;
  SessionPtr createSession(RouteContext& ctx, Connection conn) override;
  // The socket, and a per-connection segment (a shared chain's segment is the route's own).
  size_t descriptorsPerSession() const override;
  void rotate() override;
  void finish() override;
  void problems(std::vector<std::string>& out) const override;

  // A reload changed the archive block in what it may change (rotation, retention, compression,
  // max_line, oversize): new connections and new segments follow `next`; running connections keep
  // the config they started with. Main thread.
  void reconfigure(const std::shared_ptr<const ArchiveConfig>& next);
  // The archive config now (a share of it: a reload may replace it). Any thread.
  std::shared_ptr<const ArchiveConfig> current() const;

  // What its sessions use. config() is the config the route started with: for the keys a reload
  // cannot change (dir, layout, framing, output, name, fsync, manifest, on_publish).
  const ArchiveConfig& config() const { return cfg_; }
  int dirFd() const { return dir_.fd(); }
  ArchiveDir& dir() { return dir_; }
  SegmentChain* sharedChain() { return shared_.get(); }
  // fsync: on_close: the worker that closes (syncs and publishes) this route's segments off the
  // loop; nullptr with fsync: never.
  LoopWorker* closeWorker() { return close_worker_.get(); }
  // A segment of this route is complete (published as `rel`): hand it to the lifecycle thread
  // (manifest line, compression but not for NAME.unsynced, on_publish) and queue a retention pass.
  // Any thread (a worker's is posted to the main loop).
  void segmentClosed(const std::string& rel, const UnpublishedSegment& seg);
  // A closed segment of this route whose rename failed: published by a retry (back-off 100 ms ..
  // 5 s), or at finish() at the latest. Any thread (a worker's is posted to the main loop).
  void publishLater(UnpublishedSegment seg);
  // Storage episodes: a session whose archive writes fail marks the route stalled until its
  // writes succeed again (for /healthz and the stalled gauge). Any thread.
  void storageStalled(int err);
  void storageRecovered();

  // What the admin endpoint reports.
  uint64_t stalledSessions() const { return stalled_; }
  uint64_t unpublishedSegments() const { return unpublished_.size(); }
  const LifecycleMetrics& lifecycle() const { return lifecycle_metrics_; }
  // A shipping route's pool (nullptr otherwise) and its shipping figures, over every chain.
  const UpstreamPool* pool() const { return pool_.get(); }
  bool ships() const { return pool_ != nullptr; }
  ShipTotals shipTotals() const;
  // layout: per_connection on a shipping route: a new connection's chain gets a Shipper of its
  // own (its own upstream connection), owned here until the chain has ended and is shipped whole.
  // Returns the observer to give the chain; nullptr when the route does not ship. Any thread.
  ChainObserver* shipConnection(uint64_t conn);

 private:
  Status openDir();
  // Opens and locks <dir>/.spliced.lock of the directory `dir_fd` into `out`.
  Status lockDir(int dir_fd, UniqueFd& out);
  // Finalises what an unclean stop left in the archive dir (start, and a recreated dir); returns
  // the segments it published.
  std::vector<std::string> recover();
  // The dir-watch timer: notices that the archive dir was removed, and reopens it by path once a
  // directory is there again.
  static void onDirWatch(evutil_socket_t, short, void* arg);
  void watchDir();
  bool reopenDir();
  static void onInterval(evutil_socket_t, short, void* arg);
  static void onMaintenance(evutil_socket_t, short, void* arg);
  void armInterval();
  // The maintenance timer (a catch-up now and every max_age / 10, at most a minute), when the
  // route compresses or retains; else none.
  void armMaintenance();
  static void onPublishRetry(evutil_socket_t, short, void* arg);
  // Tries to publish every segment waiting in unpublished_.
  void retryPublishing();
  // True on the thread that started the route (the main loop's): its timers and lists live there.
  bool onHome() const { return std::this_thread::get_id() == home_; }
  // The upstream acknowledged `rel` whole: now it may be compressed, and retention may take it.
  void segmentShipped(const std::string& rel);
  // True while any chain of this route still has `rel` to ship. Any thread.
  bool unshipped(const std::string& rel) const;
  // Per-connection chains left by an earlier run (their cursors in .spliced/ship): shipped now.
  void resumeConnectionChains();
  // Creates and keeps the shipper of the per-connection chain `name` (not started).
  Shipper* addConnectionShipper(const std::string& name);
  // A per-connection chain is shipped whole: its shipper goes (home loop).
  void connectionShipped(const std::string& chain);

  RouteContext& ctx_;
  const std::shared_ptr<const ArchiveConfig> first_;  // the config the route started with
  const ArchiveConfig& cfg_;                          // *first_
  mutable std::mutex live_mu_;
  std::shared_ptr<const ArchiveConfig> live_;  // the latest (guarded: sessions start on workers)
  ArchiveLifecycle& lifecycle_;
  const ForwardConfig* forward_;
  ArchiveDir dir_;
  UniqueFd lock_fd_;  // flock on <dir>/.spliced.lock: one process per archive dir
  LifecycleMetrics lifecycle_metrics_;
  // The manifest (written on the lifecycle thread and by the on_publish runner), then the runner,
  // which uses it: declared in this order so that the runner stops first.
  std::unique_ptr<Manifest> manifest_;
  std::unique_ptr<PublishRunner> publisher_;
  ArchiveTarget target_;  // what the lifecycle thread needs of this route
  // Store-and-forward: the pool, then the shipper that the shared chain tells of its segments
  // (the chain goes first: see the destructor).
  std::unique_ptr<UpstreamPool> pool_;
  std::unique_ptr<Shipper> shipper_;
  // layout: per_connection: a shipper per chain, by chain name; and what finished ones counted.
  mutable std::mutex conn_ship_mu_;
  std::map<std::string, std::unique_ptr<Shipper>> conn_shippers_;
  ShipTotals finished_totals_;
  // Before shared_: its destructor may still hand a segment over.
  std::vector<UnpublishedSegment> unpublished_;
  EventPtr publish_ev_;
  std::chrono::milliseconds publish_backoff_{0};
  std::string last_unsynced_;  // the latest close's data sync failed: that segment's name
  // fsync: on_close: the thread that closes segments; its completions use the members above.
  std::unique_ptr<LoopWorker> close_worker_;
  std::unique_ptr<SegmentChain> shared_;
  EventPtr interval_ev_;
  EventPtr maintenance_ev_;
  EventPtr dir_watch_ev_;
  bool dir_removed_logged_ = false;  // this removal episode was logged
  std::string reopen_error_;         // why the last reopen failed ("" when none did)
  std::atomic<uint64_t> stalled_{0};
  std::atomic<int> last_storage_err_{0};
  std::thread::id home_;
};

}  // namespace spliced
