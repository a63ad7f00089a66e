// libFuzzer target: parseProxyHeader at every prefix length of the input, as the bytes of a
// connection arrive. Each prefix is copied to a buffer of exactly its length so that ASan catches
// a read past what has been received. Properties:
//  - Ok: 0 < header_len <= len and header_len <= kMaxProxyHeader;
//  - the verdict only moves forward: Incomplete may become Ok or Invalid; Invalid stays Invalid;
//    Ok stays Ok with the same header_len and addresses (bytes after the header are the stream's);
//  - an Ok header re-encoded as the version it was (and as the other one) parses back, whole,
//    to the same addresses.
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "fuzz_check.hpp"
#include "spliced/proxy/proxy_protocol.hpp"

namespace {

using spliced::ProxyAddresses;
using spliced::ProxyParse;
using Status = ProxyParse::Status;

// One end of a header as a receiver would use it: IPv4 (IPv4-mapped IPv6 reduced to it), IPv6,
// or a unix path (the sockaddr_un bytes up to its length).
struct End {
  int kind = AF_UNSPEC;
  std::array<uint8_t, 16> ip{};
  uint16_t port = 0;
  std::vector<uint8_t> unix_bytes;
  bool operator==(const End&) const = default;
};

End normalise(int family, const sockaddr_storage& ss, socklen_t len) {
  End e;
  if (family == AF_UNIX) {
    FUZZ_CHECK(ss.ss_family == AF_UNIX, "a UNIX header holds sockaddr_un ends");
    FUZZ_CHECK(len >= offsetof(sockaddr_un, sun_path) && len <= sizeof(sockaddr_un),
               "a unix end has a sockaddr_un length");
    e.kind = AF_UNIX;
    const auto* p = reinterpret_cast<const uint8_t*>(&ss);
    e.unix_bytes.assign(p, p + len);
    return e;
  }
  if (family != AF_INET && family != AF_INET6) return e;
  if (ss.ss_family == AF_INET) {
    FUZZ_CHECK(len == sizeof(sockaddr_in), "an IPv4 end has the sockaddr_in length");
    const auto* in = reinterpret_cast<const sockaddr_in*>(&ss);
    e.kind = AF_INET;
    std::memcpy(e.ip.data(), &in->sin_addr, 4);
    e.port = in->sin_port;
    return e;
  }
  FUZZ_CHECK(ss.ss_family == AF_INET6, "a TCP header holds sockaddr_in or sockaddr_in6 ends");
  FUZZ_CHECK(len == sizeof(sockaddr_in6), "an IPv6 end has the sockaddr_in6 length");
  const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&ss);
  const auto* b = reinterpret_cast<const uint8_t*>(&in6->sin6_addr);
  e.port = in6->sin6_port;
  if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
    e.kind = AF_INET;
    std::memcpy(e.ip.data(), b + 12, 4);
  } else {
    e.kind = AF_INET6;
    std::memcpy(e.ip.data(), b, 16);
  }
  return e;
}

struct Ends {
  int family = AF_UNSPEC;  // AF_INET and AF_INET6 both count as AF_INET: TCP
  End src, dst;
  bool operator==(const Ends&) const = default;
};

Ends normalise(const ProxyAddresses& a) {
  Ends n;
  n.family = a.family == AF_INET6 ? AF_INET : a.family;
  n.src = normalise(a.family, a.src, a.src_len);
  n.dst = normalise(a.family, a.dst, a.dst_len);
  return n;
}

ProxyParse parseExact(const uint8_t* data, size_t len) {
  std::vector<uint8_t> copy(data, data + len);  // heap, exactly len bytes
  return spliced::parseProxyHeader(copy.data(), copy.size());
}

void checkReencoded(const std::string& encoded, const ProxyAddresses& original, bool v1) {
  ProxyParse back = parseExact(reinterpret_cast<const uint8_t*>(encoded.data()), encoded.size());
  FUZZ_CHECK(back.status == Status::Ok, "a re-encoded header parses");
  FUZZ_CHECK(back.header_len == encoded.size(), "a re-encoded header is consumed whole");
  if (v1 && original.family == AF_UNIX) {
    FUZZ_CHECK(back.addr.family == AF_UNSPEC, "v1 writes a UNIX header as UNKNOWN");
    return;
  }
  FUZZ_CHECK(normalise(back.addr) == normalise(original),
             "a re-encoded header parses back to the same addresses");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  bool seen_ok = false, seen_invalid = false;
  ProxyParse first_ok;
  for (size_t len = 0; len <= size; ++len) {
    ProxyParse p = parseExact(data, len);
    if (seen_invalid) FUZZ_CHECK(p.status == Status::Invalid, "Invalid stays Invalid");
    if (seen_ok) {
      FUZZ_CHECK(p.status == Status::Ok, "Ok stays Ok as more bytes arrive");
      FUZZ_CHECK(p.header_len == first_ok.header_len, "more bytes do not change header_len");
      FUZZ_CHECK(normalise(p.addr) == normalise(first_ok.addr),
                 "more bytes do not change the addresses");
      continue;
    }
    switch (p.status) {
      case Status::Incomplete:
        break;
      case Status::Invalid:
        FUZZ_CHECK(!p.error.empty(), "Invalid says why");
        seen_invalid = true;
        break;
      case Status::Ok: {
        FUZZ_CHECK(p.header_len > 0, "an Ok header has a length");
        FUZZ_CHECK(p.header_len <= len, "an Ok header lies within the bytes received");
        FUZZ_CHECK(p.header_len <= spliced::kMaxProxyHeader, "an Ok header is within the limit");
        FUZZ_CHECK(p.addr.family == AF_UNSPEC || p.addr.family == AF_INET ||
                       p.addr.family == AF_INET6 || p.addr.family == AF_UNIX,
                   "an Ok header has a known family");
        (void)spliced::describeProxySource(p.addr);
        (void)spliced::proxySource(p.addr).display();
        const bool v1 = data[0] == 'P';
        checkReencoded(v1 ? spliced::encodeProxyV1(p.addr) : spliced::encodeProxyV2(p.addr), p.addr,
                       v1);
        checkReencoded(v1 ? spliced::encodeProxyV2(p.addr) : spliced::encodeProxyV1(p.addr), p.addr,
                       !v1);
        seen_ok = true;
        first_ok = p;
        break;
      }
    }
  }
  return 0;
}
