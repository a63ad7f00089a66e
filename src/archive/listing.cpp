#include "spliced/archive/listing.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <chrono>

#include "spliced/archive/segment_files.hpp"

namespace spliced {

SegmentPage listSegmentPage(int dir_fd, std::string_view after, size_t limit) {
  SegmentPage page;
  limit = std::max<size_t>(limit, 1);
  std::vector<std::string> names;
  page.errors = walkArchiveNames(dir_fd, [&](std::string&& rel) {
    if (!isClosedSegmentName(rel)) return;
    if (!after.empty() && std::string_view(rel) <= after) return;
    names.push_back(std::move(rel));
  });
  if (names.size() > limit) {
    // Only the page needs sorting: the first `limit` names, in linear time, then sorted.
    std::nth_element(names.begin(), names.begin() + static_cast<std::ptrdiff_t>(limit),
                     names.end());
    names.resize(limit);
    page.more = true;
  }
  std::sort(names.begin(), names.end());
  if (!names.empty()) page.last = names.back();
  // Stat each through its directory, opened without following a symlink (openParentDir); the
  // names are sorted, so one directory's files come together.
  ParentDir parent;
  std::string parent_path;
  bool have_parent = false;
  for (auto& rel : names) {
    std::string dir = parentOf(rel);
    if (!have_parent || dir != parent_path) {
      parent = openParentDir(dir_fd, rel);
      parent_path = dir;
      have_parent = true;
    }
    if (parent.err != 0) continue;
    struct stat st;
    const std::string base = baseName(rel);
    if (::fstatat(parent.fd.get(), base.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (!S_ISREG(st.st_mode)) continue;
    auto mtime = std::chrono::system_clock::time_point(
        std::chrono::duration_cast<std::chrono::system_clock::duration>(
            std::chrono::seconds(st.st_mtim.tv_sec) +
            std::chrono::nanoseconds(st.st_mtim.tv_nsec)));
    page.items.push_back({std::move(rel), static_cast<uint64_t>(st.st_size), mtime});
  }
  return page;
}

}  // namespace spliced
