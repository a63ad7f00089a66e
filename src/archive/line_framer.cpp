#include "spliced/archive/line_framer.hpp"

#include "spliced/core/check.hpp"

#include <cstring>

namespace spliced {

LineFramer::LineFramer(SegmentChain& chain, uint64_t owner, size_t max_line, RouteMetrics& metrics)
    : chain_(chain), owner_(owner), max_line_(max_line), metrics_(metrics) {}

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

SinkResult LineFramer::fromBuffer(const char* data, size_t n) {
  if (complete_ > written_) {
    SinkResult r = writeComplete();
    if (r.status != IoStatus::Ok) return r;  // takes nothing until earlier lines are out
  }
  size_t scan_from = buf_.size();
  buf_.append(data, n);
  const char* base = buf_.data();
  const void* nl = memrchr(base + scan_from, '\n', buf_.size() - scan_from);
  if (nl != nullptr) complete_ = static_cast<size_t>(static_cast<const char*>(nl) - base) + 1;
  // A line longer than max_line is cut (with a '\n') so memory stays bounded.
  while (buf_.size() - complete_ > max_line_) {
    buf_.insert(complete_ + max_line_, 1, '\n');
    complete_ += max_line_ + 1;
    ++metrics_.lines_split;
  }
  SinkResult r = writeComplete();
  r.bytes = n;
  return r;
}

SinkResult LineFramer::finish() {
  if (buf_.size() > complete_) {
    buf_.push_back('\n');
    complete_ = buf_.size();
  }
  return writeComplete();
}

}  // namespace spliced
