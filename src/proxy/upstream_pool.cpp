#include "spliced/proxy/upstream_pool.hpp"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace spliced {
namespace {

// FNV-1a over the client's address bytes (not its port): one client, one upstream.
uint64_t hashClient(const sockaddr* sa) {
  const uint8_t* p = nullptr;
  size_t n = 0;
  if (sa != nullptr && sa->sa_family == AF_INET) {
    p = reinterpret_cast<const uint8_t*>(&reinterpret_cast<const sockaddr_in*>(sa)->sin_addr);
    n = 4;
  } else if (sa != nullptr && sa->sa_family == AF_INET6) {
    const auto* a6 = &reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr;
    p = reinterpret_cast<const uint8_t*>(a6);
    n = 16;
    if (IN6_IS_ADDR_V4MAPPED(a6)) {  // the same client over v4 or mapped v6
      p += 12;
      n = 4;
    }
  }
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

}  // namespace

UniqueFd connectNonBlocking(const SocketAddress& addr, int& err) {
  UniqueFd fd(::socket(addr.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) {
    err = errno;
    return {};
  }
  if (!addr.isUnix()) {
    int one = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&addr.storage), addr.len) != 0 &&
      errno != EINPROGRESS) {
    err = errno;  // ECONNREFUSED, ENETUNREACH, EAGAIN (unix backlog full), ...
    return {};
  }
  err = 0;
  return fd;
}

UpstreamPool::UpstreamPool(event_base* base, const ForwardConfig& cfg, std::string route)
    : base_(base), cfg_(&cfg), route_(std::move(route)) {
  for (const auto& a : cfg_->upstreams) {
    auto u = std::make_unique<Upstream>();
    u->addr = a;
    u->pool = this;
    upstreams_.push_back(std::move(u));
  }
}

UpstreamPool::~UpstreamPool() = default;

void UpstreamPool::start() {
  if (!cfg_->health_check) return;
  for (auto& u : upstreams_) {
    u->timer_ev.reset(event_new(base_, -1, EV_PERSIST, &UpstreamPool::onCheckTimer, u.get()));
    addEvent(u->timer_ev.get(), cfg_->health_check->interval);
  }
}

void UpstreamPool::reconfigure(const ForwardConfig& next) {
  std::lock_guard lock(mu_);
  auto take = [](std::vector<std::unique_ptr<Upstream>>& from,
                 const SocketAddress& a) -> std::unique_ptr<Upstream> {
    auto it = std::find_if(from.begin(), from.end(),
                           [&](const std::unique_ptr<Upstream>& u) { return u->addr == a; });
    if (it == from.end()) return nullptr;
    std::unique_ptr<Upstream> u = std::move(*it);
    from.erase(it);
    return u;
  };
  std::vector<std::unique_ptr<Upstream>> now;
  for (const auto& a : next.upstreams) {
    std::unique_ptr<Upstream> u = take(upstreams_, a);
    if (!u) u = take(retired_, a);
    if (!u) {
      u = std::make_unique<Upstream>();
      u->addr = a;
      u->pool = this;
    }
    now.push_back(std::move(u));
  }
  for (auto& gone : upstreams_) {
    gone->timer_ev.reset();
    gone->probe_ev.reset();
    gone->probe.reset();
    retired_.push_back(std::move(gone));
  }
  upstreams_ = std::move(now);
  cfg_ = &next;
  next_ = 0;
  for (auto& u : upstreams_) {
    if (!cfg_->health_check) {
      // No active checks any more: their verdict goes with them.
      u->timer_ev.reset();
      u->probe_ev.reset();
      u->probe.reset();
      u->check_down = false;
      u->check_ok_in_row = 0;
      u->check_bad_in_row = 0;
      continue;
    }
    if (!u->timer_ev) {
      u->timer_ev.reset(event_new(base_, -1, EV_PERSIST, &UpstreamPool::onCheckTimer, u.get()));
    }
    addEvent(u->timer_ev.get(), cfg_->health_check->interval);
  }
}

bool UpstreamPool::anyUp() const {
  std::lock_guard lock(mu_);
  auto now = std::chrono::steady_clock::now();
  for (const auto& u : upstreams_) {
    if (u->up(now)) return true;
  }
  return false;
}

Upstream* UpstreamPool::pick(const sockaddr* client, const std::vector<Upstream*>& tried) {
  std::lock_guard lock(mu_);
  auto now = std::chrono::steady_clock::now();
  const size_t n = upstreams_.size();
  auto usable = [&](Upstream* u) {
    return u->up(now) && std::find(tried.begin(), tried.end(), u) == tried.end();
  };
  size_t start = next_;
  if (cfg_->balance == Balance::SourceHash) start = static_cast<size_t>(hashClient(client) % n);
  Upstream* best = nullptr;
  size_t best_index = 0;
  for (size_t i = 0; i < n; ++i) {
    size_t idx = (start + i) % n;
    Upstream* u = upstreams_[idx].get();
    if (!usable(u)) continue;
    if (cfg_->balance != Balance::LeastConnections) {
      best = u;
      best_index = idx;
      break;
    }
    if (best == nullptr || u->active < best->active) {  // ties: the round-robin order decides
      best = u;
      best_index = idx;
    }
  }
  if (best != nullptr && cfg_->balance != Balance::SourceHash) next_ = best_index + 1;
  return best;
}

