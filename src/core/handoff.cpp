#include "spliced/core/handoff.hpp"

#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>

namespace spliced {
namespace {

constexpr char kMagic[4] = {'S', 'P', 'L', 'H'};
constexpr size_t kHeader = 12;
constexpr uint32_t kMaxText = 1u << 20;
constexpr uint32_t kMaxBlob = 256u << 20;

void putU32(char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

uint32_t getU32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i)
    v |= static_cast<uint32_t>(static_cast<unsigned char>(p[i])) << (8 * i);
  return v;
}

int hexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Writes all of `data` (after the first sendmsg), or fails with errno.
bool writeAll(int sock, const char* data, size_t n) {
  while (n > 0) {
    ssize_t w = ::send(sock, data, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    data += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// Reads exactly `n` bytes; 0 at the end of the stream, -1 on an error.
int readAll(int sock, char* data, size_t n) {
  while (n > 0) {
    ssize_t r = ::read(sock, data, n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) return 0;
    data += r;
    n -= static_cast<size_t>(r);
  }
  return 1;
}

}  // namespace

std::string toHex(const void* data, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  const auto* p = static_cast<const unsigned char*>(data);
  std::string out(2 * n, '0');
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = kDigits[p[i] >> 4];
    out[2 * i + 1] = kDigits[p[i] & 15];
  }
  return out;
}

bool fromHex(const std::string& hex, void* out, size_t max, size_t* len) {
  if (hex.size() % 2 != 0 || hex.size() / 2 > max) return false;
  auto* p = static_cast<unsigned char*>(out);
  for (size_t i = 0; i < hex.size() / 2; ++i) {
    const int hi = hexValue(hex[2 * i]);
    const int lo = hexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    p[i] = static_cast<unsigned char>(hi * 16 + lo);
  }
  *len = hex.size() / 2;
  return true;
}

std::string escapeField(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f || c == '%' || c == '=') {
      out += fmt::format("%{:02x}", u);
    } else {
      out.push_back(c);
    }
  }
  return out;
}

std::string unescapeField(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    if (v[i] == '%' && i + 2 < v.size() && hexValue(v[i + 1]) >= 0 && hexValue(v[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hexValue(v[i + 1]) * 16 + hexValue(v[i + 2])));
      i += 2;
    } else {
      out.push_back(v[i]);
    }
  }
  return out;
}

Result<std::string> HandoffRecord::str(const std::string& key) const {
  auto it = fields.find(key);
  if (it == fields.end()) {
    return Error(ErrorSource::Internal,
                 fmt::format("handoff record '{}' has no field '{}'", kind, key));
  }
  return it->second;
}

Result<uint64_t> HandoffRecord::num(const std::string& key) const {
  Result<std::string> s = str(key);
  if (!s) return std::move(s).takeError();
  const std::string& t = s.value();
  uint64_t v = 0;
  if (t.empty() || t.size() > 20) {
    return Error(ErrorSource::Internal,
                 fmt::format("handoff record '{}': field '{}' is not a number", kind, key));
  }
  for (char c : t) {
    if (c < '0' || c > '9') {
      return Error(ErrorSource::Internal,
                   fmt::format("handoff record '{}': field '{}' is not a number", kind, key));
    }
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  return v;
}

UniqueFd HandoffRecord::takeFd(size_t i) {
  if (i >= owned.size()) return UniqueFd();
  return std::move(owned[i]);
}

Status sendRecord(int sock, const HandoffRecord& r) {
  if (r.fds.size() > kHandoffMaxFds) {
    return Error(ErrorSource::Internal,
                 fmt::format("handoff record '{}' has {} descriptors (at most {})", r.kind,
                             r.fds.size(), kHandoffMaxFds));
  }
  std::string text = r.kind;
  for (const auto& [k, v] : r.fields) text += " " + k + "=" + escapeField(v);
  char header[kHeader];
  std::memcpy(header, kMagic, 4);
  putU32(header + 4, static_cast<uint32_t>(text.size()));
  putU32(header + 8, static_cast<uint32_t>(r.blob.size()));
  // The header carries the descriptors; the rest follows as plain bytes.
  iovec iov{header, kHeader};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control;
  if (!r.fds.empty()) {
    control.assign(CMSG_SPACE(sizeof(int) * r.fds.size()), 0);
    msg.msg_control = control.data();
    msg.msg_controllen = control.size();
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * r.fds.size());
    std::memcpy(CMSG_DATA(c), r.fds.data(), sizeof(int) * r.fds.size());
  }
  ssize_t n = 0;
  do {
    n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    return Error(ErrorSource::Environment, fmt::format("cannot send handoff record '{}'", r.kind),
                 errno);
  }
  const auto sent = static_cast<size_t>(n);
  if ((sent < kHeader && !writeAll(sock, header + sent, kHeader - sent)) ||
      !writeAll(sock, text.data(), text.size()) || !writeAll(sock, r.blob.data(), r.blob.size())) {
    return Error(ErrorSource::Environment, fmt::format("cannot send handoff record '{}'", r.kind),
                 errno);
  }
  return Ok{};
}

