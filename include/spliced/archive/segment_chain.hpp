#pragma once
// A chain of archive segment files: the sink of a collect route. Segments are opened lazily on
// the first byte, written at offsets the chain owns (never O_APPEND: splice refuses it), named
// NAME.open while active and renamed to NAME (without replacing anything) when closed.
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>

#include "spliced/archive/archive_config.hpp"
#include "spliced/archive/naming.hpp"
#include "spliced/core/fd.hpp"
#include "spliced/core/metrics.hpp"
#include "spliced/core/pump.hpp"
#include "spliced/core/syscalls.hpp"

namespace spliced {

// Called when a segment is complete: its path relative to the archive dir and its size.
using SegmentClosedFn = std::function<void(const std::string& rel_path, uint64_t bytes)>;

// A SegmentChain owns the open segment's fd. The archive config, the archive dir fd, the
// syscalls and the counters are borrowed from the route and outlive it.
class SegmentChain : public Sink {
 public:
  SegmentChain(const ArchiveConfig& cfg, int dir_fd, NameVars vars, SysCalls& sys,
               RouteMetrics& metrics);
  ~SegmentChain() override;  // closes (and renames) the active segment

  SinkResult fromPipe(Pipe& pipe, size_t n) override;
  SinkResult fromBuffer(const char* data, size_t n) override;

  // Writes bytes of `owner` keeping lines whole: a size split falls after a '\n', and while one
  // owner's record is half written (a write error) other owners are told to wait.
  SinkResult writeLines(uint64_t owner, const char* data, size_t n);

  // An owner that goes away gives up its claim on a half-written record.
  void releaseOwner(uint64_t owner) {
    if (incomplete_owner_ == owner) incomplete_owner_ = 0;
  }
  // Closes the active segment, if any; the next byte opens the next one.
  void rotate();
  bool active() const { return fd_.valid(); }
  uint64_t segmentBytes() const { return size_; }
  uint64_t totalBytes() const { return total_; }
  uint64_t segmentsClosed() const { return closed_; }
  const std::string& activePath() const { return rel_; }
  int lastError() const { return last_err_; }

  void onSegmentClosed(SegmentClosedFn fn) { on_closed_ = std::move(fn); }

 private:
  // Opens the next segment if none is open. Returns 0 or an errno.
  int ensureOpen();
  SinkResult writeBuffer(const char* data, size_t n, bool whole_lines);
  SinkResult fail(size_t done, int err);
  // fsync: on_close: the directory holding `rel`, after its rename (errors logged and counted).
  void syncDirOf(const std::string& rel);

  const ArchiveConfig& cfg_;
  int dir_fd_;
  NameVars vars_;
  SysCalls& sys_;
  RouteMetrics& metrics_;
  UniqueFd fd_;
  std::string rel_;                // final name of the active segment, relative to dir
  uint64_t size_ = 0;              // bytes in the active segment = next write offset
  uint64_t total_ = 0;             // bytes written by this chain
  uint64_t closed_ = 0;            // segments closed by this chain
  uint64_t incomplete_owner_ = 0;  // writeLines: owner whose record is half written
  int last_err_ = 0;
  SegmentClosedFn on_closed_;
};

}  // namespace spliced
