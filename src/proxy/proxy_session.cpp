#include "spliced/proxy/proxy_session.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

#include "spliced/core/log.hpp"

namespace spliced {
namespace {

constexpr size_t kBudgetPerWakeup = 4 * 1024 * 1024;
// How often a paused direction looks at its client for a reset it no longer reads.
constexpr std::chrono::milliseconds kPausedCheck{500};

// The error pending on a socket (a reset), without reading it; 0 when there is none. poll()
// leaves the error in place for whoever reads the socket next; SO_ERROR then takes it.
int pendingError(int fd) {
  pollfd p{fd, 0, 0};
  if (::poll(&p, 1, 0) <= 0 || (p.revents & POLLERR) == 0) return 0;
  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) return errno;
  return err != 0 ? err : ECONNRESET;
}

// Closing with SO_LINGER {1, 0} sends a reset instead of a FIN: how a reset is passed on.
void resetOnClose(int fd) {
  linger lg{1, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
}

std::chrono::milliseconds since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                               t);
}

}  // namespace

const char* ProxySession::toString(End e) {
  switch (e) {
    case End::Done:
      return "eof";
    case End::NoUpstream:
      return "no_upstream";
    case End::ClientReset:
      return "client_error";
    case End::UpstreamReset:
      return "upstream_error";
    case End::IdleTimeout:
      return "idle_timeout";
    case End::Shutdown:
      return "shutdown";
    case End::Internal:
      return "internal_error";
  }
  return "?";
}

ProxySession::ProxySession(RouteContext& ctx, UpstreamPool& pool, const ForwardConfig& cfg,
                           Connection conn)
    : ctx_(ctx),
      pool_(pool),
      cfg_(cfg),
      client_(std::move(conn.fd)),
      peer_(conn.peer),
      peer_len_(conn.peer_len),
      origin_(conn.origin),
      id_(conn.id) {
  // Behind a front load balancer, the client is the one its PROXY header names: it is logged
  // and hashed (source_hash), not the balancer.
  peer_info_ = describePeer(clientAddress(), origin_ ? origin_->src_len : peer_len_);
}

const sockaddr* ProxySession::clientAddress() const {
  if (origin_) return reinterpret_cast<const sockaddr*>(&origin_->src);
  return reinterpret_cast<const sockaddr*>(&peer_);
}

ProxySession::~ProxySession() = default;

void ProxySession::start() {
  started_ = std::chrono::steady_clock::now();
  last_activity_ = started_;
  connectNext();
}

void ProxySession::connectNext() {
  UpstreamPool& pool = pool_;
  const ForwardConfig& fc = cfg_;
  while (state_ == State::Connecting) {
    if (tried_.size() > fc.retries) return close(End::NoUpstream, last_connect_err_);
    Upstream* u = pool.pick(clientAddress(), tried_);
    if (u == nullptr) return close(End::NoUpstream, last_connect_err_);
    tried_.push_back(u);
    int err = 0;
    UniqueFd fd = connectNonBlocking(u->addr, err);
    if (!fd.valid()) {
      if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM ||
          err == EADDRNOTAVAIL) {
        // Our own shortage, not the upstream's fault: do not mark it down for it.
        spdlog::error("error=internal route={} conn={} cannot connect to {}: {}", ctx_.routeName(),
                      id_, u->addr.text, std::strerror(err));
        last_connect_err_ = err;
        return close(End::Internal, err);
      }
      pool.connectFailed(u, err);
      spdlog::debug("route={} conn={} upstream={} connect failed: {}", ctx_.routeName(), id_,
                    u->addr.text, std::strerror(err));
      last_connect_err_ = err;
      continue;
    }
    upstream_fd_ = std::move(fd);
    upstream_ = u;
    connect_started_ = std::chrono::steady_clock::now();
    // EV_READ too: a failed connect then reports both (EPOLLERR), a plain success only
    // EV_WRITE, which needs no getsockopt(SO_ERROR) to judge (connectResultReadWrite).
    // EV_PERSIST: it stays registered until the upstream's read event is added, so the switch
    // from connecting to reading is one epoll_ctl(MOD), not a DEL and an ADD.
    connect_ev_.reset(event_new(ctx_.base(), upstream_fd_.get(), EV_READ | EV_WRITE | EV_PERSIST,
                                &ProxySession::onConnect, this));
    addEvent(connect_ev_.get(), fc.connect_timeout);
    return;
  }
}

