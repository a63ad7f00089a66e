#include "spliced/archive/record_framer.hpp"

#include "spliced/core/check.hpp"

#include <fmt/format.h>
#include <algorithm>
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

RecordFramer::~RecordFramer() { chain_.releaseOwner(owner_); }

size_t RecordFramer::held() const {
  return buf_.size() + hdr_.size() + (lines_ ? lines_->held() : 0);
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
  return writeComplete();
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
