// spliced/proxy/proxy_protocol.hpp: PROXY protocol v1/v2 encoding and strict parsing.
#include <arpa/inet.h>
#include <sys/un.h>

#include <catch2/catch.hpp>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <initializer_list>
#include <string>
#include <vector>

#include "spliced/proxy/proxy_protocol.hpp"

using spliced::describeProxySource;
using spliced::encodeProxyV1;
using spliced::encodeProxyV2;
using spliced::kMaxProxyHeader;
using spliced::parseProxyHeader;
using spliced::ProxyAddresses;
using spliced::ProxyParse;
using Status = spliced::ProxyParse::Status;

namespace {

const std::string kSig("\x0D\x0A\x0D\x0A\x00\x0D\x0A\x51\x55\x49\x54\x0A", 12);

// Bytes from a list of values 0-255, for exact binary headers.
std::string bytes(std::initializer_list<int> values) {
  std::string out;
  for (int v : values) out.push_back(static_cast<char>(v));
  return out;
}

// The 16 fixed bytes of a v2 header.
std::string v2Head(int ver_cmd, int fam, int len) {
  return kSig + bytes({ver_cmd, fam, (len >> 8) & 0xff, len & 0xff});
}

void setInet(sockaddr_storage& ss, socklen_t& len, const std::string& ip, uint16_t port) {
  ss = {};
  if (ip.find(':') != std::string::npos) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&ss);
    in6->sin6_family = AF_INET6;
    REQUIRE(inet_pton(AF_INET6, ip.c_str(), &in6->sin6_addr) == 1);
    in6->sin6_port = htons(port);
    len = sizeof(sockaddr_in6);
  } else {
    auto* in = reinterpret_cast<sockaddr_in*>(&ss);
    in->sin_family = AF_INET;
    REQUIRE(inet_pton(AF_INET, ip.c_str(), &in->sin_addr) == 1);
    in->sin_port = htons(port);
    len = sizeof(sockaddr_in);
  }
}

// A TCP pair; the family is AF_INET6 as soon as one end is IPv6 (as from a dual-stack socket).
ProxyAddresses inetPair(const std::string& src, uint16_t sport, const std::string& dst,
                        uint16_t dport) {
  ProxyAddresses a;
  setInet(a.src, a.src_len, src, sport);
  setInet(a.dst, a.dst_len, dst, dport);
  a.family = a.src.ss_family == AF_INET6 || a.dst.ss_family == AF_INET6 ? AF_INET6 : AF_INET;
  return a;
}

void setUnix(sockaddr_storage& ss, socklen_t& len, const std::string& path) {
  ss = {};
  auto* un = reinterpret_cast<sockaddr_un*>(&ss);
  un->sun_family = AF_UNIX;
  std::memcpy(un->sun_path, path.data(), path.size());
  len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
}

ProxyAddresses unixPair(const std::string& src, const std::string& dst) {
  ProxyAddresses a;
  a.family = AF_UNIX;
  setUnix(a.src, a.src_len, src);
  setUnix(a.dst, a.dst_len, dst);
  return a;
}

ProxyParse parse(const std::string& s) {
  return parseProxyHeader(reinterpret_cast<const uint8_t*>(s.data()), s.size());
}

const char* statusName(Status s) {
  switch (s) {
    case Status::Incomplete:
      return "Incomplete";
    case Status::Invalid:
      return "Invalid";
    case Status::Ok:
      return "Ok";
  }
  return "?";
}

// Printable form of header bytes for failure messages.
std::string show(const std::string& s) {
  std::string out;
  for (unsigned char c : s) {
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out.push_back(static_cast<char>(c));
    } else {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  return out;
}

ProxyParse parseOk(const std::string& s) {
  ProxyParse p = parse(s);
  INFO("parse(\"" << show(s) << "\") -> " << statusName(p.status) << " " << p.error);
  REQUIRE(p.status == Status::Ok);
  return p;
}

std::string parseInvalid(const std::string& s) {
  ProxyParse p = parse(s);
  INFO("parse(\"" << show(s) << "\") -> " << statusName(p.status) << " (want Invalid)");
  REQUIRE(p.status == Status::Invalid);
  CHECK_FALSE(p.error.empty());
  return p.error;
}

// Exact equality of one end: same length and same bytes over that length.
bool sameEnd(const sockaddr_storage& a, socklen_t alen, const sockaddr_storage& b, socklen_t blen) {
  return alen == blen && std::memcmp(&a, &b, alen) == 0;
}

void requireSameAddresses(const ProxyAddresses& got, const ProxyAddresses& want) {
  REQUIRE(got.family == want.family);
  CHECK(sameEnd(got.src, got.src_len, want.src, want.src_len));
  CHECK(sameEnd(got.dst, got.dst_len, want.dst, want.dst_len));
}

}  // namespace

