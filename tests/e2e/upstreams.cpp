#include "upstreams.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace e2e {
namespace {

constexpr int kPollSliceMs = 50;  // how often a blocked wait looks at its stop flag

std::string errnoText(const std::string& what) { return what + ": " + std::strerror(errno); }

void setTimeouts(int fd) {
  timeval tv{30, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

// Fills `ss` with `ip`:`port` (IPv4 or IPv6 literal); false when `ip` is neither.
bool makeAddress(const std::string& ip, uint16_t port, sockaddr_storage& ss, socklen_t& len) {
  ss = {};
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  if (::inet_pton(AF_INET, ip.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    len = sizeof *v4;
    return true;
  }
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (::inet_pton(AF_INET6, ip.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    len = sizeof *v6;
    return true;
  }
  return false;
}

Endpoint describe(const sockaddr_storage& ss) {
  Endpoint e;
  char buf[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    const auto* a = reinterpret_cast<const sockaddr_in*>(&ss);
    ::inet_ntop(AF_INET, &a->sin_addr, buf, sizeof buf);
    e.port = ntohs(a->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof buf);
    e.port = ntohs(a->sin6_port);
  }
  e.ip = buf;
  return e;
}

// Waits until `fd` has one of `events`, `deadline` passes (false) or `stop` is requested (false).
bool waitFd(int fd, short events, Clock::time_point deadline, const std::stop_token& stop) {
  while (!stop.stop_requested()) {
    auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd, events, 0};
    int r = ::poll(&p, 1, static_cast<int>(std::min<long long>(left, kPollSliceMs)));
    if (r > 0) return true;
    if (r < 0 && errno != EINTR) return true;  // let the caller's recv/send report it
  }
  return false;
}

constexpr auto kForever = Clock::time_point::max();

}  // namespace

// ---------------------------------------------------------------------------------------------
// TestUpstream

TestUpstream::TestUpstream(UpstreamOptions opts) : opts_(std::move(opts)) {
  int err = 0;
  if (!openListener(&err)) {
    throw std::runtime_error(std::string("test upstream: cannot listen: ") + std::strerror(err));
  }
  accept_thread_ = std::jthread([this](std::stop_token stop) { acceptLoop(stop); });
}

TestUpstream::~TestUpstream() {
  stopListening();
  for (auto& c : conns_) c->thread.request_stop();
  conns_.clear();  // joins each connection's thread; each closes its own socket
  if (opts_.family == AF_UNIX) ::unlink(opts_.unix_path.c_str());
}

std::unique_ptr<TestUpstream> TestUpstream::echo(int family) {
  UpstreamOptions o;
  o.mode = UpstreamMode::Echo;
  o.family = family;
  return std::make_unique<TestUpstream>(o);
}

std::unique_ptr<TestUpstream> TestUpstream::sink(size_t keep) {
  UpstreamOptions o;
  o.mode = UpstreamMode::Sink;
  o.keep = keep;
  return std::make_unique<TestUpstream>(o);
}

std::string TestUpstream::address() const {
  if (opts_.family == AF_UNIX) return "unix:" + opts_.unix_path;
  if (opts_.family == AF_INET6) return "[::1]:" + std::to_string(port_);
  return "127.0.0.1:" + std::to_string(port_);
}

bool TestUpstream::openListener(int* err) {
  int fd = ::socket(opts_.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *err = errno;
    return false;
  }
  int rc = 0;
  if (opts_.family == AF_UNIX) {
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    if (opts_.unix_path.size() >= sizeof sa.sun_path) {
      ::close(fd);
      *err = ENAMETOOLONG;
      return false;
    }
    std::memcpy(sa.sun_path, opts_.unix_path.c_str(), opts_.unix_path.size() + 1);
    ::unlink(opts_.unix_path.c_str());
    rc = ::bind(fd, reinterpret_cast<const sockaddr*>(&sa), sizeof sa);
  } else {
    int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_storage ss{};
    socklen_t len = 0;
    makeAddress(opts_.family == AF_INET6 ? "::1" : "127.0.0.1", port_, ss, len);
    rc = ::bind(fd, reinterpret_cast<const sockaddr*>(&ss), len);
  }
  if (rc != 0 || ::listen(fd, opts_.backlog) != 0) {
    *err = errno;
    ::close(fd);
    return false;
  }
  if (opts_.family != AF_UNIX) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
    port_ = describe(ss).port;
  }
  listen_fd_ = fd;
  return true;
}

void TestUpstream::stopListening() {
  if (accept_thread_.joinable()) {
    accept_thread_.request_stop();
    accept_thread_.join();
  }
  if (listen_fd_ >= 0) ::close(listen_fd_);
  listen_fd_ = -1;
}

bool TestUpstream::listenAgain(int* err) {
  int e = 0;
  stopListening();
  if (!openListener(&e)) {
    if (err) *err = e;
    return false;
  }
  accept_thread_ = std::jthread([this](std::stop_token stop) { acceptLoop(stop); });
  return true;
}

std::vector<UpstreamConnRecord> TestUpstream::records() const {
  std::lock_guard lock(mu_);
  std::vector<UpstreamConnRecord> out;
  for (const auto& r : records_) out.push_back(*r);
  return out;
}

bool TestUpstream::waitDone(size_t n, Millis timeout) const {
  return waitUntil(
      [&] {
        std::lock_guard lock(mu_);
        return static_cast<size_t>(std::count_if(records_.begin(), records_.end(),
                                                 [](auto& r) { return r->done; })) >= n;
      },
      timeout);
}

void TestUpstream::reapFinished() {
  for (auto it = conns_.begin(); it != conns_.end();) {
    if ((*it)->finished.load()) {
      it = conns_.erase(it);  // joins a thread that has already returned
    } else {
      ++it;
    }
  }
}

void TestUpstream::acceptLoop(std::stop_token stop) {
  const int lfd = listen_fd_;
  while (!stop.stop_requested()) {
    reapFinished();
    pollfd p{lfd, POLLIN, 0};
    int r = ::poll(&p, 1, kPollSliceMs);
    if (r <= 0) continue;
    int fd = ::accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) continue;
    if (opts_.family != AF_UNIX) {
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    auto c = std::make_unique<Connection>();
    c->fd = fd;
    c->rec = std::make_shared<UpstreamConnRecord>();
    {
      std::lock_guard lock(mu_);
      records_.push_back(c->rec);
    }
    ++accepted_;
    Connection* raw = c.get();
    conns_.push_back(std::move(c));
    raw->thread = std::jthread([this, raw](std::stop_token s) {
      serve(*raw, s);
      raw->finished = true;
    });
  }
}

void TestUpstream::serve(Connection& c, std::stop_token stop) {
  const int fd = c.fd;
  bool first = true;
  auto note = [&](const char* p, size_t n) {
    if (first) {
      ++served_;
      first = false;
    }
    bytes_ += n;
    std::lock_guard lock(mu_);
    c.rec->bytes += n;
    if (c.rec->data.size() < opts_.keep) {
      c.rec->data.append(p, std::min(n, opts_.keep - c.rec->data.size()));
    }
  };
  // > 0 bytes, 0 at EOF, -1 on error (errno set), -2 when stopped.
  auto recvSome = [&](char* buf, size_t n) -> ssize_t {
    while (true) {
      ssize_t r = ::recv(fd, buf, n, 0);
      if (r > 0) note(buf, static_cast<size_t>(r));
      if (r >= 0) return r;
      if (errno == EINTR) continue;
      if (errno != EAGAIN) return -1;
      if (!waitFd(fd, POLLIN, kForever, stop)) return -2;
    }
  };
  // 0 when all went, else the errno, or -2 when stopped.
  auto sendAll = [&](const char* p, size_t n) -> int {
    while (n > 0) {
      ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
      if (w > 0) {
        p += w;
        n -= static_cast<size_t>(w);
        continue;
      }
      if (w < 0 && errno == EINTR) continue;
      if (w < 0 && errno == EAGAIN) {
        if (!waitFd(fd, POLLOUT, kForever, stop)) return -2;
        continue;
      }
      return w < 0 ? errno : EPIPE;
    }
    return 0;
  };
  auto endFrom = [](ssize_t r) { return r == 0 ? 0 : (r == -1 ? errno : -1); };

  std::vector<char> buf(64 * kKiB);
  int end = -1;
  bool closed = false;
  switch (opts_.mode) {
    case UpstreamMode::Echo:
      while (true) {
        ssize_t r = recvSome(buf.data(), buf.size());
        if (r <= 0) {
          end = endFrom(r);
          if (r == 0) ::shutdown(fd, SHUT_WR);
          break;
        }
        if (int e = sendAll(buf.data(), static_cast<size_t>(r)); e != 0) {
          end = e == -2 ? -1 : e;
          break;
        }
      }
      break;
    case UpstreamMode::Sink:
      while (true) {
        ssize_t r = recvSome(buf.data(), buf.size());
        if (r <= 0) {
          end = endFrom(r);
          break;
        }
      }
      break;
    case UpstreamMode::Reply: {
      size_t got = 0;
      bool eof = false;
      bool failed = false;
      while (got < opts_.read_first) {
        ssize_t r = recvSome(buf.data(), std::min(buf.size(), opts_.read_first - got));
        if (r == 0) {
          eof = true;
          break;
        }
        if (r < 0) {
          end = endFrom(r);
          failed = true;
          break;
        }
        got += static_cast<size_t>(r);
      }
      if (failed) break;
      if (int e = sendAll(opts_.body.data(), opts_.body.size()); e != 0) {
        end = e == -2 ? -1 : e;
        break;
      }
      if (opts_.half_close) {
        ::shutdown(fd, SHUT_WR);
        while (!eof) {
          ssize_t r = recvSome(buf.data(), buf.size());
          if (r <= 0) {
            end = endFrom(r);
            break;
          }
        }
        if (eof) end = 0;
      } else {
        end = eof ? 0 : -1;
      }
      break;
    }
    case UpstreamMode::ResetAfter: {
      size_t got = 0;
      while (got < opts_.reset_after) {
        ssize_t r = recvSome(buf.data(), std::min(buf.size(), opts_.reset_after - got));
        if (r <= 0) {
          end = endFrom(r);
          break;
        }
        got += static_cast<size_t>(r);
      }
      if (got >= opts_.reset_after) {
        linger lg{1, 0};
        ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        ::close(fd);
        closed = true;
        end = -2;
      }
      break;
    }
    case UpstreamMode::Stall:
      while (!stop.stop_requested()) std::this_thread::sleep_for(Millis(20));
      break;
  }
  if (!closed) ::close(fd);
  std::lock_guard lock(mu_);
  c.rec->end = end;
  c.rec->done = true;
}

uint16_t refusingPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::runtime_error(errnoText("socket"));
  sockaddr_storage ss{};
  socklen_t len = 0;
  makeAddress("127.0.0.1", 0, ss, len);
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&ss), len) != 0) {
    ::close(fd);
    throw std::runtime_error(errnoText("bind"));
  }
  len = sizeof ss;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  ::close(fd);
  return describe(ss).port;
}

