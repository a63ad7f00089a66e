#pragma once
// The admin endpoint's archive listing, one page at a time: the closed segments below an archive
// dir sorted by name (bytewise), from just after a cursor. Every name is read (a directory is not
// sorted), but only the page is stat'ed, so a page costs one walk of the names plus `limit` stats.
//
// Ownership: the archive dir fd is borrowed; every other descriptor is local to the call. No
// shared state: runs on the admin's listing thread.
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "spliced/archive/retention.hpp"

namespace spliced {

struct SegmentPage {
  std::vector<SegmentFile> items;   // names > after, ascending, at most `limit`
  bool more = false;                // closed segments after the page remain
  std::string last;                 // the page's last name (the next page's cursor when `more`)
  std::vector<std::string> errors;  // directories that could not be read (the walk went on)
};

// The closed segments (isClosedSegmentName) below dir_fd whose names are bytewise greater than
// `after` ("" = from the first), the first `limit` of them (limit >= 1), with size and mtime. A
// segment that vanishes between the walk and its stat is left out.
SegmentPage listSegmentPage(int dir_fd, std::string_view after, size_t limit);

}  // namespace spliced
