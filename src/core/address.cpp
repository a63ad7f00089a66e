#include "spliced/core/address.hpp"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/un.h>

#include <fmt/format.h>
#include <cstring>

namespace spliced {
namespace {

Parsed<uint16_t> parsePort(std::string_view s) {
  if (s.empty()) return {Fail{std::string("missing port")}};
  uint32_t v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return {Fail{fmt::format("'{}' is not a port number", s)}};
    v = v * 10 + static_cast<uint32_t>(c - '0');
    if (v > 65535) return {Fail{fmt::format("port {} is out of range (0-65535)", s)}};
  }
  return {static_cast<uint16_t>(v)};
}

std::string formatIp(const sockaddr* sa) {
  char buf[INET6_ADDRSTRLEN] = {0};
  if (sa->sa_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(sa)->sin_addr, buf, sizeof buf);
  } else if (sa->sa_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr, buf, sizeof buf);
  }
  return buf;
}

}  // namespace

Parsed<SocketAddress> parseSocketAddress(std::string_view text) {
  if (text.substr(0, 4) == "udp:") {
    std::string_view rest = text.substr(4);
    if (rest.substr(0, 5) == "unix:") {
      return {Fail{std::string("udp: takes HOST:PORT or [v6]:PORT, not a unix socket path")}};
    }
    if (rest.substr(0, 4) == "udp:") return {Fail{std::string("udp: is written once")}};
    auto inner = parseSocketAddress(rest);
    if (!inner.ok()) return inner;
    SocketAddress out = inner.value();
    out.udp = true;
    out.text = "udp:" + out.text;
    return {out};
  }
  SocketAddress out;
  if (text.substr(0, 5) == "unix:") {
    std::string_view path = text.substr(5);
    if (path.empty()) return {Fail{std::string("unix: needs a path, e.g. unix:/run/spliced.sock")}};
    if (path.size() >= sizeof(sockaddr_un::sun_path)) {
      return {Fail{fmt::format("unix socket path is longer than {} bytes",
                               sizeof(sockaddr_un::sun_path) - 1)}};
    }
    auto* un = reinterpret_cast<sockaddr_un*>(&out.storage);
    un->sun_family = AF_UNIX;
    std::memcpy(un->sun_path, path.data(), path.size());
    out.len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1);
    out.path = std::string(path);
    out.text = std::string(text);
    return {out};
  }
  std::string host;
  std::string_view port_text;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos) return {Fail{std::string("missing ']' in IPv6 address")}};
    host = std::string(text.substr(1, close - 1));
    if (close + 1 >= text.size() || text[close + 1] != ':') {
      return {Fail{std::string("expected ':port' after ']'")}};
    }
    port_text = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      return {Fail{
          fmt::format("'{}' has no port (expected host:port, [v6]:port or unix:/path)", text)}};
    }
    host = std::string(text.substr(0, colon));
    if (host.find(':') != std::string::npos) {
      return {Fail{std::string("IPv6 addresses must be written in brackets, e.g. [::1]:5140")}};
    }
    port_text = text.substr(colon + 1);
  }
  auto port = parsePort(port_text);
  if (!port.ok()) return {Fail{port.error()}};
  if (host.empty())
    return {Fail{std::string("missing host (use * or 0.0.0.0 for all IPv4 addresses)")}};
  if (host == "*") host = "0.0.0.0";

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* res = nullptr;
  std::string port_str = std::to_string(port.value());
  int rc = getaddrinfo(host.c_str(), port_str.c_str(), &hints, &res);
  if (rc != 0 || res == nullptr) {
    return {Fail{fmt::format("cannot resolve '{}': {}", host, gai_strerror(rc))}};
  }
  std::memcpy(&out.storage, res->ai_addr, res->ai_addrlen);
  out.len = res->ai_addrlen;
  freeaddrinfo(res);
  std::string ip = formatIp(reinterpret_cast<const sockaddr*>(&out.storage));
  out.text = out.family() == AF_INET6 ? fmt::format("[{}]:{}", ip, port.value())
                                      : fmt::format("{}:{}", ip, port.value());
  return {out};
}

