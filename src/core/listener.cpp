#include "spliced/core/listener.hpp"

#include "spliced/core/listen_socket.hpp"

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

}  // namespace

Listener::Listener(event_base* base, SysCalls& sys, std::string route, AcceptFn on_accept,
                   FdBudget* budget, size_t cost)
    : base_(base),
      sys_(sys),
      route_(std::move(route)),
      on_accept_(std::move(on_accept)),
      budget_(budget),
      cost_(cost) {}

Listener::~Listener() { close(); }

Status Listener::open(const SocketAddress& addr) {
  Result<UniqueFd> fd = openListenSocket(addr);
  if (!fd) return std::move(fd).takeError();
  if (addr.isUnix()) unix_path_ = addr.path;
  adopt(std::move(fd.value()));
  return Ok{};
}

void Listener::adopt(UniqueFd fd, std::string unix_path) {
  if (!unix_path.empty()) unix_path_ = std::move(unix_path);
  fd_ = std::move(fd);
  sock_ = fd_.get();
  watch();
}

void Listener::share(int fd, const SocketAddress& addr) {
  sock_ = fd;
  if (addr.isUnix()) shared_unix_path_ = addr.path;
  watch();
}

void Listener::watch() {
  read_ev_.reset(event_new(base_, sock_, EV_READ | EV_PERSIST, &Listener::onReadable, this));
  resume_ev_.reset(evtimer_new(base_, &Listener::onResume, this));
  event_add(read_ev_.get(), nullptr);
}

void Listener::pause() {
  if (waiting_budget_) budget_->cancelWait(this);
  waiting_budget_ = false;
  if (read_ev_) event_del(read_ev_.get());
  if (resume_ev_) event_del(resume_ev_.get());
}

void Listener::resume() {
  if (isOpen() && read_ev_) event_add(read_ev_.get(), nullptr);
}

void Listener::close() {
  if (waiting_budget_) budget_->cancelWait(this);
  waiting_budget_ = false;
  read_ev_.reset();
  resume_ev_.reset();
  sock_ = -1;
  if (fd_.valid()) {
    fd_.reset();
    if (!unix_path_.empty()) ::unlink(unix_path_.c_str());
  }
}

std::string Listener::boundAddress() const {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (sock_ < 0 || ::getsockname(sock_, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    return {};
  }
  if (ss.ss_family == AF_UNIX)
    return "unix:" + (unix_path_.empty() ? shared_unix_path_ : unix_path_);
  return describePeer(reinterpret_cast<sockaddr*>(&ss), len).display();
}

void Listener::onReadable(evutil_socket_t, short, void* arg) {
  static_cast<Listener*>(arg)->acceptSome();
}

void Listener::onResume(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Listener*>(arg);
  if (!self->isOpen()) return;
  event_add(self->read_ev_.get(), nullptr);
  self->acceptSome();
}

void Listener::fdsAvailable() {
  // Called from inside whatever gave descriptors back (a session closing): accept from the loop.
  waiting_budget_ = false;
  if (isOpen()) event_active(resume_ev_.get(), EV_TIMEOUT, 0);
}

void Listener::waitForBudget() {
  if (budget_log_.hit()) {
    spdlog::warn(
        "route={} accept paused: the descriptor limit leaves no room for another connection "
        "({} of {} in use by connections and pipes); waiting for one to close",
        route_, budget_->taken(), budget_->capacity());
  }
  event_del(read_ev_.get());
  waiting_budget_ = true;
  budget_->wait(this);
}

void Listener::endPause() {
  if (!paused_) return;
  paused_ = false;
  spdlog::info("route={} accepting again ({} failed accepts suppressed)", route_,
               accept_log_.end().value_or(0));
}

void Listener::acceptSome() {
  for (int i = 0; i < kAcceptsPerWakeup && isOpen(); ++i) {
    // What the connection will hold is taken before it is accepted: an accepted connection can
    // always finish. When it is not there, clients wait in the backlog.
    FdCharge charge;
    if (budget_ != nullptr && budget_->limited()) {
      if (!budget_->take(cost_)) return waitForBudget();
      charge = FdCharge(*budget_, cost_);
    }
    sockaddr_storage peer{};
    socklen_t len = sizeof peer;
    int cfd =
        sys_.accept4(sock_, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (cfd < 0) {
      int err = errno;
      if (err == EINTR || err == ECONNABORTED || err == EPROTO) continue;
      if (err == EAGAIN) {
        // Nothing waiting (accept4 fails with EMFILE even then: the descriptor comes first),
        // and descriptors to spare again: the episode is over.
        endPause();
        if (std::optional<uint64_t> n = budget_log_.end()) {
          spdlog::info(
              "route={} every waiting client accepted: the descriptor limit held {} more accept(s) "
              "back for a while",
              route_, *n + 1);
        }
        return;
      }
      // Out of descriptors or memory, or anything else that would fire again at once: stop
      // accepting for a moment instead of spinning on a listener that stays readable
      // (memcached's accept_new_conns does the same). One line per episode.
      if (accept_log_.hit()) {
        if (err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM) {
          spdlog::warn("error=internal route={} accept paused for {}: {}", route_,
                       formatDuration(kPauseOnFdExhaustion), std::strerror(err));
        } else {
          spdlog::error("error=internal route={} accept paused for {}: {}", route_,
                        formatDuration(kPauseOnFdExhaustion), std::strerror(err));
        }
      }
      paused_ = true;
      event_del(read_ev_.get());
      addEvent(resume_ev_.get(), kPauseOnFdExhaustion);
      return;
    }
    endPause();
    on_accept_(UniqueFd(cfd), peer, len, std::move(charge));
  }
}

}  // namespace spliced
