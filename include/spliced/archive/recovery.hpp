#pragma once
// Start-up recovery of an archive dir, before its route accepts anything: segments left active by
// a crash (NAME.open) are finalised under their own name (never overwriting anything), and
// interrupted compressions (*.tmp) are removed, their plain segment still being complete.
//
// Ownership: the archive dir fd is borrowed from the caller; every other descriptor is local to
// the call. No global mutable state: may run on the lifecycle thread.
#include <cstdint>
#include <string>
#include <vector>

#include "spliced/core/syscalls.hpp"

namespace spliced {

struct RecoveryResult {
  std::vector<std::string> finalized;  // final relative paths of segments renamed from *.open
  uint64_t removed_tmp = 0;            // *.tmp files removed (interrupted compressions)
  std::vector<std::string> errors;     // one message per failure (the caller logs/decides)
};

// Every regular file "NAME.open" below dir_fd is renamed to "NAME" with
// renameat2(RENAME_NOREPLACE); when NAME exists, withNumericSuffix(NAME, k) for k = 1, 2, ... is
// used, so nothing is overwritten. Every regular file "*.tmp" (e.g. NAME.zst.tmp, NAME.gz.tmp) is
// removed: the plain NAME it came from is still complete (compression unlinks the plain file only
// after the compressed one is renamed into place). When both NAME and NAME.zst (or .gz) exist, both
// are kept: compressSegment(NAME) settles it (it finds the compressed file identical and only
// unlinks NAME). NAME.unsynced (a closed segment whose data sync failed) is left as it is. Names
// starting with '.' and symlinks are never touched. Logs one info line per action; failures are
// only returned in `errors`.
RecoveryResult recoverArchive(int dir_fd, const std::string& route,
                              SysCalls& sys = SysCalls::kernel());

}  // namespace spliced
