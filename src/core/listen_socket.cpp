#include "spliced/core/listen_socket.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>
#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstring>

namespace spliced {
namespace {

// A unix socket file left by a process that is gone is removed; a live one is an error.
Status clearStaleUnixSocket(const SocketAddress& addr) {
  struct stat st;
  if (::lstat(addr.path.c_str(), &st) != 0) return Ok{};
  if (!S_ISSOCK(st.st_mode)) {
    return Error(ErrorSource::Environment,
                 fmt::format("{} exists and is not a socket; refusing to remove it", addr.path));
  }
  UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (probe.valid() &&
      ::connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr.storage), addr.len) == 0) {
    return Error(ErrorSource::Environment,
                 fmt::format("{} is in use by a running process", addr.path));
  }
  ::unlink(addr.path.c_str());
  return Ok{};
}

Error setupError(std::string context) {
  int err = errno;
  return Error(sourceOfSetupErrno(err), std::move(context), err);
}

// Binds (and listens on, unless `do_listen` is false) one socket for `addr`.
Result<UniqueFd> openOne(const SocketAddress& addr, bool reuseport, bool do_listen = true);

uint16_t portOf(const sockaddr_storage& ss) {
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(ss).sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(ss).sin6_port);
  return 0;
}
uint16_t portOf(const SocketAddress& addr) { return portOf(addr.storage); }

void setPort(SocketAddress& addr, uint16_t port) {
  if (addr.storage.ss_family == AF_INET) {
    reinterpret_cast<sockaddr_in&>(addr.storage).sin_port = htons(port);
  } else if (addr.storage.ss_family == AF_INET6) {
    reinterpret_cast<sockaddr_in6&>(addr.storage).sin6_port = htons(port);
  }
}

}  // namespace

Result<UniqueFd> openListenSocket(const SocketAddress& addr) { return openOne(addr, false); }

Result<std::vector<UniqueFd>> openListenGroup(const SocketAddress& addr, size_t n) {
  std::vector<UniqueFd> out;
  if (n <= 1 || addr.isUnix()) {
    Result<UniqueFd> fd = openOne(addr, false);
    if (!fd) return std::move(fd).takeError();
    out.push_back(std::move(fd.value()));
    return out;
  }
  // SO_REUSEPORT would let this group join sockets that another process of the same user has
  // bound there (a second spliced): the address is first bound alone, without SO_REUSEPORT, which
  // fails when anything listens there, as a single socket would.
  SocketAddress at = addr;
  if (portOf(at) != 0) {
    Result<UniqueFd> probe = openOne(at, false, /*do_listen=*/false);
    if (!probe) return std::move(probe).takeError();
  }
  for (size_t i = 0; i < n; ++i) {
    Result<UniqueFd> fd = openOne(at, true);
    if (!fd) return std::move(fd).takeError();
    if (i == 0 && portOf(at) == 0) {
      // Port 0: the others join the port the kernel chose for the first.
      sockaddr_storage ss{};
      socklen_t len = sizeof ss;
      if (::getsockname(fd.value().get(), reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
        return setupError(fmt::format("cannot read the address bound for {}", addr.text));
      }
      setPort(at, portOf(ss));
    }
    out.push_back(std::move(fd.value()));
  }
  return out;
}

namespace {

Result<UniqueFd> openOne(const SocketAddress& addr, bool reuseport, bool do_listen) {
  if (addr.isUnix()) {
    if (Status s = clearStaleUnixSocket(addr); !s) return std::move(s).takeError();
  }
  UniqueFd fd(::socket(addr.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return setupError("socket");
  int one = 1;
  if (!addr.isUnix()) {
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (reuseport && ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
      return setupError(fmt::format("cannot set SO_REUSEPORT for {}", addr.text));
    }
    // Accepted sockets inherit TCP_NODELAY from the listener: one setsockopt per route, not
    // one per connection (the proxy writes whole chunks; a collect route never writes).
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    // [::]:port means IPv6 only, as nginx does; list 0.0.0.0:port too for IPv4.
    if (addr.family() == AF_INET6)
      ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  }
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr.storage), addr.len) != 0) {
    return setupError(fmt::format("cannot bind {}", addr.text));
  }
  if (addr.isUnix()) ::chmod(addr.path.c_str(), 0660);
  if (do_listen && ::listen(fd.get(), SOMAXCONN) != 0) {
    return setupError(fmt::format("cannot listen on {}", addr.text));
  }
  return fd;
}

}  // namespace

namespace {

Result<UniqueFd> openUdpOne(const SocketAddress& addr, bool reuseport, uint64_t rcvbuf,
                            uint64_t* granted) {
  UniqueFd fd(::socket(addr.family(), SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return setupError("socket");
  int one = 1;
  if (reuseport && ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
    return setupError(fmt::format("cannot set SO_REUSEPORT for {}", addr.text));
  }
  if (addr.family() == AF_INET6)
    ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (::setsockopt(fd.get(), SOL_SOCKET, SO_RXQ_OVFL, &one, sizeof one) != 0) {
    return setupError(fmt::format("cannot set SO_RXQ_OVFL for {}", addr.text));
  }
  if (rcvbuf > 0) {
    const int want = static_cast<int>(std::min<uint64_t>(rcvbuf, INT32_MAX / 2));
    // Root may pass net.core.rmem_max; anyone else gets at most that.
    if (::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUFFORCE, &want, sizeof want) != 0) {
      ::setsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &want, sizeof want);
    }
  }
  int got = 0;
  socklen_t len = sizeof got;
  if (granted != nullptr && ::getsockopt(fd.get(), SOL_SOCKET, SO_RCVBUF, &got, &len) == 0) {
    *granted = static_cast<uint64_t>(got) / 2;
  }
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr.storage), addr.len) != 0) {
    return setupError(fmt::format("cannot bind {}", addr.text));
  }
  return fd;
}

}  // namespace

Result<std::vector<UniqueFd>> openUdpGroup(const SocketAddress& addr, size_t n, uint64_t rcvbuf,
                                           uint64_t* granted) {
  std::vector<UniqueFd> out;
  SocketAddress at = addr;
  const bool reuseport = n > 1;
  if (reuseport && portOf(at) != 0) {
    // As for TCP: an address some other socket holds is refused, never joined.
    Result<UniqueFd> probe = openUdpOne(at, false, 0, nullptr);
    if (!probe) return std::move(probe).takeError();
  }
  for (size_t i = 0; i < std::max<size_t>(n, 1); ++i) {
    Result<UniqueFd> fd = openUdpOne(at, reuseport, rcvbuf, i == 0 ? granted : nullptr);
    if (!fd) return std::move(fd).takeError();
    if (i == 0 && portOf(at) == 0) {
      sockaddr_storage ss{};
      socklen_t len = sizeof ss;
      if (::getsockname(fd.value().get(), reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
        return setupError(fmt::format("cannot read the address bound for {}", addr.text));
      }
      setPort(at, portOf(ss));
    }
    out.push_back(std::move(fd.value()));
  }
  return out;
}

}  // namespace spliced