void ProxySession::onConnect(evutil_socket_t fd, short what, void* arg) {
  auto* self = static_cast<ProxySession*>(arg);
  int err = connectResultReadWrite(fd, what);
  if (err != 0) {
    self->connect_ev_.reset();
    return self->connectFailed(err);
  }
  self->pool_.connected(self->upstream_);
  self->connected_ = true;
  self->connect_time_ = since(self->connect_started_);
  self->startStreaming();
  self->connect_ev_.reset();  // after the read event on the same socket is in (see connectNext)
}

void ProxySession::connectFailed(int err) {
  last_connect_err_ = err;
  pool_.connectFailed(upstream_, err);
  spdlog::debug("route={} conn={} upstream={} connect failed: {}", ctx_.routeName(), id_,
                upstream_->addr.text, std::strerror(err));
  upstream_fd_.reset();
  upstream_ = nullptr;
  connectNext();
}

void ProxySession::startStreaming() {
  RouteMetrics& m = ctx_.metrics();
  const ForwardConfig& fc = cfg_;
  if (fc.proxy_protocol != ProxyProtocol::Off) {
    // The header goes first, before any spliced byte. It is at most a few hundred bytes into a
    // fresh connection's empty send buffer, so one send takes it whole.
    ProxyAddresses a;
    if (origin_) {
      a = *origin_;
    } else {
      a.family = peer_.ss_family;
      a.src = peer_;
      a.src_len = peer_len_;
      a.dst_len = sizeof a.dst;
      ::getsockname(client_.get(), reinterpret_cast<sockaddr*>(&a.dst), &a.dst_len);
    }
    std::string header =
        fc.proxy_protocol == ProxyProtocol::V1 ? encodeProxyV1(a) : encodeProxyV2(a);
    ssize_t n = ctx_.sys().send(upstream_fd_.get(), header.data(), header.size(), MSG_NOSIGNAL);
    if (n != static_cast<ssize_t>(header.size())) {
      int err = n < 0 ? errno : EIO;
      spdlog::error("error=upstream route={} conn={} cannot send the PROXY header: {}",
                    ctx_.routeName(), id_, std::strerror(err));
      return close(End::UpstreamReset, err);
    }
    m.upstream_bytes += header.size();
  }
  // The client socket has TCP_NODELAY from its listener (openListenSocket).
  state_ = State::Streaming;
  auto setup = [&](Direction& d, bool to_upstream, int src, int dst, Counter* written,
                   Counter* read) {
    d.owner = this;
    d.to_upstream = to_upstream;
    d.src = src;
    d.dst = dst;
    d.sink = std::make_unique<SocketSink>(dst, ctx_.sys(), written);
    d.pump = std::make_unique<Pump>(src, *d.sink, ctx_.pipes(), ctx_.sys(),
                                    PumpCounters{read, &m.copy_fallback_bytes});
    d.read_ev.reset(
        event_new(ctx_.base(), src, EV_READ | EV_PERSIST, &ProxySession::onReadable, &d));
    d.write_ev.reset(
        event_new(ctx_.base(), dst, EV_WRITE | EV_PERSIST, &ProxySession::onWritable, &d));
    event_add(d.read_ev.get(), nullptr);
  };
  setup(c2u_, true, client_.get(), upstream_fd_.get(), &m.upstream_bytes, &m.bytes_in);
  setup(u2c_, false, upstream_fd_.get(), client_.get(), &m.bytes_out, &m.upstream_bytes_in);
  auto idle = ctx_.idleTimeout();
  if (idle.count() > 0) {
    idle_ev_.reset(evtimer_new(ctx_.base(), &ProxySession::onIdle, this));
    addEvent(idle_ev_.get(), idle);
  }
}

void ProxySession::onReadable(evutil_socket_t, short, void* arg) {
  auto* d = static_cast<Direction*>(arg);
  d->owner->advance(*d);
}