Parsed<Cidr> Cidr::parse(std::string_view text) {
  Cidr c;
  c.text_ = std::string(text);
  std::string addr(text);
  int max_prefix = 32;
  std::optional<int> prefix;
  auto slash = addr.find('/');
  std::string prefix_text;
  if (slash != std::string::npos) {
    prefix_text = addr.substr(slash + 1);
    addr.resize(slash);
  }
  if (inet_pton(AF_INET, addr.c_str(), c.addr_.data()) == 1) {
    c.family_ = AF_INET;
    max_prefix = 32;
  } else if (inet_pton(AF_INET6, addr.c_str(), c.addr_.data()) == 1) {
    c.family_ = AF_INET6;
    max_prefix = 128;
  } else {
    return {Fail{fmt::format(
        "'{}' is not an IPv4 or IPv6 network (expected e.g. 10.0.0.0/8, ::1/128)", text)}};
  }
  if (slash != std::string::npos) {
    if (prefix_text.empty() || prefix_text.size() > 3 ||
        prefix_text.find_first_not_of("0123456789") != std::string::npos) {
      return {Fail{fmt::format("'{}' has a bad prefix length", text)}};
    }
    prefix = std::stoi(prefix_text);
    if (*prefix > max_prefix) {
      return {Fail{fmt::format("prefix /{} is longer than {} bits", *prefix, max_prefix)}};
    }
  }
  c.prefix_ = prefix.value_or(max_prefix);
  // Host bits set below the prefix are a likely typo (10.1.2.3/8): refuse them, as ip(8) warns.
  int bytes = c.family_ == AF_INET ? 4 : 16;
  for (int bit = c.prefix_; bit < bytes * 8; ++bit) {
    if (c.addr_[bit / 8] & (0x80 >> (bit % 8))) {
      return {Fail{fmt::format("'{}' has host bits set beyond /{}", text, c.prefix_)}};
    }
  }
  return {c};
}

bool Cidr::contains(const sockaddr* sa) const {
  const uint8_t* a = nullptr;
  uint8_t mapped[4];
  if (sa->sa_family == AF_INET) {
    if (family_ != AF_INET) return false;
    a = reinterpret_cast<const uint8_t*>(&reinterpret_cast<const sockaddr_in*>(sa)->sin_addr);
  } else if (sa->sa_family == AF_INET6) {
    const auto* in6 = &reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr;
    if (family_ == AF_INET6) {
      a = reinterpret_cast<const uint8_t*>(in6);
    } else if (IN6_IS_ADDR_V4MAPPED(in6)) {
      std::memcpy(mapped, reinterpret_cast<const uint8_t*>(in6) + 12, 4);
      a = mapped;
    } else {
      return false;
    }
  } else {
    return false;
  }
  int full = prefix_ / 8;
  if (std::memcmp(a, addr_.data(), static_cast<size_t>(full)) != 0) return false;
  int rest = prefix_ % 8;
  if (rest == 0) return true;
  uint8_t mask = static_cast<uint8_t>(0xff << (8 - rest));
  return (a[full] & mask) == (addr_[full] & mask);
}

bool allowed(const std::vector<Cidr>& allow, const sockaddr* sa) {
  if (allow.empty() || sa->sa_family == AF_UNIX) return true;
  for (const auto& c : allow) {
    if (c.contains(sa)) return true;
  }
  return false;
}

std::string PeerInfo::display() const {
  if (ip == "unix") return ip;
  if (ip.find(':') != std::string::npos) return fmt::format("[{}]:{}", ip, port);
  return fmt::format("{}:{}", ip, port);
}

std::string PeerInfo::fileSafeIp() const {
  std::string s = ip;
  for (char& c : s) {
    if (c == ':') c = '_';
  }
  return s;
}

PeerInfo describePeer(const sockaddr* sa, socklen_t len) {
  PeerInfo p;
  if (len == 0 || sa->sa_family == AF_UNIX) {
    p.ip = "unix";
    return p;
  }
  if (sa->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    p.port = ntohs(in6->sin6_port);
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
      char buf[INET_ADDRSTRLEN] = {0};
      inet_ntop(AF_INET, reinterpret_cast<const uint8_t*>(&in6->sin6_addr) + 12, buf, sizeof buf);
      p.ip = buf;
    } else {
      p.ip = formatIp(sa);
    }
  } else {
    p.port = ntohs(reinterpret_cast<const sockaddr_in*>(sa)->sin_port);
    p.ip = formatIp(sa);
  }
  return p;
}

}  // namespace spliced