Blackhole::Blackhole() {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd_ < 0) return;
  sockaddr_storage ss{};
  socklen_t len = 0;
  makeAddress("127.0.0.1", 0, ss, len);
  if (::bind(listen_fd_, reinterpret_cast<const sockaddr*>(&ss), len) != 0) return;
  if (::listen(listen_fd_, 0) != 0) return;
  len = sizeof ss;
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&ss), &len);
  port_ = describe(ss).port;
  // One connection fills a backlog of 0; it is never accepted.
  int err = 0;
  Conn filler = connectIp("127.0.0.1", port_, "", &err);
  if (!filler.valid()) return;
  filler_fd_ = ::dup(filler.fd());
  ok_ = filler_fd_ >= 0;
}

Blackhole::~Blackhole() {
  if (filler_fd_ >= 0) ::close(filler_fd_);
  if (listen_fd_ >= 0) ::close(listen_fd_);
}

// ---------------------------------------------------------------------------------------------
// Clients

Conn connectIp(const std::string& ip, uint16_t port, const std::string& bind_ip, int* err) {
  int dummy = 0;
  if (err == nullptr) err = &dummy;
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (!makeAddress(ip, port, ss, len)) {
    *err = EINVAL;
    return Conn();
  }
  Conn c(::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!c.valid()) {
    *err = errno;
    return Conn();
  }
  setTimeouts(c.fd());
  if (!bind_ip.empty()) {
    sockaddr_storage src{};
    socklen_t src_len = 0;
    if (!makeAddress(bind_ip, 0, src, src_len)) {
      *err = EINVAL;
      return Conn();
    }
    if (::bind(c.fd(), reinterpret_cast<const sockaddr*>(&src), src_len) != 0) {
      *err = errno;
      return Conn();
    }
  }
  while (::connect(c.fd(), reinterpret_cast<const sockaddr*>(&ss), len) != 0) {
    if (errno == EINTR) continue;
    *err = errno;
    return Conn();
  }
  *err = 0;
  return c;
}

