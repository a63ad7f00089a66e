#pragma once
// `spliced cat --follow`: the archive as it grows, like `tail -F`, with inotify.
//
// Ownership: the dir fd, the names, the selection and the output are borrowed for the call.
#include <string>

#include "spliced/cli/cat_output.hpp"
#include "spliced/cli/segment_index.hpp"

namespace spliced::cli {

// Writes every selected segment of the archive at `dir_path` (open as `dir_fd`) to `out`, then
// what is appended and every segment that appears, until SIGINT/SIGTERM or the output closes.
// Problems are written to stderr as they happen. Returns the exit status (0, or 1 after a
// problem).
int followArchive(int dir_fd, const std::string& dir_path, const ArchiveNames& names,
                  const Selection& sel, Output& out);

}  // namespace spliced::cli
