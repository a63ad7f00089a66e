#include "spliced/recovery.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string_view>

#include "spliced/archive.hpp"
#include "spliced/retention.hpp"

namespace spliced {
namespace {

constexpr std::string_view kOpenSuffix = ".open";
constexpr std::string_view kTmpSuffix = ".tmp";
// As SegmentChain::rotate: past this many taken names, give up.
constexpr int kMaxSuffix = 10000;

// "dir/NAME" -> "NAME"
std::string baseName(const std::string& rel) {
  auto slash = rel.rfind('/');
  return slash == std::string::npos ? rel : rel.substr(slash + 1);
}

void finalize(int dir_fd, const std::string& open_rel, const std::string& route,
              RecoveryResult& out) {
  ParentDir parent = openParentDir(dir_fd, open_rel);
  if (parent.err != 0) {
    out.errors.push_back(fmt::format("{}: {}", open_rel, std::strerror(parent.err)));
    return;
  }
  const std::string name = open_rel.substr(0, open_rel.size() - kOpenSuffix.size());
  std::string to = name;
  for (int k = 1;; ++k) {
    // withNumericSuffix keeps the directory, so the rename stays inside `parent`.
    if (::renameat2(parent.fd.get(), parent.name.c_str(), parent.fd.get(), baseName(to).c_str(),
                    RENAME_NOREPLACE) == 0) {
      break;
    }
    int err = errno;
    if (err != EEXIST || k >= kMaxSuffix) {
      out.errors.push_back(
          fmt::format("cannot rename {} to {}: {}", open_rel, to, std::strerror(err)));
      return;
    }
    to = withNumericSuffix(name, k);
  }
  struct stat st;
  uint64_t size = 0;
  if (::fstatat(parent.fd.get(), baseName(to).c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
    size = static_cast<uint64_t>(st.st_size);
  }
  spdlog::info("route={} recovery: finalised {} as {} size={}", route, open_rel, to, size);
  out.finalized.push_back(to);
}

void removeTmp(int dir_fd, const std::string& rel, const std::string& route, RecoveryResult& out) {
  ParentDir parent = openParentDir(dir_fd, rel);
  int err = parent.err;
  if (err == 0 && ::unlinkat(parent.fd.get(), parent.name.c_str(), 0) != 0) err = errno;
  if (err == ENOENT) return;
  if (err != 0) {
    out.errors.push_back(fmt::format("cannot remove {}: {}", rel, std::strerror(err)));
    return;
  }
  spdlog::info("route={} recovery: removed {} (interrupted compression)", route, rel);
  ++out.removed_tmp;
}

}  // namespace

RecoveryResult recoverArchive(int dir_fd, const std::string& route) {
  RecoveryResult out;
  std::vector<std::string> open_files;
  std::vector<std::string> tmp_files;
  // Collect first, act afterwards: renaming inside a directory being read may show an entry
  // twice or not at all.
  out.errors = walkArchive(dir_fd, [&](const std::string& rel, const struct stat&) {
    std::string_view base = std::string_view(rel).substr(rel.rfind('/') + 1);
    if (base.size() > kOpenSuffix.size() && base.ends_with(kOpenSuffix)) {
      open_files.push_back(rel);
    } else if (base.size() > kTmpSuffix.size() && base.ends_with(kTmpSuffix)) {
      tmp_files.push_back(rel);
    }
  });
  std::sort(open_files.begin(), open_files.end());
  std::sort(tmp_files.begin(), tmp_files.end());
  for (const auto& rel : tmp_files) removeTmp(dir_fd, rel, route, out);
  for (const auto& rel : open_files) finalize(dir_fd, rel, route, out);
  return out;
}

}  // namespace spliced
