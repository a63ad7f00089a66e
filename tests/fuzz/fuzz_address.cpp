// libFuzzer target: parseSocketAddress, Cidr::parse + contains, describePeer.
// The input is used three ways: as an address ("host:port", "[v6]:port", "*:port", "unix:/p"), as
// a CIDR ("10.0.0.0/8"), and as the raw bytes of a peer sockaddr. Host names never reach DNS:
// getaddrinfo is wrapped (offline_resolver.cpp) so only numeric hosts and "localhost" resolve.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_check.hpp"
#include "spliced/core/address.hpp"

namespace {

sockaddr_storage inet(const char* ip, uint16_t port) {
  sockaddr_storage ss{};
  if (std::strchr(ip, ':') != nullptr) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&ss);
    in6->sin6_family = AF_INET6;
    inet_pton(AF_INET6, ip, &in6->sin6_addr);
    in6->sin6_port = htons(port);
  } else {
    auto* in = reinterpret_cast<sockaddr_in*>(&ss);
    in->sin_family = AF_INET;
    inet_pton(AF_INET, ip, &in->sin_addr);
    in->sin_port = htons(port);
  }
  return ss;
}

// Peers every CIDR is tested against.
const std::vector<sockaddr_storage>& fixedPeers() {
  static const std::vector<sockaddr_storage> peers = [] {
    std::vector<sockaddr_storage> v;
    for (const char* ip : {"127.0.0.1", "10.1.2.3", "192.0.2.7", "0.0.0.0", "255.255.255.255",
                           "::1", "::", "2001:db8::1", "::ffff:192.0.2.7", "::ffff:10.1.2.3",
                           "fe80::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"}) {
      v.push_back(inet(ip, 4242));
    }
    sockaddr_storage un{};
    un.ss_family = AF_UNIX;
    v.push_back(un);
    sockaddr_storage unspec{};
    v.push_back(unspec);
    return v;
  }();
  return peers;
}

void fuzzSocketAddress(std::string_view text) {
  auto a = spliced::parseSocketAddress(text);
  if (!a.ok()) {
    FUZZ_CHECK(!a.error().empty(), "a refused address says why");
    return;
  }
  const spliced::SocketAddress& sa = a.value();
  FUZZ_CHECK(sa.len > 0 && sa.len <= sizeof(sockaddr_storage), "the sockaddr length fits");
  FUZZ_CHECK(!sa.text.empty(), "an address has a canonical text");
  if (sa.isUnix()) {
    FUZZ_CHECK(sa.family() == AF_UNIX, "a unix: address is AF_UNIX");
    FUZZ_CHECK(sa.path.size() < sizeof(sockaddr_un::sun_path), "the unix path fits sun_path");
    return;
  }
  FUZZ_CHECK(sa.family() == AF_INET || sa.family() == AF_INET6, "a host:port address is IP");
  // The canonical text is a fixed point: it parses to itself.
  auto again = spliced::parseSocketAddress(sa.text);
  FUZZ_CHECK(again.ok(), "the canonical text of an address parses");
  FUZZ_CHECK(again.value().text == sa.text, "the canonical text parses to the same address");
  auto peer = spliced::describePeer(reinterpret_cast<const sockaddr*>(&sa.storage), sa.len);
  FUZZ_CHECK(!peer.ip.empty(), "a resolved address describes itself");
}

void fuzzCidr(std::string_view text) {
  auto c = spliced::Cidr::parse(text);
  if (!c.ok()) {
    FUZZ_CHECK(!c.error().empty(), "a refused network says why");
    return;
  }
  const spliced::Cidr& cidr = c.value();
  FUZZ_CHECK(cidr.text() == text, "a network keeps its text");
  for (const auto& peer : fixedPeers()) {
    (void)cidr.contains(reinterpret_cast<const sockaddr*>(&peer));
  }
  // The network's own address is in it; for IPv4 also as an IPv4-mapped IPv6 peer.
  std::string addr(text.substr(0, text.find('/')));
  sockaddr_storage own{};
  auto* in = reinterpret_cast<sockaddr_in*>(&own);
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&own);
  if (inet_pton(AF_INET, addr.c_str(), &in->sin_addr) == 1) {
    in->sin_family = AF_INET;
    FUZZ_CHECK(cidr.contains(reinterpret_cast<const sockaddr*>(&own)),
               "an IPv4 network contains its own address");
    std::array<uint8_t, 4> v4{};
    std::memcpy(v4.data(), &in->sin_addr, 4);
    own = {};
    in6->sin6_family = AF_INET6;
    auto* b = reinterpret_cast<uint8_t*>(&in6->sin6_addr);
    b[10] = b[11] = 0xff;
    std::memcpy(b + 12, v4.data(), 4);
    FUZZ_CHECK(cidr.contains(reinterpret_cast<const sockaddr*>(&own)),
               "an IPv4 network contains its own address written ::ffff:a.b.c.d");
  } else if (inet_pton(AF_INET6, addr.c_str(), &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    FUZZ_CHECK(cidr.contains(reinterpret_cast<const sockaddr*>(&own)),
               "an IPv6 network contains its own address");
  }
  std::vector<spliced::Cidr> list{cidr};
  for (const auto& peer : fixedPeers()) {
    (void)spliced::allowed(list, reinterpret_cast<const sockaddr*>(&peer));
  }
}

// The input as the raw bytes of an accepted peer: byte 0 picks the length the kernel reported,
// byte 1 the family, the rest fills the address.
void fuzzPeer(const uint8_t* data, size_t size) {
  if (size < 2) return;
  static constexpr std::array<int, 4> kFamilies = {AF_INET, AF_INET6, AF_UNIX, AF_UNSPEC};
  sockaddr_storage ss{};
  std::memcpy(&ss, data + 2, std::min(size - 2, sizeof ss));
  ss.ss_family = static_cast<sa_family_t>(kFamilies[data[1] % kFamilies.size()]);
  socklen_t len = data[0] % 2 == 0 ? 0 : static_cast<socklen_t>(sizeof ss);
  auto p = spliced::describePeer(reinterpret_cast<const sockaddr*>(&ss), len);
  const std::string display = p.display();
  const std::string safe = p.fileSafeIp();
  FUZZ_CHECK(!display.empty(), "a peer displays");
  FUZZ_CHECK(safe.find(':') == std::string::npos, "a file-safe IP has no ':'");
  FUZZ_CHECK(safe.find('/') == std::string::npos, "a file-safe IP has no '/'");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  fuzzSocketAddress(text);
  fuzzCidr(text);
  fuzzPeer(data, size);
  return 0;
}
