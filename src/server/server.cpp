#include "spliced/server/server.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <fmt/format.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <future>

#include "spliced/admin/metrics_catalogue.hpp"
#include "spliced/core/log.hpp"
#include "spliced/server/privileges.hpp"

namespace spliced {
namespace {

// Descriptors never given to connections or pipes (see budgetDescriptors).
constexpr size_t kDescriptorReserve = 32;

}  // namespace

namespace {

RouteStatus routeStatus(const Route& r) {
  RouteStatus rs;
  rs.name = r.config().name;
  rs.listening = r.listening();
  rs.listen = r.boundAddress();
  rs.counters = r.counters();
  if (const CollectRoute* c = r.collect()) {
    rs.collects = true;
    if (r.config().archive) rs.archive_dir = r.config().archive->dir.string();
    rs.stalled = c->stalledSessions();
    rs.unpublished = c->unpublishedSegments();
    const LifecycleMetrics& lm = c->lifecycle();
    rs.lifecycle = {
        lm.compressed.load(),      lm.compress_errors.load(),  lm.compress_skipped.load(),
        lm.deleted_files.load(),   lm.deleted_bytes.load(),    lm.manifest_records.load(),
        lm.manifest_errors.load(), lm.kept_unpublished.load(), lm.publish.success.load(),
        lm.publish.failure.load(), lm.publish.timeout.load(),  lm.publish.queued.load()};
    if (c->ships()) {
      const ShipTotals t = c->shipTotals();
      rs.ships = true;
      rs.ship = {t.sent,   t.acked,   t.lag_bytes,     std::chrono::duration<double>(t.lag).count(),
                 t.resent, t.dropped, t.cursor_errors, t.segment_errors};
      const auto views = c->pool()->view();
      for (size_t i = 0; i < views.size(); ++i) {
        const UpstreamView& u = views[i];
        rs.upstreams.push_back(
            {u.address, u.errors, u.active, u.up, i < t.reconnects.size() ? t.reconnects[i] : 0});
      }
    }
  }
  if (const ProxyRoute* p = r.proxy()) {
    rs.proxies = true;
    for (UpstreamView& u : p->pool().view()) {
      rs.upstreams.push_back({std::move(u.address), u.errors, u.active, u.up});
    }
  }
  return rs;
}

}  // namespace

Server::Server(ConfigPtr config, SysCalls& sys)
    : config_(std::move(config)), sys_(sys), base_(event_base_new()), first_config_(config_) {
  // pipes.max is the process's: each worker gets its share (at least one pipe when any).
  const size_t n = std::max<size_t>(config_->workers, 1);
  const size_t per_worker =
      config_->pipes.max == 0 ? 0 : std::max<size_t>(config_->pipes.max / n, 1);
  for (size_t i = 0; i < n; ++i) {
    workers_.push_back(std::make_unique<Worker>(i, i == 0 ? base_.get() : nullptr, sys,
                                                config_->pipes, per_worker));
    // A worker whose session was freed during a shutdown lets the main loop look whether it
    // was the last.
    workers_.back()->onCleanup([this] {
      if (shutting_down_ || draining_count_ > 0) post([this] { routeQuiet(); });
    });
  }
}

Server::~Server() {
  stopWorkers();
  admin_.reset();
  // Sessions still open (an abnormal exit) close their segments now, while the lifecycle thread
  // can still be told; then it is joined before the routes its jobs point into go away.
  for (auto& r : routes_) r->closeAll();
  for (auto& r : draining_) r->closeAll();
  for (auto& w : workers_) w->clearGraveyard();
  lifecycle_.reset();
  for (auto& w : workers_) w->clearGraveyard();
  routes_.clear();
  draining_.clear();
  retired_.clear();
  signal_evs_.clear();
  reload_worker_.reset();  // a file being read is waited for; its completion is dropped
  reload_ev_.reset();
  route_drain_ev_.reset();
  drain_ev_.reset();
  watchdog_ev_.reset();
  status_ev_.reset();
  workers_.clear();
}

void Server::stopWorkers() {
  for (auto& w : workers_) w->stopThread();
}

void Server::onWorker(Worker& w, std::function<void()> fn) {
  if (!w.ownThread() || !w.threadRunning()) {
    fn();
  } else {
    w.post(std::move(fn));
  }
}

void Server::onWorkerWait(Worker& w, const std::function<void()>& fn) {
  if (!w.ownThread() || !w.threadRunning()) return fn();
  std::promise<void> done;
  std::future<void> ready = done.get_future();
  w.post([&fn, &done] {
    fn();
    done.set_value();
  });
  ready.wait();
}

Status Server::start() {
  if (!base_) return Error(ErrorSource::Internal, "cannot create the event loop");
  ::signal(SIGPIPE, SIG_IGN);
  installFatalHandler();
  NofileLimits nofile = raiseNofileLimit();
  if (nofile.now != nofile.before) {
    spdlog::info("descriptor limit raised from {} to its hard limit {}", nofile.before, nofile.now);
  } else if (nofile.err != 0) {
    spdlog::warn("cannot raise the descriptor limit above {}: {}", nofile.before,
                 std::strerror(nofile.err));
  }
  // Signals are caught before the first "listening on" line: whoever waits for that line may
  // signal at once, and a signal that arrives during start-up is handled when the loop runs.
  for (int sig : {SIGTERM, SIGINT, SIGUSR1, SIGUSR2, SIGHUP}) {
    EventPtr ev(evsignal_new(base_.get(), sig, &Server::onSignal, this));
    event_add(ev.get(), nullptr);
    signal_evs_.push_back(std::move(ev));
  }
  lifecycle_ = std::make_unique<ArchiveLifecycle>();
  activated_ = takeActivatedSockets();
  for (const auto& rc : config_->routes) {
    // Kept even when it fails to start: the lifecycle thread may already hold a job for it, and
    // the thread is joined before routes are destroyed.
    routes_.push_back(std::make_unique<Route>(*this, config_, rc));
    Route* route = routes_.back().get();
    if (Status s = route->start(); !s) {
      return std::move(s).takeError().withContext(fmt::format("route {}", rc.name));
    }
    std::string ups;
    if (rc.forward) {
      for (const auto& u : rc.forward->upstreams) ups += (ups.empty() ? "" : ",") + u.text;
    }
    if (rc.archive) {
      spdlog::info("route={} listening on {} archive={}{}", rc.name, route->boundAddress(),
                   logQuote(rc.archive->dir.string()), ups.empty() ? "" : " ship=" + ups);
    } else {
      spdlog::info("route={} listening on {} forward={}", rc.name, route->boundAddress(), ups);
    }
  }
  if (config_->admin.listen) {
    admin_ = std::make_unique<Admin>(base_.get(), *this, first_config_->admin);
    if (Status s = admin_->start(std::move(handed_admin_)); !s) {
      return std::move(s).takeError().withContext("admin");
    }
    spdlog::info("admin listening on {}", admin_->boundAddress());
  }
  drain_ev_.reset(evtimer_new(base_.get(), &Server::onDrainTimeout, this));
  reload_ev_.reset(event_new(base_.get(), -1, 0, &Server::onReload, this));
  route_drain_ev_.reset(evtimer_new(base_.get(), &Server::onRouteDrainTimeout, this));
  for (auto& [name, fd] : activated_) {
    spdlog::warn("socket activation: no route is named {}: its socket is closed", name);
  }
  activated_.clear();
  budgetDescriptors();
  if (!config_->user.empty()) {
    if (Status s = dropPrivileges(); !s) return s;
  }
  if (workers_.size() > 1) {
    spdlog::info("{} workers: worker 0 on the main thread, {} more thread(s)", workers_.size(),
                 workers_.size() - 1);
  }
  // Everything a worker's loop watches exists now: its thread may run it (after a binary
  // upgrade, once the sessions handed over are in place: finishTakeOver).
  if (!takeover_.valid()) {
    for (auto& w : workers_) w->startThread();
  }
  if (notifier_.enabled()) {
    notifier_.ready(statusLine());
    status_ev_.reset(event_new(base_.get(), -1, EV_PERSIST, &Server::onStatus, this));
    addEvent(status_ev_.get(), std::chrono::milliseconds(5000));
    if (notifier_.watchdogInterval().count() > 0) {
      for (auto& w : workers_) w->markAlive();
      watchdog_ev_.reset(event_new(base_.get(), -1, EV_PERSIST, &Server::onWatchdog, this));
      addEvent(watchdog_ev_.get(), std::chrono::duration_cast<std::chrono::milliseconds>(
                                       notifier_.watchdogInterval() / 2));
      spdlog::info("systemd watchdog: every {}",
                   formatDuration(std::chrono::duration_cast<std::chrono::milliseconds>(
                       notifier_.watchdogInterval() / 2)));
    }
  }
  return Ok{};
}

UniqueFd Server::takeActivatedSocket(const std::string& route) {
  auto it = activated_.find(route);
  if (it == activated_.end()) return UniqueFd();
  UniqueFd fd = std::move(it->second);
  activated_.erase(it);
  return fd;
}

Status Server::dropPrivileges() {
  Result<RunAs> who = resolveRunAs(config_->user, config_->group);
  if (!who) return std::move(who).takeError();
  if (::geteuid() != 0) {
    if (::geteuid() == who.value().uid) return Ok{};  // already that user
    return Error(ErrorSource::Environment,
                 fmt::format("cannot switch to user {}: spliced runs as uid {}, not root",
                             config_->user, ::geteuid()));
  }
  // What spliced made as root (archive dirs, their lock files, segments of earlier runs as root)
  // becomes the user's, so that it can go on writing, renaming and deleting there.
  for (const auto& r : routes_) {
    if (const CollectRoute* c = r->collect()) {
      if (Status s = chownTree(c->dirFd(), who.value()); !s) {
        return std::move(s).takeError().withContext(fmt::format("route {}", r->config().name));
      }
    }
  }
  if (Status s = spliced::dropPrivileges(who.value()); !s) return s;
  for (const auto& r : routes_) {
    if (const CollectRoute* c = r->collect()) {
      if (::faccessat(c->dirFd(), ".", W_OK | X_OK, AT_EACCESS) != 0) {
        return Error(
            ErrorSource::Environment,
            fmt::format("route {}: archive dir {} is not writable by user {}", r->config().name,
                        r->config().archive->dir.string(), config_->user),
            errno);
      }
    }
  }
  spdlog::info("running as user {} (uid {}) and group {} (gid {}) from now on", who.value().user,
               who.value().uid, who.value().group, who.value().gid);
  return Ok{};
}

void Server::onReload(evutil_socket_t, short, void* arg) { static_cast<Server*>(arg)->reload(); }

namespace {

// Why `next` cannot be applied to a process running `now`, or "" when it can: what a reload
// does not change (a restart does).
std::string needsRestart(const Config& now, const Config& next) {
  if (now.workers != next.workers) {
    return fmt::format("workers changed from {} to {}: a restart applies it", now.workers,
                       next.workers);
  }
  if (now.pipes.size != next.pipes.size || now.pipes.max != next.pipes.max) {
    return "pipes changed: a restart applies it";
  }
  if (now.admin_text != next.admin_text) return "admin changed: a restart applies it";
  if (now.user != next.user || now.group != next.group) {
    return "user or group changed: a restart applies it";
  }
  if (now.log.format != next.log.format) return "log.format changed: a restart applies it";
  return "";
}

}  // namespace

void Server::reloadFailed(const std::string& why) {
  ++reloads_failed_;
  last_reload_error_ = why;
  spdlog::error("error=config reload failed: {}; the running configuration (generation {}) is kept",
                why, generation_);
  notifier_.ready(statusLine());
}

void Server::reload() {
  if (shutting_down_) {
    spdlog::warn("SIGHUP while shutting down: not reloaded");
    return;
  }
  if (upgrade_) {
    // The new process reads the config file as it is now; this one would bind what it adds
    // under the new process's feet.
    spdlog::warn(
        "SIGHUP during the binary upgrade to pid {}: not reloaded here (the new process "
        "reads the config file itself)",
        upgrade_->pid);
    return;
  }
  if (reload_reading_) {
    reload_again_ = true;
    spdlog::info("SIGHUP while the config file is being read: it is read again after this reload");
    return;
  }
  notifier_.reloading();
  spdlog::info("SIGHUP: reloading {}", config_->source);
  if (!reload_worker_) reload_worker_ = std::make_unique<LoopWorker>(base_.get(), "config reload");
  const std::string source = config_->source;
  reload_reading_ = true;
  const bool posted = reload_worker_->post([this, source]() -> LoopWorker::Completion {
    auto next = std::make_shared<ConfigResult>(loadConfigFile(source));
    return [this, next] {
      reload_reading_ = false;
      applyReload(*next);
      if (reload_again_) {
        reload_again_ = false;
        reload();
      }
    };
  });
  if (!posted) {  // no thread for it: read here
    reload_reading_ = false;
    applyReload(loadConfigFile(source));
  }
}

void Server::applyReload(const ConfigResult& next) {
  if (shutting_down_) {
    spdlog::warn("the config file was read while shutting down: not applied");
    return;
  }
  if (!next.errors.empty()) {
    for (const auto& e : next.errors) spdlog::error("error=config {}", e.format());
    return reloadFailed(fmt::format("{}: configuration is invalid ({} error(s))", config_->source,
                                    next.errors.size()));
  }
  const Config& nc = *next.config;
  if (std::string why = needsRestart(*config_, nc); !why.empty()) return reloadFailed(why);
  // Routes are kept when unchanged, started when new, drained when gone, and changed in place
  // (new connections and segments take the new config; the socket stays). A change that a reload
  // cannot apply refuses the whole reload: nothing is applied piecemeal.
  std::vector<const RouteConfig*> added;
  std::vector<std::pair<Route*, const RouteConfig*>> changed;
  for (const auto& rc : nc.routes) {
    Route* old = route(rc.name);
    if (old == nullptr) {
      added.push_back(&rc);
    } else if (old->config().text != rc.text) {
      if (std::string why = old->reloadRefusal(rc); !why.empty()) return reloadFailed(why);
      changed.emplace_back(old, &rc);
    }
  }
  std::vector<Route*> removed;
  for (const auto& r : routes_) {
    const bool kept = std::any_of(nc.routes.begin(), nc.routes.end(), [&](const RouteConfig& rc) {
      return rc.name == r->config().name;
    });
    if (!kept) removed.push_back(r.get());
  }
  for (const RouteConfig* rc : added) {
    for (Route* r : removed) {
      if (r->config().listen == rc->listen && rc->listen.text.find(":0") == std::string::npos) {
        return reloadFailed(fmt::format(
            "route {} listens on {}, the address of route {}, which this reload removes: rename "
            "or remove in two reloads",
            rc->name, rc->listen.text, r->config().name));
      }
    }
  }
  // Every new route starts (binds, opens its archive dir) before anything else changes; one that
  // cannot start undoes the others.
  std::vector<std::unique_ptr<Route>> started;
  for (const RouteConfig* rc : added) {
    auto r = std::make_unique<Route>(*this, next.config, *rc);
    Status s = r->start();
    if (!s) {
      started.push_back(std::move(r));
      for (auto& u : started) {
        for (const auto& rw : u->workers()) {
          RouteWorker* w = rw.get();
          onWorkerWait(w->worker(), [w] { w->closeAll(); });
        }
        u->finish();
      }
      std::string why = fmt::format("route {}: {}", rc->name, s.error().message());
      if (s.error().code() == EACCES && ::geteuid() != 0 && !rc->listen.isUnix()) {
        // Privileges were dropped (user:) after the first bind: a port below 1024 needs a
        // capability now, or a socket systemd binds.
        why += fmt::format(
            "; spliced runs as uid {} now and may not bind a privileged port: give it "
            "CAP_NET_BIND_SERVICE (AmbientCapabilities= in the unit), let systemd bind it "
            "(socket activation, a .socket unit with FileDescriptorName={}), or restart",
            ::geteuid(), rc->name);
      }
      return reloadFailed(why);
    }
    started.push_back(std::move(r));
  }
  for (auto& r : started) {
    spdlog::info("route={} listening on {} (added by reload)", r->config().name, r->boundAddress());
    routes_.push_back(std::move(r));
  }
  for (auto [r, rc] : changed) {
    r->reconfigure(next.config, *rc);
    spdlog::info(
        "route={} changed by reload: new connections and segments follow the new config; {} "
        "connection(s) keep theirs",
        rc->name, r->activeConnections());
  }
  for (Route* r : removed) {
    spdlog::info(
        "route={} removed by reload: stopped accepting; {} connection(s) may finish within "
        "{}",
        r->config().name, r->activeConnections(), formatDuration(nc.drain_timeout));
    r->stopAccepting();
    auto it = std::find_if(routes_.begin(), routes_.end(),
                           [&](const std::unique_ptr<Route>& p) { return p.get() == r; });
    draining_.push_back(std::move(*it));
    routes_.erase(it);
  }
  draining_count_ = draining_.size();
  if (!removed.empty())
    addEvent(route_drain_ev_.get(), std::max(nc.drain_timeout, milliseconds(1)));
  setLogLevel(nc.log.level);
  // The admin endpoint's users (admin.auth.basic_file) are read again: a password changed with
  // htpasswd applies without a restart. The file was checked with the rest of the config.
  if (admin_) {
    if (Status s = admin_->loadUsers(); !s) {
      spdlog::error("error=config reload: {}; the users read before stay in force",
                    s.error().message());
    }
  }
  config_ = next.config;
  ++generation_;
  ++reloads_ok_;
  last_reload_error_.clear();
  spdlog::info(
      "reload applied: configuration generation {}: {} route(s) added, {} changed, {} removed",
      generation_, added.size(), changed.size(), removed.size());
  notifier_.ready(statusLine());
  retireQuietRoutes();
}

void Server::onRouteDrainTimeout(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Server*>(arg);
  for (auto& r : self->draining_) {
    if (r->activeConnections() > 0) {
      spdlog::info("route={} (removed) drain_timeout reached: closing {} connection(s)",
                   r->config().name, r->activeConnections());
      r->shutdownSweep();
    }
  }
}

void Server::routeQuiet() {
  retireQuietRoutes();
  maybeFinishShutdown();
}

void Server::retireQuietRoutes() {
  if (finished_) return;
  for (auto it = draining_.begin(); it != draining_.end();) {
    Route* r = it->get();
    if (!r->quiet()) {
      ++it;
      continue;
    }
    // Each worker lets go of what it held of the route on its own thread (its freed sessions of
    // that route first), then the kind closes what it holds.
    for (const auto& rw : r->workers()) {
      RouteWorker* w = rw.get();
      onWorkerWait(w->worker(), [w] {
        w->worker().clearGraveyard();
        w->closeAll();
      });
    }
    r->finish();
    spdlog::info("route={} totals: {}", r->config().name, totalsLine(routeStatus(*r)));
    spdlog::info("route={} removed: its last connection has closed", r->config().name);
    // Kept (finished, holding nothing open but its archive dir) until the lifecycle thread,
    // whose queued jobs may point into it, is joined at exit.
    retired_.push_back(std::move(*it));
    it = draining_.erase(it);
  }
  draining_count_ = draining_.size();
}

std::vector<std::string> Server::notes() const {
  std::vector<std::string> out;
  if (!last_reload_error_.empty()) {
    out.push_back(fmt::format("last reload failed (configuration generation {} is running): {}",
                              generation_, last_reload_error_));
  }
  return out;
}

std::string Server::statusLine() const {
  return fmt::format("{} connection(s) on {} route(s), {} worker(s)", sessionCount(),
                     routes_.size(), workers_.size());
}

void Server::onStatus(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Server*>(arg);
  self->notifier_.status(self->statusLine());
}

void Server::onWatchdog(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Server*>(arg);
  // Every worker answered the previous round within the interval: the process is alive.
  const auto now = std::chrono::steady_clock::now();
  const auto limit = self->notifier_.watchdogInterval();
  for (auto& w : self->workers_) {
    if (now - w->aliveAt() > limit) {
      if (!self->watchdog_withheld_) {
        spdlog::error(
            "error=internal worker {} has not run its loop for {}: the systemd watchdog ping is "
            "withheld",
            w->index(),
            formatDuration(
                std::chrono::duration_cast<std::chrono::milliseconds>(now - w->aliveAt())));
      }
      self->watchdog_withheld_ = true;
      return;
    }
  }
  self->watchdog_withheld_ = false;
  self->notifier_.watchdog();
  for (auto& w : self->workers_) {
    Worker* wp = w.get();
    self->onWorker(*wp, [wp] { wp->markAlive(); });
  }
}

void Server::budgetDescriptors() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY) return;
  // Kept back: what is opened briefly or off the loop (a segment's parent dir, recovery, the
  // lifecycle thread's files, admin clients) and one health probe per checked upstream.
  size_t reserve = kDescriptorReserve;
  for (const auto& r : routes_) {
    if (const ProxyRoute* p = r->proxy(); p != nullptr && r->config().forward->health_check) {
      reserve += p->pool().upstreams().size();
    }
  }
  // The descriptors of sessions a binary upgrade handed over are open already, and are charged
  // again when those sessions are made (RouteWorker::restore): counted once.
  size_t handed = 0;
  for (const auto& r : handed_sessions_) handed += r.owned.size();
  const size_t open_all = countOpenFds();
  const size_t open_now = open_all - std::min(handed, open_all);
  FdBudget whole;
  whole.configure(static_cast<size_t>(rl.rlim_cur), open_now, reserve);
  // Each worker gets an equal share (its own budget: no lock between workers).
  for (auto& w : workers_) w->fdBudget().configureCapacity(whole.capacity() / workers_.size());
  size_t per = 1;
  for (const auto& r : routes_) per = std::max(per, r->descriptorsPerSession());
  const size_t room = workers_.size() * (whole.capacity() / workers_.size()) / per;
  if (room < 64) {
    spdlog::warn(
        "descriptor limit {} leaves room for {} connection(s) at {} descriptors each ({} open, {} "
        "kept back); more wait in the listen backlog. Raise LimitNOFILE (systemd) or ulimit -n",
        rl.rlim_cur, room, per, open_now, reserve);
  } else {
    spdlog::info("descriptor limit {}: room for {} connection(s) at {} descriptors each",
                 rl.rlim_cur, room, per);
  }
}

