#include "spliced/archive/retention.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <set>
#include <string_view>

namespace spliced {
namespace {

enum class Why { MaxAge, MaxFiles, MaxBytes };

const char* whyName(Why w) {
  switch (w) {
    case Why::MaxAge:
      return "max_age";
    case Why::MaxFiles:
      return "max_files";
    case Why::MaxBytes:
      return "max_bytes";
  }
  return "?";
}

struct Doomed {
  SegmentFile segment;
  Why why;
};

// selectForDeletion, keeping each segment's size and the limit that dropped it.
std::vector<Doomed> pickForDeletion(std::vector<SegmentFile> segs, const RetainConfig& policy,
                                    std::chrono::system_clock::time_point now) {
  std::sort(segs.begin(), segs.end(), [](const SegmentFile& a, const SegmentFile& b) {
    if (a.mtime != b.mtime) return a.mtime < b.mtime;
    return a.path < b.path;
  });
  // Sorted oldest first, so each limit drops a prefix; the cuts only grow.
  size_t cut_age = 0;
  if (policy.max_age.count() > 0) {
    while (cut_age < segs.size() && now - segs[cut_age].mtime > policy.max_age) ++cut_age;
  }
  size_t cut_files = cut_age;
  if (policy.max_files > 0 && segs.size() - cut_files > policy.max_files) {
    cut_files = static_cast<size_t>(segs.size() - policy.max_files);
  }
  size_t cut_bytes = cut_files;
  if (policy.max_bytes > 0) {
    uint64_t total = 0;
    for (size_t i = cut_bytes; i < segs.size(); ++i) total += segs[i].size;
    while (cut_bytes < segs.size() && total > policy.max_bytes) total -= segs[cut_bytes++].size;
  }
  std::vector<Doomed> out;
  out.reserve(cut_bytes);
  for (size_t i = 0; i < cut_bytes; ++i) {
    Why why = i < cut_age ? Why::MaxAge : i < cut_files ? Why::MaxFiles : Why::MaxBytes;
    out.push_back({std::move(segs[i]), why});
  }
  return out;
}

// Removes `dirs` (and only them) where empty, deepest first, so that a parent is tried after its
// children. rmdir refuses a non-empty directory, so a directory that gained a file is kept.
void removeEmptyDirs(int dir_fd, const std::set<std::string>& dirs, const std::string& route) {
  std::vector<std::string> order(dirs.begin(), dirs.end());
  auto depth = [](const std::string& s) { return std::count(s.begin(), s.end(), '/'); };
  std::stable_sort(order.begin(), order.end(),
                   [&](const std::string& a, const std::string& b) { return depth(a) > depth(b); });
  for (const auto& d : order) {
    ParentDir parent = openParentDir(dir_fd, d);
    if (parent.err != 0) continue;
    if (::unlinkat(parent.fd.get(), parent.name.c_str(), AT_REMOVEDIR) == 0) {
      spdlog::debug("route={} retention: removed empty directory {}", route, d);
    } else if (errno != ENOTEMPTY && errno != EEXIST && errno != ENOENT) {
      spdlog::warn("error=storage route={} retention: cannot remove directory {}: {}", route, d,
                   std::strerror(errno));
    }
  }
}

}  // namespace

std::vector<SegmentFile> scanSegments(int dir_fd) {
  std::vector<SegmentFile> out;
  auto errors = walkArchive(dir_fd, [&](const std::string& rel, const struct stat& st) {
    if (!isClosedSegmentName(rel)) return;
    auto mtime = std::chrono::system_clock::time_point(
        std::chrono::duration_cast<std::chrono::system_clock::duration>(
            std::chrono::seconds(st.st_mtim.tv_sec) +
            std::chrono::nanoseconds(st.st_mtim.tv_nsec)));
    out.push_back({rel, static_cast<uint64_t>(st.st_size), mtime});
  });
  for (const auto& e : errors) spdlog::warn("error=storage archive scan: {}", e);
  return out;
}

std::vector<std::string> selectForDeletion(std::vector<SegmentFile> segments,
                                           const RetainConfig& policy,
                                           std::chrono::system_clock::time_point now) {
  std::vector<std::string> out;
  for (auto& d : pickForDeletion(std::move(segments), policy, now))
    out.push_back(std::move(d.segment.path));
  return out;
}

RetentionResult applyRetention(int dir_fd, const RetainConfig& policy,
                               std::chrono::system_clock::time_point now, const std::string& route,
                               const RetentionHooks& hooks) {
  RetentionResult result;
  if (policy.max_files == 0 && policy.max_age.count() <= 0 && policy.max_bytes == 0) return result;
  std::set<std::string> touched_dirs;
  for (const auto& d : pickForDeletion(scanSegments(dir_fd), policy, now)) {
    const SegmentFile& seg = d.segment;
    if (hooks.keep && hooks.keep(seg.path)) {
      spdlog::debug("route={} retention: keeping {} until on_publish succeeds for it", route,
                    seg.path);
      continue;
    }
    ParentDir parent = openParentDir(dir_fd, seg.path);
    int err = parent.err;
    if (err == 0 && ::unlinkat(parent.fd.get(), parent.name.c_str(), 0) != 0) err = errno;
    if (err == ENOENT) continue;  // deleted meanwhile: not ours to count
    if (err != 0) {
      spdlog::error("error=storage route={} retention: cannot delete {}: {}", route, seg.path,
                    std::strerror(err));
      continue;
    }
    spdlog::info("route={} retention: deleted {} size={} reason={}", route, seg.path, seg.size,
                 whyName(d.why));
    if (hooks.deleted) hooks.deleted(seg.path, whyName(d.why));
    ++result.files;
    result.bytes += seg.size;
    for (std::string dir = parentOf(seg.path); !dir.empty(); dir = parentOf(dir)) {
      touched_dirs.insert(dir);
    }
  }
  removeEmptyDirs(dir_fd, touched_dirs, route);
  return result;
}

}  // namespace spliced
