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
  if (restored_ && state_ == State::Streaming) {
    last_activity_ = std::chrono::steady_clock::now();
    watch();
    return;
  }
  if (!restored_) started_ = std::chrono::steady_clock::now();
  last_activity_ = std::chrono::steady_clock::now();
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
  setupDirection(c2u_, true, client_.get(), upstream_fd_.get());
  setupDirection(u2c_, false, upstream_fd_.get(), client_.get());
  event_add(c2u_.read_ev.get(), nullptr);
  event_add(u2c_.read_ev.get(), nullptr);
  auto idle = ctx_.idleTimeout();
  if (idle.count() > 0) {
    idle_ev_.reset(evtimer_new(ctx_.base(), &ProxySession::onIdle, this));
    addEvent(idle_ev_.get(), idle);
  }
}

void ProxySession::setupDirection(Direction& d, bool to_upstream, int src, int dst) {
  RouteMetrics& m = ctx_.metrics();
  d.owner = this;
  d.to_upstream = to_upstream;
  d.src = src;
  d.dst = dst;
  d.sink =
      std::make_unique<SocketSink>(dst, ctx_.sys(), to_upstream ? &m.upstream_bytes : &m.bytes_out);
  d.pump = std::make_unique<Pump>(
      src, *d.sink, ctx_.pipes(), ctx_.sys(),
      PumpCounters{to_upstream ? &m.bytes_in : &m.upstream_bytes_in, &m.copy_fallback_bytes});
  d.read_ev.reset(event_new(ctx_.base(), src, EV_READ | EV_PERSIST, &ProxySession::onReadable, &d));
  d.write_ev.reset(
      event_new(ctx_.base(), dst, EV_WRITE | EV_PERSIST, &ProxySession::onWritable, &d));
}

void ProxySession::watch() {
  for (Direction* d : {&c2u_, &u2c_}) {
    if (ended(*d)) continue;
    if (d->waiting_sink) {
      event_add(d->write_ev.get(), nullptr);
      if (d->to_upstream) {
        if (!d->check_ev) {
          d->check_ev.reset(evtimer_new(ctx_.base(), &ProxySession::onPausedCheck, d));
        }
        addEvent(d->check_ev.get(), kPausedCheck);
      }
    } else {
      event_add(d->read_ev.get(), nullptr);
    }
  }
  auto idle = ctx_.idleTimeout();
  if (idle.count() > 0) {
    if (!idle_ev_) idle_ev_.reset(evtimer_new(ctx_.base(), &ProxySession::onIdle, this));
    addEvent(idle_ev_.get(), idle);
  }
}

namespace {

const char* directionName(bool to_upstream) { return to_upstream ? "c2u" : "u2c"; }

}  // namespace

bool ProxySession::freeze(HandoffRecord& r) {
  if (state_ == State::Closed || frozen_) return false;
  frozen_ = true;
  if (connect_ev_) event_del(connect_ev_.get());
  if (idle_ev_) event_del(idle_ev_.get());
  for (Direction* d : {&c2u_, &u2c_}) {
    if (d->read_ev) event_del(d->read_ev.get());
    if (d->write_ev) event_del(d->write_ev.get());
    if (d->check_ev) event_del(d->check_ev.get());
  }
  r.set("type", "proxy");
  r.setNum("id", id_);
  r.set("peer", toHex(&peer_, peer_len_));
  if (origin_) r.set("origin", toHex(&*origin_, sizeof *origin_));
  r.setNum("age_ms", static_cast<uint64_t>(since(started_).count()));
  r.fds.push_back(client_.get());
  if (state_ == State::Connecting) {
    // Nothing has been read from the client yet: the new process connects again, and the
    // connect in progress here is dropped with this process.
    r.set("state", "connecting");
    return true;
  }
  r.set("state", "streaming");
  r.fds.push_back(upstream_fd_.get());
  r.set("upstream", upstream_->addr.text);
  r.setNum("connect_ms", static_cast<uint64_t>(std::max<int64_t>(connect_time_.count(), 0)));
  if (failure_) {
    r.setNum("failure", static_cast<uint64_t>(*failure_));
    r.setNum("failure_err", static_cast<uint64_t>(failure_err_));
  }
  for (Direction* d : {&c2u_, &u2c_}) {
    const std::string p = std::string(directionName(d->to_upstream)) + "_";
    const Pump::Frozen f = d->pump->frozen();
    r.setNum(p + "done", d->done ? 1 : 0);
    r.setNum(p + "failed", d->failed ? 1 : 0);
    r.setNum(p + "waiting", d->waiting_sink ? 1 : 0);
    r.setNum(p + "bytes", d->bytes);
    r.setNum(p + "close_follows", d->sink->closeFollows() ? 1 : 0);
    r.setNum(p + "forced_copy", f.forced_copy ? 1 : 0);
    r.setNum(p + "eof", f.eof ? 1 : 0);
    r.setNum(p + "finished", f.finished ? 1 : 0);
    r.setNum(p + "source_err", static_cast<uint64_t>(f.source_err));
    r.setNum(p + "held_off", r.blob.size());
    r.setNum(p + "held", f.held.size());
    r.blob += f.held;
    if (f.pipe_rd >= 0) {
      r.setNum(p + "pipe_fd", r.fds.size());
      r.setNum(p + "pipe_bytes", f.pipe_bytes);
      r.fds.push_back(f.pipe_rd);
      r.fds.push_back(f.pipe_wr);
    }
  }
  return true;
}