// ---- Encoding ----

TEST_CASE("encodeProxyV1: TCP4", "[proxy_protocol]") {
  CHECK(encodeProxyV1(inetPair("192.0.2.1", 5000, "198.51.100.2", 443)) ==
        "PROXY TCP4 192.0.2.1 198.51.100.2 5000 443\r\n");
  CHECK(encodeProxyV1(inetPair("0.0.0.0", 0, "255.255.255.255", 65535)) ==
        "PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n");
}

TEST_CASE("encodeProxyV1: TCP6 in compressed lower-case form", "[proxy_protocol]") {
  CHECK(encodeProxyV1(inetPair("2001:DB8:0:0:0:0:0:1", 40000, "2001:db8::2", 443)) ==
        "PROXY TCP6 2001:db8::1 2001:db8::2 40000 443\r\n");
}

TEST_CASE("encodeProxyV1: IPv4-mapped ends are written as TCP4", "[proxy_protocol]") {
  CHECK(encodeProxyV1(inetPair("::ffff:192.0.2.1", 5000, "::ffff:198.51.100.2", 443)) ==
        "PROXY TCP4 192.0.2.1 198.51.100.2 5000 443\r\n");
  // One mapped end, one plain IPv4 end: still TCP4.
  CHECK(encodeProxyV1(inetPair("::ffff:192.0.2.1", 5000, "198.51.100.2", 443)) ==
        "PROXY TCP4 192.0.2.1 198.51.100.2 5000 443\r\n");
  // An IPv4 end next to a real IPv6 end must be mapped into TCP6.
  CHECK(encodeProxyV1(inetPair("192.0.2.1", 5000, "2001:db8::2", 443)) ==
        "PROXY TCP6 ::ffff:192.0.2.1 2001:db8::2 5000 443\r\n");
}

TEST_CASE("encodeProxyV1: UNIX and UNSPEC are UNKNOWN", "[proxy_protocol]") {
  CHECK(encodeProxyV1(unixPair("/run/client.sock", "/run/spliced.sock")) == "PROXY UNKNOWN\r\n");
  CHECK(encodeProxyV1(ProxyAddresses{}) == "PROXY UNKNOWN\r\n");
  // An inet family whose ends are not filled in cannot be written as TCP4.
  ProxyAddresses empty_inet;
  empty_inet.family = AF_INET;
  CHECK(encodeProxyV1(empty_inet) == "PROXY UNKNOWN\r\n");
}

TEST_CASE("encodeProxyV2: TCP4 exact bytes", "[proxy_protocol]") {
  std::string want = kSig + bytes({0x21, 0x11, 0x00, 0x0c,    // PROXY, TCP4, 12
                                   0xc0, 0x00, 0x02, 0x01,    // 192.0.2.1
                                   0xc6, 0x33, 0x64, 0x02,    // 198.51.100.2
                                   0x13, 0x88, 0x01, 0xbb});  // 5000, 443
  CHECK(encodeProxyV2(inetPair("192.0.2.1", 5000, "198.51.100.2", 443)) == want);
  CHECK(encodeProxyV2(inetPair("::ffff:192.0.2.1", 5000, "::ffff:198.51.100.2", 443)) == want);
}

