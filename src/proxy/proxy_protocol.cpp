#include "spliced/proxy/proxy_protocol.hpp"

#include <arpa/inet.h>
#include <sys/un.h>

#include <fmt/format.h>
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstring>
#include <optional>
#include <string_view>
#include <vector>

namespace spliced {
namespace {

constexpr std::array<uint8_t, 12> kV2Signature = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                                  0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
constexpr size_t kV2HeaderLen = 16;  // signature, version/command, family/transport, length
constexpr uint8_t kV2CmdLocal = 0x0;
constexpr uint8_t kV2CmdProxy = 0x1;
constexpr uint8_t kV2Unspec = 0x00;
constexpr uint8_t kV2Tcp4 = 0x11;
constexpr uint8_t kV2Tcp6 = 0x21;
constexpr uint8_t kV2UnixStream = 0x31;
constexpr size_t kV2Inet4Len = 2 * 4 + 2 * 2;
constexpr size_t kV2Inet6Len = 2 * 16 + 2 * 2;
constexpr size_t kUnixPathLen = 108;  // the protocol's size, which is also Linux's sun_path
constexpr size_t kV2UnixLen = 2 * kUnixPathLen;
constexpr size_t kTlvHeaderLen = 3;
constexpr size_t kV1MaxLine = 107;  // including the CRLF
constexpr std::string_view kV1Prefix = "PROXY ";

static_assert(sizeof(sockaddr_un::sun_path) == kUnixPathLen);

// ---- Encoding ----

// One end of a TCP connection as the header writes it: 4 or 16 address bytes (IPv4-mapped IPv6
// addresses are reduced to their 4 IPv4 bytes) and a port in host order.
struct InetEnd {
  bool v4 = true;
  std::array<uint8_t, 16> addr{};
  uint16_t port = 0;
};

std::optional<InetEnd> inetEnd(const sockaddr_storage& ss) {
  InetEnd e;
  if (ss.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&ss);
    std::memcpy(e.addr.data(), &in->sin_addr, 4);
    e.port = ntohs(in->sin_port);
    return e;
  }
  if (ss.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    const auto* bytes = reinterpret_cast<const uint8_t*>(&in6->sin6_addr);
    e.port = ntohs(in6->sin6_port);
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
      std::memcpy(e.addr.data(), bytes + 12, 4);
    } else {
      e.v4 = false;
      std::memcpy(e.addr.data(), bytes, 16);
    }
    return e;
  }
  return std::nullopt;
}

// Widens an IPv4 end to ::ffff:a.b.c.d.
void mapToV6(InetEnd& e) {
  if (!e.v4) return;
  std::array<uint8_t, 16> mapped{};
  mapped[10] = 0xff;
  mapped[11] = 0xff;
  std::memcpy(mapped.data() + 12, e.addr.data(), 4);
  e.addr = mapped;
  e.v4 = false;
}

// What an encoder writes: the kind of header and its addresses.
struct Endpoints {
  enum class Kind { Unspec, Tcp4, Tcp6, Unix } kind = Kind::Unspec;
  InetEnd src, dst;                                          // Tcp4, Tcp6
  std::array<uint8_t, kUnixPathLen> src_path{}, dst_path{};  // Unix, zero-padded
};

std::array<uint8_t, kUnixPathLen> unixPath(const sockaddr_storage& ss, socklen_t len) {
  std::array<uint8_t, kUnixPathLen> path{};
  constexpr size_t kOffset = offsetof(sockaddr_un, sun_path);
  if (ss.ss_family != AF_UNIX || len <= kOffset) return path;
  size_t n = std::min(static_cast<size_t>(len) - kOffset, kUnixPathLen);
  std::memcpy(path.data(), reinterpret_cast<const sockaddr_un*>(&ss)->sun_path, n);
  return path;
}

Endpoints classify(const ProxyAddresses& a) {
  Endpoints e;
  if (a.family == AF_UNIX) {
    e.kind = Endpoints::Kind::Unix;
    e.src_path = unixPath(a.src, a.src_len);
    e.dst_path = unixPath(a.dst, a.dst_len);
    return e;
  }
  if (a.family != AF_INET && a.family != AF_INET6) return e;
  auto src = inetEnd(a.src);
  auto dst = inetEnd(a.dst);
  if (!src || !dst) return e;
  e.src = *src;
  e.dst = *dst;
  if (e.src.v4 && e.dst.v4) {
    e.kind = Endpoints::Kind::Tcp4;
  } else {
    mapToV6(e.src);
    mapToV6(e.dst);
    e.kind = Endpoints::Kind::Tcp6;
  }
  return e;
}

