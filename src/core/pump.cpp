#include "spliced/core/pump.hpp"

#include "spliced/core/check.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace spliced {
namespace {

constexpr size_t kCopyBuffer = 64 * 1024;

bool spliceUnsupported(int err) {
  return err == EINVAL || err == ENOSYS || err == EBADF || err == EOPNOTSUPP;
}

}  // namespace

Pump::Pump(int source, Sink& sink, PipePool& pool, SysCalls& sys, PumpCounters counters)
    : source_(source), sink_(sink), pool_(pool), sys_(sys), counters_(counters) {
  forced_copy_ = sink_.needsBytes();
}

Pump::~Pump() {
  if (pipe_) pool_.release(std::move(*pipe_));  // closed, not pooled, if it still holds bytes
}

Pump::Frozen Pump::frozen() const {
  Frozen f;
  if (pipe_) {
    f.pipe_rd = pipe_->rd.get();
    f.pipe_wr = pipe_->wr.get();
    f.pipe_bytes = pipe_->bytes;
  }
  if (buf_ && buf_len_ > 0) f.held.assign(buf_.get() + buf_off_, buf_len_);
  f.forced_copy = forced_copy_;
  f.eof = eof_;
  f.finished = finished_;
  f.source_err = source_err_;
  return f;
}

void Pump::restore(const Frozen& f, std::optional<Pipe> pipe) {
  SPLICED_ASSERT(!pipe_ && buf_len_ == 0, "a pump is restored before it has run");
  if (pipe) {
    pipe->bytes = f.pipe_bytes;
    pipe_ = pool_.adopt(std::move(*pipe));
  }
  if (!f.held.empty()) {
    buf_size_ = std::max(f.held.size(), kCopyBuffer);
    buf_ = std::make_unique_for_overwrite<char[]>(buf_size_);
    std::memcpy(buf_.get(), f.held.data(), f.held.size());
    buf_off_ = 0;
    buf_len_ = f.held.size();
  }
  forced_copy_ = f.forced_copy;
  eof_ = f.eof;
  finished_ = f.finished;
  source_err_ = f.source_err;
}

size_t Pump::heldBytes() const { return (pipe_ ? pipe_->bytes : 0) + buf_len_ + sink_.held(); }

PumpResult Pump::done(PumpResult r) {
  if (pipe_ && pipe_->empty()) {
    pool_.release(std::move(*pipe_));
    pipe_.reset();
  }
  // Idle connections keep no buffer, whatever the path: a sink that must see the bytes (the line
  // framer) copies every wake-up, and 64 KiB per idle connection would add up (10,000 idle
  // connections, 640 MB). A fresh buffer per busy wake-up costs little next to the copy itself.
  if (buf_ && buf_len_ == 0) {
    buf_.reset();
    buf_size_ = 0;
    buf_off_ = 0;
  }
  return r;
}