TEST_CASE("encodeProxyV2: TCP6 exact bytes", "[proxy_protocol]") {
  std::string want = kSig + bytes({0x21, 0x21, 0x00, 0x24,  // PROXY, TCP6, 36
                                   0x20, 0x01, 0x0d, 0xb8, 0,    0,    0,    0,   0, 0, 0, 0, 0, 0,
                                   0,    0x01, 0x20, 0x01, 0x0d, 0xb8, 0,    0,   0, 0, 0, 0, 0, 0,
                                   0,    0,    0,    0x02, 0x9c, 0x40, 0x01, 0xbb});  // 40000, 443
  CHECK(encodeProxyV2(inetPair("2001:db8::1", 40000, "2001:db8::2", 443)) == want);

  std::string mixed =
      kSig + bytes({0x21, 0x21, 0x00, 0x24,  //
                    0,    0,    0,    0,    0,    0,    0,    0,    0,    0,    0xff, 0xff,
                    192,  0,    2,    1,    0x20, 0x01, 0x0d, 0xb8, 0,    0,    0,    0,
                    0,    0,    0,    0,    0,    0,    0,    0x02, 0x13, 0x88, 0x01, 0xbb});
  CHECK(encodeProxyV2(inetPair("192.0.2.1", 5000, "2001:db8::2", 443)) == mixed);
}

TEST_CASE("encodeProxyV2: UNIX stream with 108-byte zero-padded paths", "[proxy_protocol]") {
  std::string src_path = "/run/client.sock";
  std::string dst_path = "/run/spliced.sock";
  std::string want = kSig + bytes({0x21, 0x31, 0x00, 0xd8}) + src_path +
                     std::string(108 - src_path.size(), '\0') + dst_path +
                     std::string(108 - dst_path.size(), '\0');
  std::string got = encodeProxyV2(unixPair(src_path, dst_path));
  REQUIRE(got.size() == 16u + 216u);
  CHECK(got == want);

  // An unnamed client socket (getpeername gives only the family) is 108 zero bytes.
  ProxyAddresses unnamed = unixPair("", dst_path);
  unnamed.src_len = sizeof(sa_family_t);
  std::string want_unnamed = kSig + bytes({0x21, 0x31, 0x00, 0xd8}) + std::string(108, '\0') +
                             dst_path + std::string(108 - dst_path.size(), '\0');
  CHECK(encodeProxyV2(unnamed) == want_unnamed);
}

TEST_CASE("encodeProxyV2: UNSPEC is LOCAL with no addresses", "[proxy_protocol]") {
  CHECK(encodeProxyV2(ProxyAddresses{}) == kSig + bytes({0x20, 0x00, 0x00, 0x00}));
}

// ---- Round trips ----

TEST_CASE("round trip: encode then parse gives the same addresses", "[proxy_protocol]") {
  struct Case {
    const char* name;
    ProxyAddresses in;
    ProxyAddresses want;  // what the parser must give back
  };
  ProxyAddresses unspec;
  std::vector<Case> cases = {
      {"TCP4", inetPair("192.0.2.1", 5000, "198.51.100.2", 443),
       inetPair("192.0.2.1", 5000, "198.51.100.2", 443)},
      {"TCP4 extremes", inetPair("0.0.0.0", 0, "255.255.255.255", 65535),
       inetPair("0.0.0.0", 0, "255.255.255.255", 65535)},
      {"TCP6", inetPair("2001:db8::1", 40000, "2001:db8:ffff::2", 443),
       inetPair("2001:db8::1", 40000, "2001:db8:ffff::2", 443)},
      {"mapped becomes TCP4", inetPair("::ffff:192.0.2.1", 5000, "::ffff:198.51.100.2", 443),
       inetPair("192.0.2.1", 5000, "198.51.100.2", 443)},
      {"mixed becomes TCP6", inetPair("192.0.2.1", 5000, "2001:db8::2", 443),
       inetPair("::ffff:192.0.2.1", 5000, "2001:db8::2", 443)},
      {"UNSPEC", unspec, unspec},
  };
  for (const auto& c : cases) {
    for (int version : {1, 2}) {
      INFO(c.name << " v" << version);
      std::string h = version == 1 ? encodeProxyV1(c.in) : encodeProxyV2(c.in);
      ProxyParse p = parseOk(h);
      CHECK(p.header_len == h.size());
      CHECK(p.error.empty());
      requireSameAddresses(p.addr, c.want);
    }
  }
}

