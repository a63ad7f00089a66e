// spliced/core/address.hpp: listen addresses, CIDR allow lists and the textual form of peers.
#include <arpa/inet.h>
#include <sys/un.h>

#include <catch2/catch.hpp>
#include <cstddef>
#include <cstring>
#include <string>
#include <vector>

#include "spliced/core/address.hpp"

using spliced::allowed;
using spliced::Cidr;
using spliced::describePeer;
using spliced::parseSocketAddress;
using spliced::PeerInfo;
using spliced::SocketAddress;

namespace {

SocketAddress addressOf(const std::string& text) {
  auto p = parseSocketAddress(text);
  INFO("parseSocketAddress(\"" << text << "\")" << (p.ok() ? "" : " failed: " + p.error()));
  REQUIRE(p.ok());
  return p.value();
}

std::string addressError(const std::string& text) {
  auto p = parseSocketAddress(text);
  INFO("parseSocketAddress(\"" << text << "\") should fail");
  REQUIRE_FALSE(p.ok());
  return p.error();
}

Cidr cidrOf(const std::string& text) {
  auto p = Cidr::parse(text);
  INFO("Cidr::parse(\"" << text << "\")" << (p.ok() ? "" : " failed: " + p.error()));
  REQUIRE(p.ok());
  return p.value();
}

std::string cidrError(const std::string& text) {
  auto p = Cidr::parse(text);
  INFO("Cidr::parse(\"" << text << "\") should fail");
  REQUIRE_FALSE(p.ok());
  return p.error();
}

sockaddr_in v4(const char* ip, uint16_t port = 0) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  REQUIRE(inet_pton(AF_INET, ip, &sa.sin_addr) == 1);
  return sa;
}

sockaddr_in6 v6(const char* ip, uint16_t port = 0) {
  sockaddr_in6 sa{};
  sa.sin6_family = AF_INET6;
  sa.sin6_port = htons(port);
  REQUIRE(inet_pton(AF_INET6, ip, &sa.sin6_addr) == 1);
  return sa;
}

sockaddr_un unixPeer() {
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  return sa;
}

template <typename T>
const sockaddr* sa(const T& s) {
  return reinterpret_cast<const sockaddr*>(&s);
}

bool contains(const Cidr& c, const char* ip) {
  if (std::strchr(ip, ':') != nullptr) {
    auto s = v6(ip);
    return c.contains(sa(s));
  }
  auto s = v4(ip);
  return c.contains(sa(s));
}

}  // namespace

TEST_CASE("parseSocketAddress: IPv4 host:port", "[address]") {
  auto a = addressOf("127.0.0.1:5140");
  CHECK(a.text == "127.0.0.1:5140");
  CHECK(a.family() == AF_INET);
  CHECK_FALSE(a.isUnix());
  CHECK(a.path.empty());
  CHECK(a.len == sizeof(sockaddr_in));
  const auto* in = reinterpret_cast<const sockaddr_in*>(&a.storage);
  CHECK(ntohs(in->sin_port) == 5140);
  CHECK(ntohl(in->sin_addr.s_addr) == INADDR_LOOPBACK);
}

TEST_CASE("parseSocketAddress: bracketed IPv6", "[address]") {
  auto a = addressOf("[::1]:80");
  CHECK(a.text == "[::1]:80");
  CHECK(a.family() == AF_INET6);
  CHECK(a.len == sizeof(sockaddr_in6));
  const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&a.storage);
  CHECK(ntohs(in6->sin6_port) == 80);
  CHECK(IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr));

  auto any = addressOf("[::]:8443");
  CHECK(any.text == "[::]:8443");
  CHECK(any.family() == AF_INET6);

  // The canonical text is inet_ntop's, whatever the spelling in the config.
  CHECK(addressOf("[2001:DB8:0:0::1]:443").text == "[2001:db8::1]:443");
}

TEST_CASE("parseSocketAddress: * means every IPv4 address", "[address]") {
  auto a = addressOf("*:80");
  CHECK(a.text == "0.0.0.0:80");
  CHECK(a.family() == AF_INET);
  const auto* in = reinterpret_cast<const sockaddr_in*>(&a.storage);
  CHECK(in->sin_addr.s_addr == htonl(INADDR_ANY));
  CHECK(ntohs(in->sin_port) == 80);
  CHECK(a == addressOf("0.0.0.0:80"));
  CHECK_FALSE(a == addressOf("0.0.0.0:81"));
}