std::string formatAddr(int family, const InetEnd& e) {
  char buf[INET6_ADDRSTRLEN] = {0};
  inet_ntop(family, e.addr.data(), buf, sizeof buf);
  return buf;
}

void appendBe16(std::string& out, size_t v) {
  out.push_back(static_cast<char>((v >> 8) & 0xff));
  out.push_back(static_cast<char>(v & 0xff));
}

void appendBytes(std::string& out, const uint8_t* p, size_t n) {
  out.append(reinterpret_cast<const char*>(p), n);
}

// ---- Parsing ----

ProxyParse invalid(std::string why) {
  ProxyParse p;
  p.status = ProxyParse::Status::Invalid;
  p.error = std::move(why);
  return p;
}

ProxyParse incomplete() { return ProxyParse{}; }

uint16_t readBe16(const uint8_t* p) {
  return static_cast<uint16_t>((static_cast<unsigned>(p[0]) << 8) | p[1]);
}

// `text` with anything but printable ASCII replaced by '?', cut to 20 characters: safe to log.
std::string printable(std::string_view text) {
  std::string out;
  for (char c : text.substr(0, 20)) out.push_back(c >= 0x20 && c < 0x7f ? c : '?');
  if (text.size() > 20) out += "...";
  return out;
}

// A v1 port: decimal 0-65535 without leading zeros. `partial`: `s` may still grow, so only ask
// whether some continuation (possibly none) makes it valid.
bool portOk(std::string_view s, bool partial) {
  if (s.empty()) return partial;
  if (s.size() > 5 || (s.size() > 1 && s[0] == '0')) return false;
  uint32_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint32_t>(c - '0');
  }
  return v <= 65535;
}

uint16_t portValue(std::string_view s) {
  uint32_t v = 0;
  for (char c : s) v = v * 10 + static_cast<uint32_t>(c - '0');
  return static_cast<uint16_t>(v);
}

// A v1 address that inet_pton accepts for `family`, written to `out` (4 or 16 bytes). With
// `partial`, whether some continuation makes it one: inet_pton decides on the text followed by
// each of a few endings that complete any valid prefix (a dotted quad cut anywhere, an IPv6 group
// list cut after a digit or a colon).
bool addressOk(int family, std::string_view s, bool partial, uint8_t* out) {
  if (s.empty()) return partial;
  if (s.size() > INET6_ADDRSTRLEN) return false;
  // inet_pton reads a C string: refuse anything that could end it early or is never valid.
  if (s.find_first_not_of("0123456789abcdefABCDEF:.") != std::string_view::npos) return false;
  std::string text(s);
  if (!partial) return inet_pton(family, text.c_str(), out) == 1;
  static constexpr std::array<std::string_view, 12> kEndings = {
      "", "0", ".0", "0.0", ".0.0", "0.0.0", ".0.0.0", ":", "::", ":0", "::0", "0::"};
  std::array<uint8_t, 16> scratch{};
  for (std::string_view ending : kEndings) {
    std::string candidate = text + std::string(ending);
    if (inet_pton(family, candidate.c_str(), scratch.data()) == 1) return true;
  }
  return false;
}

