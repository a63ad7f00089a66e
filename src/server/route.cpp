#include "spliced/server/route.hpp"

#include <spdlog/spdlog.h>

#include <fmt/format.h>

#include "spliced/proxy/proxy_header_session.hpp"
#include "spliced/server/server.hpp"

namespace spliced {

Route::Route(Server& server, const RouteConfig& cfg) : server_(server), cfg_(cfg) {
  if (cfg_.archive) {
    auto kind = std::make_unique<CollectRoute>(*this, *cfg_.archive, server_.lifecycle());
    collect_ = kind.get();
    kind_ = std::move(kind);
  } else {
    SPLICED_ASSERT(cfg_.forward.has_value(), "a valid route collects or forwards");
    auto kind = std::make_unique<ProxyRoute>(*this, *cfg_.forward);
    proxy_ = kind.get();
    kind_ = std::move(kind);
  }
}

Route::~Route() {
  listener_.reset();
  sessions_.clear();
}

event_base* Route::base() { return server_.base(); }
PipePool& Route::pipes() { return server_.pipes(); }
SysCalls& Route::sys() { return server_.sys(); }
uint64_t Route::nextConnectionId() { return server_.nextConnectionId(); }

Status Route::start() {
  if (Status s = kind_->start(); !s) return s;
  listener_ = std::make_unique<Listener>(
      server_.base(), server_.sys(), cfg_.name,
      [this](UniqueFd fd, const sockaddr_storage& peer, socklen_t len, FdCharge charge) {
        onAccept(std::move(fd), peer, len, std::move(charge));
      },
      &server_.fdBudget(), kind_->descriptorsPerSession());
  return listener_->open(cfg_.listen);
}

void Route::stopAccepting() {
  if (listener_) listener_->close();
  for (Session* s : sessions_.snapshot()) s->beginDrain();
}

void Route::rotateAll() {
  for (Session* s : sessions_.snapshot()) s->rotate();
  kind_->rotate();
}

void Route::shutdownSweep() {
  // Sessions remove themselves from the list as they close: walk a copy of the pointers.
  for (Session* s : sessions_.snapshot()) s->shutdownSweep();
}

void Route::closeAll() {
  listener_.reset();
  sessions_.clear();
  kind_->finish();
}

void Route::finish() { kind_->finish(); }

void Route::onAccept(UniqueFd fd, const sockaddr_storage& peer, socklen_t len, FdCharge charge) {
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
  // The connection's descriptors stay taken while it is active (sessionDone gives them back).
  SPLICED_ASSERT(charge.size() == 0 || charge.size() == kind_->descriptorsPerSession(),
                 "a connection is charged what its kind holds");
  fds_held_ += charge.release();
  ++metrics_.connections_total;
  ++metrics_.connections_active;
  if (cfg_.accept_proxy) {
    adopt(std::make_unique<ProxyHeaderSession>(*this, *kind_, cfg_.allow, cfg_.accept_proxy_timeout,
                                               std::move(fd), peer, len));
    return;
  }
  Connection conn;
  conn.fd = std::move(fd);
  conn.peer = peer;
  conn.peer_len = len;
  conn.id = nextConnectionId();
  adopt(kind_->createSession(std::move(conn)));
}

void Route::adopt(SessionPtr session) { sessions_.add(std::move(session))->start(); }

void Route::replaceSession(Session* from, SessionPtr next) {
  server_.retire(sessions_.remove(from));
  adopt(std::move(next));
}

void Route::sessionDone(Session* s) {
  SPLICED_ASSERT(metrics_.connections_active > 0, "every session is counted as active");
  --metrics_.connections_active;
  const size_t fds = std::min(fds_held_, kind_->descriptorsPerSession());
  fds_held_ -= fds;
  server_.fdBudget().give(fds);
  server_.retire(sessions_.remove(s));
}

std::vector<std::string> Route::problems() const {
  std::vector<std::string> out;
  if (!listening()) out.push_back(fmt::format("route {}: not listening", cfg_.name));
  kind_->problems(out);
  return out;
}

}  // namespace spliced