void ProxySession::advance(Direction& d) {
  if (state_ != State::Streaming || ended(d) || d.waiting_sink) return;
  PumpResult r = d.pump->run(kBudgetPerWakeup);
  d.bytes += r.moved;
  if (r.moved > 0) last_activity_ = std::chrono::steady_clock::now();
  handle(d, r);
}

void ProxySession::handle(Direction& d, const PumpResult& r) {
  switch (r.status) {
    case PumpStatus::Drained:
    case PumpStatus::Budget:
      return;
    case PumpStatus::Eof:
      // The source ended and its last byte, then the FIN, went to the other side.
      d.done = true;
      d.waiting_sink = false;
      event_del(d.read_ev.get());
      event_del(d.write_ev.get());
      if (d.check_ev) event_del(d.check_ev.get());
      if (ended(c2u_) && ended(u2c_)) return close(End::Done, 0);
      // This source was read to its EOF: when the other direction ends too, the session closes
      // at once, and closing its destination (this source) sends that FIN without a shutdown.
      (d.to_upstream ? u2c_ : c2u_).sink->finishByClose();
      return;
    case PumpStatus::SinkBlocked:
      // The other side is not reading: stop reading this one until it catches up.
      return pause(d);
    case PumpStatus::SinkError:
      return failDirection(d, r.err);
    case PumpStatus::SourceError:
      return close(d.to_upstream ? End::ClientReset : End::UpstreamReset, r.err);
  }
}

void ProxySession::pause(Direction& d) {
  if (d.waiting_sink) return;
  d.waiting_sink = true;
  event_del(d.read_ev.get());
  event_add(d.write_ev.get(), nullptr);
  // Not read, the client's reset would go unseen: look for it now and then.
  if (!d.to_upstream) return;
  // Made on the first pause only: most sessions never pause, and an idle one costs less.
  if (!d.check_ev) d.check_ev.reset(evtimer_new(ctx_.base(), &ProxySession::onPausedCheck, &d));
  addEvent(d.check_ev.get(), kPausedCheck);
}

void ProxySession::resume(Direction& d) {
  d.waiting_sink = false;
  event_del(d.write_ev.get());
  if (d.check_ev) event_del(d.check_ev.get());
  event_add(d.read_ev.get(), nullptr);
}

void ProxySession::onWritable(evutil_socket_t, short, void* arg) {
  auto* d = static_cast<Direction*>(arg);
  ProxySession* self = d->owner;
  if (self->state_ != State::Streaming || ended(*d)) return;
  size_t before = d->pump->heldBytes();
  PumpResult r = d->pump->flush();
  if (d->pump->heldBytes() != before) self->last_activity_ = std::chrono::steady_clock::now();
  if (r.status == PumpStatus::Drained) {
    self->resume(*d);
    return self->advance(*d);  // the source may have more already
  }
  self->handle(*d, r);
}

void ProxySession::onPausedCheck(evutil_socket_t, short, void* arg) {
  auto* d = static_cast<Direction*>(arg);
  ProxySession* self = d->owner;
  if (self->state_ != State::Streaming || ended(*d) || !d->waiting_sink) return;
  // A reset client is gone: what it sent and still waits in the pipe is dropped, and the
  // upstream gets the reset. A FIN is no error: it waits in the socket until the pipe drains.
  if (int err = pendingError(d->src); err != 0) return self->close(End::ClientReset, err);
  addEvent(d->check_ev.get(), kPausedCheck);
}

void ProxySession::failDirection(Direction& d, int err) {
  End why = d.to_upstream ? End::UpstreamReset : End::ClientReset;
  Direction& other = d.to_upstream ? u2c_ : c2u_;
  if (ended(other)) return close(why, err);
  // The other direction may still carry something whole (an HTTP 413 answer during an upload):
  // it goes on until it ends or the idle timeout. This one reads no more; what it holds is
  // dropped (counted at the end).
  d.failed = true;
  d.waiting_sink = false;
  event_del(d.read_ev.get());
  event_del(d.write_ev.get());
  if (d.check_ev) event_del(d.check_ev.get());
  if (!failure_) {
    failure_ = why;
    failure_err_ = err;
  }
  spdlog::debug("route={} conn={} writing to the {} failed: {}; {} -> {} goes on", ctx_.routeName(),
                id_, d.to_upstream ? "upstream" : "client", std::strerror(err),
                d.to_upstream ? "upstream" : "client", d.to_upstream ? "client" : "upstream");
}