TEST_CASE("parseSocketAddress: unix:/path", "[address]") {
  auto a = addressOf("unix:/run/spliced.sock");
  CHECK(a.isUnix());
  CHECK(a.path == "/run/spliced.sock");
  CHECK(a.text == "unix:/run/spliced.sock");
  CHECK(a.family() == AF_UNIX);
  CHECK(a.len == offsetof(sockaddr_un, sun_path) + std::strlen("/run/spliced.sock") + 1);
  const auto* un = reinterpret_cast<const sockaddr_un*>(&a.storage);
  CHECK(std::string(un->sun_path) == "/run/spliced.sock");

  CHECK(addressError("unix:") == "unix: needs a path, e.g. unix:/run/spliced.sock");
}

TEST_CASE("parseSocketAddress: unix path length limit is sun_path minus its NUL", "[address]") {
  const size_t max = sizeof(sockaddr_un::sun_path) - 1;  // 107 on Linux
  std::string longest = "/" + std::string(max - 1, 'a');
  auto a = addressOf("unix:" + longest);
  CHECK(a.path == longest);
  CHECK(a.len == offsetof(sockaddr_un, sun_path) + max + 1);

  CHECK(addressError("unix:" + longest + "b") ==
        "unix socket path is longer than " + std::to_string(max) + " bytes");
}

TEST_CASE("parseSocketAddress: port 0 is allowed", "[address]") {
  auto a = addressOf("127.0.0.1:0");
  CHECK(a.text == "127.0.0.1:0");
  CHECK(reinterpret_cast<const sockaddr_in*>(&a.storage)->sin_port == 0);
  CHECK(addressOf("[::1]:0").text == "[::1]:0");
  CHECK(addressOf("127.0.0.1:65535").text == "127.0.0.1:65535");
}

TEST_CASE("parseSocketAddress: missing or bad port", "[address]") {
  CHECK(addressError("127.0.0.1") ==
        "'127.0.0.1' has no port (expected host:port, [v6]:port or unix:/path)");
  CHECK(addressError("127.0.0.1:") == "missing port");
  CHECK(addressError("[::1]:") == "missing port");
  CHECK(addressError("127.0.0.1:http") == "'http' is not a port number");
  CHECK(addressError("127.0.0.1:-1") == "'-1' is not a port number");
  CHECK(addressError("127.0.0.1:80 ") == "'80 ' is not a port number");
  CHECK(addressError("127.0.0.1:65536") == "port 65536 is out of range (0-65535)");
  CHECK(addressError("127.0.0.1:99999999999999999999") ==
        "port 99999999999999999999 is out of range (0-65535)");
}

TEST_CASE("parseSocketAddress: IPv6 must be bracketed", "[address]") {
  CHECK(addressError("::1:80") == "IPv6 addresses must be written in brackets, e.g. [::1]:5140");
  CHECK(addressError("2001:db8::1:443") ==
        "IPv6 addresses must be written in brackets, e.g. [::1]:5140");
  CHECK(addressError("[::1") == "missing ']' in IPv6 address");
  CHECK(addressError("[::1]80") == "expected ':port' after ']'");
  CHECK(addressError("[::1]") == "expected ':port' after ']'");
}

TEST_CASE("parseSocketAddress: missing host", "[address]") {
  CHECK(addressError(":80") == "missing host (use * or 0.0.0.0 for all IPv4 addresses)");
  CHECK(addressError("[]:80") == "missing host (use * or 0.0.0.0 for all IPv4 addresses)");
}

TEST_CASE("Cidr::parse: IPv4 and IPv6 networks keep their text", "[address][cidr]") {
  CHECK(cidrOf("10.0.0.0/8").text() == "10.0.0.0/8");
  CHECK(cidrOf("0.0.0.0/0").text() == "0.0.0.0/0");
  CHECK(cidrOf("::1/128").text() == "::1/128");
  CHECK(cidrOf("2001:db8::/32").text() == "2001:db8::/32");
  CHECK(cidrOf("::/0").text() == "::/0");
  CHECK(cidrOf("192.168.1.0/024").text() == "192.168.1.0/024");
}

TEST_CASE("Cidr: a bare address is a host network", "[address][cidr]") {
  auto h4 = cidrOf("192.0.2.7");
  CHECK(contains(h4, "192.0.2.7"));
  CHECK_FALSE(contains(h4, "192.0.2.6"));
  CHECK_FALSE(contains(h4, "192.0.2.8"));

  auto h6 = cidrOf("2001:db8::1");
  CHECK(contains(h6, "2001:db8::1"));
  CHECK_FALSE(contains(h6, "2001:db8::2"));
}

TEST_CASE("Cidr::parse: bad prefixes are refused", "[address][cidr]") {
  CHECK(cidrError("10.0.0.0/33") == "prefix /33 is longer than 32 bits");
  CHECK(cidrError("::/129") == "prefix /129 is longer than 128 bits");
  CHECK(cidrError("10.0.0.0/") == "'10.0.0.0/' has a bad prefix length");
  CHECK(cidrError("10.0.0.0/x") == "'10.0.0.0/x' has a bad prefix length");
  CHECK(cidrError("10.0.0.0/-1") == "'10.0.0.0/-1' has a bad prefix length");
  CHECK(cidrError("10.0.0.0/1000") == "'10.0.0.0/1000' has a bad prefix length");
  CHECK(cidrError("10.0.0.0/ 8") == "'10.0.0.0/ 8' has a bad prefix length");
}

