#pragma once
// Writing segments to `spliced cat`'s output. Plain segments go with sendfile(2) when the kernel
// takes the output (a regular file, a pipe, a socket, /dev/null); otherwise (a terminal, a file
// opened O_APPEND) through mmap in 8 MiB windows, unmapped as they are written, so a segment of
// any size costs one window of memory. Compressed segments (.zst, .gz) are decoded in a stream.
//
// Ownership: the output descriptor and every input descriptor are borrowed.
#include <cstdint>
#include <string>

#include "spliced/cli/segment_index.hpp"

namespace spliced::cli {

enum class CopyStatus {
  Ok,
  OutputClosed,  // EPIPE: the reader went away (exit quietly, as cat does in a pipeline)
  OutputError,   // the output failed otherwise (ENOSPC, EIO ...)
  InputError,    // reading the segment failed
  Corrupt,       // a compressed segment could not be decoded (what could be was written)
};

struct CopyResult {
  CopyStatus status = CopyStatus::Ok;
  uint64_t written = 0;  // bytes written to the output
  std::string message;   // what went wrong, with the offset (empty when Ok)
};

class Output {
 public:
  // `force_mmap`: never try sendfile (what a terminal or an O_APPEND file would get anyway).
  explicit Output(int fd, bool force_mmap = false);

  // Writes bytes [offset, end) of the plain file `in` and moves `offset` past what was written
  // (less than `end` if the file is shorter). `what` names the file in messages.
  CopyResult copyPlain(int in, uint64_t& offset, uint64_t end, const std::string& what);
  // Decodes the compressed file `in` (zstd or gzip) and writes its bytes after the first `skip`.
  CopyResult copyCompressed(int in, SegmentForm form, uint64_t skip, const std::string& what);

  // "sendfile" or "mmap": the path plain segments take now.
  const char* mode() const { return use_sendfile_ ? "sendfile" : "mmap"; }

 private:
  CopyResult writeAll(const char* data, size_t n);
  CopyResult copyMapped(int in, uint64_t& offset, uint64_t end, const std::string& what);

  int fd_;
  bool use_sendfile_;
};

// Writes the segment open as `fd` (of form `form`) from `offset` on: a plain one up to its size
// now, a compressed one decoded whole with its first `offset` bytes skipped. Moves `offset` past
// what was written.
CopyResult copySegment(Output& out, int fd, SegmentForm form, uint64_t& offset,
                       const std::string& what);

// The window mapped at a time on the mmap path.
inline constexpr uint64_t kMapWindow = 8ull << 20;

}  // namespace spliced::cli
