#include "spliced/archive/record_framer.hpp"

#include "spliced/core/check.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace spliced {
namespace {

// RFC 6587 leaves the length unbounded; ten digits are more than any max_line (64 MiB at most).
constexpr size_t kMaxDigits = 10;

size_t digitsOf(uint64_t v) { return std::to_string(v).size(); }

// At most 32 bytes of `s`, printable ASCII as it is, the rest as \xHH.
std::string escaped(const char* s, size_t n) {
  std::string out;
  for (size_t i = 0; i < std::min<size_t>(n, 32); ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      out += fmt::format("\\x{:02x}", c);
    }
  }
  if (n > 32) out += "...";
  return out;
}

}  // namespace

RecordFramer::RecordFramer(SegmentChain& chain, uint64_t owner, const ArchiveConfig& cfg,
                           RouteMetrics& metrics)
    : chain_(chain),
      owner_(owner),
      cfg_(cfg),
      metrics_(metrics),
      marker_(LineFramer::continuationMarker(owner)),
      header_digits_(digitsOf(cfg.max_line)),
      mode_(cfg.framing == Framing::Auto ? Mode::Detect : Mode::Octet) {
  SPLICED_ASSERT(cfg.framing == Framing::Auto || cfg.framing == Framing::OctetCounted,
                 "a record framer frames octet-counted or auto connections");
  // A middle piece is its header, two markers and at least one message byte.
  SPLICED_ASSERT(cfg.max_line >= header_digits_ + 1 + 2 * marker_.size() + 2,
                 "max_line leaves room for a payload");
}

RecordFramer::~RecordFramer() {
  releasePipe();  // closed, not pooled, if it still holds bytes
  chain_.releaseOwner(owner_);
}

size_t RecordFramer::held() const {
  const size_t piped = splicing_ ? sp_prefix_ + sp_got_ + sp_suffix_ - sp_written_ : 0;
  return buf_.size() + hdr_.size() + piped + (lines_ ? lines_->held() : 0);
}

void RecordFramer::refuse(std::string why) {
  mode_ = Mode::Refused;
  refused_ = std::move(why);
  // The record in progress is dropped (it cannot be framed); complete ones are still written.
  buf_.resize(ends_.empty() ? 0 : ends_.back());
  hdr_.clear();
  in_body_ = false;
}

SinkResult RecordFramer::writeComplete() {
  if (ends_.empty()) return {};
  const size_t complete = ends_.back();
  SinkResult r = chain_.writeRecords(owner_, buf_.data(), complete, ends_);
  if (r.bytes > 0) {
    // Drop what is written; the record in progress moves to the front.
    buf_.erase(0, r.bytes);
    auto it = std::upper_bound(ends_.begin(), ends_.end(), r.bytes);
    ends_.erase(ends_.begin(), it);
    for (size_t& e : ends_) e -= r.bytes;
    SPLICED_ASSERT(piece_start_ >= r.bytes || !in_body_, "only complete records are written");
    piece_start_ = piece_start_ >= r.bytes ? piece_start_ - r.bytes : 0;
    piece_content_ = piece_content_ >= r.bytes ? piece_content_ - r.bytes : 0;
    if (buf_.empty() && buf_.capacity() > 64 * 1024) std::string().swap(buf_);  // give back a peak
  }
  if (r.status != IoStatus::Ok) return {0, r.status, r.err};
  return {};
}

SinkResult RecordFramer::flushHeld() {
  if (mode_ == Mode::Lines) return lines_->flushHeld();
  if (splicing_) {
    // Records before it are written; it is written once the pipe holds it whole.
    return sp_got_ == sp_need_ ? writePiped() : SinkResult{};
  }
  return writeComplete();
}

void RecordFramer::releasePipe() {
  if (pipe_) {
    pool_->release(std::move(*pipe_));
    pipe_.reset();
  }
}

