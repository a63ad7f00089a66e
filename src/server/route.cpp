#include "spliced/server/route.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <fmt/format.h>

#include "spliced/core/listen_socket.hpp"
#include "spliced/core/units.hpp"
#include "spliced/proxy/proxy_header_session.hpp"
#include "spliced/server/server.hpp"

namespace spliced {

// ---- RouteWorker ----

RouteWorker::RouteWorker(Route& route, Worker& worker, std::shared_ptr<const RouteConfig> cfg)
    : route_(route), worker_(worker), cfg_(std::move(cfg)) {}

RouteWorker::~RouteWorker() {
  udp_.reset();
  listener_.reset();
  sessions_.clear();
}

SysCalls& RouteWorker::sys() { return route_.sys(); }
const std::string& RouteWorker::routeName() const { return route_.name_; }
std::chrono::milliseconds RouteWorker::idleTimeout() const { return cfg_->idle_timeout; }
uint64_t RouteWorker::nextConnectionId() { return route_.nextConnectionId(); }

void RouteWorker::stopAccepting() {
  if (listener_) listener_->close();
  if (udp_) udp_->close();
  listening_ = false;
  for (Session* s : sessions_.snapshot()) s->beginDrain();
}

void RouteWorker::rotateSessions() {
  if (udp_) udp_->rotate();
  for (Session* s : sessions_.snapshot()) s->rotate();
}

void RouteWorker::shutdownSweep() {
  // Sessions remove themselves from the list as they close: walk a copy of the pointers.
  for (Session* s : sessions_.snapshot()) s->shutdownSweep();
}

void RouteWorker::closeAll() {
  udp_.reset();
  listener_.reset();
  listening_ = false;
  sessions_.clear();
}

void RouteWorker::onAccept(UniqueFd fd, const sockaddr_storage& peer, socklen_t len,
                           FdCharge charge) {
  const RouteConfig& cfg = *cfg_;
  const auto* sa = reinterpret_cast<const sockaddr*>(&peer);
  // Behind a front load balancer the real client is known only from its PROXY header.
  if (!cfg.accept_proxy && !allowed(cfg.allow, sa)) {
    ++metrics_.rejected_denied;
    spdlog::debug("route={} refused {}: not in allow list", cfg.name,
                  describePeer(sa, len).display());
    return;  // fd closes here
  }
  // One count for the whole route, over every worker: the limit is exact.
  if (!route_.admit()) {
    ++metrics_.rejected_limit;
    spdlog::debug("route={} refused {}: max_connections ({}) reached", cfg.name,
                  describePeer(sa, len).display(), route_.max_connections_.load());
    return;
  }
  // The connection's descriptors stay taken while it is active (sessionDone gives them back).
  SPLICED_ASSERT(charge.size() == 0 || charge.size() == route_.kind_->descriptorsPerSession(),
                 "a connection is charged what its kind holds");
  fds_held_ += charge.release();
  ++metrics_.connections_total;
  ++metrics_.connections_active;
  if (cfg.accept_proxy) {
    // It holds the config too: its allow list and timeout are those of the time it was accepted.
    SessionPtr s = std::make_unique<ProxyHeaderSession>(
        *this, *route_.kind_, cfg.allow, cfg.accept_proxy_timeout, std::move(fd), peer, len);
    s->holdConfig(cfg_);
    adopt(std::move(s));
    return;
  }
  Connection conn;
  conn.fd = std::move(fd);
  conn.peer = peer;
  conn.peer_len = len;
  conn.id = nextConnectionId();
  adopt(route_.kind_->createSession(*this, std::move(conn)));
}

void RouteWorker::freeze(std::vector<HandoffRecord>& out, std::string& refused) {
  if (listener_) listener_->pause();
  for (Session* s : sessions_.snapshot()) {
    HandoffRecord r("session");
    r.set("route", route_.name_);
    r.setNum("worker", worker_.index());
    if (!s->freeze(r)) {
      if (refused.empty()) refused = fmt::format("route {}: a session cannot move", route_.name_);
      continue;
    }
    out.push_back(std::move(r));
  }
}

void RouteWorker::thaw() {
  if (listener_) listener_->resume();
  for (Session* s : sessions_.snapshot()) s->thaw();
}

void RouteWorker::handedOff() {
  if (listener_) listener_->disown();
  listening_ = false;
  // The new process has every session's descriptors: these copies are closed without a word to
  // the peers (no FIN is sent while the new process holds the socket).
  sessions_.clear();
}

Status RouteWorker::restore(HandoffRecord& r) {
  Result<std::string> type = r.str("type");
  if (!type) return std::move(type).takeError();
  SessionPtr s;
  if (type.value() == "proxy_header") {
    const RouteConfig& cfg = *cfg_;
    sockaddr_storage peer{};
    size_t len = 0;
    Result<std::string> hex = r.str("peer");
    if (!hex || !fromHex(hex.value(), &peer, sizeof peer, &len)) {
      return Error(ErrorSource::Internal, "a PROXY-header session of the handoff has no peer");
    }
    UniqueFd fd = r.takeFd(0);
    if (!fd.valid()) {
      return Error(ErrorSource::Internal, "a PROXY-header session came without its socket");
    }
    s = std::make_unique<ProxyHeaderSession>(*this, *route_.kind_, cfg.allow,
                                             cfg.accept_proxy_timeout, std::move(fd), peer,
                                             static_cast<socklen_t>(len));
    s->holdConfig(cfg_);
  } else {
    Result<SessionPtr> made = route_.kind_->restoreSession(*this, r);
    if (!made) return std::move(made).takeError();
    s = std::move(made.value());
  }
  // Counted as accepted here: over max_connections if need be (it was admitted before).
  route_.active_.fetch_add(1);
  const size_t fds = route_.kind_->descriptorsPerSession();
  worker_.fdBudget().force(fds);
  fds_held_ += fds;
  ++metrics_.connections_total;
  ++metrics_.connections_active;
  adopt(std::move(s));
  return Ok{};
}

void RouteWorker::adopt(SessionPtr session) { sessions_.add(std::move(session))->start(); }

void RouteWorker::replaceSession(Session* from, SessionPtr next) {
  worker_.retire(sessions_.remove(from));
  adopt(std::move(next));
}

void RouteWorker::sessionDone(Session* s) {
  SPLICED_ASSERT(metrics_.connections_active > 0, "every session is counted as active");
  --metrics_.connections_active;
  route_.release();
  const size_t fds = std::min(fds_held_, route_.kind_->descriptorsPerSession());
  fds_held_ -= fds;
  worker_.fdBudget().give(fds);
  worker_.retire(sessions_.remove(s));
}

// ---- Route ----

Route::Route(Server& server, ConfigPtr snapshot, const RouteConfig& cfg)
    : server_(server),
      snapshot_(std::move(snapshot)),
      current_(snapshot_),
      cfg_(&cfg),
      name_(cfg.name),
      max_connections_(cfg.max_connections) {
  // Shares of the snapshot (aliasing its ownership) for what keeps a part of it.
  for (const auto& w : server_.workers()) {
    workers_.push_back(std::make_unique<RouteWorker>(
        *this, *w, std::shared_ptr<const RouteConfig>(snapshot_, cfg_)));
  }
  if (cfg.archive) {
    auto kind = std::make_unique<CollectRoute>(
        *this, std::shared_ptr<const ArchiveConfig>(snapshot_, &*cfg.archive), server_.lifecycle(),
        cfg.forward ? &*cfg.forward : nullptr);
    collect_ = kind.get();
    kind_ = std::move(kind);
  } else {
    SPLICED_ASSERT(cfg.forward.has_value(), "a valid route collects or forwards");
    auto kind = std::make_unique<ProxyRoute>(
        *this, std::shared_ptr<const ForwardConfig>(snapshot_, &*cfg.forward));
    proxy_ = kind.get();
    kind_ = std::move(kind);
  }
}

Route::~Route() {
  workers_.clear();
  if (shared_fd_.valid()) {
    shared_fd_.reset();
    if (!unix_path_.empty()) ::unlink(unix_path_.c_str());
  }
}

event_base* Route::base() { return server_.base(); }
PipePool& Route::pipes() { return workers_.front()->pipes(); }
SysCalls& Route::sys() { return server_.sys(); }
RouteMetrics& Route::metrics() { return workers_.front()->metrics(); }
uint64_t Route::nextConnectionId() { return server_.nextConnectionId(); }
void Route::post(std::function<void()> fn) { server_.post(std::move(fn)); }

void Route::sessionDone(Session* /*s*/) {
  SPLICED_ASSERT(false, "a route kind's context has no sessions");
}

void Route::replaceSession(Session* /*from*/, SessionPtr /*next*/) {
  SPLICED_ASSERT(false, "a route kind's context has no sessions");
}

std::string Route::reloadRefusal(const RouteConfig& next) const {
  const RouteConfig& now = *cfg_;
  auto refuse = [&](std::string_view key, std::string_view why) {
    return fmt::format(
        "route {}: {} changed: {}; restart, or give the new version another name (the old one "
        "then drains and the new one starts)",
        name_, key, why);
  };
  if (now.listen.text != next.listen.text) {
    return refuse("listen", "a reload keeps a route's listening socket");
  }
  if (now.archive.has_value() != next.archive.has_value() ||
      now.forward.has_value() != next.forward.has_value()) {
    return refuse("archive or forward", "the route would be of another kind");
  }
  if (now.listen.isUdp() && now.udp_rcvbuf != next.udp_rcvbuf) {
    return refuse("udp_rcvbuf", "it is set on the socket, which a reload keeps");
  }
  if (now.archive) {
    const ArchiveConfig& a = *now.archive;
    const ArchiveConfig& b = *next.archive;
    const char* key = nullptr;
    if (a.dir != b.dir) {
      key = "archive.dir";
    } else if (a.layout != b.layout) {
      key = "archive.layout";
    } else if (a.framing != b.framing) {
      key = "archive.framing";
    } else if (a.output != b.output) {
      key = "archive.output";
    } else if (a.name.text() != b.name.text() || a.localtime != b.localtime) {
      key = "archive.name or archive.localtime";
    } else if (a.fsync != b.fsync) {
      key = "archive.fsync";
    } else if (a.manifest.hash != b.manifest.hash) {
      key = "archive.manifest";
    } else if (!(a.on_publish == b.on_publish)) {
      key = "archive.on_publish";
    }
    if (key != nullptr) {
      return refuse(key,
                    "it shapes the archive that running connections write and the next start "
                    "reads");
    }
    if (now.forward && !(*now.forward == *next.forward)) {
      return refuse("forward", "a shipping route's upstream connection and cursor are its own");
    }
  }
  return "";
}

void Route::reconfigure(ConfigPtr snapshot, const RouteConfig& next) {
  SPLICED_ASSERT(reloadRefusal(next).empty(), "a reload applies only what it may change");
  current_ = std::move(snapshot);
  cfg_ = &next;
  max_connections_.store(next.max_connections);
  auto route_cfg = std::shared_ptr<const RouteConfig>(current_, cfg_);
  // The kind first: a connection accepted once its worker has the new config finds the new kind
  // config too.
  if (collect_ != nullptr) {
    auto archive = std::shared_ptr<const ArchiveConfig>(current_, &*next.archive);
    collect_->reconfigure(archive);
    for (auto& rw : workers_) {
      RouteWorker* w = rw.get();
      server_.onWorkerWait(w->worker(), [w, route_cfg, archive] {
        w->cfg_ = route_cfg;
        if (w->udp_) w->udp_->reconfigure(archive, route_cfg->allow);
      });
    }
    return;
  }
  proxy_->reconfigure(std::shared_ptr<const ForwardConfig>(current_, &*next.forward));
  for (auto& rw : workers_) {
    RouteWorker* w = rw.get();
    server_.onWorkerWait(w->worker(), [w, route_cfg] { w->cfg_ = route_cfg; });
  }
}

Status Route::start() {
  if (Status s = kind_->start(); !s) return s;
  if (cfg_->listen.isUdp()) return startUdp();
  for (auto& rw : workers_) {
    RouteWorker* w = rw.get();
    w->listener_ = std::make_unique<Listener>(
        w->base(), server_.sys(), cfg_->name,
        [w](UniqueFd fd, const sockaddr_storage& peer, socklen_t len, FdCharge charge) {
          w->onAccept(std::move(fd), peer, len, std::move(charge));
        },
        &w->worker().fdBudget(), kind_->descriptorsPerSession());
  }
  std::vector<HandedListener> handed = server_.takeHandedListeners(cfg_->name);
  if (!handed.empty()) {
    // A binary upgrade: the process before this one listened on these sockets, and still holds
    // them until this process has started (checked against the workers by Server::takeOver).
    if (handed.size() == 1 && handed.front().shared) {
      shared_fd_ = std::move(handed.front().fd);
      unix_path_ = handed.front().unix_path;
      for (auto& rw : workers_) {
        Listener* l = rw->listener_.get();
        const int sfd = shared_fd_.get();
        SocketAddress addr = cfg_->listen;
        server_.onWorkerWait(rw->worker(), [l, sfd, addr] { l->share(sfd, addr); });
      }
    } else {
      for (auto& h : handed) {
        RouteWorker* w = workers_[h.index % workers_.size()].get();
        Listener* l = w->listener_.get();
        HandedListener* hp = &h;
        server_.onWorkerWait(w->worker(),
                             [l, hp] { l->adopt(std::move(hp->fd), std::move(hp->unix_path)); });
      }
    }
    spdlog::info("route={} takes its listening socket(s) from the process before the upgrade",
                 cfg_->name);
  } else if (UniqueFd fd = server_.takeActivatedSocket(cfg_->name); fd.valid()) {
    // systemd bound it (socket activation): one socket, in every worker's loop, as a Unix one.
    int accepting = 0;
    socklen_t len = sizeof accepting;
    if (::getsockopt(fd.get(), SOL_SOCKET, SO_ACCEPTCONN, &accepting, &len) != 0 || !accepting) {
      return Error(ErrorSource::Environment,
                   fmt::format("the socket systemd passed for route {} is not a listening stream "
                               "socket",
                               cfg_->name));
    }
    ::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) | O_NONBLOCK);
    ::fcntl(fd.get(), F_SETFD, FD_CLOEXEC);
    if (workers_.size() == 1) {
      workers_.front()->listener_->adopt(std::move(fd));
    } else {
      shared_fd_ = std::move(fd);
      for (auto& rw : workers_) {
        Listener* l = rw->listener_.get();
        const int sfd = shared_fd_.get();
        server_.onWorkerWait(rw->worker(), [l, sfd] { l->share(sfd, SocketAddress{}); });
      }
    }
    spdlog::info("route={} takes its listening socket from systemd", cfg_->name);
  } else if (workers_.size() == 1) {
    if (Status s = workers_.front()->listener_->open(cfg_->listen); !s) return s;
  } else if (cfg_->listen.isUnix()) {
    // No SO_REUSEPORT for Unix sockets: one socket, in every worker's loop (see docs/DESIGN.md).
    Result<std::vector<UniqueFd>> group = openListenGroup(cfg_->listen, 1);
    if (!group) return std::move(group).takeError();
    shared_fd_ = std::move(group.value().front());
    unix_path_ = cfg_->listen.path;
    for (auto& rw : workers_) {
      Listener* l = rw->listener_.get();
      const int sfd = shared_fd_.get();
      server_.onWorkerWait(rw->worker(), [this, l, sfd] { l->share(sfd, cfg_->listen); });
    }
  } else {
    // One SO_REUSEPORT socket per worker: the kernel spreads connections between them.
    Result<std::vector<UniqueFd>> group = openListenGroup(cfg_->listen, workers_.size());
    if (!group) return std::move(group).takeError();
    for (size_t i = 0; i < workers_.size(); ++i) {
      Listener* l = workers_[i]->listener_.get();
      UniqueFd* fd = &group.value()[i];
      server_.onWorkerWait(workers_[i]->worker(), [l, fd] { l->adopt(std::move(*fd)); });
    }
  }
  for (auto& rw : workers_) rw->listening_ = true;
  listeners_open_ = workers_.size();
  return Ok{};
}

