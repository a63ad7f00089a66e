#include "spliced/core/listen_socket.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>
#include <cerrno>
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

}  // namespace

Result<UniqueFd> openListenSocket(const SocketAddress& addr) {
  if (addr.isUnix()) {
    if (Status s = clearStaleUnixSocket(addr); !s) return std::move(s).takeError();
  }
  UniqueFd fd(::socket(addr.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return setupError("socket");
  int one = 1;
  if (!addr.isUnix()) {
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
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
  if (::listen(fd.get(), SOMAXCONN) != 0) {
    return setupError(fmt::format("cannot listen on {}", addr.text));
  }
  return fd;
}

}  // namespace spliced
