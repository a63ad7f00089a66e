#include "spliced/listener.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/un.h>

#include <fmt/format.h>
#include <cerrno>
#include <cstring>

namespace spliced {
namespace {

constexpr int kAcceptsPerWakeup = 64;
constexpr std::chrono::milliseconds kPauseOnFdExhaustion{100};

// A unix socket file left by a process that is gone is removed; a live one is an error.
std::string clearStaleUnixSocket(const SocketAddress& addr) {
  struct stat st;
  if (::lstat(addr.path.c_str(), &st) != 0) return {};
  if (!S_ISSOCK(st.st_mode)) {
    return fmt::format("{} exists and is not a socket; refusing to remove it", addr.path);
  }
  UniqueFd probe(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (probe.valid() &&
      ::connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr.storage), addr.len) == 0) {
    return fmt::format("{} is in use by a running process", addr.path);
  }
  ::unlink(addr.path.c_str());
  return {};
}

}  // namespace

Listener::Listener(event_base* base, SysCalls& sys, std::string route, AcceptFn on_accept)
    : base_(base), sys_(sys), route_(std::move(route)), on_accept_(std::move(on_accept)) {}

Listener::~Listener() { close(); }

std::string Listener::open(const SocketAddress& addr) {
  if (addr.isUnix()) {
    std::string why = clearStaleUnixSocket(addr);
    if (!why.empty()) return why;
  }
  UniqueFd fd(::socket(addr.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return fmt::format("socket: {}", std::strerror(errno));
  int one = 1;
  if (!addr.isUnix()) {
    ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    // [::]:port means IPv6 only, as nginx does; list 0.0.0.0:port too for IPv4.
    if (addr.family() == AF_INET6)
      ::setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  }
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr.storage), addr.len) != 0) {
    return fmt::format("cannot bind {}: {}", addr.text, std::strerror(errno));
  }
  if (addr.isUnix()) {
    unix_path_ = addr.path;
    ::chmod(addr.path.c_str(), 0660);
  }
  if (::listen(fd.get(), SOMAXCONN) != 0) {
    return fmt::format("cannot listen on {}: {}", addr.text, std::strerror(errno));
  }
  fd_ = std::move(fd);
  read_ev_.reset(event_new(base_, fd_.get(), EV_READ | EV_PERSIST, &Listener::onReadable, this));
  resume_ev_.reset(evtimer_new(base_, &Listener::onResume, this));
  event_add(read_ev_.get(), nullptr);
  return {};
}

void Listener::close() {
  read_ev_.reset();
  resume_ev_.reset();
  if (fd_.valid()) {
    fd_.reset();
    if (!unix_path_.empty()) ::unlink(unix_path_.c_str());
  }
}

std::string Listener::boundAddress() const {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (!fd_.valid() || ::getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    return {};
  }
  if (ss.ss_family == AF_UNIX) return "unix:" + unix_path_;
  return describePeer(reinterpret_cast<sockaddr*>(&ss), len).display();
}

void Listener::onReadable(evutil_socket_t, short, void* arg) {
  static_cast<Listener*>(arg)->acceptSome();
}

void Listener::onResume(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Listener*>(arg);
  if (!self->fd_.valid()) return;
  self->paused_ = false;
  event_add(self->read_ev_.get(), nullptr);
  self->acceptSome();
}

void Listener::acceptSome() {
  for (int i = 0; i < kAcceptsPerWakeup && fd_.valid(); ++i) {
    sockaddr_storage peer{};
    socklen_t len = sizeof peer;
    int cfd = sys_.accept4(fd_.get(), reinterpret_cast<sockaddr*>(&peer), &len,
                           SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (cfd < 0) {
      int err = errno;
      if (err == EINTR || err == ECONNABORTED || err == EPROTO) continue;
      if (err == EAGAIN) return;
      if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
        // Out of descriptors or memory: stop accepting for a moment instead of spinning on a
        // listener that stays readable (memcached's accept_new_conns does the same).
        if (!paused_) {
          spdlog::warn("error=internal route={} accept paused for {}: {}", route_,
                       formatDuration(kPauseOnFdExhaustion), std::strerror(err));
        }
        paused_ = true;
        event_del(read_ev_.get());
        addEvent(resume_ev_.get(), kPauseOnFdExhaustion);
        return;
      }
      spdlog::error("error=internal route={} accept: {}", route_, std::strerror(err));
      return;
    }
    on_accept_(UniqueFd(cfd), peer, len);
  }
}

}  // namespace spliced