TEST_CASE("Cidr::parse: host bits set beyond the prefix are refused", "[address][cidr]") {
  CHECK(cidrError("10.1.2.3/8") == "'10.1.2.3/8' has host bits set beyond /8");
  CHECK(cidrError("192.168.1.1/24") == "'192.168.1.1/24' has host bits set beyond /24");
  CHECK(cidrError("172.17.0.0/12") == "'172.17.0.0/12' has host bits set beyond /12");
  CHECK(cidrError("2001:db8::1/32") == "'2001:db8::1/32' has host bits set beyond /32");
  CHECK(cidrError("::1/127") == "'::1/127' has host bits set beyond /127");
  CHECK(cidrOf("172.16.0.0/12").text() == "172.16.0.0/12");
}

TEST_CASE("Cidr::parse: text that is not an address is refused", "[address][cidr]") {
  const std::string tail = " is not an IPv4 or IPv6 network (expected e.g. 10.0.0.0/8, ::1/128)";
  CHECK(cidrError("") == "''" + tail);
  CHECK(cidrError("localhost") == "'localhost'" + tail);
  CHECK(cidrError("10.0.0.256/8") == "'10.0.0.256/8'" + tail);
  CHECK(cidrError("10.0.0/8") == "'10.0.0/8'" + tail);
  CHECK(cidrError("[::1]/128") == "'[::1]/128'" + tail);
}

TEST_CASE("Cidr::contains: IPv4 networks, byte- and bit-aligned", "[address][cidr]") {
  auto ten = cidrOf("10.0.0.0/8");
  CHECK(contains(ten, "10.0.0.0"));
  CHECK(contains(ten, "10.255.1.2"));
  CHECK_FALSE(contains(ten, "11.0.0.1"));
  CHECK_FALSE(contains(ten, "9.255.255.255"));

  auto c24 = cidrOf("192.168.1.0/24");
  CHECK(contains(c24, "192.168.1.255"));
  CHECK_FALSE(contains(c24, "192.168.2.0"));

  auto c12 = cidrOf("172.16.0.0/12");
  CHECK(contains(c12, "172.16.0.1"));
  CHECK(contains(c12, "172.31.255.255"));
  CHECK_FALSE(contains(c12, "172.32.0.0"));
  CHECK_FALSE(contains(c12, "172.15.255.255"));

  auto all = cidrOf("0.0.0.0/0");
  CHECK(contains(all, "1.2.3.4"));
  CHECK(contains(all, "255.255.255.255"));
  CHECK_FALSE(contains(all, "::1"));  // a plain IPv6 peer is not in an IPv4 network
}

TEST_CASE("Cidr::contains: IPv6 networks", "[address][cidr]") {
  auto lo = cidrOf("::1/128");
  CHECK(contains(lo, "::1"));
  CHECK_FALSE(contains(lo, "::2"));
  CHECK_FALSE(contains(lo, "127.0.0.1"));  // an IPv4 peer is not in an IPv6 network

  auto doc = cidrOf("2001:db8::/32");
  CHECK(contains(doc, "2001:db8:ffff::1"));
  CHECK_FALSE(contains(doc, "2001:db9::1"));

  auto link = cidrOf("fe80::/10");
  CHECK(contains(link, "fe80::1"));
  CHECK(contains(link, "febf::1"));
  CHECK_FALSE(contains(link, "fec0::1"));

  auto all = cidrOf("::/0");
  CHECK(contains(all, "2001:db8::1"));
}

TEST_CASE("Cidr::contains: IPv4-mapped IPv6 peers match IPv4 networks", "[address][cidr]") {
  auto ten = cidrOf("10.0.0.0/8");
  CHECK(contains(ten, "::ffff:10.1.2.3"));
  CHECK_FALSE(contains(ten, "::ffff:11.1.2.3"));
  CHECK_FALSE(contains(ten, "::10.1.2.3"));  // IPv4-compatible, not mapped

  auto host = cidrOf("127.0.0.1");
  CHECK(contains(host, "::ffff:127.0.0.1"));
  CHECK_FALSE(contains(host, "::ffff:127.0.0.2"));
}