Status Route::startUdp() {
  SPLICED_ASSERT(collect_ != nullptr, "a udp: route collects (checked with the config)");
  uint64_t granted = 0;
  Result<std::vector<UniqueFd>> group =
      openUdpGroup(cfg_->listen, workers_.size(), cfg_->udp_rcvbuf, &granted);
  if (!group) return std::move(group).takeError();
  if (granted < cfg_->udp_rcvbuf) {
    spdlog::warn(
        "route={} udp_rcvbuf: asked for {}, the kernel granted {} per socket (net.core.rmem_max "
        "caps it for a process without CAP_NET_ADMIN); bursts beyond it are dropped and counted "
        "in spliced_udp_dropped_total",
        cfg_->name, formatSize(cfg_->udp_rcvbuf), formatSize(granted));
  }
  for (size_t i = 0; i < workers_.size(); ++i) {
    RouteWorker* w = workers_[i].get();
    UniqueFd* fd = &group.value()[i];
    // A sender's chain (layout: per_peer) counts as a connection, and holds a segment's
    // descriptor from its worker's budget.
    UdpAdmission admission{cfg_->allow,
                           [this, w] {
                             FdBudget& fds = w->worker().fdBudget();
                             if (!fds.take(1)) return false;
                             if (admit()) return true;
                             fds.give(1);
                             return false;
                           },
                           [this, w] {
                             release();
                             w->worker().fdBudget().give(1);
                           }};
    server_.onWorkerWait(w->worker(), [this, w, fd, admission]() mutable {
      w->udp_ = std::make_unique<UdpReceiver>(*w, *collect_, std::move(*fd), std::move(admission));
      w->udp_->start();
    });
  }
  for (auto& rw : workers_) rw->listening_ = true;
  listeners_open_ = workers_.size();
  return Ok{};
}