// Parses the v1 line after "PROXY " up to (not including) the CR. `final`: the CR has been
// seen, so the text is all there is. Returns an error, or an empty string when the text is
// valid (final) or a valid prefix (not final); `addr` is filled when final and valid.
std::string parseV1Fields(std::string_view text, bool final, ProxyAddresses& addr) {
  std::vector<std::string_view> fields;
  size_t start = 0;
  while (true) {
    size_t space = text.find(' ', start);
    if (space == std::string_view::npos) {
      fields.push_back(text.substr(start));
      break;
    }
    fields.push_back(text.substr(start, space - start));
    start = space + 1;
  }
  // The last field may still grow unless the CR has been seen.
  auto isOpen = [&](size_t i) { return !final && i + 1 == fields.size(); };

  std::string_view proto = fields[0];
  if (isOpen(0)) {
    for (std::string_view known : {"TCP4", "TCP6", "UNKNOWN"}) {
      if (known.substr(0, proto.size()) == proto) return {};
    }
    return fmt::format("v1: unknown protocol '{}'", printable(proto));
  }
  if (proto == "UNKNOWN") {
    addr.family = AF_UNSPEC;  // the rest of the line is ignored
    return {};
  }
  int family;
  if (proto == "TCP4") {
    family = AF_INET;
  } else if (proto == "TCP6") {
    family = AF_INET6;
  } else {
    return proto.empty() ? std::string("v1: empty protocol (extra space?)")
                         : fmt::format("v1: unknown protocol '{}'", printable(proto));
  }

  static constexpr std::array<const char*, 4> kNames = {"source address", "destination address",
                                                        "source port", "destination port"};
  std::array<std::array<uint8_t, 16>, 2> ip{};
  std::array<uint16_t, 2> port{};
  // Fields in order, so the first problem on the line is the one reported.
  for (size_t i = 1; i < std::min<size_t>(fields.size(), 5); ++i) {
    bool open = isOpen(i);
    std::string_view f = fields[i];
    if (f.empty() && !open) return fmt::format("v1: empty {} (extra space?)", kNames[i - 1]);
    bool ok = i <= 2 ? addressOk(family, f, open, ip[i - 1].data()) : portOk(f, open);
    if (!ok) return fmt::format("v1: bad {}", kNames[i - 1]);
    if (i >= 3 && !open) port[i - 3] = portValue(f);
  }
  if (fields.size() > 5) return "v1: unexpected data after the destination port";
  if (!final) return {};
  if (fields.size() < 5) return fmt::format("v1: missing {}", kNames[fields.size() - 1]);

  addr.family = family;
  for (int end = 0; end < 2; ++end) {
    sockaddr_storage& ss = end == 0 ? addr.src : addr.dst;
    socklen_t& len = end == 0 ? addr.src_len : addr.dst_len;
    if (family == AF_INET) {
      auto* in = reinterpret_cast<sockaddr_in*>(&ss);
      in->sin_family = AF_INET;
      std::memcpy(&in->sin_addr, ip[end].data(), 4);
      in->sin_port = htons(port[end]);
      len = sizeof(sockaddr_in);
    } else {
      auto* in6 = reinterpret_cast<sockaddr_in6*>(&ss);
      in6->sin6_family = AF_INET6;
      std::memcpy(&in6->sin6_addr, ip[end].data(), 16);
      in6->sin6_port = htons(port[end]);
      len = sizeof(sockaddr_in6);
    }
  }
  return {};
}

ProxyParse parseV1(const uint8_t* data, size_t len) {
  const char* text = reinterpret_cast<const char*>(data);
  size_t n = std::min(len, kV1Prefix.size());
  if (std::string_view(text, n) != kV1Prefix.substr(0, n)) {
    return invalid("v1: does not start with \"PROXY \"");
  }
  // Find the end of the line: a CR that is (or will be) followed by LF, within 107 bytes.
  size_t limit = std::min(len, kV1MaxLine);
  size_t line_end = limit;  // the CR, or the end of what is here
  bool saw_cr = false;
  for (size_t i = 0; i < limit; ++i) {
    if (data[i] == '\n') return invalid("v1: LF without CR");
    if (data[i] == '\r') {
      if (i + 2 > kV1MaxLine) break;
      if (i + 1 < len && data[i + 1] != '\n') return invalid("v1: CR not followed by LF");
      line_end = i;
      saw_cr = true;
      break;
    }
  }
  if (!saw_cr && len >= kV1MaxLine) return invalid("v1: no CRLF within 107 bytes");
  if (line_end < kV1Prefix.size()) return incomplete();  // still inside "PROXY "

  ProxyParse p;
  std::string_view fields(text + kV1Prefix.size(), line_end - kV1Prefix.size());
  std::string error = parseV1Fields(fields, saw_cr, p.addr);
  if (!error.empty()) return invalid(std::move(error));
  if (!saw_cr || line_end + 2 > len) return incomplete();
  p.status = ProxyParse::Status::Ok;
  p.header_len = line_end + 2;
  return p;
}

