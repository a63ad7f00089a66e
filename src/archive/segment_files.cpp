#include "spliced/archive/segment_files.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

#include <fmt/format.h>
#include <cerrno>
#include <cstring>
#include <memory>

namespace spliced {
namespace {

// Deeper than any sensible name template; a guard against pathological trees.
constexpr int kMaxDepth = 64;

struct DirCloser {
  void operator()(DIR* d) const { ::closedir(d); }
};
// Owns a DIR stream and, through it, the descriptor it was opened from.
using DirPtr = std::unique_ptr<DIR, DirCloser>;

bool exists(int dir_fd, const std::string& rel) {
  struct stat st;
  return ::fstatat(dir_fd, rel.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
}

// fn(rel, st) for every regular file below `fd`; `st` is its lstat with `with_stat`, else
// nullptr, and only the entries' types are read (a stat only where the file system gives none).
using WalkFn = std::function<void(std::string&& rel, const struct stat* st)>;

void walkDir(UniqueFd fd, const std::string& prefix, bool with_stat, const WalkFn& fn,
             std::vector<std::string>& errors, int depth) {
  const std::string shown = prefix.empty() ? "." : prefix;
  if (depth > kMaxDepth) {
    errors.push_back(fmt::format("{}: deeper than {} levels; not walked", shown, kMaxDepth));
    return;
  }
  DirPtr dir(::fdopendir(fd.get()));
  if (!dir) {
    errors.push_back(fmt::format("{}: {}", shown, std::strerror(errno)));
    return;
  }
  fd.release();  // the DIR stream owns it now
  int dfd = ::dirfd(dir.get());
  for (;;) {
    errno = 0;
    dirent* e = ::readdir(dir.get());
    if (e == nullptr) {
      if (errno != 0) errors.push_back(fmt::format("{}: {}", shown, std::strerror(errno)));
      break;
    }
    std::string_view name = e->d_name;
    if (name.empty() || name[0] == '.') continue;  // ".", "..", and spliced's own names
    struct stat st {};
    unsigned char type = with_stat ? static_cast<unsigned char>(DT_UNKNOWN) : e->d_type;
    if (type == DT_UNKNOWN) {
      if (::fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;  // vanished
      type = S_ISDIR(st.st_mode) ? DT_DIR : S_ISREG(st.st_mode) ? DT_REG : DT_UNKNOWN;
    }
    std::string rel = prefix.empty() ? std::string(name) : prefix + "/" + std::string(name);
    if (type == DT_DIR) {
      UniqueFd sub(::openat(dfd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!sub.valid()) {
        if (errno != ENOENT) errors.push_back(fmt::format("{}: {}", rel, std::strerror(errno)));
        continue;
      }
      walkDir(std::move(sub), rel, with_stat, fn, errors, depth + 1);
    } else if (type == DT_REG) {
      fn(std::move(rel), with_stat ? &st : nullptr);
    }
  }
}

std::vector<std::string> walkRoot(int dir_fd, bool with_stat, const WalkFn& fn) {
  std::vector<std::string> errors;
  UniqueFd root(::openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!root.valid()) {
    errors.push_back(fmt::format(".: {}", std::strerror(errno)));
    return errors;
  }
  walkDir(std::move(root), "", with_stat, fn, errors, 0);
  return errors;
}

}  // namespace

std::string baseName(std::string_view rel) {
  auto slash = rel.rfind('/');
  return std::string(slash == std::string_view::npos ? rel : rel.substr(slash + 1));
}

std::string parentOf(std::string_view rel) {
  auto slash = rel.rfind('/');
  return slash == std::string_view::npos ? std::string() : std::string(rel.substr(0, slash));
}

std::string joinPath(std::string_view dir, std::string_view name) {
  if (dir.empty()) return std::string(name);
  std::string out(dir);
  out += '/';
  out += name;
  return out;
}

bool isOpenName(std::string_view rel) { return rel.ends_with(kOpenSuffix); }
bool isTmpName(std::string_view rel) { return rel.ends_with(kTmpSuffix); }
bool isCompressedName(std::string_view rel) {
  return rel.ends_with(kZstdSuffix) || rel.ends_with(kGzipSuffix);
}

bool isUnsyncedName(std::string_view rel) { return rel.ends_with(kUnsyncedSuffix); }

bool isClosedSegmentName(std::string_view rel) {
  return !rel.empty() && rel.front() != '.' && rel.find("/.") == std::string_view::npos &&
         !isOpenName(rel) && !isTmpName(rel);
}

std::string_view compressedSuffix(Compress algo) {
  switch (algo) {
    case Compress::Zstd:
      return kZstdSuffix;
    case Compress::Gzip:
      return kGzipSuffix;
    case Compress::None:
      break;
  }
  return {};
}

std::string withNumericSuffix(const std::string& rel, int k) {
  auto slash = rel.rfind('/');
  auto dot = rel.rfind('.');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash) ||
      dot == (slash == std::string::npos ? 0 : slash + 1)) {
    return fmt::format("{}.{}", rel, k);
  }
  return fmt::format("{}.{}{}", rel.substr(0, dot), k, rel.substr(dot));
}

bool segmentNameTaken(int dir_fd, const std::string& rel) {
  return exists(dir_fd, rel) || exists(dir_fd, rel + std::string(kZstdSuffix)) ||
         exists(dir_fd, rel + std::string(kGzipSuffix)) ||
         exists(dir_fd, rel + std::string(kUnsyncedSuffix));
}

int makeParents(SysCalls& sys, int dir_fd, const std::string& rel) {
  // Retention may remove an emptied directory between two mkdirat calls: start over once.
  for (int attempt = 0; attempt < 2; ++attempt) {
    size_t pos = 0;
    int err = 0;
    while ((pos = rel.find('/', pos)) != std::string::npos) {
      std::string dir = rel.substr(0, pos);
      if (sys.mkdirat(dir_fd, dir.c_str(), 0755) != 0 && errno != EEXIST) {
        err = errno;
        break;
      }
      ++pos;
    }
    if (err != ENOENT) return err;
  }
  return ENOENT;
}

Published publishNoReplace(SysCalls& sys, int dir, const std::string& from, const std::string& stem,
                           std::string_view ext,
                           const std::function<bool(const std::string& taken)>& same_as_taken) {
  Published out;
  out.name = stem + std::string(ext);
  for (int k = 1;; ++k) {
    if (sys.renameat2(dir, from.c_str(), dir, out.name.c_str(), RENAME_NOREPLACE) == 0) {
      out.err = 0;
      out.renamed = true;
      return out;
    }
    out.err = errno;
    if (out.err != EEXIST) return out;
    if (same_as_taken && same_as_taken(out.name)) {
      out.err = 0;
      return out;
    }
    if (k >= kMaxNumericSuffix) return out;  // EEXIST
    out.name = withNumericSuffix(stem, k) + std::string(ext);
  }
}

ParentDir openParentDir(int dir_fd, const std::string& rel) {
  ParentDir out;
  if (rel.empty() || rel.front() == '/') {
    out.err = EINVAL;
    return out;
  }
  UniqueFd cur(::openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!cur.valid()) {
    out.err = errno;
    return out;
  }
  size_t start = 0;
  for (;;) {
    size_t slash = rel.find('/', start);
    std::string comp = rel.substr(start, slash == std::string::npos ? slash : slash - start);
    if (comp.empty() || comp == "." || comp == "..") {
      out.err = EINVAL;
      return out;
    }
    if (slash == std::string::npos) {
      out.fd = std::move(cur);
      out.name = std::move(comp);
      return out;
    }
    UniqueFd next(
        ::openat(cur.get(), comp.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!next.valid()) {
      out.err = errno;
      return out;
    }
    cur = std::move(next);
    start = slash + 1;
  }
}

std::vector<std::string> walkArchive(int dir_fd, const ArchiveFileFn& fn) {
  return walkRoot(dir_fd, true, [&fn](std::string&& rel, const struct stat* st) { fn(rel, *st); });
}

std::vector<std::string> walkArchiveNames(int dir_fd, const ArchiveNameFn& fn) {
  return walkRoot(dir_fd, false,
                  [&fn](std::string&& rel, const struct stat*) { fn(std::move(rel)); });
}

}  // namespace spliced