void Route::stopAccepting() {
  // Each worker closes its listener on its own thread; this waits for all of them, so that once
  // it returns (and "shutting down" or a route's removal is logged) new clients are refused.
  for (auto& rw : workers_) {
    RouteWorker* w = rw.get();
    server_.onWorkerWait(w->worker(), [w] { w->stopAccepting(); });
  }
  listeners_open_ = 0;
  // Every worker has let go of the shared socket.
  if (shared_fd_.valid()) {
    shared_fd_.reset();
    if (!unix_path_.empty()) ::unlink(unix_path_.c_str());
  }
}

Status Route::freeze(std::vector<HandoffRecord>& out) {
  if (collect_ != nullptr) {
    return Error(ErrorSource::Config,
                 fmt::format("route {} collects into an archive: moving archive routes (their "
                             "sessions, chains and dir lock) is not in this version",
                             name_));
  }
  // The listening sockets: one shared by every worker, or one per worker (SO_REUSEPORT).
  if (shared_fd_.valid()) {
    HandoffRecord r("listener");
    r.set("route", name_).setNum("index", 0).setNum("shared", 1);
    r.set("listen", cfg_->listen.text).set("unix_path", unix_path_);
    r.fds.push_back(shared_fd_.get());
    out.push_back(std::move(r));
  } else {
    for (auto& rw : workers_) {
      if (!rw->listener_ || rw->listener_->fd() < 0) continue;
      HandoffRecord r("listener");
      r.set("route", name_).setNum("index", rw->worker().index()).setNum("shared", 0);
      r.set("listen", cfg_->listen.text);
      r.set("unix_path", cfg_->listen.isUnix() ? cfg_->listen.path : std::string());
      r.fds.push_back(rw->listener_->fd());
      out.push_back(std::move(r));
    }
  }
  std::string refused;
  for (auto& rw : workers_) {
    RouteWorker* w = rw.get();
    server_.onWorkerWait(w->worker(), [w, &out, &refused] { w->freeze(out, refused); });
  }
  if (!refused.empty()) return Error(ErrorSource::Internal, refused);
  return Ok{};
}

