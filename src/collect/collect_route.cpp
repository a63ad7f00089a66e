#include "spliced/collect/collect_route.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <thread>

#include "spliced/archive/recovery.hpp"
#include "spliced/archive/rotation.hpp"
#include "spliced/archive/segment_files.hpp"
#include "spliced/collect/collect_session.hpp"
#include "spliced/core/units.hpp"

namespace spliced {

CollectRoute::CollectRoute(RouteContext& ctx, std::shared_ptr<const ArchiveConfig> cfg,
                           ArchiveLifecycle& lifecycle, const ForwardConfig* forward)
    : ctx_(ctx),
      first_(std::move(cfg)),
      cfg_(*first_),
      live_(first_),
      lifecycle_(lifecycle),
      forward_(forward) {}

namespace {
constexpr std::chrono::milliseconds kFirstPublishRetry{100};
constexpr std::chrono::milliseconds kMaxPublishRetry{5000};
// How often the route looks whether its archive dir was removed (or, while it is, came back).
constexpr std::chrono::milliseconds kDirWatch{1000};
// How long a stop waits for the segments still being synced and published (fsync: on_close).
constexpr std::chrono::milliseconds kCloseDrainLimit{30000};
}  // namespace

CollectRoute::~CollectRoute() {
  shared_.reset();  // may still hand over a segment: the members it uses are alive
  if (close_worker_) close_worker_->drain(kCloseDrainLimit);
  close_worker_.reset();
}

Status CollectRoute::openDir() {
  std::error_code ec;
  std::filesystem::create_directories(cfg_.dir, ec);
  if (ec) {
    return Error(sourceOfSetupErrno(ec.value()),
                 fmt::format("cannot create archive dir {}", cfg_.dir.string()), ec.value());
  }
  UniqueFd fd(::open(cfg_.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) {
    int err = errno;
    return Error(sourceOfSetupErrno(err),
                 fmt::format("cannot open archive dir {}", cfg_.dir.string()), err);
  }
  if (::faccessat(fd.get(), ".", W_OK | X_OK, 0) != 0) {
    int err = errno;
    return Error(sourceOfSetupErrno(err),
                 fmt::format("archive dir {} is not writable", cfg_.dir.string()), err);
  }
  dir_.reset(std::move(fd));
  return Ok{};
}

std::vector<std::string> CollectRoute::recover() {
  const std::string& route = ctx_.routeName();
  // Leftovers of a crash: NAME.open segments are finalised, interrupted compressions removed.
  RecoveryResult rec = recoverArchive(dir_.fd(), route, ctx_.sys());
  for (const auto& e : rec.errors) spdlog::error("error=storage route={} recovery: {}", route, e);
  if (!rec.finalized.empty() || rec.removed_tmp > 0) {
    spdlog::warn(
        "route={} recovered after an unclean stop: {} segment(s) finalised, {} "
        "temporary file(s) removed",
        route, rec.finalized.size(), rec.removed_tmp);
  }
  return std::move(rec.finalized);
}

Status CollectRoute::start() {
  home_ = std::this_thread::get_id();
  if (Status s = openDir(); !s) return s;
  if (Status s = lockDir(dir_.fd(), lock_fd_); !s) return s;
  const std::string& route = ctx_.routeName();
  std::vector<std::string> recovered = recover();
  manifest_ = std::make_unique<Manifest>(
      route, cfg_.manifest.hash, cfg_.fsync == FsyncPolicy::OnClose, cfg_.on_publish.enabled());
  if (cfg_.on_publish.enabled()) {
    std::error_code ec;
    auto abs = std::filesystem::absolute(cfg_.dir, ec).lexically_normal().string();
    while (abs.size() > 1 && abs.back() == '/') abs.pop_back();
    publisher_ = std::make_unique<PublishRunner>(route, abs, cfg_.on_publish, *manifest_,
                                                 lifecycle_metrics_.publish);
  }
  target_.route = route;
  target_.dir = &dir_;
  target_.setConfig(first_);
  target_.metrics = &lifecycle_metrics_;
  target_.sys = &ctx_.sys();
  target_.manifest = manifest_.get();
  target_.publisher = publisher_.get();
  // First in the lifecycle's queue: every later job of this route finds the manifest open.
  lifecycle_.openManifest(&target_, std::move(recovered));
  if (cfg_.fsync == FsyncPolicy::OnClose) {
    close_worker_ = std::make_unique<LoopWorker>(ctx_.base(), "archive close " + route);
  }
  if (cfg_.layout == Layout::Shared) {
    NameVars vars;
    vars.route = route;
    vars.pid = ::getpid();
    shared_ =
        std::make_unique<SegmentChain>(cfg_, dir_, std::move(vars), ctx_.sys(), ctx_.metrics());
    // Every worker's sessions write into it.
    shared_->shareBetweenThreads();
    shared_->onSegmentClosed(
        [this](const std::string& rel, const UnpublishedSegment& seg) { segmentClosed(rel, seg); });
    shared_->onUnpublished([this](UnpublishedSegment seg) { publishLater(std::move(seg)); });
    shared_->syncOffLoop(close_worker_.get());
  }
  if (forward_ != nullptr) {
    // Store-and-forward: shippers read their cursors (after recovery published what a crash
    // left) and follow their chains: the shared one from its first segment on, or each
    // connection's.
    pool_ = std::make_unique<UpstreamPool>(ctx_.base(), *forward_, route);
    pool_->start();
    target_.unshipped = [this](const std::string& rel) { return unshipped(rel); };
    // Called only under retain.unshipped: drop (which a reload may turn on).
    target_.dropped_unshipped = [this](const std::string& rel) {
      if (shipper_) shipper_->dropped(rel);
      std::lock_guard lock(conn_ship_mu_);
      for (auto& [name, s] : conn_shippers_) s->dropped(rel);
    };
    if (shared_) {
      shipper_ = std::make_unique<Shipper>(
          ctx_.base(), ctx_.sys(), route, "shared", *forward_, cfg_.framing == Framing::Lines,
          *pool_, dir_, [this](std::function<void()> fn) { ctx_.post(std::move(fn)); },
          [this](const std::string& rel) { segmentShipped(rel); });
      shipper_->start();
      shared_->observe(shipper_.get());
    } else {
      resumeConnectionChains();
    }
  }
  publish_ev_.reset(evtimer_new(ctx_.base(), &CollectRoute::onPublishRetry, this));
  interval_ev_.reset(evtimer_new(ctx_.base(), &CollectRoute::onInterval, this));
  armInterval();
  dir_watch_ev_.reset(event_new(ctx_.base(), -1, EV_PERSIST, &CollectRoute::onDirWatch, this));
  addEvent(dir_watch_ev_.get(), kDirWatch);
  maintenance_ev_.reset(event_new(ctx_.base(), -1, EV_PERSIST, &CollectRoute::onMaintenance, this));
  armMaintenance();
  return Ok{};
}

void CollectRoute::armMaintenance() {
  event_del(maintenance_ev_.get());
  if (!target_.compresses() && !target_.retains()) return;
  // A catch-up now (segments left plain or due for deletion while stopped, or a reload that
  // tightened retention or turned compression on), then on a timer: retention by age needs the
  // clock, not only rotations.
  lifecycle_.catchUp(&target_);
  auto every = std::chrono::milliseconds(60000);
  const std::shared_ptr<const ArchiveConfig> cfg = target_.config();
  if (cfg->retain.max_age.count() > 0) {
    every = std::clamp(cfg->retain.max_age / 10, std::chrono::milliseconds(1000), every);
  }
  addEvent(maintenance_ev_.get(), every);
}

std::shared_ptr<const ArchiveConfig> CollectRoute::current() const {
  std::lock_guard lock(live_mu_);
  return live_;
}

void CollectRoute::reconfigure(const std::shared_ptr<const ArchiveConfig>& next) {
  {
    std::lock_guard lock(live_mu_);
    live_ = next;
  }
  if (shared_) shared_->reconfigure(next);
  target_.setConfig(next);
  if (!interval_ev_) return;  // not started
  event_del(interval_ev_.get());
  armInterval();
  armMaintenance();
}

Status CollectRoute::lockDir(int dir_fd, UniqueFd& out) {
  UniqueFd lock_fd(::openat(dir_fd, ".spliced.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (!lock_fd.valid()) {
    int err = errno;
    return Error(sourceOfSetupErrno(err),
                 fmt::format("cannot create {}/.spliced.lock", cfg_.dir.string()), err);
  }
  if (::flock(lock_fd.get(), LOCK_EX | LOCK_NB) != 0) {
    char pid[32] = {0};
    ssize_t n = ::pread(lock_fd.get(), pid, sizeof pid - 1, 0);
    std::string who;
    if (n > 0) who = fmt::format(" (pid {})", std::string(pid, std::strcspn(pid, "\n")));
    return Error(ErrorSource::Environment,
                 fmt::format("archive dir {} is in use by another spliced process{}",
                             cfg_.dir.string(), who));
  }
  std::string me = fmt::format("{}\n", ::getpid());
  if (::ftruncate(lock_fd.get(), 0) == 0) {
    [[maybe_unused]] ssize_t w = ::pwrite(lock_fd.get(), me.data(), me.size(), 0);
  }
  out = std::move(lock_fd);
  return Ok{};
}

size_t CollectRoute::descriptorsPerSession() const {
  if (cfg_.layout != Layout::PerConnection) return 1;
  // Shipping each connection: its upstream socket, the segment it reads and its journal too.
  return forward_ != nullptr ? 5 : 2;
}

void CollectRoute::onDirWatch(evutil_socket_t, short, void* arg) {
  static_cast<CollectRoute*>(arg)->watchDir();
}

void CollectRoute::watchDir() {
  const std::string& route = ctx_.routeName();
  // A chain that failed to open a segment may have noticed first (SegmentChain::ensureOpen).
  if (!dir_.checkRemoved()) return;
  if (!dir_removed_logged_) {
    dir_removed_logged_ = true;
    ++ctx_.metrics().storage_errors;
    spdlog::error(
        "error=storage route={} archive dir {} was removed; its connections are paused and hold "
        "their bytes until a directory is created at that path again",
        route, cfg_.dir.string());
  }
  if (reopenDir()) {
    dir_removed_logged_ = false;
    reopen_error_.clear();
    spdlog::info("route={} archive dir {} is back; reopened", route, cfg_.dir.string());
    // Paused sessions resume at their next retry (at most 5 s); their chains open in the new dir.
    if (target_.compresses() || target_.retains()) lifecycle_.catchUp(&target_);
  }
}

bool CollectRoute::reopenDir() {
  // spliced does not create the dir itself at run time: a missing dir may be an unmounted
  // volume, and creating it would fill the file system below the mount point.
  UniqueFd fd(::open(cfg_.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  std::string why;
  UniqueFd lock;
  if (!fd.valid()) {
    if (errno == ENOENT) return false;  // not back yet: nothing to say
    why = fmt::format("cannot open it: {}", std::strerror(errno));
  } else if (::faccessat(fd.get(), ".", W_OK | X_OK, 0) != 0) {
    why = fmt::format("it is not writable: {}", std::strerror(errno));
  } else if (Status s = lockDir(fd.get(), lock); !s) {
    why = s.error().message();
  }
  if (!why.empty()) {
    if (why != reopen_error_) {
      spdlog::error("error=storage route={} archive dir {} is back but cannot be used: {}",
                    ctx_.routeName(), cfg_.dir.string(), why);
      reopen_error_ = why;
    }
    return false;
  }
  dir_.reset(std::move(fd));
  lock_fd_ = std::move(lock);
  // A restored copy may hold NAME.open files; the new directory has its own manifest.
  lifecycle_.openManifest(&target_, recover());
  return true;
}

SessionPtr CollectRoute::createSession(RouteContext& ctx, Connection conn) {
  // A collect session names and logs the original client when a PROXY header gave one.
  PeerInfo who = describePeer(reinterpret_cast<const sockaddr*>(&conn.peer), conn.peer_len);
  if (conn.origin && conn.origin->family != AF_UNSPEC) {
    who = describePeer(reinterpret_cast<const sockaddr*>(&conn.origin->src), conn.origin->src_len);
  }
  std::shared_ptr<const ArchiveConfig> cfg = current();
  SessionPtr s = std::make_unique<CollectSession>(ctx, *this, *cfg, std::move(conn.fd),
                                                  std::move(who), conn.id);
  s->holdConfig(std::move(cfg));
  return s;
}

void CollectRoute::onMaintenance(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<CollectRoute*>(arg);
  self->lifecycle_.catchUp(&self->target_);
}

void CollectRoute::segmentClosed(const std::string& rel, const UnpublishedSegment& seg) {
  if (!onHome()) {
    ctx_.post([this, rel, seg] { segmentClosed(rel, seg); });
    return;
  }
  // /healthz reports a failed data sync until a later close of this route syncs.
  if (isUnsyncedName(rel)) {
    last_unsynced_ = rel;
  } else if (cfg_.fsync == FsyncPolicy::OnClose) {
    last_unsynced_.clear();
  }
  UnpublishedSegment closed = seg;
  closed.rel = rel;
  // Off the loop: the manifest line (a hash of the whole file), compression, on_publish, then a
  // retention pass.
  lifecycle_.segmentClosed(&target_, std::move(closed));
}

void CollectRoute::armInterval() {
  auto interval = target_.config()->rotate.interval;
  if (interval.count() <= 0) return;
  auto now = std::chrono::system_clock::now();
  auto next = nextBoundary(now, interval, cfg_.localtime);
  auto delay = std::chrono::duration_cast<std::chrono::milliseconds>(next - now);
  addEvent(interval_ev_.get(), delay + std::chrono::milliseconds(1));
}

void CollectRoute::onInterval(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<CollectRoute*>(arg);
  self->ctx_.rotateSessions();
  self->armInterval();
}

void CollectRoute::publishLater(UnpublishedSegment seg) {
  if (!onHome()) {
    ctx_.post([this, seg = std::move(seg)]() mutable { publishLater(std::move(seg)); });
    return;
  }
  unpublished_.push_back(std::move(seg));
  if (publish_ev_ && !evtimer_pending(publish_ev_.get(), nullptr)) {
    publish_backoff_ = kFirstPublishRetry;
    addEvent(publish_ev_.get(), publish_backoff_);
  }
}

void CollectRoute::onPublishRetry(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<CollectRoute*>(arg);
  self->retryPublishing();
  if (self->unpublished_.empty()) return;
  self->publish_backoff_ = std::min(self->publish_backoff_ * 2, kMaxPublishRetry);
  addEvent(self->publish_ev_.get(), self->publish_backoff_);
}

void CollectRoute::retryPublishing() {
  const std::string& route = ctx_.routeName();
  // Take the list: publishing hands segments to compression, never back to this list.
  std::vector<UnpublishedSegment> waiting;
  waiting.swap(unpublished_);
  for (auto& seg : waiting) {
    Published pub = publishSegment(ctx_.sys(), dir_.fd(), cfg_, route, ctx_.metrics(), seg);
    if (pub.err == 0) {
      spdlog::info("route={} published {} after a failed rename", route, pub.name);
      segmentClosed(pub.name, seg);
      continue;
    }
    const std::string open_name = seg.rel + std::string(kOpenSuffix);
    struct stat st;
    if (pub.err == ENOENT &&
        ::fstatat(dir_.fd(), open_name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 && errno == ENOENT) {
      spdlog::error("error=storage route={} {} vanished before it could be published", route,
                    open_name);
      continue;
    }
    ++ctx_.metrics().storage_errors;
    if (pub.err != seg.err) {
      spdlog::error("error=storage route={} cannot rename {} to {}: {}; retrying", route, open_name,
                    pub.name, std::strerror(pub.err));
    }
    seg.err = pub.err;
    unpublished_.push_back(std::move(seg));
  }
}

namespace {
// The chain name of a connection's shipper: unique across runs (pid, then the connection id).
std::string connChainName(uint64_t conn) { return fmt::format("c{}-{}", ::getpid(), conn); }
}  // namespace

Shipper* CollectRoute::addConnectionShipper(const std::string& name) {
  auto s = std::make_unique<Shipper>(
      ctx_.base(), ctx_.sys(), ctx_.routeName(), name, *forward_, cfg_.framing == Framing::Lines,
      *pool_, dir_, [this](std::function<void()> fn) { ctx_.post(std::move(fn)); },
      [this](const std::string& rel) { segmentShipped(rel); }, true,
      [this, name] { connectionShipped(name); });
  Shipper* raw = s.get();
  std::lock_guard lock(conn_ship_mu_);
  conn_shippers_[name] = std::move(s);
  return raw;
}

ChainObserver* CollectRoute::shipConnection(uint64_t conn) {
  if (pool_ == nullptr) return nullptr;
  Shipper* s = addConnectionShipper(connChainName(conn));
  s->startFresh();
  return s;
}

void CollectRoute::resumeConnectionChains() {
  std::vector<std::string> chains;
  UniqueFd ship(::openat(dir_.fd(), kShipDir, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (ship.valid()) {
    if (DIR* d = ::fdopendir(ship.release())) {
      while (dirent* e = ::readdir(d)) {
        std::string n = e->d_name;
        // Chains of connections of an earlier run: c<pid>-<conn>.cursor
        if (n.size() > 8 && n[0] == 'c' && n.ends_with(".cursor")) {
          chains.push_back(n.substr(0, n.size() - 7));
        }
      }
      ::closedir(d);
    }
  }
  for (const auto& name : chains) {
    Shipper* s = addConnectionShipper(name);
    s->start();
    s->chainEnded();  // its connection belonged to an earlier run
  }
  if (!chains.empty()) {
    spdlog::info("route={} ship: {} connection chain(s) of an earlier run resume shipping",
                 ctx_.routeName(), chains.size());
  }
}

void CollectRoute::connectionShipped(const std::string& chain) {
  // Called by the shipper itself: it is destroyed after it returns.
  ctx_.post([this, chain] {
    std::unique_ptr<Shipper> done;
    std::lock_guard lock(conn_ship_mu_);
    auto it = conn_shippers_.find(chain);
    if (it == conn_shippers_.end()) return;
    finished_totals_.add(it->second->totals());
    done = std::move(it->second);
    conn_shippers_.erase(it);
  });
}

bool CollectRoute::unshipped(const std::string& rel) const {
  if (shipper_ && shipper_->unshipped(rel)) return true;
  std::lock_guard lock(conn_ship_mu_);
  for (const auto& [name, s] : conn_shippers_) {
    if (s->unshipped(rel)) return true;
  }
  return false;
}

ShipTotals CollectRoute::shipTotals() const {
  ShipTotals t;
  if (shipper_) t.add(shipper_->totals());
  std::lock_guard lock(conn_ship_mu_);
  t.add(finished_totals_);
  for (const auto& [name, s] : conn_shippers_) t.add(s->totals());
  t.reconnects.resize(pool_ ? pool_->upstreams().size() : 0);
  return t;
}

void CollectRoute::segmentShipped(const std::string& rel) {
  if (target_.compresses() && !isUnsyncedName(rel)) lifecycle_.compress(&target_, rel);
  if (target_.retains()) lifecycle_.retain(&target_);
}

void CollectRoute::rotate() {
  if (shared_) shared_->rotate();
}

void CollectRoute::finish() {
  // Every session has ended: no record can still be completed, so close at once.
  if (shared_) shared_->closeSegment();
  // What the upstream acknowledged goes into the cursor; the rest ships after the next start.
  if (shipper_) shipper_->stop();
  {
    std::lock_guard lock(conn_ship_mu_);
    for (auto& [name, s] : conn_shippers_) s->stop();
  }
  // Segments still being synced and published (fsync: on_close): their outcomes come back now.
  if (close_worker_ && !close_worker_->drain(kCloseDrainLimit)) {
    spdlog::error(
        "error=storage route={} segment(s) still syncing after {}: left as NAME{}; the next start "
        "publishes them",
        ctx_.routeName(), formatDuration(kCloseDrainLimit), kOpenSuffix);
  }
  if (!unpublished_.empty()) retryPublishing();  // the last try before exit
  if (publish_ev_) event_del(publish_ev_.get());
  if (dir_watch_ev_) event_del(dir_watch_ev_.get());
  // A route removed by a reload finishes while the process goes on: nothing more is rotated or
  // queued for it.
  if (interval_ev_) event_del(interval_ev_.get());
  if (maintenance_ev_) event_del(maintenance_ev_.get());
  if (!unpublished_.empty()) {
    spdlog::error(
        "error=storage route={} {} closed segment(s) left as NAME{} (rename failing: {}); the "
        "next start publishes them",
        ctx_.routeName(), unpublished_.size(), kOpenSuffix,
        std::strerror(unpublished_.front().err));
  }
}

void CollectRoute::storageStalled(int err) {
  ++stalled_;
  last_storage_err_ = err;
}

void CollectRoute::storageRecovered() {
  SPLICED_ASSERT(stalled_ > 0, "a recovery follows a stall");
  uint64_t now = stalled_.load();
  while (now > 0 && !stalled_.compare_exchange_weak(now, now - 1)) {
  }
}

void CollectRoute::problems(std::vector<std::string>& out) const {
  const std::string& route = ctx_.routeName();
  if (stalled_ > 0) {
    out.push_back(fmt::format("route {}: archive writes failing ({}) for {} connection(s)", route,
                              std::strerror(last_storage_err_.load()), stalled_.load()));
  }
  if (!unpublished_.empty()) {
    out.push_back(fmt::format(
        "route {}: {} segment(s) closed but not published (rename failed: {}); retrying", route,
        unpublished_.size(), std::strerror(unpublished_.front().err)));
  }
  if (!last_unsynced_.empty()) {
    out.push_back(fmt::format(
        "route {}: fdatasync failed: {} is not proven on disk ({} unsynced segment(s) so far)",
        route, last_unsynced_, ctx_.metrics().unsynced_segments));
  }
  if (shipper_) {
    if (std::string p = shipper_->problem(); !p.empty()) out.push_back(std::move(p));
  }
  {
    // The worst connection chain speaks for them all.
    std::lock_guard lock(conn_ship_mu_);
    const Shipper* worst = nullptr;
    for (const auto& [name, s] : conn_shippers_) {
      if (worst == nullptr || s->lag() > worst->lag()) worst = s.get();
    }
    if (worst != nullptr) {
      if (std::string p = worst->problem(); !p.empty()) out.push_back(std::move(p));
    }
  }
  // Checked here too, so that /healthz says it at once (and the chains stop writing into the
  // removed dir's segments from their next write), not only at the next dir-watch tick.
  if (dir_.checkRemoved()) {
    out.push_back(fmt::format(
        "route {}: archive dir {} was removed{}", route, cfg_.dir.string(),
        reopen_error_.empty() ? std::string()
                              : " (a new one is there but cannot be used: " + reopen_error_ + ")"));
  }
}

}  // namespace spliced
