#pragma once
// The PROXY protocol (HAProxy doc/proxy-protocol.txt), versions 1 (text) and 2 (binary): encodes
// the header spliced writes to an upstream before the first proxied byte, and strictly parses the
// header a front load balancer sends when a listener has `accept_proxy: true`.
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "spliced/core/address.hpp"

namespace spliced {

// Encodes a header. v1: "PROXY TCP4 a b p q\r\n" / "PROXY TCP6 ...\r\n" / "PROXY UNKNOWN\r\n"
// (UNIX and UNSPEC are UNKNOWN in v1). v2: the 12-byte signature, version 2 command PROXY
// (0x21), family/transport byte (0x11 TCP4, 0x21 TCP6, 0x31 UNIX stream with 108-byte paths,
// 0x00 UNSPEC with the LOCAL command 0x20), big-endian length, addresses; no TLVs.
// IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are written as TCP4 when both ends are mapped or
// v4; an IPv4 end paired with a real IPv6 end is written as a mapped address in TCP6. An
// AF_INET/AF_INET6 family whose src or dst holds neither is encoded as UNKNOWN / LOCAL.
std::string encodeProxyV1(const ProxyAddresses& a);
std::string encodeProxyV2(const ProxyAddresses& a);

// The result of parsing the first bytes received on a connection.
struct ProxyParse {
  enum class Status { Incomplete, Invalid, Ok } status = Status::Incomplete;
  size_t header_len = 0;  // Ok: bytes to consume; the rest belongs to the stream
  ProxyAddresses addr;    // Ok
  std::string error;      // Invalid: why, for the log ("v1: bad source port", ...)
};

// Upper bound of a header this parser accepts. v2: 16 + 216 addresses + TLV room. (v1 lines are
// at most 107 bytes including the CRLF.)
inline constexpr size_t kMaxProxyHeader = 536;

// Parses a v1 or v2 header from `data` (the first `len` bytes of a connection, possibly fewer
// than a whole header). Strict: v1 exactly as the spec says (max 107 bytes incl. CRLF, single
// spaces, TCP4/TCP6/UNKNOWN, addresses that inet_pton accepts for the family, ports 0-65535
// without leading zeros, CRLF terminator; after UNKNOWN the rest of the line is ignored). v2:
// signature, version 2, command LOCAL or PROXY, a family/transport the spec defines; with PROXY
// only TCP4, TCP6, UNIX stream or UNSPEC (datagram transports are refused), a length large
// enough for the addresses, TLVs after them length-checked and skipped. With LOCAL, or PROXY
// and UNSPEC, the block after the 16 bytes is skipped unread and the family is AF_UNSPEC.
// Incomplete only while the bytes so far are a valid prefix of some header; Invalid as soon as
// they cannot be.
ProxyParse parseProxyHeader(const uint8_t* data, size_t len);

// The original client of a parsed header, as describePeer() would give it. For AF_UNIX the ip is
// "unix"; for AF_UNSPEC it is "unknown" with port 0 (callers should use the real peer instead).
PeerInfo proxySource(const ProxyAddresses& a);

// Describes the source for logs: "192.0.2.1:5000", "[2001:db8::1]:443", "unix", "unknown".
std::string describeProxySource(const ProxyAddresses& a);

}  // namespace spliced
