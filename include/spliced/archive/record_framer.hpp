#pragma once
// framing: octet_counted and framing: auto (RFC 6587 octet counting: "LEN SP MSG", LEN in
// decimal, 1 to 10 digits, no leading zero). Parses one connection's frames and hands only whole
// records to the chain (writeRecords), so records are never torn by rotation nor interleaved with
// other connections' records. Message bytes are never changed.
//
// Output (archive.output): as_received writes each record as it came, its length header
// included; lines writes MSG and '\n'. A record whose written form is longer than max_line is
// oversize: with oversize: split it is cut into pieces of at most max_line bytes as written,
// marked on both sides with the continuation marker of framing: lines ("\x1e" "c" CONN "+", see
// LineFramer); as_received pieces get a length header of their own that counts the markers. With
// oversize: close the connection is refused (refused() says why). A malformed header always
// refuses the connection: its bytes cannot be framed. Records before it are written.
//
// framing: auto decides from the first bytes (a digit 1-9, digits, a space: octet counted;
// anything else: lines) and then frames the connection with a LineFramer, or as above.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "spliced/archive/archive_config.hpp"
#include "spliced/archive/line_framer.hpp"
#include "spliced/archive/segment_chain.hpp"
#include "spliced/core/metrics.hpp"
#include "spliced/core/pump.hpp"

namespace spliced {

// A RecordFramer owns the bytes of its connection's unfinished record (and, for auto, the line
// framer it chose); the chain, the config and the counters are borrowed.
class RecordFramer : public Sink {
 public:
  RecordFramer(SegmentChain& chain, uint64_t owner, const ArchiveConfig& cfg,
               RouteMetrics& metrics);
  ~RecordFramer() override;

  SinkResult fromPipe(Pipe&, size_t) override { return {0, IoStatus::Unsupported, 0}; }
  // Takes all `n` bytes (status Blocked/Error when whole records could not be written yet), or
  // none while earlier records are still waiting for the chain.
  SinkResult fromBuffer(const char* data, size_t n) override;
  SinkResult flushHeld() override;
  // End of stream: a frame cut short is written as a record of its own (the bytes that came,
  // with a header that says how many, or '\n'; counted as incomplete).
  SinkResult finish() override;
  bool needsBytes() const override { return true; }
  size_t held() const override;

  // Why the connection must be closed (a malformed header; oversize: close), or empty.
  const std::string& refused() const { return refused_; }

 private:
  enum class Mode { Detect, Octet, Lines, Refused };

  void detect(const char* data, size_t n, size_t& used);
  void parse(const char* data, size_t n);
  void startRecord(uint64_t len);
  void startPiece(bool first);
  void endPiece();
  void refuse(std::string why);
  SinkResult writeComplete();

  SegmentChain& chain_;
  uint64_t owner_;
  const ArchiveConfig& cfg_;
  RouteMetrics& metrics_;
  std::string marker_;
  size_t header_digits_;  // digits of max_line: the longest length header a piece gets
  Mode mode_;
  std::unique_ptr<LineFramer> lines_;  // framing: auto chose lines

  std::string hdr_;          // the header (or auto's first bytes) read so far
  uint64_t stream_off_ = 0;  // bytes of the stream parsed (for messages)
  bool in_body_ = false;
  uint64_t rec_left_ = 0;     // message bytes of the record still to come
  uint64_t piece_left_ = 0;   // of them, those the current piece takes
  bool piece_last_ = true;    // the current piece is the record's last (no trailing marker)
  size_t piece_start_ = 0;    // where the current piece begins in buf_
  size_t piece_content_ = 0;  // where its content (after its header) begins in buf_
  std::string buf_;           // records not yet written, then the record in progress
  std::vector<size_t> ends_;  // ends of the complete records in buf_
  std::string refused_;
};

}  // namespace spliced