Endpoint localEndpoint(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return {};
  return describe(ss);
}

void resetClose(Conn& conn) {
  if (!conn.valid()) return;
  linger lg{1, 0};
  ::setsockopt(conn.fd(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  conn.close();
}

std::string echoOnce(Conn& conn, std::string_view msg, Millis timeout) {
  if (int e = conn.sendAll(msg); e != 0) return std::string("send: ") + std::strerror(e);
  std::string got;
  const auto deadline = Clock::now() + timeout;
  std::stop_token none;
  char buf[4096];
  while (got.size() < msg.size()) {
    if (!waitFd(conn.fd(), POLLIN, deadline, none)) {
      return "timed out after " + std::to_string(got.size()) + " of " + std::to_string(msg.size()) +
             " bytes";
    }
    ssize_t n = ::recv(conn.fd(), buf, std::min(sizeof buf, msg.size() - got.size()), MSG_DONTWAIT);
    if (n == 0) return "EOF after " + std::to_string(got.size()) + " bytes";
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return std::string("recv: ") + std::strerror(errno);
    }
    got.append(buf, static_cast<size_t>(n));
  }
  return firstDifference(got, msg);
}

Exchange::Exchange(Conn& conn, ExchangeSpec spec)
    : conn_(conn), spec_(spec), start_(Clock::now()), deadline_(start_ + spec.timeout) {
  sender_ = std::jthread([this](std::stop_token s) { sendLoop(s); });
  receiver_ = std::jthread([this](std::stop_token s) { recvLoop(s); });
}

Exchange::~Exchange() {
  sender_.request_stop();
  receiver_.request_stop();
  join();
}

ExchangeResult Exchange::join() {
  if (sender_.joinable()) sender_.join();
  if (receiver_.joinable()) receiver_.join();
  result_.sent = sent_.load();
  result_.received = received_.load();
  return result_;
}

void Exchange::sendLoop(std::stop_token stop) {
  PayloadStream stream(spec_.send_seed);
  std::vector<char> buf(spec_.chunk);
  uint64_t sent = 0;
  const int fd = conn_.fd();
  while (sent < spec_.send_bytes) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), spec_.send_bytes - sent));
    stream.fill(buf.data(), n);
    size_t off = 0;
    while (off < n) {
      ssize_t w = ::send(fd, buf.data() + off, n - off, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w > 0) {
        off += static_cast<size_t>(w);
        sent += static_cast<uint64_t>(w);
        sent_ = sent;
        continue;
      }
      if (w < 0 && errno == EINTR) continue;
      if (w < 0 && errno == EAGAIN) {
        if (!waitFd(fd, POLLOUT, deadline_, stop)) {
          result_.send_err = ETIMEDOUT;
          return;
        }
        continue;
      }
      result_.send_err = w < 0 ? errno : EPIPE;
      return;
    }
    if (spec_.pause.count() > 0) std::this_thread::sleep_for(spec_.pause);
  }
  if (spec_.shut_write) ::shutdown(fd, SHUT_WR);
}

