#pragma once
// Socket addresses as they appear in the config ("127.0.0.1:5140", "[::1]:5140", "*:5140",
// "unix:/run/spliced.sock"), CIDR allow lists, and the textual form of a connected peer.
#include <netinet/in.h>
#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "spliced/core/units.hpp"

namespace spliced {

// A resolved address to bind or connect to. For unix sockets `path` is set and `storage` holds a
// sockaddr_un; otherwise `storage` holds a sockaddr_in or sockaddr_in6 (a stream socket's, or a
// datagram socket's when `udp` is set).
struct SocketAddress {
  sockaddr_storage storage{};
  socklen_t len = 0;
  std::string path;  // unix sockets only
  // canonical form, e.g. "127.0.0.1:5140", "[::1]:80", "unix:/run/x.sock", "udp:[::1]:514"
  std::string text;
  bool udp = false;  // "udp:HOST:PORT": a UDP socket

  bool isUnix() const { return !path.empty(); }
  bool isUdp() const { return udp; }
  int family() const { return storage.ss_family; }
  bool operator==(const SocketAddress& o) const { return text == o.text; }
};

// Parses "host:port", "[v6]:port", "*:port" (all IPv4 addresses), "unix:/path", or any of the
// first three after "udp:" (a UDP socket; its text keeps the prefix). Host names are
// resolved with getaddrinfo (call at start-up only: it may block). Port 0 is allowed (tests).
Parsed<SocketAddress> parseSocketAddress(std::string_view text);

// An IPv4 or IPv6 network. IPv4-mapped IPv6 peers (::ffff:a.b.c.d) match IPv4 networks.
class Cidr {
 public:
  static Parsed<Cidr> parse(std::string_view text);
  bool contains(const sockaddr* sa) const;
  const std::string& text() const { return text_; }

 private:
  int family_ = AF_INET;
  std::array<uint8_t, 16> addr_{};
  int prefix_ = 0;
  std::string text_;
};

// True when `sa` is in any of `allow`; an empty list allows everyone. Unix-socket peers are always
// allowed (file permissions guard them).
bool allowed(const std::vector<Cidr>& allow, const sockaddr* sa);

// The peer of an accepted connection, ready for logs and file names.
struct PeerInfo {
  std::string ip;                  // "192.0.2.7", "2001:db8::1", or "unix"
  uint16_t port = 0;               // 0 for unix sockets
  std::string display() const;     // "192.0.2.7:4242", "[2001:db8::1]:4242", "unix"
  std::string fileSafeIp() const;  // ':' replaced by '_' for IPv6
};
PeerInfo describePeer(const sockaddr* sa, socklen_t len);

// The addresses a PROXY header carries. family: AF_INET, AF_INET6, AF_UNIX, or AF_UNSPEC
// (v1 "UNKNOWN", v2 LOCAL command or UNSPEC family: the receiver uses the real connection).
// For AF_INET/AF_INET6 each of src and dst holds a sockaddr_in or sockaddr_in6 (the two may
// differ when one end is IPv4 and the other IPv6); for AF_UNIX each holds a sockaddr_un.
struct ProxyAddresses {
  int family = AF_UNSPEC;
  sockaddr_storage src{};  // the original client
  sockaddr_storage dst{};  // the address the client connected to
  socklen_t src_len = 0, dst_len = 0;
};

}  // namespace spliced