bool Pump::pipeToBuffer() {
  // The pipe's bytes are older than any already in the buffer: they go in front of them.
  size_t size = std::max(pipe_->bytes + buf_len_, kCopyBuffer);
  auto fresh = std::make_unique_for_overwrite<char[]>(size);
  size_t got = 0;
  while (got < pipe_->bytes) {
    ssize_t n = sys_.read(pipe_->rd.get(), fresh.get() + got, pipe_->bytes - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    got += static_cast<size_t>(n);
  }
  *counters_.copied += got;
  SPLICED_ASSERT(got == pipe_->bytes, "the pipe is emptied whole into the buffer");
  pipe_->bytes = 0;
  if (buf_len_) std::memcpy(fresh.get() + got, buf_.get() + buf_off_, buf_len_);
  buf_ = std::move(fresh);
  buf_size_ = size;
  buf_off_ = 0;
  buf_len_ += got;
  return true;
}

PumpResult Pump::flushInternal() {
  if (pipe_ && pipe_->bytes > 0) {
    while (pipe_->bytes > 0) {
      SinkResult r = sink_.fromPipe(*pipe_, pipe_->bytes);
      if (r.status == IoStatus::Unsupported) {
        spdlog::debug("sink cannot splice ({}); copying for this stream", std::strerror(r.err));
        forced_copy_ = true;
        if (!pipeToBuffer()) return {PumpStatus::SinkError, 0, EIO};
        break;
      }
      if (r.status == IoStatus::Error) return {PumpStatus::SinkError, 0, r.err};
      if (r.status == IoStatus::Blocked || r.bytes == 0) return {PumpStatus::SinkBlocked, 0, 0};
    }
  }
  while (buf_len_ > 0) {
    SinkResult r = sink_.fromBuffer(buf_.get() + buf_off_, buf_len_);
    buf_off_ += r.bytes;
    buf_len_ -= r.bytes;
    if (buf_len_ == 0) buf_off_ = 0;
    if (r.status == IoStatus::Error) return {PumpStatus::SinkError, 0, r.err};
    if (r.status != IoStatus::Ok || (r.bytes == 0 && buf_len_ > 0)) {
      return {PumpStatus::SinkBlocked, 0, 0};
    }
  }
  SinkResult held = sink_.flushHeld();
  if (held.status == IoStatus::Error) return {PumpStatus::SinkError, 0, held.err};
  if (held.status != IoStatus::Ok) return {PumpStatus::SinkBlocked, 0, 0};
  if (eof_ && !finished_) {
    SinkResult fin = sink_.finish();
    if (fin.status == IoStatus::Error) return {PumpStatus::SinkError, 0, fin.err};
    if (fin.status != IoStatus::Ok) return {PumpStatus::SinkBlocked, 0, 0};
    finished_ = true;
  }
  if (source_err_ != 0) return {PumpStatus::SourceError, 0, source_err_};
  return {eof_ ? PumpStatus::Eof : PumpStatus::Drained, 0, 0};
}

PumpResult Pump::flush() { return done(flushInternal()); }

PumpResult Pump::endStream() {
  eof_ = true;
  return flush();
}

PumpResult Pump::run(size_t budget) {
  size_t moved = 0;
  // Leaving the loop: push what was read into the sink first, so that a returned Drained,
  // Budget, Eof or SourceError means "nothing held" unless the sink refused.
  auto leave = [&](PumpStatus status, int err) -> PumpResult {
    // A reset seen while the sink is behind is reported once the held bytes are out: the next
    // read of a reset socket would say 0, a clean end, which it is not.
    if (status == PumpStatus::SourceError) source_err_ = err;
    PumpResult f = flushInternal();
    if (f.status == PumpStatus::SinkBlocked || f.status == PumpStatus::SinkError) {
      f.moved = moved;
      return done(f);
    }
    return done({eof_ && status != PumpStatus::SourceError ? PumpStatus::Eof : status, moved, err});
  };
  if (heldBytes() > 0 || eof_ || source_err_ != 0) {
    PumpResult f = flushInternal();
    if (f.status != PumpStatus::Drained) return done(f);  // blocked, failed, or finished
  }
  while (true) {
    if (moved >= budget) return leave(PumpStatus::Budget, 0);
    // A pipe only when no copied bytes wait: spliced bytes must never overtake them.
    if (!forced_copy_ && !pipe_ && buf_len_ == 0) pipe_ = pool_.acquire();
    if (!forced_copy_ && pipe_) {
      SPLICED_ASSERT(buf_len_ == 0, "spliced bytes never overtake copied ones");
      if (pipe_->bytes >= pipe_->capacity) {
        PumpResult f = flushInternal();
        if (f.status != PumpStatus::Drained) {
          f.moved = moved;
          return done(f);
        }
      }
      SPLICED_ASSERT(pipe_->bytes < pipe_->capacity, "a full pipe is drained before it is filled");
      size_t want = std::min(pipe_->capacity - pipe_->bytes, budget - moved);
      ssize_t n = sys_.splice(source_, nullptr, pipe_->wr.get(), nullptr, want,
                              SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        pipe_->bytes += static_cast<size_t>(n);
        moved += static_cast<size_t>(n);
        *counters_.read += static_cast<size_t>(n);
        // Less than asked for: the socket is (most likely) empty. Drain and return rather than
        // pay a system call for the EAGAIN; level-triggered polling calls back if more came.
        if (static_cast<size_t>(n) < want) return leave(PumpStatus::Drained, 0);
        continue;
      }
      if (n == 0) {
        eof_ = true;  // end of stream: drain the pipe first, then report it
        return leave(PumpStatus::Eof, 0);
      }
      int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN) {
        // Socket empty, or the pipe is full in slots though not in bytes. Either way: drain
        // the pipe and return; level-triggered polling calls back at once if more is waiting.
        return leave(PumpStatus::Drained, 0);
      }
      if (spliceUnsupported(err)) {
        spdlog::debug("splice from socket failed ({}); copying for this stream",
                      std::strerror(err));
        forced_copy_ = true;
        continue;  // bytes already in the pipe stay ahead of the copied ones
      }
      return leave(PumpStatus::SourceError, err);
    }

    // Copy path: forced for this stream, or no pipe could be had for this wake-up.
    size_t limit = SIZE_MAX;
    if (forced_copy_ && sink_.pulls()) {
      // Each read goes to the sink at once: it sees where the next record starts and says how
      // its bytes are taken (it may splice a record's body itself).
      if (buf_len_ > 0) {
        PumpResult f = flushInternal();
        if (f.status != PumpStatus::Drained) {
          f.moved = moved;
          return done(f);
        }
      }
      SourceTap tap{source_, pool_, sys_, counters_};
      PullResult p = sink_.pull(tap, budget - moved);
      moved += p.moved;
      switch (p.status) {
        case PullStatus::Declined:
          SPLICED_ASSERT(p.limit > 0, "a declined pull leaves room for a read");
          limit = p.limit;
          break;
        case PullStatus::Moved:
          continue;
        case PullStatus::Drained:
          return leave(PumpStatus::Drained, 0);
        case PullStatus::Eof:
          eof_ = true;
          return leave(PumpStatus::Eof, 0);
        case PullStatus::SourceError:
          return leave(PumpStatus::SourceError, p.err);
        case PullStatus::SinkBlocked:
          return done({PumpStatus::SinkBlocked, moved, 0});
        case PullStatus::SinkError:
          return done({PumpStatus::SinkError, moved, p.err});
      }
    }
    if (!buf_) {
      buf_ = std::make_unique_for_overwrite<char[]>(kCopyBuffer);
      buf_size_ = kCopyBuffer;
    }
    if (buf_off_ + buf_len_ >= buf_size_) {
      PumpResult f = flushInternal();
      if (f.status != PumpStatus::Drained) {
        f.moved = moved;
        return done(f);
      }
      // The sink has seen the bytes now (framing: auto has decided): it may take the next ones
      // itself.
      if (sink_.pulls()) continue;
    }
    size_t want = std::min({buf_size_ - buf_off_ - buf_len_, budget - moved, limit});
    ssize_t n = sys_.read(source_, buf_.get() + buf_off_ + buf_len_, want);
    if (n > 0) {
      buf_len_ += static_cast<size_t>(n);
      moved += static_cast<size_t>(n);
      *counters_.read += static_cast<size_t>(n);
      *counters_.copied += static_cast<size_t>(n);
      continue;
    }
    if (n == 0) {
      eof_ = true;
      return leave(PumpStatus::Eof, 0);
    }
    int err = errno;
    if (err == EINTR) continue;
    if (err == EAGAIN) return leave(PumpStatus::Drained, 0);
    return leave(PumpStatus::SourceError, err);
  }
}

}  // namespace spliced
