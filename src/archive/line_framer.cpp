#include "spliced/archive/line_framer.hpp"

#include "spliced/core/check.hpp"

#include <algorithm>
#include <cstring>

namespace spliced {

std::string LineFramer::continuationMarker(uint64_t owner) {
  return "\x1e"
         "c" +
         std::to_string(owner) + "+";
}

LineFramer::LineFramer(SegmentChain& chain, uint64_t owner, size_t max_line, RouteMetrics& metrics)
    : chain_(chain),
      owner_(owner),
      max_line_(max_line),
      metrics_(metrics),
      marker_(continuationMarker(owner)) {
  // A middle piece is marker, payload, marker, '\n': at least one payload byte must fit.
  SPLICED_ASSERT(max_line_ >= 2 * marker_.size() + 2, "max_line leaves room for a payload");
}

LineFramer::~LineFramer() { chain_.releaseOwner(owner_); }

SinkResult LineFramer::writeComplete() {
  SPLICED_ASSERT(
      written_ <= complete_ && complete_ <= buf_.size(),
      "written lines are a prefix of the complete ones, which are a prefix of the buffer");
  while (written_ < complete_) {
    SinkResult r = chain_.writeLines(owner_, buf_.data() + written_, complete_ - written_);
    written_ += r.bytes;
    if (r.status != IoStatus::Ok) return {0, r.status, r.err};
  }
  // Drop what is written; keep the unfinished line at the front.
  buf_.erase(0, written_);
  complete_ -= written_;
  written_ = 0;
  if (buf_.empty() && buf_.capacity() > 64 * 1024) std::string().swap(buf_);  // give back a peak
  return {};
}

SinkResult LineFramer::flushHeld() { return writeComplete(); }

void LineFramer::cut() {
  SPLICED_ASSERT(buf_.size() - complete_ == max_line_ - 1, "a line is cut when it is full");
  // The piece keeps max_line - 1 - |marker| bytes; with the marker and '\n' it is max_line long.
  const size_t keep = complete_ + max_line_ - 1 - marker_.size();
  const size_t carried = buf_.size() - keep;
  SPLICED_ASSERT(carried == marker_.size(), "the bytes that make room are as long as the marker");
  // The marker, '\n' and the marker again go in before the bytes that made room for them.
  const size_t added = 2 * marker_.size() + 1;
  buf_.insert(keep, added, '\0');
  std::copy(marker_.begin(), marker_.end(), buf_.begin() + static_cast<ptrdiff_t>(keep));
  buf_[keep + marker_.size()] = '\n';
  std::copy(marker_.begin(), marker_.end(),
            buf_.begin() + static_cast<ptrdiff_t>(keep + marker_.size() + 1));
  complete_ = keep + marker_.size() + 1;
  if (!continued_) ++metrics_.lines_split;
  continued_ = true;
}

SinkResult LineFramer::fromBuffer(const char* data, size_t n) {
  if (complete_ > written_) {
    SinkResult r = writeComplete();
    if (r.status != IoStatus::Ok) return r;  // takes nothing until earlier lines are out
  }
  // The line in progress (its leading marker included) is shorter than max_line: `room` more
  // bytes and a '\n' still make a line of at most max_line.
  size_t line = buf_.size() - complete_;
  SPLICED_ASSERT(line < max_line_, "the line in progress always has room for its '\n'");
  if (line + n < max_line_) {
    // Nothing in this read can make a line too long: only its last '\n' matters.
    const size_t base = buf_.size();
    buf_.append(data, n);
    const void* nl = memrchr(buf_.data() + base, '\n', n);
    if (nl != nullptr) {
      complete_ = static_cast<size_t>(static_cast<const char*>(nl) - buf_.data()) + 1;
      continued_ = false;
    }
  } else {
    // Line by line; data[run, pos) goes to buf_ as it is, in one append per cut.
    size_t pos = 0;
    size_t run = 0;
    size_t run_complete = 0;  // data[run, run_complete) ends with '\n' (when > run)
    auto appendRun = [&](size_t end) {
      const size_t base = buf_.size();
      buf_.append(data + run, end - run);
      if (run_complete > run) complete_ = base + (run_complete - run);
      run = end;
    };
    while (pos < n) {
      const size_t room = max_line_ - 1 - line;
      const void* nl = std::memchr(data + pos, '\n', std::min(n - pos, room + 1));
      if (nl != nullptr) {
        pos = static_cast<size_t>(static_cast<const char*>(nl) - data) + 1;
        run_complete = pos;
        line = 0;
        continued_ = false;
        continue;
      }
      if (n - pos <= room) break;  // the rest fits; the line goes on in a later read
      // The byte after `room` more is not a '\n': this line is longer than max_line.
      pos += room;
      appendRun(pos);
      cut();
      line = buf_.size() - complete_;
    }
    appendRun(n);
  }
  SinkResult r = writeComplete();
  r.bytes = n;
  return r;
}

SinkResult LineFramer::finish() {
  if (buf_.size() > complete_) {
    buf_.push_back('\n');
    complete_ = buf_.size();
    continued_ = false;
  }
  return writeComplete();
}

}  // namespace spliced