void ProxySession::thaw() {
  if (!frozen_) return;
  frozen_ = false;
  if (state_ == State::Connecting) {
    if (connect_ev_) addEvent(connect_ev_.get(), cfg_.connect_timeout);
    return;
  }
  if (state_ == State::Streaming) watch();
}

Result<SessionPtr> ProxySession::restore(RouteContext& ctx, UpstreamPool& pool,
                                         const ForwardConfig& cfg, HandoffRecord& r) {
  auto bad = [](const std::string& why) {
    return Error(ErrorSource::Internal, "a proxy session of the handoff: " + why);
  };
  Result<uint64_t> id = r.num("id");
  Result<std::string> state = r.str("state");
  Result<std::string> peer = r.str("peer");
  Result<uint64_t> age = r.num("age_ms");
  if (!id || !state || !peer || !age) return bad("id, state, peer or age_ms missing");
  Connection conn;
  conn.id = id.value();
  conn.fd = r.takeFd(0);
  if (!conn.fd.valid()) return bad("no client socket came with it");
  size_t len = 0;
  if (!fromHex(peer.value(), &conn.peer, sizeof conn.peer, &len)) return bad("peer is not hex");
  conn.peer_len = static_cast<socklen_t>(len);
  if (r.has("origin")) {
    ProxyAddresses o;
    if (!fromHex(r.fields["origin"], &o, sizeof o, &len) || len != sizeof o) {
      return bad("origin is not an address");
    }
    conn.origin = o;
  }
  auto s = std::make_unique<ProxySession>(ctx, pool, cfg, std::move(conn));
  s->restored_ = true;
  s->started_ = std::chrono::steady_clock::now() - std::chrono::milliseconds(age.value());
  if (state.value() == "connecting") return SessionPtr(std::move(s));
  if (state.value() != "streaming") return bad("unknown state " + state.value());
  s->upstream_fd_ = r.takeFd(1);
  if (!s->upstream_fd_.valid()) return bad("no upstream socket came with it");
  Result<std::string> up = r.str("upstream");
  if (!up) return bad("no upstream address");
  s->upstream_ = pool.adopt(up.value());
  if (s->upstream_ == nullptr) return bad("upstream " + up.value() + " is not an address");
  s->connected_ = true;
  s->state_ = State::Streaming;
  if (Result<uint64_t> c = r.num("connect_ms")) {
    s->connect_time_ = std::chrono::milliseconds(c.value());
  }
  if (r.has("failure")) {
    s->failure_ = static_cast<End>(r.num("failure").value());
    s->failure_err_ = static_cast<int>(r.num("failure_err").value());
  }
  s->setupDirection(s->c2u_, true, s->client_.get(), s->upstream_fd_.get());
  s->setupDirection(s->u2c_, false, s->upstream_fd_.get(), s->client_.get());
  for (Direction* d : {&s->c2u_, &s->u2c_}) {
    const std::string p = std::string(directionName(d->to_upstream)) + "_";
    auto flag = [&](const std::string& k) {
      Result<uint64_t> v = r.num(p + k);
      return v && v.value() != 0;
    };
    d->done = flag("done");
    d->failed = flag("failed");
    d->waiting_sink = flag("waiting");
    d->bytes = r.num(p + "bytes").ok() ? r.num(p + "bytes").value() : 0;
    if (flag("close_follows")) d->sink->finishByClose();
    Pump::Frozen f;
    f.forced_copy = flag("forced_copy");
    f.eof = flag("eof");
    f.finished = flag("finished");
    f.source_err =
        static_cast<int>(r.num(p + "source_err").ok() ? r.num(p + "source_err").value() : 0);
    Result<uint64_t> off = r.num(p + "held_off");
    Result<uint64_t> held = r.num(p + "held");
    if (!off || !held || off.value() + held.value() > r.blob.size()) {
      return bad("its held bytes are out of the record");
    }
    f.held = r.blob.substr(off.value(), held.value());
    std::optional<Pipe> pipe;
    if (r.has(p + "pipe_fd")) {
      const size_t at = r.num(p + "pipe_fd").value();
      Pipe pp;
      pp.rd = r.takeFd(at);
      pp.wr = r.takeFd(at + 1);
      if (!pp.rd.valid() || !pp.wr.valid()) return bad("a pipe came without its descriptors");
      f.pipe_bytes = r.num(p + "pipe_bytes").ok() ? r.num(p + "pipe_bytes").value() : 0;
      pipe = std::move(pp);
    }
    d->pump->restore(f, std::move(pipe));
  }
  return SessionPtr(std::move(s));
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
