#include "spliced/ship/cursor.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <fmt/format.h>
#include <cerrno>
#include <charconv>
#include <cstring>

#include "spliced/core/fd.hpp"

namespace spliced {
namespace {

constexpr std::string_view kMagic = "spliced-ship-cursor 1";

std::string checkOf(std::string_view text) {
  return fmt::format("{:016x}", XXH3_64bits(text.data(), text.size()));
}

bool parseNumber(std::string_view s, uint64_t& out) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

// Reads a whole small file below dir_fd; nullopt with errno set when it cannot be read.
std::optional<std::string> readSmall(int dir_fd, const std::string& path) {
  UniqueFd fd(::openat(dir_fd, path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.valid()) return std::nullopt;
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return std::nullopt;
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > (64u << 20)) {
      errno = EFBIG;
      return std::nullopt;
    }
  }
  return out;
}

std::string journalPath(const std::string& name) {
  return fmt::format("{}/{}.journal", kShipDir, name);
}

}  // namespace

std::string cursorPath(const std::string& name) {
  return fmt::format("{}/{}.cursor", kShipDir, name);
}

std::string formatCursor(const ShipCursor& c) {
  std::string body =
      fmt::format("{}\nsegment {}\noffset {}\nacked {}\n", kMagic, c.segment, c.offset, c.acked);
  for (const auto& p : c.pending) body += fmt::format("pending {}\n", p);
  return body + fmt::format("check {}\n", checkOf(body));
}

std::optional<ShipCursor> parseCursor(std::string_view text, std::string& why) {
  ShipCursor c;
  size_t at = 0;
  size_t line_no = 0;
  bool seen_segment = false, seen_offset = false, seen_acked = false;
  while (at < text.size()) {
    size_t nl = text.find('\n', at);
    if (nl == std::string_view::npos) {
      why = fmt::format("line {}: cut short (no newline)", line_no + 1);
      return std::nullopt;
    }
    std::string_view line = text.substr(at, nl - at);
    ++line_no;
    if (line_no == 1) {
      if (line != kMagic) {
        why = fmt::format("line 1: not a cursor of this version (expected '{}')", kMagic);
        return std::nullopt;
      }
    } else {
      size_t sp = line.find(' ');
      std::string_view key = line.substr(0, sp);
      std::string_view value = sp == std::string_view::npos ? "" : line.substr(sp + 1);
      if (key == "check") {
        if (value != checkOf(text.substr(0, at))) {
          why = fmt::format("line {}: check mismatch (the file was changed or cut)", line_no);
          return std::nullopt;
        }
        if (nl + 1 != text.size()) {
          why = fmt::format("line {}: bytes after the check line", line_no + 1);
          return std::nullopt;
        }
        if (!seen_segment || !seen_offset || !seen_acked) {
          why = "segment, offset or acked missing";
          return std::nullopt;
        }
        if (c.segment.empty() && (c.offset != 0 || !c.pending.empty())) {
          why = "an offset or pending segments without a segment";
          return std::nullopt;
        }
        return c;
      }
      if (key == "segment" && !seen_segment) {
        c.segment = std::string(value);
        seen_segment = true;
      } else if (key == "offset" && !seen_offset && parseNumber(value, c.offset)) {
        seen_offset = true;
      } else if (key == "acked" && !seen_acked && parseNumber(value, c.acked)) {
        seen_acked = true;
      } else if (key == "pending" && !value.empty()) {
        c.pending.emplace_back(value);
      } else {
        why = fmt::format("line {}: unexpected '{}'", line_no, line.substr(0, 80));
        return std::nullopt;
      }
    }
    at = nl + 1;
  }
  why = line_no == 0 ? "empty file" : "no check line";
  return std::nullopt;
}

int makeShipDir(SysCalls& sys, int dir_fd) {
  if (sys.mkdirat(dir_fd, ".spliced", 0750) != 0 && errno != EEXIST) return errno;
  if (sys.mkdirat(dir_fd, kShipDir, 0750) != 0 && errno != EEXIST) return errno;
  return 0;
}

int saveCursor(SysCalls& sys, int dir_fd, const std::string& name, const ShipCursor& c,
               bool durable) {
  if (int err = makeShipDir(sys, dir_fd)) return err;
  const std::string path = cursorPath(name);
  const std::string tmp = path + ".tmp";
  const std::string text = formatCursor(c);
  UniqueFd fd(sys.openat(dir_fd, tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640));
  if (!fd.valid()) return errno;
  size_t done = 0;
  while (done < text.size()) {
    ssize_t w =
        sys.pwrite(fd.get(), text.data() + done, text.size() - done, static_cast<off_t>(done));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return w == 0 ? EIO : errno;
    done += static_cast<size_t>(w);
  }
  if (durable && sys.fsync(fd.get()) != 0) return errno;
  fd.reset();
  if (sys.renameat2(dir_fd, tmp.c_str(), dir_fd, path.c_str(), 0) != 0) return errno;
  if (!durable) return 0;
  UniqueFd dir(sys.openat(dir_fd, kShipDir, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0));
  if (!dir.valid()) return errno;
  if (sys.fsync(dir.get()) != 0) return errno;
  return 0;
}

CursorLoad loadCursor(int dir_fd, const std::string& name) {
  CursorLoad out;
  if (auto text = readSmall(dir_fd, cursorPath(name))) {
    std::string why;
    out.cursor = parseCursor(*text, why);
    if (!out.cursor) out.problem = fmt::format("{} is unusable: {}", cursorPath(name), why);
  } else if (errno == ENOENT) {
    out.missing = true;
  } else {
    out.problem = fmt::format("{} cannot be read: {}", cursorPath(name), std::strerror(errno));
  }
  if (auto text = readSmall(dir_fd, journalPath(name))) {
    size_t at = 0;
    for (;;) {
      size_t nl = text->find('\n', at);
      if (nl == std::string::npos) break;  // a cut last line: its segment got no byte yet
      if (nl > at) out.journal.emplace_back(text->substr(at, nl - at));
      at = nl + 1;
    }
  }
  return out;
}

int openJournal(int dir_fd, const std::string& name) {
  return ::openat(dir_fd, journalPath(name).c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC,
                  0640);
}

int appendJournal(int fd, const std::string& rel) {
  const std::string line = rel + "\n";
  for (;;) {
    ssize_t w = ::write(fd, line.data(), line.size());
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return errno;
    return static_cast<size_t>(w) == line.size() ? 0 : EIO;
  }
}

int truncateJournal(int fd) { return ::ftruncate(fd, 0) == 0 ? 0 : errno; }

void removeCursor(int dir_fd, const std::string& name) {
  ::unlinkat(dir_fd, cursorPath(name).c_str(), 0);
  ::unlinkat(dir_fd, journalPath(name).c_str(), 0);
}

}  // namespace spliced
