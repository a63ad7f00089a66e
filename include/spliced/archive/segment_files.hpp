#pragma once
// The archive's file rules, in one place: what the names of segments and of spliced's own files
// look like, how a segment is published under its final name without replacing anything, and how
// the archive dir is walked without following a symlink. The segment chain, recovery,
// compression, retention and the admin endpoint all call these; none spells a suffix itself.
//
//   NAME.open         the active segment of a chain (renamed to NAME when it closes)
//   NAME              a closed segment: complete, never written again
//   NAME.unsynced     a closed segment whose fdatasync failed (fsync: on_close): complete as far
//                     as spliced could see, but not proven on disk. Listed, downloadable and
//                     retained like NAME; never compressed; left alone by recovery
//   NAME.zst, NAME.gz a closed segment, compressed (replaces NAME atomically)
//   *.tmp             a compression in progress (removed at start-up if a crash left it)
//   .NAME             spliced's own (.spliced.lock, .spliced/): never a segment
//
// Ownership: the archive dir fd is always borrowed; every other descriptor opened here is owned
// by a UniqueFd (or a DIR owner) local to one call. No mutable state: callable from any thread.
#include <sys/stat.h>

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "spliced/archive/archive_config.hpp"
#include "spliced/core/fd.hpp"
#include "spliced/core/syscalls.hpp"

namespace spliced {

inline constexpr std::string_view kOpenSuffix = ".open";
inline constexpr std::string_view kTmpSuffix = ".tmp";
inline constexpr std::string_view kZstdSuffix = ".zst";
inline constexpr std::string_view kGzipSuffix = ".gz";
inline constexpr std::string_view kUnsyncedSuffix = ".unsynced";
// Past this many taken names (NAME.1.log ... NAME.9999.log), publishing gives up.
inline constexpr int kMaxNumericSuffix = 10000;

// "a/b/c.log" -> "c.log"; "c" -> "c".
std::string baseName(std::string_view rel);
// "a/b/c" -> "a/b"; "c" -> "".
std::string parentOf(std::string_view rel);
// ("a/b", "c") -> "a/b/c"; ("", "c") -> "c".
std::string joinPath(std::string_view dir, std::string_view name);

// True for an active segment (NAME.open) or a compression in progress (*.tmp).
bool isOpenName(std::string_view rel);
bool isTmpName(std::string_view rel);
// NAME.zst or NAME.gz.
bool isCompressedName(std::string_view rel);
// NAME.unsynced: a closed segment whose data sync failed (a closed segment too, never compressed).
bool isUnsyncedName(std::string_view rel);
// True when `rel` names a closed segment: not active, not temporary, and no component starting
// with '.'.
bool isClosedSegmentName(std::string_view rel);
// ".zst" or ".gz" (Compress::None has none).
std::string_view compressedSuffix(Compress algo);

// "a/b/name.log" + 2 -> "a/b/name.2.log"; "a/name" + 2 -> "a/name.2": the name used when `rel`
// is taken (a file is never overwritten).
std::string withNumericSuffix(const std::string& rel, int k);

// True when the segment `rel`, its compressed form or its unsynced form exists below dir_fd.
bool segmentNameTaken(int dir_fd, const std::string& rel);

// Creates the parent directories of `rel` below `dir_fd` (mode 0755). Returns 0 or an errno.
int makeParents(SysCalls& sys, int dir_fd, const std::string& rel);

// The result of publishNoReplace: the name now holding the bytes (relative to the dir given).
struct Published {
  std::string name;
  int err = 0;           // 0, or the errno that stopped it (`from` is left where it was)
  bool renamed = false;  // false: an identical file was already there (`from` is untouched)
};

// Renames `from` (relative to dir) to `stem + ext`, never replacing anything: when that name is
// taken, withNumericSuffix(stem, k) + ext for k = 1, 2, ... is tried (renameat2 with
// RENAME_NOREPLACE, so a name taken meanwhile is never lost). `same_as_taken(name)`, if given, is
// asked about each taken name first: true means it already holds what `from` holds, and the
// search ends there (the caller drops `from`). The names stay in the directory of `stem`.
Published publishNoReplace(SysCalls& sys, int dir, const std::string& from, const std::string& stem,
                           std::string_view ext = {},
                           const std::function<bool(const std::string& taken)>& same_as_taken = {});

// The directory holding `rel` (below dir_fd), opened one component at a time with O_NOFOLLOW, so
// a symlink anywhere on the way is refused (ELOOP/ENOTDIR). `name` is rel's last component. `rel`
// must be relative with no empty, "." or ".." component (else err = EINVAL).
struct ParentDir {
  UniqueFd fd;
  std::string name;
  int err = 0;  // 0 or an errno; fd is valid only when 0
};
ParentDir openParentDir(int dir_fd, const std::string& rel);

// Calls fn(rel, st) for every regular file below dir_fd, recursively, in no particular order.
// Never follows a symlink, never enters or reports a name starting with '.'. Returns one message
// per directory that could not be read (the walk goes on without it).
using ArchiveFileFn = std::function<void(const std::string& rel, const struct stat& st)>;
std::vector<std::string> walkArchive(int dir_fd, const ArchiveFileFn& fn);

// As walkArchive, but only the names: fn(rel) for every regular file, from the directory entries'
// types (a stat only where the file system does not give one). Cheaper than walkArchive on a
// tree of many files: the admin listing reads every name but stats only the page it returns.
using ArchiveNameFn = std::function<void(std::string&& rel)>;
std::vector<std::string> walkArchiveNames(int dir_fd, const ArchiveNameFn& fn);

}  // namespace spliced