void ProxySession::onIdle(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<ProxySession*>(arg);
  auto idle = self->ctx_.idleTimeout();
  auto quiet = since(self->last_activity_);
  if (quiet >= idle) return self->close(End::IdleTimeout, 0);
  addEvent(self->idle_ev_.get(), idle - quiet);
}

void ProxySession::shutdownSweep() {
  if (state_ == State::Streaming) {
    // drain_timeout is over: push what the pipes hold where it can go now, then close.
    if (!ended(c2u_)) c2u_.pump->flush();
    if (!ended(u2c_)) u2c_.pump->flush();
  }
  close(End::Shutdown, 0);
}

void ProxySession::close(End why, int err) {
  if (state_ == State::Closed) return;
  bool was_streaming = state_ == State::Streaming;
  state_ = State::Closed;
  connect_ev_.reset();
  idle_ev_.reset();
  for (Direction* d : {&c2u_, &u2c_}) {
    d->read_ev.reset();
    d->write_ev.reset();
    d->check_ev.reset();
  }
  // A direction failed earlier and the other went on: the failure is what the session ended
  // for, the upstream's error is reported whichever side ended it last, and when the other
  // direction ended cleanly (its FIN passed on) nothing is reset on purpose: its peer has the
  // whole stream.
  const bool upstream_failed = why == End::UpstreamReset || failure_ == End::UpstreamReset;
  const bool clean_end = why == End::Done;
  if (failure_) {
    if (why != *failure_ && why != End::Done) {
      spdlog::debug("route={} conn={} after the {} the session ended with {}", ctx_.routeName(),
                    id_, toString(*failure_), toString(why));
    }
    why = *failure_;
    err = failure_err_;
  }
  const bool pass_reset = !(failure_ && clean_end);
  if (pass_reset && why == End::ClientReset && upstream_fd_.valid()) {
    resetOnClose(upstream_fd_.get());
  }
  if (pass_reset && why == End::UpstreamReset) resetOnClose(client_.get());
  // Bytes still in a pipe at an idle timeout or the end of a drain are lost: both peers get a
  // reset, not a FIN that would pass a truncated transfer off as complete. A failed direction's
  // bytes were dropped when it failed: they are counted, but do not reset the peer that was
  // still being served.
  size_t dropped = 0;
  size_t dropped_live = 0;
  if (was_streaming) {
    for (Direction* d : {&c2u_, &u2c_}) {
      if (!d->pump) continue;
      dropped += d->pump->heldBytes();
      if (!d->failed) dropped_live += d->pump->heldBytes();
    }
  }
  if (dropped_live > 0 && why != End::ClientReset && why != End::UpstreamReset) {
    resetOnClose(client_.get());
    if (upstream_fd_.valid()) resetOnClose(upstream_fd_.get());
  }
  if (connected_) {
    pool_.release(upstream_,
                  upstream_failed ? UpstreamPool::PeerState::Failed : UpstreamPool::PeerState::Ok);
    connected_ = false;
  }
  if (why == End::NoUpstream) ++ctx_.metrics().rejected_no_upstream;
  auto level = spdlog::level::info;
  if (why == End::NoUpstream || why == End::UpstreamReset) level = spdlog::level::warn;
  if (why == End::Internal) level = spdlog::level::err;
  const char* tag = "";
  if (why == End::ClientReset) tag = " error=downstream";
  if (why == End::UpstreamReset || why == End::NoUpstream) tag = " error=upstream";
  spdlog::log(level,
              "proxy route={} conn={} client={} upstream={} bytes_in={} bytes_out={} connect={} "
              "duration={} end={}{}{}{}{}",
              ctx_.routeName(), id_, peer_info_.display(),
              upstream_ != nullptr ? upstream_->addr.text : "-", c2u_.bytes, u2c_.bytes,
              connect_time_.count() >= 0 ? formatDuration(connect_time_) : "-",
              formatDuration(since(started_)), toString(why), tag, err ? " detail=" : "",
              err ? logQuote(std::strerror(err)) : "",
              dropped ? fmt::format(" dropped_bytes={}", dropped) : std::string());
  ctx_.sessionDone(this);
}

}  // namespace spliced