int Server::run() {
  event_base_dispatch(base_.get());
  return 0;
}

void Server::onSignal(evutil_socket_t sig, short, void* arg) {
  auto* self = static_cast<Server*>(arg);
  switch (sig) {
    case SIGTERM:
    case SIGINT:
      self->beginShutdown();
      break;
    case SIGUSR1:
      spdlog::info("SIGUSR1: rotating every active segment");
      self->rotateAll();
      break;
    case SIGUSR2:
      self->startUpgrade();
      break;
    case SIGHUP:
      // Activating an active event is a no-op: SIGHUPs that arrive together make one reload.
      event_active(self->reload_ev_.get(), EV_TIMEOUT, 0);
      break;
    default:
      break;
  }
}

void Server::rotateAll() {
  for (auto& r : routes_) r->rotateAll();
}

size_t Server::sessionCount() const {
  size_t n = 0;
  for (const auto& r : routes_) n += r->activeConnections();
  for (const auto& r : draining_) n += r->activeConnections();
  return n;
}

void Server::beginShutdown() {
  if (shutting_down_) {
    spdlog::warn("second stop signal: writing what is already received and exiting now");
    for (auto& r : routes_) r->shutdownSweep();
    for (auto& r : draining_) r->shutdownSweep();
    maybeFinishShutdown();
    return;
  }
  if (upgrade_) upgradeFailed("a stop signal came first", false);
  shutting_down_ = true;
  notifier_.stopping(statusLine());
  for (auto& r : routes_) r->stopAccepting();
  size_t n = sessionCount();
  spdlog::info("shutting down: stopped accepting; {} connection(s) may finish within {}", n,
               formatDuration(config_->drain_timeout));
  if (n > 0) addEvent(drain_ev_.get(), std::max(config_->drain_timeout, milliseconds(1)));
  maybeFinishShutdown();
}