TEST_CASE("round trip: UNIX v2 keeps both paths - v1 degrades to UNKNOWN", "[proxy_protocol]") {
  ProxyAddresses in = unixPair("/run/client.sock", "/run/spliced.sock");
  std::string h2 = encodeProxyV2(in);
  ProxyParse p = parseOk(h2);
  CHECK(p.header_len == h2.size());
  requireSameAddresses(p.addr, in);
  CHECK(std::string(reinterpret_cast<const sockaddr_un*>(&p.addr.src)->sun_path) ==
        "/run/client.sock");

  std::string h1 = encodeProxyV1(in);
  ProxyParse p1 = parseOk(h1);
  CHECK(p1.header_len == h1.size());
  CHECK(p1.addr.family == AF_UNSPEC);
}

// ---- Parsing: what follows the header, prefixes ----

TEST_CASE("parse: bytes after the header belong to the stream", "[proxy_protocol]") {
  std::string v1 = "PROXY TCP4 192.0.2.1 198.51.100.2 5000 443\r\n";
  ProxyParse p = parseOk(v1 + "GET / HTTP/1.1\r\n\r\n");
  CHECK(p.header_len == v1.size());
  CHECK(p.header_len == 44u);
  requireSameAddresses(p.addr, inetPair("192.0.2.1", 5000, "198.51.100.2", 443));

  std::string v2 = encodeProxyV2(inetPair("2001:db8::1", 40000, "2001:db8::2", 443));
  // Stream data that itself looks like a header must not be consumed.
  ProxyParse q = parseOk(v2 + v1 + std::string(1, '\0'));
  CHECK(q.header_len == 16u + 36u);
  requireSameAddresses(q.addr, inetPair("2001:db8::1", 40000, "2001:db8::2", 443));

  ProxyParse u = parseOk("PROXY UNKNOWN\r\nPROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n");
  CHECK(u.header_len == 15u);
  CHECK(u.addr.family == AF_UNSPEC);
}

TEST_CASE("parse: every prefix of a valid header is Incomplete", "[proxy_protocol]") {
  std::string tlvs = bytes({0x04, 0x00, 0x02, 0xaa, 0xbb,  // NOOP, 2 bytes
                            0x02, 0x00, 0x00});            // AUTHORITY, empty
  std::vector<std::string> headers = {
      "PROXY TCP4 192.0.2.1 198.51.100.2 5000 443\r\n",
      "PROXY TCP4 0.0.0.0 10.0.0.10 0 65535\r\n",
      "PROXY TCP6 2001:db8::1 ::ffff:192.0.2.1 40000 0\r\n",
      "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ::1 65535 65535\r\n",
      "PROXY UNKNOWN\r\n",
      "PROXY UNKNOWN 192.0.2.1 198.51.100.2 5000 443\r\n",
      encodeProxyV2(inetPair("192.0.2.1", 5000, "198.51.100.2", 443)),
      encodeProxyV2(inetPair("2001:db8::1", 40000, "2001:db8::2", 443)),
      encodeProxyV2(unixPair("/run/client.sock", "/run/spliced.sock")),
      encodeProxyV2(ProxyAddresses{}),
      v2Head(0x21, 0x11, 12 + static_cast<int>(tlvs.size())) +
          bytes({192, 0, 2, 1, 198, 51, 100, 2, 0x13, 0x88, 0x01, 0xbb}) + tlvs,
  };
  for (const auto& h : headers) {
    for (size_t k = 0; k < h.size(); ++k) {
      std::string prefix = h.substr(0, k);
      ProxyParse p = parse(prefix);
      INFO("prefix of " << k << " bytes of \"" << show(h) << "\": " << statusName(p.status) << " "
                        << p.error);
      REQUIRE(p.status == Status::Incomplete);
    }
    ProxyParse full = parseOk(h);
    CHECK(full.header_len == h.size());
  }
}