void Exchange::recvLoop(std::stop_token stop) {
  PayloadStream expect(spec_.recv_seed);
  std::vector<char> buf(256 * kKiB);
  std::vector<char> want(buf.size());
  uint64_t received = 0;
  const int fd = conn_.fd();
  while (true) {
    if (!waitFd(fd, POLLIN, deadline_, stop)) {
      result_.recv_err = ETIMEDOUT;
      break;
    }
    ssize_t n = ::recv(fd, buf.data(), buf.size(), MSG_DONTWAIT);
    if (n == 0) {
      result_.eof = true;
      break;
    }
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      result_.recv_err = errno;
      break;
    }
    const size_t got = static_cast<size_t>(n);
    expect.fill(want.data(), got);
    if (result_.mismatch.empty() && std::memcmp(buf.data(), want.data(), got) != 0) {
      size_t i = 0;
      while (buf[i] == want[i]) ++i;
      std::ostringstream out;
      out << "received bytes differ from the stream at offset " << received + i;
      result_.mismatch = out.str();
    }
    received += got;
    received_ = received;
  }
  result_.recv_elapsed = std::chrono::duration_cast<Millis>(Clock::now() - start_);
}

// ---------------------------------------------------------------------------------------------

uint64_t rssKiB(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::strtoull(line.c_str() + 6, nullptr, 10);
  }
  return 0;
}

}  // namespace e2e
