#pragma once
// framing: lines for a shared segment chain. Holds the line in progress of one connection and
// hands only whole lines to the chain, so lines of concurrent clients never interleave. This is
// the one collect mode where bytes pass through user space (counted as copy-fallback bytes).
#include <cstdint>
#include <string>

#include "spliced/archive/segment_chain.hpp"
#include "spliced/core/metrics.hpp"
#include "spliced/core/pump.hpp"

namespace spliced {

// A LineFramer owns the bytes of its connection's unfinished line; the chain is borrowed.
class LineFramer : public Sink {
 public:
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

 private:
  SinkResult writeComplete();

  SegmentChain& chain_;
  uint64_t owner_;
  size_t max_line_;
  RouteMetrics& metrics_;
  std::string buf_;  // bytes not yet written; [0, written_) already are
  size_t written_ = 0;
  size_t complete_ = 0;  // buf_[0, complete_) ends with '\n' and is ready to write
};

}  // namespace spliced