// Fills a sockaddr_un from a 108-byte protocol field. Pathname addresses end at their first
// NUL; abstract ones (leading NUL) keep every byte up to the last non-zero one; all zeros is an
// unnamed socket (length of the family only, as getpeername reports one).
void readUnixPath(const uint8_t* field, sockaddr_storage& ss, socklen_t& len) {
  auto* un = reinterpret_cast<sockaddr_un*>(&ss);
  un->sun_family = AF_UNIX;
  std::memcpy(un->sun_path, field, kUnixPathLen);
  constexpr size_t kOffset = offsetof(sockaddr_un, sun_path);
  size_t used = 0;
  if (field[0] != 0) {
    used = strnlen(un->sun_path, kUnixPathLen);
    if (used < kUnixPathLen) ++used;  // the terminating NUL, as getsockname counts it
  } else {
    for (size_t i = kUnixPathLen; i > 0; --i) {
      if (field[i - 1] != 0) {
        used = i;
        break;
      }
    }
  }
  len = static_cast<socklen_t>(kOffset + used);
}

ProxyParse parseV2(const uint8_t* data, size_t len) {
  size_t n = std::min(len, kV2Signature.size());
  if (std::memcmp(data, kV2Signature.data(), n) != 0) return invalid("v2: bad signature");
  if (len < 13) return incomplete();
  unsigned version = data[12] >> 4;
  unsigned command = data[12] & 0x0f;
  if (version != 2) return invalid(fmt::format("v2: unsupported version {}", version));
  if (command != kV2CmdLocal && command != kV2CmdProxy) {
    return invalid(fmt::format("v2: unknown command {}", command));
  }
  if (len < 14) return incomplete();
  uint8_t fam = data[13];
  if ((fam >> 4) > 3 || (fam & 0x0f) > 2) {
    return invalid(fmt::format("v2: unknown family/transport 0x{:02x}", fam));
  }
  // With LOCAL (health checks) the family is ignored and the block skipped, as the spec says.
  size_t addr_len = 0;
  bool read_block = command == kV2CmdProxy && fam != kV2Unspec;
  if (command == kV2CmdProxy) {
    switch (fam) {
      case kV2Unspec:
        break;
      case kV2Tcp4:
        addr_len = kV2Inet4Len;
        break;
      case kV2Tcp6:
        addr_len = kV2Inet6Len;
        break;
      case kV2UnixStream:
        addr_len = kV2UnixLen;
        break;
      default:
        if ((fam & 0x0f) == 2) {
          return invalid(
              fmt::format("v2: datagram transport 0x{:02x} on a stream connection", fam));
        }
        return invalid(fmt::format("v2: unsupported family/transport 0x{:02x}", fam));
    }
  }
  if (len < kV2HeaderLen) return incomplete();
  size_t block_len = readBe16(data + 14);
  size_t total = kV2HeaderLen + block_len;
  if (total > kMaxProxyHeader) {
    return invalid(
        fmt::format("v2: header of {} bytes exceeds the {}-byte limit", total, kMaxProxyHeader));
  }
  if (block_len < addr_len) {
    return invalid(
        fmt::format("v2: length {} is smaller than the {}-byte addresses", block_len, addr_len));
  }
  if (read_block) {
    // TLVs follow the addresses and must end exactly at the announced length. Check those whose
    // header is already here, so a bad one is reported without waiting for the rest.
    size_t off = addr_len;
    while (off < block_len) {
      if (block_len - off < kTlvHeaderLen) return invalid("v2: truncated TLV header");
      if (kV2HeaderLen + off + kTlvHeaderLen > len) break;
      size_t tlv_len = readBe16(data + kV2HeaderLen + off + 1);
      if (off + kTlvHeaderLen + tlv_len > block_len) {
        return invalid(fmt::format("v2: TLV type 0x{:02x} runs past the header length",
                                   data[kV2HeaderLen + off]));
      }
      off += kTlvHeaderLen + tlv_len;
    }
  }
  if (len < total) return incomplete();

  ProxyParse p;
  p.status = ProxyParse::Status::Ok;
  p.header_len = total;
  if (!read_block) return p;  // family stays AF_UNSPEC: use the real connection
  const uint8_t* a = data + kV2HeaderLen;
  if (fam == kV2Tcp4) {
    p.addr.family = AF_INET;
    auto* src = reinterpret_cast<sockaddr_in*>(&p.addr.src);
    auto* dst = reinterpret_cast<sockaddr_in*>(&p.addr.dst);
    src->sin_family = dst->sin_family = AF_INET;
    std::memcpy(&src->sin_addr, a, 4);
    std::memcpy(&dst->sin_addr, a + 4, 4);
    src->sin_port = htons(readBe16(a + 8));
    dst->sin_port = htons(readBe16(a + 10));
    p.addr.src_len = p.addr.dst_len = sizeof(sockaddr_in);
  } else if (fam == kV2Tcp6) {
    p.addr.family = AF_INET6;
    auto* src = reinterpret_cast<sockaddr_in6*>(&p.addr.src);
    auto* dst = reinterpret_cast<sockaddr_in6*>(&p.addr.dst);
    src->sin6_family = dst->sin6_family = AF_INET6;
    std::memcpy(&src->sin6_addr, a, 16);
    std::memcpy(&dst->sin6_addr, a + 16, 16);
    src->sin6_port = htons(readBe16(a + 32));
    dst->sin6_port = htons(readBe16(a + 34));
    p.addr.src_len = p.addr.dst_len = sizeof(sockaddr_in6);
  } else {
    p.addr.family = AF_UNIX;
    readUnixPath(a, p.addr.src, p.addr.src_len);
    readUnixPath(a + kUnixPathLen, p.addr.dst, p.addr.dst_len);
  }
  return p;
}

}  // namespace

