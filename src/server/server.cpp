#include "spliced/server/server.hpp"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>

#include <fmt/format.h>
#include <algorithm>
#include <cstring>

#include "spliced/admin/metrics_catalogue.hpp"
#include "spliced/core/log.hpp"

namespace spliced {
namespace {

// Descriptors never given to connections or pipes (see budgetDescriptors).
constexpr size_t kDescriptorReserve = 32;

}  // namespace

Server::Server(ConfigPtr config, SysCalls& sys)
    : config_(std::move(config)), sys_(sys), base_(event_base_new()) {
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
      if (shutting_down_) post([this] { maybeFinishShutdown(); });
    });
  }
}

Server::~Server() {
  stopWorkers();
  admin_.reset();
  // Sessions still open (an abnormal exit) close their segments now, while the lifecycle thread
  // can still be told; then it is joined before the routes its jobs point into go away.
  for (auto& r : routes_) r->closeAll();
  for (auto& w : workers_) w->clearGraveyard();
  lifecycle_.reset();
  for (auto& w : workers_) w->clearGraveyard();
  routes_.clear();
  signal_evs_.clear();
  drain_ev_.reset();
  workers_.clear();
}

void Server::stopWorkers() {
  for (auto& w : workers_) w->stopThread();
}

void Server::onWorker(Worker& w, std::function<void()> fn) {
  if (!w.ownThread()) {
    fn();
  } else {
    w.post(std::move(fn));
  }
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
  lifecycle_ = std::make_unique<ArchiveLifecycle>();
  for (const auto& rc : config_->routes) {
    // Kept even when it fails to start: the lifecycle thread may already hold a job for it, and
    // the thread is joined before routes are destroyed.
    routes_.push_back(std::make_unique<Route>(*this, rc));
    Route* route = routes_.back().get();
    if (Status s = route->start(); !s) {
      return std::move(s).takeError().withContext(fmt::format("route {}", rc.name));
    }
    if (rc.archive) {
      spdlog::info("route={} listening on {} archive={}", rc.name, route->boundAddress(),
                   logQuote(rc.archive->dir.string()));
    } else {
      std::string ups;
      for (const auto& u : rc.forward->upstreams) ups += (ups.empty() ? "" : ",") + u.text;
      spdlog::info("route={} listening on {} forward={}", rc.name, route->boundAddress(), ups);
    }
  }
  if (config_->admin.listen) {
    admin_ = std::make_unique<Admin>(base_.get(), *this, config_->admin);
    if (Status s = admin_->start(); !s) return std::move(s).takeError().withContext("admin");
    spdlog::info("admin listening on {}", admin_->boundAddress());
  }
  for (int sig : {SIGTERM, SIGINT, SIGUSR1, SIGHUP}) {
    EventPtr ev(evsignal_new(base_.get(), sig, &Server::onSignal, this));
    event_add(ev.get(), nullptr);
    signal_evs_.push_back(std::move(ev));
  }
  drain_ev_.reset(evtimer_new(base_.get(), &Server::onDrainTimeout, this));
  budgetDescriptors();
  if (workers_.size() > 1) {
    spdlog::info("{} workers: worker 0 on the main thread, {} more thread(s)", workers_.size(),
                 workers_.size() - 1);
  }
  // Everything a worker's loop watches exists now: its thread may run it.
  for (auto& w : workers_) w->startThread();
  return Ok{};
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
  const size_t open_now = countOpenFds();
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
    case SIGHUP:
      spdlog::warn("SIGHUP: configuration reload is not supported yet; ignored");
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
  return n;
}

void Server::beginShutdown() {
  if (shutting_down_) {
    spdlog::warn("second stop signal: writing what is already received and exiting now");
    for (auto& r : routes_) r->shutdownSweep();
    maybeFinishShutdown();
    return;
  }
  shutting_down_ = true;
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
  for (auto& r : routes_) r->finish();
  for (const RouteStatus& r : status().routes) {
    spdlog::info("route={} totals: {}", r.name, totalsLine(r));
  }
  event_base_loopexit(base_.get(), nullptr);
}

const Route* Server::route(std::string_view name) const {
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
  for (const auto& r : routes_) {
    RouteStatus rs;
    rs.name = r->config().name;
    rs.listening = r->listening();
    rs.listen = r->boundAddress();
    rs.counters = r->counters();
    if (const CollectRoute* c = r->collect()) {
      rs.collects = true;
      if (r->config().archive) rs.archive_dir = r->config().archive->dir.string();
      rs.stalled = c->stalledSessions();
      rs.unpublished = c->unpublishedSegments();
      const LifecycleMetrics& lm = c->lifecycle();
      rs.lifecycle = {lm.compressed.load(), lm.compress_errors.load(), lm.compress_skipped.load(),
                      lm.deleted_files.load(), lm.deleted_bytes.load()};
    }
    if (const ProxyRoute* p = r->proxy()) {
      rs.proxies = true;
      for (UpstreamView& u : p->pool().view()) {
        rs.upstreams.push_back({std::move(u.address), u.errors, u.active, u.up});
      }
    }
    st.routes.push_back(std::move(rs));
  }
  st.archive_queue = lifecycle_ ? lifecycle_->queued() : 0;
  for (const auto& w : workers_) {
    WorkerStatus ws;
    ws.index = w->index();
    for (const auto& r : routes_) {
      const RouteMetrics& m = r->workers()[w->index()]->counters();
      ws.connections_active += m.connections_active;
      ws.connections_total += m.connections_total;
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