void Route::thaw() {
  for (auto& rw : workers_) {
    RouteWorker* w = rw.get();
    server_.onWorkerWait(w->worker(), [w] { w->thaw(); });
  }
}

void Route::handedOff() {
  for (auto& rw : workers_) {
    RouteWorker* w = rw.get();
    server_.onWorkerWait(w->worker(), [w] { w->handedOff(); });
  }
  listeners_open_ = 0;
  unix_path_.clear();  // the new process listens on it now
  shared_fd_.reset();
}

Status Route::restore(HandoffRecord& r, size_t worker) {
  RouteWorker* w = workers_[worker % workers_.size()].get();
  Status result = Ok{};
  server_.onWorkerWait(w->worker(), [w, &r, &result] { result = w->restore(r); });
  return result;
}

void Route::rotateAll() {
  for (auto& rw : workers_) {
    RouteWorker* w = rw.get();
    server_.onWorker(w->worker(), [w] { w->rotateSessions(); });
  }
  kind_->rotate();
}

void Route::shutdownSweep() {
  for (auto& rw : workers_) {
    RouteWorker* w = rw.get();
    server_.onWorker(w->worker(), [w] { w->shutdownSweep(); });
  }
}

void Route::closeAll() {
  for (auto& rw : workers_) rw->closeAll();
  kind_->finish();
}

void Route::finish() { kind_->finish(); }

bool Route::admit() {
  uint64_t now = active_.load();
  const uint64_t limit = max_connections_.load();
  while (true) {
    if (now >= limit) return false;
    if (active_.compare_exchange_weak(now, now + 1)) return true;
  }
}

void Route::release() {
  SPLICED_ASSERT(active_.load() > 0, "a released connection was admitted");
  active_.fetch_sub(1);
}

RouteMetrics Route::counters() const {
  RouteMetrics sum;
  for (const auto& rw : workers_) sum += rw->counters();
  return sum;
}

std::string Route::boundAddress() const { return workers_.front()->boundAddress(); }

bool Route::listening() const {
  for (const auto& rw : workers_) {
    if (rw->listening()) return true;
  }
  return false;
}

std::vector<std::string> Route::problems() const {
  std::vector<std::string> out;
  if (!listening()) out.push_back(fmt::format("route {}: not listening", name_));
  kind_->problems(out);
  return out;
}

}  // namespace spliced
