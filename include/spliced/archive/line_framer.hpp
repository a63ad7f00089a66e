#pragma once
// framing: lines for a shared segment chain. Holds the line in progress of one connection and
// hands only whole lines to the chain, so lines of concurrent clients never interleave. This is
// the one collect mode where bytes pass through user space (counted as copy-fallback bytes).
//
// max_line is a hard limit: no line the framer writes is longer, its '\n' and markers counted.
// A longer line is cut into pieces; the cut is marked on both sides with one token,
// "\x1e" "c" CONN "+" (0x1E, 'c', the connection id in decimal, '+'): every piece but the last
// ends with it just before its '\n', every piece but the first begins with it. Pieces of one
// connection stay in order in the chain, so a reader joins them by the id (docs/OPERATIONS.md,
// "Long lines"). Bytes are never changed otherwise: a line that itself begins or ends with the
// token is written as it is.
#include <cstdint>
#include <string>

#include "spliced/archive/segment_chain.hpp"
#include "spliced/core/metrics.hpp"
#include "spliced/core/pump.hpp"

namespace spliced {

// A LineFramer owns the bytes of its connection's unfinished line; the chain is borrowed.
class LineFramer : public Sink {
 public:
  // `max_line` must leave room for a payload byte between two markers of `owner`: the config's
  // minimum (64) does for any 64-bit id.
  LineFramer(SegmentChain& chain, uint64_t owner, size_t max_line, RouteMetrics& metrics);

  SinkResult fromPipe(Pipe&, size_t) override { return {0, IoStatus::Unsupported, 0}; }
  // Takes all `n` bytes (status Blocked/Error when whole lines could not be written yet), or
  // none while earlier lines are still waiting for the chain.
  SinkResult fromBuffer(const char* data, size_t n) override;
  SinkResult flushHeld() override;
  // End of stream: a last line without '\n' is written with one appended.
  SinkResult finish() override;
  bool needsBytes() const override { return true; }

  ~LineFramer() override;
  size_t held() const override { return buf_.size() - written_; }

  // The token that marks a cut for connection `owner`.
  static std::string continuationMarker(uint64_t owner);

 private:
  SinkResult writeComplete();
  // The line in progress is max_line - 1 bytes and goes on: end it as a piece (marker, '\n') and
  // start the next piece with the marker and the bytes that made room for it.
  void cut();

  SegmentChain& chain_;
  uint64_t owner_;
  size_t max_line_;
  RouteMetrics& metrics_;
  std::string marker_;
  std::string buf_;  // bytes not yet written; [0, written_) already are
  size_t written_ = 0;
  size_t complete_ = 0;     // buf_[0, complete_) ends with '\n' and is ready to write
  bool continued_ = false;  // the line in progress is a piece after the first (starts with marker_)
};

}  // namespace spliced