TEST_CASE("allowed: empty list allows all, unix peers always pass", "[address][cidr]") {
  std::vector<Cidr> none;
  auto p4 = v4("203.0.113.9", 1);
  auto p6 = v6("2001:db8::9", 1);
  auto pu = unixPeer();
  CHECK(allowed(none, sa(p4)));
  CHECK(allowed(none, sa(p6)));
  CHECK(allowed(none, sa(pu)));

  std::vector<Cidr> list{cidrOf("127.0.0.0/8"), cidrOf("::1/128")};
  auto lo4 = v4("127.0.0.2", 1);
  auto lo6 = v6("::1", 1);
  auto mapped = v6("::ffff:127.9.9.9", 1);
  auto mapped_out = v6("::ffff:203.0.113.9", 1);
  CHECK(allowed(list, sa(lo4)));
  CHECK(allowed(list, sa(lo6)));
  CHECK(allowed(list, sa(mapped)));
  CHECK_FALSE(allowed(list, sa(p4)));
  CHECK_FALSE(allowed(list, sa(p6)));
  CHECK_FALSE(allowed(list, sa(mapped_out)));
  CHECK(allowed(list, sa(pu)));
}

TEST_CASE("describePeer: IPv4", "[address][peer]") {
  auto s = v4("192.0.2.7", 4242);
  PeerInfo p = describePeer(sa(s), sizeof s);
  CHECK(p.ip == "192.0.2.7");
  CHECK(p.port == 4242);
  CHECK(p.display() == "192.0.2.7:4242");
  CHECK(p.fileSafeIp() == "192.0.2.7");
}

TEST_CASE("describePeer: IPv6 is bracketed for display and '_' for files", "[address][peer]") {
  auto s = v6("2001:db8::1", 4242);
  PeerInfo p = describePeer(sa(s), sizeof s);
  CHECK(p.ip == "2001:db8::1");
  CHECK(p.port == 4242);
  CHECK(p.display() == "[2001:db8::1]:4242");
  CHECK(p.fileSafeIp() == "2001_db8__1");

  auto lo = v6("::1", 80);
  PeerInfo l = describePeer(sa(lo), sizeof lo);
  CHECK(l.display() == "[::1]:80");
  CHECK(l.fileSafeIp() == "__1");
}

TEST_CASE("describePeer: IPv4-mapped IPv6 peers are shown as IPv4", "[address][peer]") {
  auto s = v6("::ffff:192.0.2.7", 5000);
  PeerInfo p = describePeer(sa(s), sizeof s);
  CHECK(p.ip == "192.0.2.7");
  CHECK(p.port == 5000);
  CHECK(p.display() == "192.0.2.7:5000");
  CHECK(p.fileSafeIp() == "192.0.2.7");
}

TEST_CASE("describePeer: unix peers", "[address][peer]") {
  auto u = unixPeer();
  PeerInfo p = describePeer(sa(u), sizeof u);
  CHECK(p.ip == "unix");
  CHECK(p.port == 0);
  CHECK(p.display() == "unix");
  CHECK(p.fileSafeIp() == "unix");

  // An unnamed unix peer can come back from accept() with a length of 0.
  sockaddr_storage empty{};
  PeerInfo q = describePeer(reinterpret_cast<const sockaddr*>(&empty), 0);
  CHECK(q.ip == "unix");
  CHECK(q.display() == "unix");
}

TEST_CASE("parseSocketAddress: udp:HOST:PORT is a UDP address, v4 and v6", "[address]") {
  auto a = addressOf("udp:127.0.0.1:514");
  CHECK(a.isUdp());
  CHECK_FALSE(a.isUnix());
  CHECK(a.text == "udp:127.0.0.1:514");
  CHECK(a.family() == AF_INET);
  CHECK(ntohs(reinterpret_cast<const sockaddr_in*>(&a.storage)->sin_port) == 514);
  auto v6 = addressOf("udp:[::1]:5514");
  CHECK(v6.isUdp());
  CHECK(v6.text == "udp:[::1]:5514");
  CHECK(v6.family() == AF_INET6);
  CHECK(addressOf("udp:*:514").text == "udp:0.0.0.0:514");
  // The same port over TCP is another address.
  CHECK_FALSE(addressOf("127.0.0.1:514").isUdp());
  CHECK_FALSE(addressOf("udp:127.0.0.1:514") == addressOf("127.0.0.1:514"));
}

TEST_CASE("parseSocketAddress: udp: errors", "[address]") {
  CHECK(addressError("udp:unix:/run/x.sock") ==
        "udp: takes HOST:PORT or [v6]:PORT, not a unix socket path");
  CHECK(addressError("udp:udp:127.0.0.1:1") == "udp: is written once");
  CHECK(addressError("udp:127.0.0.1") ==
        "'127.0.0.1' has no port (expected host:port, [v6]:port or unix:/path)");
  CHECK(addressError("udp:::1:80") ==
        "IPv6 addresses must be written in brackets, e.g. [::1]:5140");
}