void Server::onDrainTimeout(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Server*>(arg);
  spdlog::info("drain_timeout reached: closing {} connection(s)", self->sessionCount());
  for (auto& r : self->routes_) r->shutdownSweep();
  for (auto& r : self->draining_) r->shutdownSweep();
  self->maybeFinishShutdown();
}

void Server::maybeFinishShutdown() {
  if (!shutting_down_ || finished_ || sessionCount() > 0) return;
  finished_ = true;
  // Every connection is done: the workers' loops end (what was posted to them runs first), and
  // their freed sessions are destroyed before the routes close what the sessions wrote into.
  stopWorkers();
  for (auto& w : workers_) w->clearGraveyard();
  // What the workers handed to the main loop last (segments closed by the sessions freed just
  // now) is done before the routes finish.
  workers_.front()->runPosted();
  admin_.reset();
  for (auto& r : draining_) r->finish();
  for (auto& r : routes_) r->finish();
  for (const RouteStatus& r : status().routes) {
    spdlog::info("route={} totals: {}", r.name, totalsLine(r));
  }
  event_base_loopexit(base_.get(), nullptr);
}

Route* Server::route(std::string_view name) const {
  for (const auto& r : routes_) {
    if (r->config().name == name) return r.get();
  }
  return nullptr;
}