std::string encodeProxyV1(const ProxyAddresses& a) {
  Endpoints e = classify(a);
  switch (e.kind) {
    case Endpoints::Kind::Tcp4:
    case Endpoints::Kind::Tcp6: {
      bool v4 = e.kind == Endpoints::Kind::Tcp4;
      int family = v4 ? AF_INET : AF_INET6;
      return fmt::format("PROXY {} {} {} {} {}\r\n", v4 ? "TCP4" : "TCP6",
                         formatAddr(family, e.src), formatAddr(family, e.dst), e.src.port,
                         e.dst.port);
    }
    case Endpoints::Kind::Unix:
    case Endpoints::Kind::Unspec:
      break;
  }
  return "PROXY UNKNOWN\r\n";
}

std::string encodeProxyV2(const ProxyAddresses& a) {
  Endpoints e = classify(a);
  std::string out;
  out.reserve(kV2HeaderLen + kV2UnixLen);
  appendBytes(out, kV2Signature.data(), kV2Signature.size());
  switch (e.kind) {
    case Endpoints::Kind::Tcp4:
    case Endpoints::Kind::Tcp6: {
      bool v4 = e.kind == Endpoints::Kind::Tcp4;
      size_t addr_bytes = v4 ? 4 : 16;
      out.push_back(static_cast<char>(0x20 | kV2CmdProxy));
      out.push_back(static_cast<char>(v4 ? kV2Tcp4 : kV2Tcp6));
      appendBe16(out, v4 ? kV2Inet4Len : kV2Inet6Len);
      appendBytes(out, e.src.addr.data(), addr_bytes);
      appendBytes(out, e.dst.addr.data(), addr_bytes);
      appendBe16(out, e.src.port);
      appendBe16(out, e.dst.port);
      break;
    }
    case Endpoints::Kind::Unix:
      out.push_back(static_cast<char>(0x20 | kV2CmdProxy));
      out.push_back(static_cast<char>(kV2UnixStream));
      appendBe16(out, kV2UnixLen);
      appendBytes(out, e.src_path.data(), e.src_path.size());
      appendBytes(out, e.dst_path.data(), e.dst_path.size());
      break;
    case Endpoints::Kind::Unspec:
      out.push_back(static_cast<char>(0x20 | kV2CmdLocal));
      out.push_back(static_cast<char>(kV2Unspec));
      appendBe16(out, 0);
      break;
  }
  return out;
}

ProxyParse parseProxyHeader(const uint8_t* data, size_t len) {
  if (len == 0) return incomplete();
  if (data[0] == kV1Prefix[0]) return parseV1(data, len);
  if (data[0] == kV2Signature[0]) return parseV2(data, len);
  return invalid("not a PROXY protocol header (first byte is neither 'P' nor 0x0D)");
}

PeerInfo proxySource(const ProxyAddresses& a) {
  if (a.family == AF_INET || a.family == AF_INET6) {
    return describePeer(reinterpret_cast<const sockaddr*>(&a.src), a.src_len);
  }
  PeerInfo p;
  p.ip = a.family == AF_UNIX ? "unix" : "unknown";
  return p;
}

std::string describeProxySource(const ProxyAddresses& a) {
  if (a.family == AF_UNSPEC) return "unknown";
  return proxySource(a).display();
}

}  // namespace spliced