TEST_CASE("parse: v2 TLVs after the addresses are skipped", "[proxy_protocol]") {
  std::string tlvs = bytes({0x01, 0x00, 0x02, 'h', '2',  // ALPN "h2"
                            0x04, 0x00, 0x00});          // NOOP, empty
  std::string h = v2Head(0x21, 0x11, 12 + 8) +
                  bytes({192, 0, 2, 1, 198, 51, 100, 2, 0x13, 0x88, 0x01, 0xbb}) + tlvs;
  ProxyParse p = parseOk(h + "data");
  CHECK(p.header_len == 36u);
  requireSameAddresses(p.addr, inetPair("192.0.2.1", 5000, "198.51.100.2", 443));

  // The largest header allowed: one TLV filling the room up to kMaxProxyHeader.
  size_t value_len = kMaxProxyHeader - 16 - 12 - 3;
  std::string big =
      v2Head(0x21, 0x11, static_cast<int>(kMaxProxyHeader - 16)) +
      bytes({192, 0, 2, 1, 198, 51, 100, 2, 0x13, 0x88, 0x01, 0xbb}) +
      bytes({0x04, static_cast<int>(value_len >> 8), static_cast<int>(value_len & 0xff)}) +
      std::string(value_len, 'x');
  REQUIRE(big.size() == kMaxProxyHeader);
  CHECK(parseOk(big).header_len == kMaxProxyHeader);
}

TEST_CASE("parse: v2 LOCAL and UNSPEC use the real connection", "[proxy_protocol]") {
  // LOCAL with an address block (a health check that filled it in): skipped, family ignored.
  std::string local =
      v2Head(0x20, 0x11, 12) + bytes({192, 0, 2, 1, 198, 51, 100, 2, 0x13, 0x88, 0x01, 0xbb});
  ProxyParse p = parseOk(local + "x");
  CHECK(p.header_len == 28u);
  CHECK(p.addr.family == AF_UNSPEC);
  CHECK(p.addr.src_len == 0u);

  // PROXY with UNSPEC family: accepted, opaque block skipped.
  std::string unspec = v2Head(0x21, 0x00, 3) + bytes({1, 2, 3});
  ProxyParse u = parseOk(unspec);
  CHECK(u.header_len == 19u);
  CHECK(u.addr.family == AF_UNSPEC);
}

TEST_CASE("parse: v1 UNKNOWN ignores the rest of the line", "[proxy_protocol]") {
  std::string h = "PROXY UNKNOWN 192.0.2.1 198.51.100.2 5000 443\r\n";
  ProxyParse p = parseOk(h + "hello");
  CHECK(p.header_len == h.size());
  CHECK(p.addr.family == AF_UNSPEC);
  CHECK(p.addr.src_len == 0u);
  // Anything but CR/LF may follow, even what TCP4 would refuse.
  CHECK(parseOk("PROXY UNKNOWN  garbage  here 99999\r\n").addr.family == AF_UNSPEC);
}

TEST_CASE("parse: v1 line length limit is 107 bytes including CRLF", "[proxy_protocol]") {
  std::string head = "PROXY UNKNOWN ";  // 14 bytes
  std::string longest = head + std::string(107 - 14 - 2, 'a') + "\r\n";
  REQUIRE(longest.size() == 107u);
  CHECK(parseOk(longest).header_len == 107u);

  std::string too_long = head + std::string(107 - 14 - 1, 'a') + "\r\n";
  REQUIRE(too_long.size() == 108u);
  CHECK(parseInvalid(too_long) == "v1: no CRLF within 107 bytes");
  // Without the CRLF, Invalid as soon as 107 bytes are in, without waiting for more.
  CHECK(parseInvalid(head + std::string(107 - 14, 'a')) == "v1: no CRLF within 107 bytes");
  ProxyParse p = parse(head + std::string(107 - 14 - 1, 'a'));
  CHECK(p.status == Status::Incomplete);
}

// ---- Parsing: Invalid ----