std::string Server::adminAddress() const { return admin_ ? admin_->boundAddress() : ""; }

std::string Server::boundAddress(const std::string& name) const {
  const Route* r = route(name);
  return r ? r->boundAddress() : std::string();
}

const RouteMetrics* Server::metrics(const std::string& name) const {
  const Route* r = route(name);
  return r ? &r->firstCounters() : nullptr;
}

ServerStatus Server::status() const {
  ServerStatus st;
  for (const auto& r : routes_) st.routes.push_back(routeStatus(*r));
  st.archive_queue = lifecycle_ ? lifecycle_->queued() : 0;
  st.config_generation = generation_;
  st.reloads_ok = reloads_ok_;
  st.reloads_failed = reloads_failed_;
  st.last_reload_error = last_reload_error_;
  for (const auto& w : workers_) {
    WorkerStatus ws;
    ws.index = w->index();
    for (const auto* list : {&routes_, &draining_}) {
      for (const auto& r : *list) {
        const RouteMetrics& m = r->workers()[w->index()]->counters();
        ws.connections_active += m.connections_active;
        ws.connections_total += m.connections_total;
      }
    }
    ws.pipes_in_use = w->pipes().inUse();
    st.pipes_in_use += ws.pipes_in_use;
    st.pipes_pooled += w->pipes().pooled();
    st.workers.push_back(ws);
  }
  st.start_time = start_time_;
  return st;
}

std::vector<std::string> Server::problems() const {
  std::vector<std::string> out;
  if (shutting_down_) out.emplace_back("shutting down");
  for (const auto& r : routes_) {
    for (auto& p : r->problems()) out.push_back(std::move(p));
  }
  return out;
}

int Server::archiveDir(std::string_view name) const {
  const Route* r = route(name);
  if (r == nullptr || r->collect() == nullptr) return -1;
  return r->collect()->dirFd();
}

}  // namespace spliced
