#include "spliced/proxy/proxy_header_session.hpp"

#include <poll.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <cstring>

#include "spliced/proxy/proxy_protocol.hpp"

namespace spliced {
namespace {

// A header cut across TCP segments: look again shortly rather than spin on a readable socket
// whose bytes stay (they are only peeked).
constexpr std::chrono::milliseconds kRetry{10};

}  // namespace

ProxyHeaderSession::ProxyHeaderSession(RouteContext& ctx, RouteKind& next,
                                       const std::vector<Cidr>& allow,
                                       std::chrono::milliseconds timeout, UniqueFd fd,
                                       const sockaddr_storage& peer, socklen_t len)
    : ctx_(ctx),
      next_(next),
      allow_(allow),
      timeout_(timeout),
      fd_(std::move(fd)),
      peer_(peer),
      len_(len) {}

void ProxyHeaderSession::start() {
  event_base* base = ctx_.base();
  read_ev_.reset(event_new(base, fd_.get(), EV_READ, &ProxyHeaderSession::onReadable, this));
  retry_ev_.reset(evtimer_new(base, &ProxyHeaderSession::onReadable, this));
  deadline_ev_.reset(evtimer_new(base, &ProxyHeaderSession::onDeadline, this));
  event_add(read_ev_.get(), nullptr);
  addEvent(deadline_ev_.get(), timeout_);
}

bool ProxyHeaderSession::freeze(HandoffRecord& r) {
  if (!fd_.valid()) return false;
  if (read_ev_) event_del(read_ev_.get());
  if (retry_ev_) event_del(retry_ev_.get());
  if (deadline_ev_) event_del(deadline_ev_.get());
  r.set("type", "proxy_header");
  r.set("peer", toHex(&peer_, len_));
  r.fds.push_back(fd_.get());
  return true;
}

void ProxyHeaderSession::thaw() {
  if (!fd_.valid() || !read_ev_) return;
  event_add(read_ev_.get(), nullptr);
  addEvent(deadline_ev_.get(), timeout_);
}

void ProxyHeaderSession::onReadable(evutil_socket_t, short, void* arg) {
  static_cast<ProxyHeaderSession*>(arg)->tryParse();
}

void ProxyHeaderSession::onDeadline(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<ProxyHeaderSession*>(arg);
  self->fail(fmt::format("no complete PROXY header within {}", formatDuration(self->timeout_)));
}

void ProxyHeaderSession::tryParse() {
  uint8_t buf[kMaxProxyHeader];
  ssize_t n = ctx_.sys().recv(fd_.get(), buf, sizeof buf, MSG_PEEK);
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
    event_add(read_ev_.get(), nullptr);
    return;
  }
  if (n <= 0) return fail(n == 0 ? "closed before its PROXY header" : std::strerror(errno));
  ProxyParse p = parseProxyHeader(buf, static_cast<size_t>(n));
  if (p.status == ProxyParse::Status::Invalid) return fail(p.error);
  if (p.status == ProxyParse::Status::Incomplete) {
    if (static_cast<size_t>(n) >= sizeof buf) return fail("PROXY header too long");
    // Peeking never shows the end of stream behind the bytes: ask for it directly.
    pollfd pfd{fd_.get(), POLLRDHUP, 0};
    if (::poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
      return fail("closed in the middle of its PROXY header");
    }
    addEvent(retry_ev_.get(), kRetry);
    return;
  }
  // Take exactly the header; the bytes after it belong to the stream.
  ssize_t got = ctx_.sys().recv(fd_.get(), buf, p.header_len, 0);
  if (got != static_cast<ssize_t>(p.header_len)) return fail("short read of the PROXY header");
  read_ev_.reset();
  retry_ev_.reset();
  deadline_ev_.reset();
  handOn(p.addr);
}

void ProxyHeaderSession::handOn(const ProxyAddresses& origin) {
  bool proxied = origin.family != AF_UNSPEC;
  const sockaddr* source = proxied ? reinterpret_cast<const sockaddr*>(&origin.src)
                                   : reinterpret_cast<const sockaddr*>(&peer_);
  bool ok = allowed(allow_, source);
  // A unix-socket client of the balancer cannot be checked against IP networks: with an allow
  // list, it is refused rather than waved through.
  if (proxied && origin.family == AF_UNIX && !allow_.empty()) ok = false;
  if (!ok) {
    ++ctx_.metrics().rejected_denied;
    spdlog::debug("route={} refused {}: not in allow list", ctx_.routeName(),
                  describePeer(source, proxied ? origin.src_len : len_).display());
    fd_.reset();
    ctx_.sessionDone(this);
    return;
  }
  Connection conn;
  conn.fd = std::move(fd_);
  conn.peer = peer_;
  conn.peer_len = len_;
  if (proxied) conn.origin = origin;
  conn.id = ctx_.nextConnectionId();
  // The connection goes on to its session; this one is freed after the callback returns.
  ctx_.replaceSession(this, next_.createSession(ctx_, std::move(conn)));
}

void ProxyHeaderSession::fail(const std::string& why) {
  read_ev_.reset();
  retry_ev_.reset();
  deadline_ev_.reset();
  ++ctx_.metrics().rejected_bad_header;
  spdlog::warn("error=downstream route={} refused {}: {}", ctx_.routeName(),
               describePeer(reinterpret_cast<const sockaddr*>(&peer_), len_).display(), why);
  fd_.reset();
  ctx_.sessionDone(this);
}

void ProxyHeaderSession::shutdownSweep() { fail("shutting down"); }

}  // namespace spliced