TEST_CASE("parse: v1 malformed lines are Invalid", "[proxy_protocol]") {
  struct Case {
    std::string in;
    std::string error;
  };
  std::vector<Case> cases = {
      {"GET / HTTP/1.1\r\n\r\n",
       "not a PROXY protocol header (first byte is neither 'P' nor 0x0D)"},
      {"G", "not a PROXY protocol header (first byte is neither 'P' nor 0x0D)"},
      {"PROXX", "v1: does not start with \"PROXY \""},
      {"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "v1: empty protocol (extra space?)"},
      {"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "v1: unknown protocol 'TCP5'"},
      {"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", "v1: unknown protocol 'tcp4'"},
      {"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", "v1: empty source address (extra space?)"},
      {"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "v1: empty destination address (extra space?)"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8  1 2\r\n", "v1: empty source port (extra space?)"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 1  2\r\n", "v1: empty destination port (extra space?)"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "v1: unexpected data after the destination port"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 x\r\n", "v1: unexpected data after the destination port"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 1 2x\r\n", "v1: bad destination port"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", "v1: LF without CR"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX", "v1: CR not followed by LF"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", "v1: CR not followed by LF"},
      {"PROXY TCP4 256.1.1.1 5.6.7.8 1 2\r\n", "v1: bad source address"},
      {"PROXY TCP4 1.2.3.4 5.6.7 1 2\r\n", "v1: bad destination address"},
      {"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", "v1: bad source address"},
      {"PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n", "v1: bad source address"},
      {"PROXY TCP6 192.0.2.1 2001:db8::2 1 2\r\n", "v1: bad source address"},
      {"PROXY TCP6 2001:db8::1 2001:db8::g 1 2\r\n", "v1: bad destination address"},
      {"PROXY TCP6 2001:db8::1%eth0 ::1 1 2\r\n", "v1: bad source address"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", "v1: bad source port"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n", "v1: bad destination port"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n", "v1: bad source port"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", "v1: bad source port"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", "v1: bad source port"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n", "v1: bad destination port"},
      {"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "v1: missing destination port"},
      {"PROXY TCP4\r\n", "v1: missing source address"},
      {"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n", "v1: bad source address"},
      {std::string("PROXY TCP4 1.2.3.4\0 5.6.7.8 1 2\r\n", 33), "v1: bad source address"},
      {"PROXY UNKNOWNX\r\n", "v1: unknown protocol 'UNKNOWNX'"},
      {"PROXY UNKNOWN\n", "v1: LF without CR"},
  };
  for (const auto& c : cases) {
    CHECK(parseInvalid(c.in) == c.error);
  }
}

TEST_CASE("parse: v1 errors are found before the CRLF arrives", "[proxy_protocol]") {
  // None of these can be the start of a valid header: Invalid now, not Incomplete.
  std::vector<std::string> prefixes = {
      "X",
      "PROXY_",
      "PROXY TCP5",
      "PROXY TCP4\r",
      "PROXY TCP4  ",
      "PROXY TCP4 256",
      "PROXY TCP4 1.2.3.4.",
      "PROXY TCP4 2001:",
      "PROXY TCP6 ::1 1.2.3.4 ",
      "PROXY TCP6 12345",
      "PROXY TCP4 1.2.3.4 5.6.7.8 08",  // "0" alone is fine; "08" cannot grow into a port
      "PROXY TCP4 1.2.3.4 5.6.7.8 65536",
      "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ",
  };
  for (const auto& s : prefixes) parseInvalid(s);
  CHECK(parse("PROXY TCP4 1.2.3.4 5.6.7.8 0").status == Status::Incomplete);
  CHECK(parse("PROXY TCP4 1.2.3.4 5.6.7.8 0 0\r").status == Status::Incomplete);
}

TEST_CASE("parse: v2 malformed headers are Invalid", "[proxy_protocol]") {
  std::string tcp4_addrs = bytes({192, 0, 2, 1, 198, 51, 100, 2, 0x13, 0x88, 0x01, 0xbb});
  struct Case {
    std::string in;
    std::string error;
  };
  std::string bad_sig = kSig;
  bad_sig[7] = 'X';
  std::vector<Case> cases = {
      {bad_sig + bytes({0x21, 0x11, 0x00, 0x0c}) + tcp4_addrs, "v2: bad signature"},
      {kSig.substr(0, 4) + std::string(1, '\x01'), "v2: bad signature"},
      {v2Head(0x11, 0x11, 12) + tcp4_addrs, "v2: unsupported version 1"},
      {v2Head(0x31, 0x11, 12) + tcp4_addrs, "v2: unsupported version 3"},
      {v2Head(0x22, 0x11, 12) + tcp4_addrs, "v2: unknown command 2"},
      {v2Head(0x2f, 0x11, 12) + tcp4_addrs, "v2: unknown command 15"},
      {v2Head(0x21, 0x12, 12) + tcp4_addrs, "v2: datagram transport 0x12 on a stream connection"},
      {v2Head(0x21, 0x22, 36) + std::string(36, '\0'),
       "v2: datagram transport 0x22 on a stream connection"},
      {v2Head(0x21, 0x32, 216) + std::string(216, '\0'),
       "v2: datagram transport 0x32 on a stream connection"},
      {v2Head(0x21, 0x10, 12) + tcp4_addrs, "v2: unsupported family/transport 0x10"},
      {v2Head(0x21, 0x01, 0), "v2: unsupported family/transport 0x01"},
      {v2Head(0x21, 0x41, 12) + tcp4_addrs, "v2: unknown family/transport 0x41"},
      {v2Head(0x21, 0x13, 12) + tcp4_addrs, "v2: unknown family/transport 0x13"},
      {v2Head(0x20, 0x41, 0), "v2: unknown family/transport 0x41"},
      {v2Head(0x21, 0x11, 11) + tcp4_addrs.substr(0, 11),
       "v2: length 11 is smaller than the 12-byte addresses"},
      {v2Head(0x21, 0x21, 12) + tcp4_addrs, "v2: length 12 is smaller than the 36-byte addresses"},
      {v2Head(0x21, 0x31, 215) + std::string(215, '\0'),
       "v2: length 215 is smaller than the 216-byte addresses"},
      {v2Head(0x21, 0x11, 521), "v2: header of 537 bytes exceeds the 536-byte limit"},
      {v2Head(0x20, 0x00, 0xffff), "v2: header of 65551 bytes exceeds the 536-byte limit"},
      {v2Head(0x21, 0x11, 12 + 7) + tcp4_addrs + bytes({0x04, 0x00, 0x05, 1, 2, 3, 4}),
       "v2: TLV type 0x04 runs past the header length"},
      {v2Head(0x21, 0x11, 12 + 5 + 3) + tcp4_addrs + bytes({0x01, 0x00, 0x02, 'h', '2'}) +
           bytes({0x02, 0x00, 0x01}),
       "v2: TLV type 0x02 runs past the header length"},
      {v2Head(0x21, 0x11, 12 + 2) + tcp4_addrs + bytes({0x04, 0x00}), "v2: truncated TLV header"},
  };
  for (const auto& c : cases) {
    CHECK(parseInvalid(c.in) == c.error);
  }
}

TEST_CASE("parse: v2 errors are found as soon as the bytes that show them arrive",
          "[proxy_protocol]") {
  // Each is cut right after the offending byte(s); the rest of the header never arrives.
  parseInvalid(kSig.substr(0, 5) + "X");
  parseInvalid(kSig + bytes({0x11}));
  parseInvalid(kSig + bytes({0x23}));
  parseInvalid(kSig + bytes({0x21, 0x12}));
  parseInvalid(v2Head(0x21, 0x11, 600));
  parseInvalid(v2Head(0x21, 0x11, 4));
  // A TLV header that overruns the length is refused before its value (or the rest) arrives.
  std::string tcp4_addrs = bytes({192, 0, 2, 1, 198, 51, 100, 2, 0x13, 0x88, 0x01, 0xbb});
  parseInvalid(v2Head(0x21, 0x11, 100) + tcp4_addrs + bytes({0x04, 0x01, 0x00}));
  // ...while a TLV that fits is Incomplete until the whole length is here.
  CHECK(parse(v2Head(0x21, 0x11, 100) + tcp4_addrs + bytes({0x04, 0x00, 85})).status ==
        Status::Incomplete);
}

// ---- Describing the source ----

TEST_CASE("describeProxySource: text for logs", "[proxy_protocol]") {
  CHECK(describeProxySource(parseOk("PROXY TCP4 192.0.2.1 198.51.100.2 5000 443\r\n").addr) ==
        "192.0.2.1:5000");
  CHECK(describeProxySource(parseOk("PROXY TCP6 2001:db8::1 ::1 443 80\r\n").addr) ==
        "[2001:db8::1]:443");
  CHECK(describeProxySource(parseOk("PROXY UNKNOWN\r\n").addr) == "unknown");
  CHECK(describeProxySource(
            parseOk(encodeProxyV2(unixPair("/run/client.sock", "/run/spliced.sock"))).addr) ==
        "unix");
  auto peer = spliced::proxySource(parseOk("PROXY TCP4 192.0.2.1 198.51.100.2 5000 443\r\n").addr);
  CHECK(peer.ip == "192.0.2.1");
  CHECK(peer.port == 5000);
}