PullResult RecordFramer::pull(SourceTap& tap, size_t budget) {
  if (mode_ != Mode::Octet || splice_off_) return {};
  if (splicing_) return fillPipe(tap, budget);
  // Records before it go first (a blocked chain is then seen by the copy path).
  if (!ends_.empty() && writeComplete().status != IoStatus::Ok) return {};
  if (in_body_) {
    if (rec_split_ || rec_left_ < kSpliceMin) {
      // Copied. A large record's last bytes are read up to its end, so that the next header
      // can be peeked at.
      return {PullStatus::Declined, 0, rec_large_ && !rec_split_ ? rec_left_ : SIZE_MAX, 0};
    }
    const size_t suffix = cfg_.output == RecordOutput::Lines ? 1 : 0;
    return startSplice(tap, buf_.size() - piece_start_, rec_left_, suffix, budget);
  }
  if (!hdr_.empty() || !peek_) return {};
  // At a record boundary, with large records coming lately: is the next one large?
  char h[kMaxDigits + 1];
  ssize_t n = 0;
  do {
    n = tap.sys.recv(tap.fd, h, sizeof h, MSG_PEEK | MSG_DONTWAIT);
  } while (n < 0 && errno == EINTR);
  if (n < 0 && errno == EAGAIN) return {PullStatus::Drained, 0, SIZE_MAX, 0};
  if (n <= 0) return {};  // the read sees the end or the error
  const auto got = static_cast<size_t>(n);
  size_t digits = 0;
  while (digits < got && h[digits] >= '0' && h[digits] <= '9') ++digits;
  if (digits == got) return {};  // the header is not all here yet
  if (digits == 0 || h[0] == '0' || h[digits] != ' ') {
    peek_ = false;
    return {};  // malformed: the copy path says so
  }
  const uint64_t len = std::stoull(std::string(h, digits));
  const bool as_received = cfg_.output == RecordOutput::AsReceived;
  const uint64_t written = as_received ? digits + 1 + len : len + 1;
  if (len < kSpliceMin || written > cfg_.max_line || written > splice_limit_) {
    peek_ = false;  // until the next large record
    return {};
  }
  // output: lines drops the header: it is read (copied), then the body is spliced.
  if (!as_received) return {PullStatus::Declined, 0, digits + 1, 0};
  return startSplice(tap, 0, static_cast<size_t>(written), 0, budget);
}

PullResult RecordFramer::startSplice(SourceTap& tap, size_t prefix, size_t need, size_t suffix,
                                     size_t budget) {
  const size_t total = prefix + need + suffix;
  if (total > splice_limit_) return {};
  if (!pipe_) {
    pipe_ = tap.pool.acquire();
    if (!pipe_) return {};  // none to be had: copied
    pool_ = &tap.pool;
  }
  if (pipe_->capacity < total) {
    splice_limit_ = pipe_->capacity;
    releasePipe();
    return {};
  }
  sys_ = &tap.sys;
  copied_ = tap.counters.copied;
  SPLICED_ASSERT(ends_.empty() && pipe_->empty(), "a spliced record follows written ones");
  size_t put = 0;
  while (put < prefix) {
    ssize_t w = tap.sys.write(pipe_->wr.get(), buf_.data() + piece_start_ + put, prefix - put);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) break;
    put += static_cast<size_t>(w);
    pipe_->bytes += static_cast<size_t>(w);
  }
  if (put < prefix) {
    // The pipe took less than it holds: this record and longer ones are copied (the pipe is
    // closed with what it took; buf_ still has all of it).
    splice_limit_ = put;
    releasePipe();
    return {};
  }
  buf_.resize(piece_start_);
  splicing_ = true;
  sp_prefix_ = prefix;
  sp_need_ = need;
  sp_got_ = 0;
  sp_suffix_ = 0;
  sp_written_ = 0;
  return fillPipe(tap, budget);
}

