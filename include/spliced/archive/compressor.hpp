#pragma once
// Compression of closed archive segments (NAME -> NAME.zst / NAME.gz), streamed in bounded chunks
// and crash-safe: the compressed file is written as NAME.zst.tmp, renamed into place without
// replacing anything, and only then is the plain file unlinked. Also the matching decompressor.
//
// Ownership: the archive dir fd is borrowed from the caller; every other descriptor and codec
// context is owned by the call that opened it. No global mutable state: meant for the lifecycle
// thread.
#include <cstdint>
#include <string>

#include "spliced/archive/archive_config.hpp"
#include "spliced/core/syscalls.hpp"

namespace spliced {

struct CompressResult {
  int err = 0;          // 0 on success, else an errno-like code
  std::string message;  // for the log when err != 0
  uint64_t in_bytes = 0, out_bytes = 0;
  std::string out_path;  // relative path of the compressed segment (set once it is in place)
};

// Compresses the closed segment `rel` (relative to dir_fd) with gzip (zlib, gzip container) or
// zstd (streaming, with a content checksum), `level` 0 meaning the codec's default (zstd 3,
// gzip 6):
//   1. writes rel + ".zst.tmp" / ".gz.tmp" (O_CREAT|O_EXCL; a stale one from an earlier run is
//      unlinked first), streaming in 256 KiB chunks;
//   2. if fsync: fdatasync the tmp file;
//   3. renames tmp -> rel + ".zst"/".gz" with renameat2(RENAME_NOREPLACE); if that name exists
//      and decompresses to exactly the plain file's content, the tmp file is dropped and it is
//      used; if it differs, withNumericSuffix(rel, k) + ".zst" (k = 1, 2, ...) is tried the same
//      way;
//   4. if fsync: fsyncs the directory that holds it;
//   5. unlinks rel (only if rel is still the file that was compressed).
// A process crash at any point leaves the plain file or the compressed file complete, never
// neither; surviving a power loss as well needs fsync = true. On an error before step 3 the tmp
// file is removed and the plain file is untouched. An error in steps 4-5 leaves both files, with
// out_path set: calling again finishes the job. Never follows a symlink; refuses *.open and *.tmp
// names and names starting with '.' (EINVAL).
CompressResult compressSegment(int dir_fd, const std::string& rel, Compress algo, int level,
                               bool fsync, SysCalls& sys = SysCalls::kernel());

// Decompresses a whole .zst or .gz file (chosen by its name) into `out`. False when the file
// cannot be read, is not one or more complete frames/members (empty, truncated, corrupt, trailing
// garbage), or decompresses to more than max_bytes.
bool decompressFile(int dir_fd, const std::string& rel, std::string& out, uint64_t max_bytes);

}  // namespace spliced
