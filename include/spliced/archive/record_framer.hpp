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
// Splicing (pull): where framing needs only the length, a record's body does not pass through
// user space. At a record boundary the framer peeks at the `LEN SP` header (recv MSG_PEEK); a
// record of at least kSpliceMin message bytes that fits max_line and the pipe is moved socket ->
// pipe by splice, with the bytes of it already read written into the pipe before it and the
// '\n' of output: lines after it, and once the pipe holds it whole, pipe -> segment under the
// chain's record discipline (writeRecordFromPipe: one segment, never interleaved). as_received
// splices the header with the body; lines reads the header (copied) and splices the body. A
// record whose header came in a copied read has the rest of its body spliced the same way. The
// end of the stream, an error, or a pipe that takes no more in the middle of a body (EAGAIN twice
// in a row while the socket has bytes: once may be bytes that came just after the splice) puts the
// bytes in the pipe back into user space: the record then ends as on the copy path (a frame cut
// short is kept as above). Bytes are counted by path (framing_copied_bytes,
// framing_spliced_bytes).
//
// framing: auto decides from the first bytes (a digit 1-9, digits, a space: octet counted;
// anything else: lines) and then frames the connection with a LineFramer, or as above.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "spliced/archive/archive_config.hpp"
#include "spliced/archive/line_framer.hpp"
#include "spliced/archive/segment_chain.hpp"
#include "spliced/core/metrics.hpp"
#include "spliced/core/pipe_pool.hpp"
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
  bool pulls() const override { return mode_ == Mode::Octet && !splice_off_; }
  PullResult pull(SourceTap& tap, size_t budget) override;

  // Message bytes from which a record's body is spliced: a shorter one is copied, where the
  // system calls of a splice (peek, splice in, splice out) would cost more than the copy.
  static constexpr size_t kSpliceMin = 4096;

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
  SinkResult take(const char* data, size_t n);
  // Starts splicing a record: `prefix` bytes of it at the end of buf_ go into a pipe first,
  // then `need` bytes of the source (at a boundary: its header too), then `suffix` ('\n').
  PullResult startSplice(SourceTap& tap, size_t prefix, size_t need, size_t suffix, size_t budget);
  PullResult fillPipe(SourceTap& tap, size_t budget);
  SinkResult writePiped();
  void finishSplice();
  // Puts the record in the pipe back into buf_ and parses its source bytes: the copy path's
  // state, as if they had been read.
  void unpipe();
  void releasePipe();

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

  bool rec_large_ = false;          // the record in progress has at least kSpliceMin message bytes
  bool rec_split_ = false;          // the record in progress is oversize (split into pieces)
  bool peek_ = true;                // peek at the next header (a large record came lately)
  bool splice_off_ = false;         // splice failed for good on this connection
  size_t splice_limit_ = SIZE_MAX;  // longest record a pipe took whole so far
  // The record being spliced: the pipe holds its prefix, sp_got_ of sp_need_ source bytes, then
  // its suffix; sp_written_ of them are in the segment.
  std::optional<Pipe> pipe_;
  PipePool* pool_ = nullptr;
  SysCalls* sys_ = nullptr;
  Counter* copied_ = nullptr;  // the pump's copy counter (copy_fallback_bytes)
  bool splicing_ = false;
  size_t sp_prefix_ = 0;
  size_t sp_need_ = 0;
  size_t sp_got_ = 0;
  size_t sp_suffix_ = 0;
  size_t sp_written_ = 0;
};

}  // namespace spliced
