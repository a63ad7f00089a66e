#pragma once
// Retention of closed archive segments: find them below an archive dir, pick the ones a
// `retain:` policy drops (oldest first), delete them and the directories that leaves empty.
//
// Ownership: the archive dir fd is always borrowed from the caller (the route); every other
// descriptor opened here is owned by a UniqueFd (or a DIR owner) local to one call. No global
// mutable state: everything here may run on the lifecycle thread.
#include <sys/stat.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "spliced/archive/archive_config.hpp"
#include "spliced/archive/segment_files.hpp"
#include "spliced/core/fd.hpp"

namespace spliced {

// One closed segment, as found by scanSegments().
struct SegmentFile {
  std::string path;  // relative to the archive dir, e.g. "2026/11/26/app-1-000000.log.zst"
  uint64_t size = 0;
  std::chrono::system_clock::time_point mtime;
};

// Every closed segment below dir_fd: regular files, recursively, skipping *.open, *.tmp, names
// starting with '.', symlinks and anything that is not a regular file. Compressed segments
// (NAME.zst, NAME.gz) are segments like any other (their compressed size counts). A directory that
// cannot be read is logged (warn) and skipped.
std::vector<SegmentFile> scanSegments(int dir_fd);

// Which segments to delete under `policy` at `now`, oldest first: by mtime, ties broken by path
// (so a chain's {seq} order is kept). Deletes every segment older than max_age (age strictly
// greater); then the oldest until at most max_files remain; then the oldest until the total size
// is at most max_bytes. 0 in a field = no limit on it. Returns the paths to delete in the order to
// delete them.
std::vector<std::string> selectForDeletion(std::vector<SegmentFile> segments,
                                           const RetainConfig& policy,
                                           std::chrono::system_clock::time_point now);

struct RetentionResult {
  uint64_t files = 0;  // segments this call unlinked
  uint64_t bytes = 0;  // their sizes, as scanned
};

// scan + select + unlinkat each (one info line per deletion: route, path, size, why); then
// removes the directories that the deletions left empty, bottom-up, never dir_fd itself. A file
// that vanished meanwhile (ENOENT) is neither an error nor counted. Other failures are logged
// (error=storage) and skipped.
// What the lifecycle adds to a retention pass: `keep` puts a deletion off (require_published),
// `deleted` hears of each deletion (the manifest's record).
struct RetentionHooks {
  std::function<bool(const std::string& rel)> keep;
  std::function<void(const std::string& rel, const char* reason)> deleted;
};
RetentionResult applyRetention(int dir_fd, const RetainConfig& policy,
                               std::chrono::system_clock::time_point now, const std::string& route,
                               const RetentionHooks& hooks = {});

}  // namespace spliced
