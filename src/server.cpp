#include "spliced/server.hpp"

#include <signal.h>
#include <spdlog/spdlog.h>

#include <fmt/format.h>

namespace spliced {

Server::Server(ConfigPtr config, SysCalls& sys)
    : config_(std::move(config)),
      sys_(sys),
      base_(event_base_new()),
      pipes_(sys, config_->pipes.size, config_->pipes.max) {}

Server::~Server() {
  admin_.reset();
  // Sessions still open (an abnormal exit) close their segments now, while the worker can
  // still be told; then the worker is joined before the routes its jobs point into go away.
  for (auto& r : routes_) r->closeAll();
  graveyard_.clear();
  worker_.reset();
  graveyard_.clear();
  routes_.clear();
  signal_evs_.clear();
  cleanup_ev_.reset();
  drain_ev_.reset();
}

std::string Server::start() {
  if (!base_) return "cannot create the event loop";
  ::signal(SIGPIPE, SIG_IGN);
  worker_ = std::make_unique<ArchiveWorker>();
  for (const auto& rc : config_->routes) {
    // Kept even when it fails to start: the archive worker may already hold a job for it, and
    // the worker is joined before routes are destroyed.
    routes_.push_back(std::make_unique<Route>(*this, rc));
    Route* route = routes_.back().get();
    std::string err = route->start();
    if (!err.empty()) return fmt::format("route {}: {}", rc.name, err);
    if (rc.archive) {
      spdlog::info("route={} listening on {} archive={}", rc.name, route->boundAddress(),
                   rc.archive->dir.string());
    } else {
      std::string ups;
      for (const auto& u : rc.forward->upstreams) ups += (ups.empty() ? "" : ",") + u.text;
      spdlog::info("route={} listening on {} forward={}", rc.name, route->boundAddress(), ups);
    }
  }
  if (config_->admin.listen) {
    admin_ = std::make_unique<Admin>(*this, config_->admin);
    std::string err = admin_->start();
    if (!err.empty()) return fmt::format("admin: {}", err);
    spdlog::info("admin listening on {}", admin_->boundAddress());
  }
  for (int sig : {SIGTERM, SIGINT, SIGUSR1, SIGHUP}) {
    EventPtr ev(evsignal_new(base_.get(), sig, &Server::onSignal, this));
    event_add(ev.get(), nullptr);
    signal_evs_.push_back(std::move(ev));
  }
  cleanup_ev_.reset(event_new(base_.get(), -1, 0, &Server::onCleanup, this));
  drain_ev_.reset(evtimer_new(base_.get(), &Server::onDrainTimeout, this));
  return {};
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
  for (const auto& r : routes_) n += r->sessionCount();
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
  admin_.reset();
  for (auto& r : routes_) {
    r->closeShared();
    const RouteMetrics& m = r->metrics();
    if (r->config().forward) {
      spdlog::info(
          "route={} totals: connections={} rejected_limit={} rejected_denied={} "
          "rejected_no_upstream={} rejected_bad_header={} bytes_in={} upstream_bytes={} "
          "bytes_out={} copy_fallback_bytes={}",
          r->config().name, m.connections_total, m.rejected_limit, m.rejected_denied,
          m.rejected_no_upstream, m.rejected_bad_header, m.bytes_in, m.upstream_bytes, m.bytes_out,
          m.copy_fallback_bytes);
      continue;
    }
    spdlog::info(
        "route={} totals: connections={} rejected_limit={} rejected_denied={} "
        "rejected_bad_header={} bytes_in={} archive_bytes={} segments={} copy_fallback_bytes={}",
        r->config().name, m.connections_total, m.rejected_limit, m.rejected_denied,
        m.rejected_bad_header, m.bytes_in, m.archive_bytes, m.archive_segments,
        m.copy_fallback_bytes);
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

std::string Server::boundAddress(const std::string& route) const {
  for (const auto& r : routes_) {
    if (r->config().name == route) return r->boundAddress();
  }
  return {};
}

const RouteMetrics* Server::metrics(const std::string& route) const {
  for (const auto& r : routes_) {
    if (r->config().name == route) return &r->metrics();
  }
  return nullptr;
}

void Server::retire(SessionPtr s) {
  graveyard_.push_back(std::move(s));
  event_active(cleanup_ev_.get(), EV_TIMEOUT, 0);
}

void Server::onCleanup(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Server*>(arg);
  self->graveyard_.clear();
  self->maybeFinishShutdown();
}

}  // namespace spliced