void UpstreamPool::connected(Upstream* u) {
  std::lock_guard lock(mu_);
  if (u->fails_in_row >= cfg_->max_fails) {
    spdlog::info("route={} upstream={} is up again", route_, u->addr.text);
  }
  u->fails_in_row = 0;
  ++u->active;
}

Upstream* UpstreamPool::adopt(const std::string& address) {
  std::lock_guard lock(mu_);
  for (auto* list : {&upstreams_, &retired_}) {
    for (auto& u : *list) {
      if (u->addr.text == address) {
        ++u->active;
        return u.get();
      }
    }
  }
  Parsed<SocketAddress> a = parseSocketAddress(address);
  if (!a.ok()) return nullptr;
  auto u = std::make_unique<Upstream>();
  u->addr = a.value();
  u->pool = this;
  u->active = 1;
  retired_.push_back(std::move(u));
  return retired_.back().get();
}

void UpstreamPool::release(Upstream* u, PeerState state) {
  std::lock_guard lock(mu_);
  SPLICED_ASSERT(u->active > 0, "release() follows connected()");
  --u->active;
  if (state == PeerState::Failed) ++u->errors;
}

std::vector<UpstreamView> UpstreamPool::view() const {
  std::lock_guard lock(mu_);
  std::vector<UpstreamView> out;
  const auto now = std::chrono::steady_clock::now();
  for (const auto& u : upstreams_) out.push_back({u->addr.text, u->errors, u->active, u->up(now)});
  return out;
}

int connectResult(int fd, short what) {
  if (!(what & EV_WRITE)) return ETIMEDOUT;
  int err = 0;
  socklen_t len = sizeof err;
  if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  return err;
}

int connectResultReadWrite(int fd, short what) {
  // EPOLLERR and EPOLLHUP are reported to an event with EV_READ | EV_WRITE as both; EV_WRITE
  // alone is a connect that succeeded.
  if (what == EV_WRITE) return 0;
  return connectResult(fd, what);
}

void UpstreamPool::connectFailed(Upstream* u, int err) {
  std::lock_guard lock(mu_);
  ++u->errors;
  ++u->fails_in_row;
  if (u->fails_in_row >= cfg_->max_fails) {
    u->down_until = std::chrono::steady_clock::now() + cfg_->fail_timeout;
    if (u->fails_in_row == cfg_->max_fails) {
      spdlog::warn(
          "error=upstream route={} upstream={} marked down for {} after {} failed "
          "connect(s): {}",
          route_, u->addr.text, formatDuration(cfg_->fail_timeout), u->fails_in_row,
          std::strerror(err));
    }
  }
}

void UpstreamPool::onCheckTimer(evutil_socket_t, short, void* arg) {
  auto* u = static_cast<Upstream*>(arg);
  UpstreamPool* self = u->pool;
  if (u->probe.valid()) return;  // the previous probe is still waiting for its timeout
  int err = 0;
  u->probe = connectNonBlocking(u->addr, err);
  if (!u->probe.valid()) return self->probeResult(*u, false, err);
  u->probe_ev.reset(event_new(self->base_, u->probe.get(), EV_WRITE, &UpstreamPool::onProbe, u));
  addEvent(u->probe_ev.get(), self->cfg_->health_check->timeout);
}

void UpstreamPool::onProbe(evutil_socket_t fd, short what, void* arg) {
  auto* u = static_cast<Upstream*>(arg);
  int err = connectResult(fd, what);
  u->probe_ev.reset();
  u->probe.reset();
  u->pool->probeResult(*u, err == 0, err);
}

void UpstreamPool::probeResult(Upstream& u, bool ok, int err) {
  std::lock_guard lock(mu_);
  const HealthCheckConfig& hc = *cfg_->health_check;
  if (ok) {
    u.check_bad_in_row = 0;
    ++u.check_ok_in_row;
    if (u.check_down && u.check_ok_in_row >= hc.rise) {
      u.check_down = false;
      u.fails_in_row = 0;
      u.down_until = {};
      spdlog::info("route={} upstream={} health check passed {} time(s): up", route_, u.addr.text,
                   u.check_ok_in_row);
    }
  } else {
    u.check_ok_in_row = 0;
    ++u.check_bad_in_row;
    if (!u.check_down && u.check_bad_in_row >= hc.fall) {
      u.check_down = true;
      spdlog::warn("error=upstream route={} upstream={} health check failed {} time(s): down ({})",
                   route_, u.addr.text, u.check_bad_in_row, std::strerror(err));
    }
  }
}

}  // namespace spliced
