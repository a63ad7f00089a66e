#include "spliced/archive/recovery.hpp"

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

#include "spliced/archive/segment_files.hpp"

namespace spliced {
namespace {

void finalize(SysCalls& sys, int dir_fd, const std::string& open_rel, const std::string& route,
              RecoveryResult& out) {
  ParentDir parent = openParentDir(dir_fd, open_rel);
  if (parent.err != 0) {
    out.errors.push_back(fmt::format("{}: {}", open_rel, std::strerror(parent.err)));
    return;
  }
  const std::string name = open_rel.substr(0, open_rel.size() - kOpenSuffix.size());
  // withNumericSuffix keeps the directory, so the rename stays inside `parent`.
  Published pub = publishNoReplace(sys, parent.fd.get(), parent.name, baseName(name));
  if (pub.err != 0) {
    out.errors.push_back(fmt::format("cannot rename {} to {}: {}", open_rel,
                                     joinPath(parentOf(name), pub.name), std::strerror(pub.err)));
    return;
  }
  const std::string to = joinPath(parentOf(name), pub.name);
  struct stat st;
  uint64_t size = 0;
  if (::fstatat(parent.fd.get(), pub.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
    size = static_cast<uint64_t>(st.st_size);
  }
  spdlog::info("route={} recovery: finalised {} as {} size={}", route, open_rel, to, size);
  out.finalized.push_back(to);
}

void removeTmp(SysCalls& sys, int dir_fd, const std::string& rel, const std::string& route,
               RecoveryResult& out) {
  ParentDir parent = openParentDir(dir_fd, rel);
  int err = parent.err;
  if (err == 0 && sys.unlinkat(parent.fd.get(), parent.name.c_str(), 0) != 0) err = errno;
  if (err == ENOENT) return;
  if (err != 0) {
    out.errors.push_back(fmt::format("cannot remove {}: {}", rel, std::strerror(err)));
    return;
  }
  spdlog::info("route={} recovery: removed {} (interrupted compression)", route, rel);
  ++out.removed_tmp;
}

}  // namespace

RecoveryResult recoverArchive(int dir_fd, const std::string& route, SysCalls& sys) {
  RecoveryResult out;
  std::vector<std::string> open_files;
  std::vector<std::string> tmp_files;
  // Collect first, act afterwards: renaming inside a directory being read may show an entry
  // twice or not at all.
  out.errors = walkArchive(dir_fd, [&](const std::string& rel, const struct stat&) {
    std::string base = baseName(rel);
    if (base.size() > kOpenSuffix.size() && isOpenName(base)) {
      open_files.push_back(rel);
    } else if (base.size() > kTmpSuffix.size() && isTmpName(base)) {
      tmp_files.push_back(rel);
    }
  });
  std::sort(open_files.begin(), open_files.end());
  std::sort(tmp_files.begin(), tmp_files.end());
  for (const auto& rel : tmp_files) removeTmp(sys, dir_fd, rel, route, out);
  for (const auto& rel : open_files) finalize(sys, dir_fd, rel, route, out);
  return out;
}

}  // namespace spliced
