#pragma once
// The shipping cursor of a chain and its segment journal, both under <archive dir>/.spliced/ship/.
//
// The cursor says how far the upstream has acknowledged the chain: a segment (its published name,
// relative to the archive dir), an offset in it, and the segments that follow it in the chain's
// order. It is a small text file, saved whole and atomically (write NAME.tmp, fsync, rename,
// fsync the directory) and checked on load:
//
//   spliced-ship-cursor 1
//   segment 2026/12/02/app-000003.log
//   offset 1048576
//   acked 52428800
//   pending 2026/12/02/app-000004.log
//   check 5f2c0e9a1b3d4c7e
//
// `acked` is the bytes acknowledged over the chain's whole life (for the counters); `check` is the
// XXH3-64 of every byte before its line, in hex. `segment` is empty when nothing is waiting.
//
// The journal is the chain's list of segments in the order they were opened: one name per line,
// appended when the chain opens a segment (before its first byte is written), so that a segment
// opened after the last cursor save is still known after a crash. Saving the cursor takes the
// journal's names into `pending`, and the journal is then emptied.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "spliced/core/syscalls.hpp"

namespace spliced {

inline constexpr const char* kShipDir = ".spliced/ship";
// The offset of a per-connection chain's cursor whose segment was shipped whole (the journal
// then says what follows it).
inline constexpr uint64_t kEndOfSegment = UINT64_MAX;

struct ShipCursor {
  std::string segment;  // "" when nothing is waiting
  uint64_t offset = 0;
  uint64_t acked = 0;
  std::vector<std::string> pending;  // the segments after `segment`, in order
  bool operator==(const ShipCursor&) const = default;
};

std::string formatCursor(const ShipCursor& c);
// NAME's cursor file, relative to the archive dir: .spliced/ship/NAME.cursor.
std::string cursorPath(const std::string& name);
// The cursor in `text`, or nullopt with `why` ("line 3: ...", "check mismatch").
std::optional<ShipCursor> parseCursor(std::string_view text, std::string& why);

// Creates <dir_fd>/.spliced/ship if needed. Returns 0 or an errno.
int makeShipDir(SysCalls& sys, int dir_fd);

// Saves `c` as .spliced/ship/NAME.cursor atomically (temp, fsync, rename, fsync of the directory).
// Returns 0 or an errno.
// `durable` false: no fsync (a process crash keeps it; a power loss may not).
int saveCursor(SysCalls& sys, int dir_fd, const std::string& name, const ShipCursor& c,
               bool durable = true);

// What loading found.
struct CursorLoad {
  std::optional<ShipCursor> cursor;  // absent: missing or unusable (see `problem`)
  std::string problem;               // "" when the file was read, or when it does not exist yet
  bool missing = false;              // no cursor file
  std::vector<std::string> journal;  // names in the journal, in order (a cut last line dropped)
};
CursorLoad loadCursor(int dir_fd, const std::string& name);

// Appends `rel` to .spliced/ship/NAME.journal through `fd` (opened by openJournal). Returns 0 or
// an errno.
int appendJournal(int fd, const std::string& rel);
// Opens (creating) the journal for appending; -1 with errno on failure.
int openJournal(int dir_fd, const std::string& name);
// Empties the journal (after a cursor that holds its names was saved). Returns 0 or an errno.
int truncateJournal(int fd);
// Removes the cursor and the journal of a chain that has nothing left to ship.
void removeCursor(int dir_fd, const std::string& name);

}  // namespace spliced
