#include "spliced/collect/collect_session.hpp"

#include <sys/socket.h>

#include <poll.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "spliced/collect/collect_route.hpp"
#include "spliced/core/log.hpp"

namespace spliced {
namespace {

// Bytes moved per wake-up before yielding to other connections (level-triggered: the loop comes
// back at once if more is waiting).
constexpr size_t kBudgetPerWakeup = 4 * 1024 * 1024;
// On drain_timeout, at most this much more is taken from a socket that keeps streaming.
constexpr size_t kSweepLimit = 64 * 1024 * 1024;
constexpr std::chrono::milliseconds kFirstBackoff{100};
constexpr std::chrono::milliseconds kMaxBackoff{5000};

}  // namespace

const char* toString(EndReason r) {
  switch (r) {
    case EndReason::Eof:
      return "eof";
    case EndReason::IdleTimeout:
      return "idle_timeout";
    case EndReason::Reset:
      return "client_error";
    case EndReason::Shutdown:
      return "shutdown";
    case EndReason::Internal:
      return "internal_error";
    case EndReason::BadFrame:
      return "bad_frame";
  }
  return "?";
}

CollectSession::CollectSession(RouteContext& ctx, CollectRoute& archive, const ArchiveConfig& ac,
                               UniqueFd fd, PeerInfo peer, uint64_t id)
    : ctx_(ctx), archive_(archive), fd_(std::move(fd)), peer_(std::move(peer)), id_(id) {
  Sink* sink = nullptr;
  if (ac.layout == Layout::PerConnection) {
    NameVars vars{ctx_.routeName(), peer_.fileSafeIp(), peer_.port, id_, 0, ::getpid()};
    own_chain_ = std::make_unique<SegmentChain>(ac, archive_.dir(), std::move(vars), ctx_.sys(),
                                                ctx_.metrics());
    own_chain_->onSegmentClosed(
        [&archive = archive_](const std::string& rel, const UnpublishedSegment& seg) {
          archive.segmentClosed(rel, seg);
        });
    // The route owns a segment whose rename failed: it outlives this session.
    own_chain_->onUnpublished(
        [&archive = archive_](UnpublishedSegment seg) { archive.publishLater(std::move(seg)); });
    own_chain_->syncOffLoop(archive_.closeWorker());
    // A shipping route ships this connection's chain on an upstream connection of its own.
    if (ChainObserver* o = archive_.shipConnection(id_)) own_chain_->observe(o);
    sink = own_chain_.get();
  } else if (ac.framing == Framing::OctetCounted || ac.framing == Framing::Auto) {
    SPLICED_ASSERT(archive_.sharedChain() != nullptr, "layout: shared has a shared chain");
    sink = archive_.sharedChain();
  } else {
    SPLICED_ASSERT(archive_.sharedChain() != nullptr, "layout: shared has a shared chain");
    if (ac.framing == Framing::Lines) {
      framer_ =
          std::make_unique<LineFramer>(*archive_.sharedChain(), id_, ac.max_line, ctx_.metrics());
      sink = framer_.get();
    } else {
      sink = archive_.sharedChain();
    }
  }
  if (ac.framing == Framing::OctetCounted || ac.framing == Framing::Auto) {
    // Records are framed whatever the layout: whole across rotations, max_line enforced.
    SegmentChain* chain = own_chain_ ? own_chain_.get() : archive_.sharedChain();
    records_ = std::make_unique<RecordFramer>(*chain, id_, ac, ctx_.metrics());
    sink = records_.get();
  }
  pump_ = std::make_unique<Pump>(fd_.get(), *sink, ctx_.pipes(), ctx_.sys(), ctx_.metrics());
}

bool CollectSession::checkRefused() {
  if (!records_ || records_->refused().empty() || ending_ || state_ == State::Closed) return false;
  spdlog::warn("error=downstream route={} conn={} peer={} {}; closing the connection",
               ctx_.routeName(), id_, peer_.display(), records_->refused());
  finishStream(EndReason::BadFrame, 0);
  return true;
}

CollectSession::~CollectSession() = default;

void CollectSession::start() {
  started_ = std::chrono::steady_clock::now();
  event_base* base = ctx_.base();
  // EV_PERSIST with a timeout: libevent re-arms the timeout whenever the event fires, which is
  // exactly an idle timeout.
  read_ev_.reset(event_new(base, fd_.get(), EV_READ | EV_PERSIST, &CollectSession::onEvent, this));
  retry_ev_.reset(evtimer_new(base, &CollectSession::onRetry, this));
  addEvent(read_ev_.get(), ctx_.idleTimeout());
}

void CollectSession::onEvent(evutil_socket_t, short what, void* arg) {
  auto* self = static_cast<CollectSession*>(arg);
  if (self->state_ != State::Streaming) return;
  if (what & EV_TIMEOUT) {
    // Idle: nothing arrived for idle_timeout. Bytes that came in just now, and anything held,
    // are written first.
    PumpResult r = self->pump_->run(kBudgetPerWakeup);
    self->bytes_ += r.moved;
    if (self->checkRefused()) return;
    if (r.moved > 0 && r.status != PumpStatus::Eof && r.status != PumpStatus::SourceError &&
        r.status != PumpStatus::SinkError && r.status != PumpStatus::SinkBlocked) {
      return;  // not idle after all: the timeout starts again
    }
    if (r.status == PumpStatus::Eof) return self->close(EndReason::Eof, 0);
    self->finishStream(
        r.status == PumpStatus::SourceError ? EndReason::Reset : EndReason::IdleTimeout,
        r.status == PumpStatus::SourceError ? r.err : 0);
    return;
  }
  self->advance(kBudgetPerWakeup);
}

void CollectSession::advance(size_t budget) {
  PumpResult r = pump_->run(budget);
  bytes_ += r.moved;
  if (checkRefused()) return;
  handle(r);
}

void CollectSession::handle(const PumpResult& r) {
  switch (r.status) {
    case PumpStatus::Drained:
    case PumpStatus::Budget:
      return;
    case PumpStatus::Eof:
      close(EndReason::Eof, 0);
      return;
    case PumpStatus::SourceError:
      // Reset by the client: what was read is written before the session ends.
      finishStream(EndReason::Reset, r.err);
      return;
    case PumpStatus::SinkBlocked:
    case PumpStatus::SinkError:
      enterBackoff(r);
      return;
  }
}

void CollectSession::finishStream(EndReason why, int err) {
  ending_ = why;
  ending_err_ = err;
  PumpResult r = pump_->endStream();
  if (r.status == PumpStatus::SinkBlocked || r.status == PumpStatus::SinkError) {
    enterBackoff(r);  // onRetry closes once everything is written
    return;
  }
  close(why, err);
}

void CollectSession::enterBackoff(const PumpResult& r) {
  if (r.status != PumpStatus::SinkBlocked && r.status != PumpStatus::SinkError) return;
  if (r.status == PumpStatus::SinkError && storage_err_ != r.err) {
    // Logged once per episode (and again only if the error changes).
    spdlog::error(
        "error=storage route={} conn={} archive write failed: {}; pausing this client and "
        "retrying (holding {} bytes)",
        ctx_.routeName(), id_, std::strerror(r.err), pump_->heldBytes());
    storage_err_ = r.err;
    if (!stalled_) {
      stalled_ = true;
      archive_.storageStalled(r.err);
    }
  }
  if (state_ != State::Backoff) {
    state_ = State::Backoff;
    event_del(read_ev_.get());
    backoff_ = kFirstBackoff;
  } else {
    backoff_ = std::min(backoff_ * 2, kMaxBackoff);
  }
  addEvent(retry_ev_.get(), backoff_);
}

void CollectSession::onRetry(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<CollectSession*>(arg);
  if (self->state_ != State::Backoff) return;
  PumpResult r = self->pump_->flush();
  if (r.status == PumpStatus::SinkBlocked || r.status == PumpStatus::SinkError) {
    self->noticeHangUp();
    self->enterBackoff(r);
    return;
  }
  if (self->storage_err_ != 0) {
    spdlog::info("route={} conn={} archive writable again; resuming", self->ctx_.routeName(),
                 self->id_);
    self->storage_err_ = 0;
  }
  if (self->stalled_) {
    self->stalled_ = false;
    self->archive_.storageRecovered();
  }
  self->state_ = State::Streaming;
  if (self->ending_) return self->close(*self->ending_, self->ending_err_);
  if (r.status == PumpStatus::Eof) return self->close(EndReason::Eof, 0);
  addEvent(self->read_ev_.get(), self->ctx_.idleTimeout());
  self->advance(kBudgetPerWakeup);
}

void CollectSession::noticeHangUp() {
  if (hung_up_ || ending_) return;
  // poll, not SO_ERROR: reading the error would clear it, and the stream's end would then look
  // like an orderly EOF. A half-close (POLLRDHUP alone) is the normal end of a stream.
  pollfd p{fd_.get(), 0, 0};
  if (::poll(&p, 1, 0) <= 0 || (p.revents & (POLLERR | POLLHUP)) == 0) return;
  hung_up_ = true;
  spdlog::info(
      "route={} conn={} peer={} client hung up while the archive refuses writes; the {} bytes "
      "it sent are held and written when the archive takes them",
      ctx_.routeName(), id_, peer_.display(), pump_->heldBytes());
}

void CollectSession::rotate() {
  if (own_chain_) own_chain_->rotate();
}

void CollectSession::beginDrain() {
  if (state_ != State::Closed) ::shutdown(fd_.get(), SHUT_WR);
}

void CollectSession::shutdownSweep() {
  if (state_ == State::Closed) return;
  EndReason why = ending_.value_or(EndReason::Shutdown);
  if (state_ == State::Streaming && !ending_) {
    PumpResult r = pump_->run(kSweepLimit);
    bytes_ += r.moved;
    if (r.status == PumpStatus::Eof) return close(EndReason::Eof, 0);
  }
  pump_->endStream();
  if (pump_->heldBytes() > 0) {
    // The last chance: a segment under a rescue name (a new file, which may succeed where the
    // configured name or the active segment fails). What cannot be written then is lost, and
    // said so.
    SegmentChain* chain = own_chain_ ? own_chain_.get() : archive_.sharedChain();
    if (chain != nullptr) {
      chain->rescueNext();
      pump_->endStream();
    }
  }
  if (pump_->heldBytes() > 0) {
    spdlog::error("error=storage route={} conn={} {} bytes could not be written before exit: {}",
                  ctx_.routeName(), id_, pump_->heldBytes(),
                  std::strerror(storage_err_ ? storage_err_ : EIO));
  }
  close(why, ending_ ? ending_err_ : 0);
}

void CollectSession::close(EndReason why, int err) {
  if (state_ == State::Closed) return;
  state_ = State::Closed;
  if (stalled_) {
    stalled_ = false;
    archive_.storageRecovered();
  }
  read_ev_.reset();
  retry_ev_.reset();
  if (own_chain_) own_chain_->rotate();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                  started_);
  auto level = why == EndReason::Internal ? spdlog::level::err : spdlog::level::info;
  if (why == EndReason::Reset) level = spdlog::level::warn;
  spdlog::log(level, "close route={} conn={} peer={} bytes={} segments={} duration={} end={}{}{}",
              ctx_.routeName(), id_, peer_.display(), bytes_,
              own_chain_ ? own_chain_->segmentsClosed() : 0, formatDuration(ms), toString(why),
              err ? " error=downstream detail=" : "", err ? logQuote(std::strerror(err)) : "");
  ctx_.sessionDone(this);
}

}  // namespace spliced
