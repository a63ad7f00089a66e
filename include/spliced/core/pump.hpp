#pragma once
// One direction of bytes: source socket -> pipe -> sink, by splice(2), or through a user-space
// buffer when splice cannot be used (EINVAL/ENOSYS from the kernel, no pipe to be had, or a sink
// that must see the bytes). Copied bytes are always counted.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "spliced/core/fd.hpp"
#include "spliced/core/metrics.hpp"
#include "spliced/core/pipe_pool.hpp"
#include "spliced/core/syscalls.hpp"

namespace spliced {

enum class IoStatus {
  Ok,
  Blocked,      // try again later (no log)
  Error,        // failed with `err`; try again later or give up (logged by the owner)
  Unsupported,  // the sink cannot take bytes from a pipe: copy instead
};

struct SinkResult {
  size_t bytes = 0;  // bytes the sink took
  IoStatus status = IoStatus::Ok;
  int err = 0;
};

// The counters a pump adds to: bytes read from its source, and those that took the copy path.
struct PumpCounters {
  Counter* read;
  Counter* copied;
};

// The source of a pump, lent to a sink that may take some bytes from it itself (Sink::pull).
struct SourceTap {
  int fd;
  PipePool& pool;
  SysCalls& sys;
  PumpCounters counters;  // the sink adds what it reads (read) and what it copies (copied)
};

enum class PullStatus {
  Declined,     // the pump reads the next bytes itself (copy path), at most `limit` of them
  Moved,        // the sink took `moved` bytes from the source: ask again
  Drained,      // the source has nothing more now (EAGAIN)
  Eof,          // the source ended; every byte taken is with the sink
  SourceError,  // reading the source failed with `err`
  SinkBlocked,  // the sink cannot write now (as SinkResult Blocked)
  SinkError,    // the sink failed with `err`
};

struct PullResult {
  PullStatus status = PullStatus::Declined;
  size_t moved = 0;
  size_t limit = SIZE_MAX;  // Declined: the most the pump's next read may take
  int err = 0;
};

// Where a pump's bytes go: an archive segment chain, a line framer, or a socket.
class Sink {
 public:
  virtual ~Sink() = default;
  // Moves up to `n` bytes out of `pipe`, decrementing pipe.bytes by what moved.
  virtual SinkResult fromPipe(Pipe& pipe, size_t n) = 0;
  // Takes up to `n` bytes from a buffer.
  virtual SinkResult fromBuffer(const char* data, size_t n) = 0;
  // Writes out what the sink itself holds back (e.g. complete lines not yet written).
  virtual SinkResult flushHeld() { return {}; }
  // End of stream: writes out whatever is left (e.g. an unterminated last line).
  virtual SinkResult finish() { return {}; }
  // True when the sink must see the bytes: the pump then never splices into it.
  virtual bool needsBytes() const { return false; }
  // Bytes the sink has taken but not yet written (e.g. lines waiting for the chain).
  virtual size_t held() const { return 0; }
  // A sink that must see the bytes may still take some straight from the source (the record
  // framer splices record bodies): before each read of the copy path, with nothing held by the
  // pump, the pump asks. A sink that pulls gets each read handed over at once, so that it sees
  // every record boundary before the next read.
  virtual bool pulls() const { return false; }
  virtual PullResult pull(SourceTap&, size_t /*budget*/) { return {}; }
};

enum class PumpStatus {
  Drained,      // the source has nothing more now (EAGAIN); everything read is in the sink
  Budget,       // moved the per-wake-up budget; more may be waiting
  Eof,          // the source ended and every byte is in the sink
  SinkBlocked,  // the sink cannot take more now; bytes are held in the pipe or buffer
  SinkError,    // the sink failed with `err`; bytes are held
  SourceError,  // reading the source failed with `err` (reset, ...)
};

struct PumpResult {
  PumpStatus status = PumpStatus::Drained;
  size_t moved = 0;  // bytes read from the source in this call
  int err = 0;
};

// A Pump owns its pipe (while it holds bytes) and its copy buffer; the source fd, the sink, the
// pool, the syscalls and the counters are borrowed and must outlive it.
class Pump {
 public:
  Pump(int source, Sink& sink, PipePool& pool, SysCalls& sys, PumpCounters counters);
  // Reads count as the route's bytes_in, copies as its copy_fallback_bytes.
  Pump(int source, Sink& sink, PipePool& pool, SysCalls& sys, RouteMetrics& metrics)
      : Pump(source, sink, pool, sys, {&metrics.bytes_in, &metrics.copy_fallback_bytes}) {}
  ~Pump();
  Pump(const Pump&) = delete;
  Pump& operator=(const Pump&) = delete;

  // Moves bytes until the source is drained, `budget` bytes were read, the source ends, or the
  // sink stops taking them.
  PumpResult run(size_t budget);
  // Pushes held bytes into the sink (after the sink was blocked). Ok when nothing is held, and
  // at end of stream also after the sink's finish().
  PumpResult flush();

  // The stream ends here whatever the source says (idle timeout, reset, shutdown): nothing more
  // is read, and held bytes plus what the sink keeps back (an unterminated line) are written.
  PumpResult endStream();

  size_t heldBytes() const;
  bool sawEof() const { return eof_; }

  // A binary upgrade moves a pump to the new process: its pipe (the descriptors; the bytes stay
  // in the kernel), the bytes of its copy buffer and where it stands. The sink's own state is
  // its owner's to move.
  struct Frozen {
    int pipe_rd = -1;  // borrowed (sender) descriptors of the pipe, -1 without one
    int pipe_wr = -1;
    size_t pipe_bytes = 0;
    std::string held;  // the copy buffer's bytes
    bool forced_copy = false;
    bool eof = false;
    bool finished = false;
    int source_err = 0;
  };
  Frozen frozen() const;
  // The new process: takes over a frozen pump's state; `pipe` is made of the descriptors that
  // came with it and is adopted by the pool.
  void restore(const Frozen& f, std::optional<Pipe> pipe);
  bool copying() const { return forced_copy_; }
  // True while the pump keeps a copy buffer (only while it holds copied bytes, on any path).
  bool holdsCopyBuffer() const { return buf_ != nullptr; }

 private:
  PumpResult flushInternal();
  PumpResult done(PumpResult r);  // returns an empty pipe to the pool
  bool pipeToBuffer();            // moves the pipe's bytes into the copy buffer

  int source_;
  Sink& sink_;
  PipePool& pool_;
  SysCalls& sys_;
  PumpCounters counters_;
  std::optional<Pipe> pipe_;
  std::unique_ptr<char[]> buf_;
  size_t buf_size_ = 0;
  size_t buf_off_ = 0;  // held bytes are buf_[buf_off_, buf_off_ + buf_len_)
  size_t buf_len_ = 0;
  bool forced_copy_ = false;
  bool eof_ = false;
  bool finished_ = false;  // sink.finish() succeeded
  int source_err_ = 0;     // a source error waiting for held bytes to be written
};

}  // namespace spliced