PullResult RecordFramer::fillPipe(SourceTap& tap, size_t budget) {
  size_t moved = 0;
  bool retried = false;  // an EAGAIN while bytes wait is tried once more (see below)
  while (sp_got_ < sp_need_) {
    if (moved >= budget) return {PullStatus::Moved, moved, SIZE_MAX, 0};
    const size_t want = std::min(sp_need_ - sp_got_, budget - moved);
    ssize_t n = tap.sys.splice(tap.fd, nullptr, pipe_->wr.get(), nullptr, want,
                               SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) {
      retried = false;
      sp_got_ += static_cast<size_t>(n);
      pipe_->bytes += static_cast<size_t>(n);
      moved += static_cast<size_t>(n);
      *tap.counters.read += static_cast<uint64_t>(n);
      // Less than asked for: the socket is (most likely) empty; level-triggered polling calls
      // back when more came.
      if (static_cast<size_t>(n) < want && sp_got_ < sp_need_) {
        return {PullStatus::Drained, moved, SIZE_MAX, 0};
      }
      continue;
    }
    if (n == 0) {
      unpipe();  // ends as a frame cut short, as on the copy path
      return {PullStatus::Eof, moved, SIZE_MAX, 0};
    }
    const int err = errno;
    if (err == EINTR) continue;
    if (err == EAGAIN) {
      // The socket is empty, or the pipe takes no more (its slots are used up by small
      // pieces): a peek tells which.
      char c = 0;
      ssize_t p = 0;
      do {
        p = tap.sys.recv(tap.fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
      } while (p < 0 && errno == EINTR);
      if (p < 0 && errno == EAGAIN) return {PullStatus::Drained, moved, SIZE_MAX, 0};
      // Bytes that came between the splice and the peek look like a full pipe: only a second
      // EAGAIN in a row, with bytes still waiting, says the pipe takes no more.
      if (p > 0 && !retried) {
        retried = true;
        continue;
      }
      const int peek_err = p < 0 ? errno : 0;
      splice_limit_ = std::min(splice_limit_, pipe_->bytes);
      unpipe();
      if (p == 0) return {PullStatus::Eof, moved, SIZE_MAX, 0};
      if (p < 0) return {PullStatus::SourceError, moved, SIZE_MAX, peek_err};
      return {PullStatus::Moved, moved, SIZE_MAX, 0};  // this record goes on by the copy path
    }
    unpipe();
    if (err == EINVAL || err == ENOSYS || err == EOPNOTSUPP || err == EBADF) {
      splice_off_ = true;  // this socket cannot be spliced from: copied from now on
      return {PullStatus::Moved, moved, SIZE_MAX, 0};
    }
    return {PullStatus::SourceError, moved, SIZE_MAX, err};
  }
  if (sp_suffix_ == 0 && cfg_.output == RecordOutput::Lines) {
    ssize_t w = 0;
    do {
      w = tap.sys.write(pipe_->wr.get(), "\n", 1);
    } while (w < 0 && errno == EINTR);
    if (w != 1) {
      splice_limit_ = std::min(splice_limit_, pipe_->bytes);
      unpipe();  // the record is complete in buf_ now
      return {PullStatus::Moved, moved, SIZE_MAX, 0};
    }
    sp_suffix_ = 1;
    pipe_->bytes += 1;
  }
  SinkResult r = writePiped();
  if (r.status == IoStatus::Ok) return {PullStatus::Moved, moved, SIZE_MAX, 0};
  if (r.status == IoStatus::Error) return {PullStatus::SinkError, moved, SIZE_MAX, r.err};
  return {PullStatus::SinkBlocked, moved, SIZE_MAX, 0};
}

SinkResult RecordFramer::writePiped() {
  const size_t total = sp_prefix_ + sp_got_ + sp_suffix_;
  SinkResult r = chain_.writeRecordFromPipe(owner_, *pipe_, total - sp_written_, sp_written_ > 0);
  sp_written_ += r.bytes;
  if (sp_written_ == total) {
    metrics_.framing_spliced_bytes += sp_got_;
    finishSplice();
    return {};
  }
  if (r.status == IoStatus::Unsupported) {
    // The segment file cannot be spliced into: the rest of the record is copied, and so is
    // every later one of this connection.
    splice_off_ = true;
    const size_t rest = total - sp_written_;
    const size_t at = buf_.size();
    buf_.resize(at + rest);
    size_t got = 0;
    while (got < rest) {
      ssize_t n = sys_->read(pipe_->rd.get(), buf_.data() + at + got, rest - got);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      got += static_cast<size_t>(n);
    }
    SPLICED_ASSERT(got == rest, "a pipe gives back what it holds");
    pipe_->bytes -= got;
    *copied_ += sp_got_;
    metrics_.framing_copied_bytes += sp_got_;
    ends_.push_back(buf_.size());
    finishSplice();
    return writeComplete();
  }
  return {0, r.status == IoStatus::Ok ? IoStatus::Blocked : r.status, r.err};
}

void RecordFramer::finishSplice() {
  splicing_ = false;
  stream_off_ += sp_got_;
  in_body_ = false;
  hdr_.clear();
  rec_left_ = 0;
  piece_left_ = 0;
  piece_start_ = buf_.size();
  piece_content_ = buf_.size();
  peek_ = true;
  sp_prefix_ = sp_need_ = sp_got_ = sp_suffix_ = sp_written_ = 0;
  releasePipe();  // empty: back to the pool
}

void RecordFramer::unpipe() {
  SPLICED_ASSERT(splicing_ && sp_written_ == 0, "only a record not written yet goes back");
  std::string back(pipe_->bytes, '\0');
  size_t got = 0;
  while (got < back.size()) {
    ssize_t n = sys_->read(pipe_->rd.get(), back.data() + got, back.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  SPLICED_ASSERT(got == back.size(), "a pipe gives back what it holds");
  pipe_->bytes = 0;
  releasePipe();
  splicing_ = false;
  *copied_ += sp_got_;
  metrics_.framing_copied_bytes += sp_got_;
  // As if read: the prefix was buf_'s, the source bytes are parsed (the suffix is the
  // framer's own, and it adds it again when the record ends).
  const size_t prefix = sp_prefix_;
  const size_t source = sp_got_;
  sp_prefix_ = sp_need_ = sp_got_ = sp_suffix_ = 0;
  buf_.append(back, 0, prefix);
  parse(back.data() + prefix, source);
}

void RecordFramer::detect(const char* data, size_t n, size_t& used) {
  // Decided by the first byte that is not part of "digit 1-9, digits": a space makes the
  // connection octet counted, anything else (or too many digits) lines.
  while (used < n && mode_ == Mode::Detect) {
    const char c = data[used];
    const bool digit = c >= '0' && c <= '9';
    if (digit && !(hdr_.empty() && c == '0') && hdr_.size() < kMaxDigits) {
      hdr_.push_back(c);
      ++used;
      continue;
    }
    const bool octet = c == ' ' && !hdr_.empty();
    if (octet) {
      ++metrics_.framing_auto_octet;
      mode_ = Mode::Octet;
    } else {
      ++metrics_.framing_auto_lines;
      mode_ = Mode::Lines;
      lines_ = std::make_unique<LineFramer>(chain_, owner_, cfg_.max_line, metrics_);
    }
  }
}

void RecordFramer::startRecord(uint64_t len) {
  rec_left_ = len;
  in_body_ = true;
  rec_large_ = len >= kSpliceMin;
  rec_split_ = false;
  if (rec_large_) peek_ = true;
  const bool as_received = cfg_.output == RecordOutput::AsReceived;
  const uint64_t written = as_received ? hdr_.size() + len : len + 1;
  if (written <= cfg_.max_line) {
    piece_start_ = buf_.size();
    if (as_received) buf_ += hdr_;
    piece_content_ = buf_.size();
    piece_left_ = len;
    piece_last_ = true;
  } else {
    ++metrics_.frames_oversize;
    rec_split_ = true;
    if (cfg_.oversize == Oversize::Close) {
      refuse(
          fmt::format("record of {} bytes at byte {} of the stream is longer than max_line ({} "
                      "bytes as written; oversize: close)",
                      len, stream_off_ - hdr_.size(), cfg_.max_line));
      return;
    }
    startPiece(true);
  }
  hdr_.clear();
  if (piece_left_ == 0) endPiece();
}

void RecordFramer::startPiece(bool first) {
  const bool as_received = cfg_.output == RecordOutput::AsReceived;
  const size_t overhead = as_received ? header_digits_ + 1 : 1;
  const size_t lead = first ? 0 : marker_.size();
  const uint64_t last_room = cfg_.max_line - overhead - lead;
  piece_last_ = !first && rec_left_ <= last_room;
  piece_left_ = piece_last_ ? rec_left_ : last_room - marker_.size();
  piece_start_ = buf_.size();
  if (as_received) {
    const uint64_t size = lead + piece_left_ + (piece_last_ ? 0 : marker_.size());
    buf_ += std::to_string(size);
    buf_.push_back(' ');
  }
  piece_content_ = buf_.size();
  if (!first) buf_ += marker_;
}

void RecordFramer::endPiece() {
  if (!piece_last_) buf_ += marker_;
  if (cfg_.output == RecordOutput::Lines) buf_.push_back('\n');
  SPLICED_ASSERT(buf_.size() - piece_start_ <= cfg_.max_line || piece_last_,
                 "a piece is never longer than max_line");
  ends_.push_back(buf_.size());
  if (piece_last_) {
    in_body_ = false;
  } else {
    startPiece(false);
  }
}

void RecordFramer::parse(const char* data, size_t n) {
  size_t pos = 0;
  while (pos < n && mode_ == Mode::Octet) {
    if (in_body_) {
      const size_t take = static_cast<size_t>(std::min<uint64_t>(piece_left_, n - pos));
      buf_.append(data + pos, take);
      pos += take;
      stream_off_ += take;
      piece_left_ -= take;
      rec_left_ -= take;
      if (piece_left_ == 0) endPiece();
      continue;
    }
    const char c = data[pos];
    if (c == ' ' && !hdr_.empty()) {
      ++pos;
      ++stream_off_;
      hdr_.push_back(c);
      startRecord(std::stoull(hdr_));
      continue;
    }
    const bool digit = c >= '0' && c <= '9';
    if (!digit || (hdr_.empty() && c == '0') || hdr_.size() == kMaxDigits) {
      ++metrics_.frames_malformed;
      const uint64_t at = stream_off_ - hdr_.size();
      std::string seen = hdr_ + std::string(data + pos, std::min<size_t>(n - pos, 32));
      refuse(fmt::format("malformed octet-count header at byte {} of the stream: \"{}\"", at,
                         escaped(seen.data(), seen.size())));
      return;
    }
    hdr_.push_back(c);
    ++pos;
    ++stream_off_;
  }
}

SinkResult RecordFramer::fromBuffer(const char* data, size_t n) {
  SinkResult r = take(data, n);
  metrics_.framing_copied_bytes += r.bytes;
  return r;
}

SinkResult RecordFramer::take(const char* data, size_t n) {
  SPLICED_ASSERT(!splicing_, "no bytes are read while a record is spliced");
  if (mode_ == Mode::Lines) return lines_->fromBuffer(data, n);
  if (!ends_.empty()) {
    SinkResult r = writeComplete();
    if (r.status != IoStatus::Ok) return r;  // takes nothing until earlier records are out
  }
  size_t used = 0;
  if (mode_ == Mode::Detect) {
    detect(data, n, used);
    if (mode_ == Mode::Lines) {
      // Fresh: the line framer takes the detected bytes whole, then what follows if it can.
      std::string first;
      first.swap(hdr_);
      SinkResult r = lines_->fromBuffer(first.data(), first.size());
      if (r.status != IoStatus::Ok) return {used, r.status, r.err};
      r = lines_->fromBuffer(data + used, n - used);
      r.bytes += used;
      return r;
    }
    if (mode_ == Mode::Octet) {
      // The digits seen are this connection's first header: parse them again as one.
      std::string first;
      first.swap(hdr_);
      stream_off_ = 0;
      parse(first.data(), first.size());
    }
  }
  if (mode_ == Mode::Octet) parse(data + used, n - used);
  SinkResult r = writeComplete();
  r.bytes = n;  // bytes after a refusal are taken and dropped: the connection is being closed
  return r;
}

SinkResult RecordFramer::finish() {
  if (splicing_) {
    if (sp_got_ < sp_need_) {
      unpipe();  // cut short: back to the copy path, which keeps it as a record of its own
    } else {
      SinkResult r = writePiped();
      if (r.status != IoStatus::Ok) return r;
    }
  }
  if (mode_ == Mode::Detect) {
    // Ended before the first frame said what it was: what came is a (last) line.
    if (hdr_.empty()) return {};
    ++metrics_.framing_auto_lines;
    mode_ = Mode::Lines;
    lines_ = std::make_unique<LineFramer>(chain_, owner_, cfg_.max_line, metrics_);
    std::string first;
    first.swap(hdr_);
    SinkResult r = lines_->fromBuffer(first.data(), first.size());
    if (r.status != IoStatus::Ok) return r;
  }
  if (mode_ == Mode::Lines) return lines_->finish();
  if (mode_ == Mode::Octet && (in_body_ || !hdr_.empty())) {
    // A frame cut short: the bytes that came (a header's digits, or the piece's content) become
    // a record of their own, with a header that says how many came, or '\n'.
    ++metrics_.frames_incomplete;
    std::string content = in_body_ ? buf_.substr(piece_content_) : hdr_;
    if (in_body_) buf_.resize(piece_start_);
    in_body_ = false;
    hdr_.clear();
    if (!content.empty()) {
      if (cfg_.output == RecordOutput::AsReceived) {
        buf_ += std::to_string(content.size());
        buf_.push_back(' ');
        buf_ += content;
      } else {
        buf_ += content;
        buf_.push_back('\n');
      }
      ends_.push_back(buf_.size());
    }
  }
  return writeComplete();
}

}  // namespace spliced