Result<HandoffRecord> recvRecord(int sock) {
  char header[kHeader];
  iovec iov{header, kHeader};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control(CMSG_SPACE(sizeof(int) * kHandoffMaxFds), 0);
  msg.msg_control = control.data();
  msg.msg_controllen = control.size();
  ssize_t n = 0;
  do {
    n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    return Error(ErrorSource::Environment,
                 errno == EAGAIN ? std::string("no handoff record came in time")
                                 : std::string("cannot read a handoff record"),
                 errno == EAGAIN ? 0 : errno);
  }
  if (n == 0) return Error(ErrorSource::Internal, "the other process closed the handoff channel");
  HandoffRecord r;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int fd = -1;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      r.owned.emplace_back(fd);
    }
  }
  if ((msg.msg_flags & MSG_CTRUNC) != 0) {
    return Error(ErrorSource::Internal, "a handoff record carried more descriptors than allowed");
  }
  const auto got = static_cast<size_t>(n);
  if (got < kHeader) {
    int rc = readAll(sock, header + got, kHeader - got);
    if (rc <= 0) return Error(ErrorSource::Internal, "a handoff record was cut short");
  }
  if (std::memcmp(header, kMagic, 4) != 0) {
    return Error(ErrorSource::Internal, "not a handoff record (bad magic)");
  }
  const uint32_t text_len = getU32(header + 4);
  const uint32_t blob_len = getU32(header + 8);
  if (text_len == 0 || text_len > kMaxText || blob_len > kMaxBlob) {
    return Error(ErrorSource::Internal,
                 fmt::format("a handoff record is out of bounds (text {} bytes, blob {})", text_len,
                             blob_len));
  }
  std::string text(text_len, '\0');
  r.blob.assign(blob_len, '\0');
  if (readAll(sock, text.data(), text.size()) <= 0 ||
      (blob_len > 0 && readAll(sock, r.blob.data(), r.blob.size()) <= 0)) {
    return Error(ErrorSource::Internal, "a handoff record was cut short");
  }
  size_t sp = text.find(' ');
  r.kind = text.substr(0, sp);
  while (sp != std::string::npos) {
    const size_t start = sp + 1;
    sp = text.find(' ', start);
    const std::string item = text.substr(start, sp == std::string::npos ? sp : sp - start);
    const size_t eq = item.find('=');
    if (eq == std::string::npos) {
      return Error(ErrorSource::Internal,
                   fmt::format("handoff record '{}': malformed field '{}'", r.kind, item));
    }
    r.fields[item.substr(0, eq)] = unescapeField(item.substr(eq + 1));
  }
  return r;
}

}  // namespace spliced
