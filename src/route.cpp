#include "spliced/route.hpp"

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

#include "spliced/proxy_header_session.hpp"
#include "spliced/proxy_session.hpp"
#include "spliced/recovery.hpp"
#include "spliced/rotation.hpp"
#include "spliced/server.hpp"

namespace spliced {

Route::Route(Server& server, const RouteConfig& cfg) : server_(server), cfg_(cfg) {}

Route::~Route() {
  listener_.reset();
  sessions_.clear();
  shared_.reset();
}

std::string Route::start() {
  if (cfg_.archive) {
    if (std::string err = startArchive(); !err.empty()) return err;
  }
  if (cfg_.forward) {
    upstreams_ = std::make_unique<UpstreamPool>(server_.base(), *cfg_.forward, cfg_.name);
    upstreams_->start();
  }
  listener_ =
      std::make_unique<Listener>(server_.base(), server_.sys(), cfg_.name,
                                 [this](UniqueFd fd, const sockaddr_storage& peer, socklen_t len) {
                                   onAccept(std::move(fd), peer, len);
                                 });
  return listener_->open(cfg_.listen);
}

std::string Route::startArchive() {
  const ArchiveConfig& ac = *cfg_.archive;
  std::error_code ec;
  std::filesystem::create_directories(ac.dir, ec);
  if (ec) return fmt::format("cannot create archive dir {}: {}", ac.dir.string(), ec.message());
  dir_fd_.reset(::open(ac.dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir_fd_.valid()) {
    return fmt::format("cannot open archive dir {}: {}", ac.dir.string(), std::strerror(errno));
  }
  if (::faccessat(dir_fd_.get(), ".", W_OK | X_OK, 0) != 0) {
    return fmt::format("archive dir {} is not writable: {}", ac.dir.string(), std::strerror(errno));
  }
  if (std::string err = lockDir(); !err.empty()) return err;
  // Leftovers of a crash: NAME.open segments are finalised, interrupted compressions removed.
  RecoveryResult rec = recoverArchive(dir_fd_.get(), cfg_.name);
  for (const auto& e : rec.errors)
    spdlog::error("error=storage route={} recovery: {}", cfg_.name, e);
  if (!rec.finalized.empty() || rec.removed_tmp > 0) {
    spdlog::warn(
        "route={} recovered after an unclean stop: {} segment(s) finalised, {} "
        "temporary file(s) removed",
        cfg_.name, rec.finalized.size(), rec.removed_tmp);
  }
  target_ = ArchiveTarget{cfg_.name, dir_fd_.get(), &ac, &lifecycle_};
  if (ac.layout == Layout::Shared) {
    NameVars vars;
    vars.route = cfg_.name;
    vars.pid = ::getpid();
    shared_ =
        std::make_unique<SegmentChain>(ac, dir_fd_.get(), std::move(vars), server_.sys(), metrics_);
    shared_->onSegmentClosed([this](const std::string& rel, uint64_t) { segmentClosed(rel); });
  }
  interval_ev_.reset(evtimer_new(server_.base(), &Route::onInterval, this));
  armInterval();
  if (target_.compresses() || target_.retains()) {
    // A catch-up now (segments left plain or due for deletion while stopped), then on a timer:
    // retention by age needs the clock, not only rotations.
    server_.worker().catchUp(&target_);
    maintenance_ev_.reset(event_new(server_.base(), -1, EV_PERSIST, &Route::onMaintenance, this));
    auto every = std::chrono::milliseconds(60000);
    if (ac.retain.max_age.count() > 0) {
      every = std::clamp(ac.retain.max_age / 10, std::chrono::milliseconds(1000), every);
    }
    addEvent(maintenance_ev_.get(), every);
  }
  return {};
}

std::string Route::lockDir() {
  lock_fd_.reset(::openat(dir_fd_.get(), ".spliced.lock", O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (!lock_fd_.valid()) {
    return fmt::format("cannot create {}/.spliced.lock: {}", cfg_.archive->dir.string(),
                       std::strerror(errno));
  }
  if (::flock(lock_fd_.get(), LOCK_EX | LOCK_NB) != 0) {
    char pid[32] = {0};
    ssize_t n = ::pread(lock_fd_.get(), pid, sizeof pid - 1, 0);
    std::string who;
    if (n > 0) who = fmt::format(" (pid {})", std::string(pid, std::strcspn(pid, "\n")));
    return fmt::format("archive dir {} is in use by another spliced process{}",
                       cfg_.archive->dir.string(), who);
  }
  std::string me = fmt::format("{}\n", ::getpid());
  if (::ftruncate(lock_fd_.get(), 0) == 0) {
    [[maybe_unused]] ssize_t w = ::pwrite(lock_fd_.get(), me.data(), me.size(), 0);
  }
  return {};
}

void Route::onMaintenance(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Route*>(arg);
  self->server_.worker().catchUp(&self->target_);
}

void Route::segmentClosed(const std::string& rel) {
  if (target_.compresses()) server_.worker().compress(&target_, rel);
  if (target_.retains()) server_.worker().retain(&target_);
}

void Route::stopAccepting() {
  if (listener_) listener_->close();
}

void Route::armInterval() {
  if (!cfg_.archive) return;
  auto interval = cfg_.archive->rotate.interval;
  if (interval.count() <= 0) return;
  auto now = std::chrono::system_clock::now();
  auto next = nextBoundary(now, interval, cfg_.archive->localtime);
  auto delay = std::chrono::duration_cast<std::chrono::milliseconds>(next - now);
  addEvent(interval_ev_.get(), delay + std::chrono::milliseconds(1));
}

void Route::onInterval(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Route*>(arg);
  self->rotateAll();
  self->armInterval();
}

void Route::rotateAll() {
  for (auto& s : sessions_) s->rotate();
  if (shared_) shared_->rotate();
}

void Route::shutdownSweep() {
  // Sessions remove themselves from the list as they close: walk a copy of the pointers.
  std::vector<Session*> live;
  for (auto& s : sessions_) live.push_back(s.get());
  for (auto* s : live) s->shutdownSweep();
}

void Route::closeAll() {
  listener_.reset();
  sessions_.clear();
  shared_.reset();
}

void Route::closeShared() {
  if (shared_) shared_->rotate();
}

void Route::onAccept(UniqueFd fd, const sockaddr_storage& peer, socklen_t len) {
  const auto* sa = reinterpret_cast<const sockaddr*>(&peer);
  // Behind a front load balancer the real client is known only from its PROXY header.
  if (!cfg_.accept_proxy && !allowed(cfg_.allow, sa)) {
    ++metrics_.rejected_denied;
    spdlog::debug("route={} refused {}: not in allow list", cfg_.name,
                  describePeer(sa, len).display());
    return;  // fd closes here
  }
  if (metrics_.connections_active >= cfg_.max_connections) {
    ++metrics_.rejected_limit;
    spdlog::debug("route={} refused {}: max_connections ({}) reached", cfg_.name,
                  describePeer(sa, len).display(), cfg_.max_connections);
    return;
  }
  ++metrics_.connections_total;
  ++metrics_.connections_active;
  if (cfg_.accept_proxy) {
    adopt(std::make_unique<ProxyHeaderSession>(*this, std::move(fd), peer, len));
    return;
  }
  startSession(std::move(fd), peer, len, std::nullopt);
}

void Route::startSession(UniqueFd fd, const sockaddr_storage& peer, socklen_t len,
                         std::optional<ProxyAddresses> origin) {
  uint64_t id = server_.nextConnectionId();
  if (cfg_.forward) {
    adopt(std::make_unique<ProxySession>(*this, std::move(fd), peer, len, origin, id));
    return;
  }
  // A collect session names and logs the original client when a PROXY header gave one.
  PeerInfo who = describePeer(reinterpret_cast<const sockaddr*>(&peer), len);
  if (origin && origin->family != AF_UNSPEC) {
    who = describePeer(reinterpret_cast<const sockaddr*>(&origin->src), origin->src_len);
  }
  adopt(std::make_unique<CollectSession>(*this, std::move(fd), std::move(who), id));
}

void Route::headerReceived(Session* handshake, UniqueFd fd, const sockaddr_storage& peer,
                           socklen_t len, const ProxyAddresses& origin) {
  // The connection stays counted as active: it moves from the handshake to its session.
  bool proxied = origin.family != AF_UNSPEC;
  const sockaddr* source = proxied ? reinterpret_cast<const sockaddr*>(&origin.src)
                                   : reinterpret_cast<const sockaddr*>(&peer);
  bool ok = allowed(cfg_.allow, source);
  // A unix-socket client of the balancer cannot be checked against IP networks: with an allow
  // list, it is refused rather than waved through.
  if (proxied && origin.family == AF_UNIX && !cfg_.allow.empty()) ok = false;
  PeerInfo who = describePeer(source, proxied ? origin.src_len : len);
  auto owned = std::move(*handshake->self);
  sessions_.erase(handshake->self);
  server_.retire(std::move(owned));
  if (!ok) {
    ++metrics_.rejected_denied;
    --metrics_.connections_active;
    spdlog::debug("route={} refused {}: not in allow list", cfg_.name, who.display());
    return;
  }
  std::optional<ProxyAddresses> o;
  if (proxied) o = origin;
  startSession(std::move(fd), peer, len, o);
}

void Route::adopt(SessionPtr session) {
  Session* raw = session.get();
  sessions_.push_back(std::move(session));
  raw->self = std::prev(sessions_.end());
  raw->start();
}

void Route::storageStalled(int err) {
  ++stalled_;
  last_storage_err_ = err;
}

void Route::storageRecovered() {
  if (stalled_ > 0) --stalled_;
}

std::vector<std::string> Route::problems() const {
  std::vector<std::string> out;
  if (!listening()) {
    out.push_back(fmt::format("route {}: not listening", cfg_.name));
  }
  if (stalled_ > 0) {
    out.push_back(fmt::format("route {}: archive writes failing ({}) for {} connection(s)",
                              cfg_.name, std::strerror(last_storage_err_), stalled_));
  }
  if (upstreams_ && !upstreams_->anyUp()) {
    out.push_back(fmt::format("route {}: no upstream available", cfg_.name));
  }
  struct stat st;
  if (dir_fd_.valid() && ::fstat(dir_fd_.get(), &st) == 0 && st.st_nlink == 0) {
    out.push_back(
        fmt::format("route {}: archive dir {} was removed", cfg_.name, cfg_.archive->dir.string()));
  }
  return out;
}

void Route::sessionDone(Session* s) {
  --metrics_.connections_active;
  auto owned = std::move(*s->self);
  sessions_.erase(s->self);
  server_.retire(std::move(owned));
}

}  // namespace spliced
