// The faults group (proxy): scenarios of the fault campaign, each against the real binary. Each
// test failed before its fix.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cerrno>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "harness.hpp"
#include "upstreams.hpp"

using namespace e2e;
using namespace std::chrono_literals;

namespace {

// An upstream on 127.0.0.1:0 that accepts every connection and reads nothing while its gate is
// closed (the sink is full for the daemon); once opened, it reads each connection to its end,
// counts the bytes and answers an EOF with its own. Owns its sockets and threads.
class GatedSink {
 public:
  struct Record {
    std::atomic<uint64_t> bytes{0};
    std::atomic<int> end{-1};  // -1 open, 0 EOF, else the errno of the failed recv
  };

  GatedSink() {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof sa;
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 ||
        ::listen(listen_fd_, 128) != 0 ||
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&sa), &len) != 0) {
      throw std::runtime_error("GatedSink: cannot listen");
    }
    port_ = ntohs(sa.sin_port);
    thread_ = std::jthread([this](std::stop_token stop) { run(stop); });
  }
  ~GatedSink() {
    thread_.request_stop();
    if (thread_.joinable()) thread_.join();
    for (int fd : fds_) ::close(fd);
    ::close(listen_fd_);
  }
  GatedSink(const GatedSink&) = delete;
  GatedSink& operator=(const GatedSink&) = delete;

  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  void open() { open_ = true; }
  size_t accepted() const { return accepted_.load(); }
  // Connections that have reached EOF or an error.
  size_t ended() const {
    std::lock_guard lock(mu_);
    size_t n = 0;
    for (const auto& r : records_) n += r->end.load() != -1;
    return n;
  }
  // The connections accepted so far, in accept order.
  std::vector<std::shared_ptr<Record>> records() const {
    std::lock_guard lock(mu_);
    return records_;
  }

 private:
  void run(std::stop_token stop) {
    std::vector<char> buf(256 * kKiB);
    while (!stop.stop_requested()) {
      std::vector<pollfd> p{{listen_fd_, POLLIN, 0}};
      if (open_) {
        for (int fd : fds_) p.push_back({fd, POLLIN, 0});
      }
      if (::poll(p.data(), p.size(), 20) <= 0) continue;
      if (p[0].revents & POLLIN) {
        int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd >= 0) {
          std::lock_guard lock(mu_);
          fds_.push_back(fd);
          records_.push_back(std::make_shared<Record>());
          ++accepted_;
        }
      }
      for (size_t i = 1; i < p.size(); ++i) {
        if (p[i].revents == 0) continue;
        std::shared_ptr<Record> rec;
        {
          std::lock_guard lock(mu_);
          rec = records_[i - 1];
        }
        if (rec->end != -1) continue;
        while (true) {
          ssize_t n = ::recv(p[i].fd, buf.data(), buf.size(), 0);
          if (n > 0) {
            rec->bytes += static_cast<uint64_t>(n);
            continue;
          }
          if (n < 0 && errno == EINTR) continue;
          if (n < 0 && errno == EAGAIN) break;
          rec->end = n == 0 ? 0 : errno;
          if (n == 0) ::shutdown(p[i].fd, SHUT_WR);  // EOF answered by EOF: the session can end
          break;
        }
      }
    }
  }

  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<bool> open_{false};
  std::atomic<size_t> accepted_{0};
  mutable std::mutex mu_;
  std::vector<int> fds_;                          // in accept order; guarded by mu_
  std::vector<std::shared_ptr<Record>> records_;  // guarded by mu_
  std::jthread thread_;                           // last: joined before the members it uses
};

std::string proxyConfig(const TempDir& dir, const std::string& upstream) {
  return withDir(
      "log: { level: info }\ndrain_timeout: 2s\nroutes:\n"
      "  - name: web\n    listen: 127.0.0.1:0\n    idle_timeout: 0\n"
      "    forward:\n      upstreams: [\"" +
          upstream + "\"]\n      connect_timeout: 1s\n",
      dir);
}

// Polls until `daemon` has the same fd count for 300 ms in a row; returns it.
size_t settledFdCount(const Daemon& daemon) {
  size_t last = daemon.fdCount();
  auto stable_since = Clock::now();
  const auto deadline = Clock::now() + 5s;
  while (Clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
    size_t now = daemon.fdCount();
    if (now != last) {
      last = now;
      stable_since = Clock::now();
    } else if (Clock::now() - stable_since >= 300ms) {
      break;
    }
  }
  return last;
}

// Sends PayloadStream(seed) on each of `conns` without blocking until none of them has taken a
// byte for 300 ms (every send buffer on the way is full). Returns the bytes each one took.
std::vector<uint64_t> fillUntilStuck(std::vector<Conn>& conns, uint64_t seed) {
  std::vector<uint64_t> sent(conns.size(), 0);
  std::vector<PayloadStream> streams;
  for (size_t i = 0; i < conns.size(); ++i) streams.emplace_back(seed + i);
  std::vector<std::string> pending(conns.size());
  auto last_progress = Clock::now();
  const auto deadline = Clock::now() + 20s;
  while (Clock::now() - last_progress < 300ms && Clock::now() < deadline) {
    bool progress = false;
    for (size_t i = 0; i < conns.size(); ++i) {
      while (true) {
        if (pending[i].empty()) {
          pending[i].resize(64 * kKiB);
          streams[i].fill(pending[i].data(), pending[i].size());
        }
        ssize_t w = ::send(conns[i].fd(), pending[i].data(), pending[i].size(),
                           MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w <= 0) break;
        sent[i] += static_cast<uint64_t>(w);
        pending[i].erase(0, static_cast<size_t>(w));
        progress = true;
      }
    }
    if (progress) last_progress = Clock::now();
    std::this_thread::sleep_for(5ms);
  }
  return sent;
}

}  // namespace

// Issue 12 item 3: a direction paused on a full sink no longer reads its source, so a reset of
// that source must still be seen (the session ends), while a FIN waits for the pipe to drain.
TEST_CASE("faults proxy: clients that reset while their upstream does not read end their sessions",
          "[e2e][proxy][faults]") {
  constexpr size_t kResetting = 20;
  constexpr size_t kHalfClosing = 2;
  GatedSink up;
  TempDir dir;
  Daemon daemon(dir, proxyConfig(dir, up.address()));
  const uint16_t port = daemon.port("web");
  const size_t baseline = settledFdCount(daemon);

  std::vector<Conn> resetting;
  for (size_t i = 0; i < kResetting; ++i) {
    resetting.push_back(connectTcp(port));
    REQUIRE(resetting.back().valid());
  }
  std::vector<Conn> half;
  for (size_t i = 0; i < kHalfClosing; ++i) {
    half.push_back(connectTcp(port));
    REQUIRE(half.back().valid());
  }
  REQUIRE(waitUntil([&] { return up.accepted() == kResetting + kHalfClosing; }, 5s));
  fillUntilStuck(resetting, 100);
  const std::vector<uint64_t> half_sent = fillUntilStuck(half, 200);
  // Every session is paused now: its client holds 4 fds (client, upstream, the pipe's two ends).
  const size_t paused = settledFdCount(daemon);
  INFO("fds: baseline " << baseline << ", with the sessions paused " << paused);
  REQUIRE(paused >= baseline + 4 * (kResetting + kHalfClosing));

  for (auto& c : half) c.shutdownWrite();  // a FIN while paused: the bytes must still go through
  for (auto& c : resetting) resetClose(c);

  const bool ended = waitUntil(
      [&] {
        return logLines(daemon.log(), {"proxy route=web ", " end=client_error"}).size() ==
               kResetting;
      },
      5s);
  const size_t after = settledFdCount(daemon);
  const size_t client_errors =
      logLines(daemon.log(), {"proxy route=web ", " end=client_error"}).size();
  INFO("after the resets: " << kResetting - client_errors << " of " << kResetting
                            << " reset sessions left, " << after - baseline
                            << " fds above the baseline (" << 4 * kHalfClosing
                            << " expected: the half-closed sessions)\n"
                            << daemon.log());
  CHECK(ended);
  CHECK(after == baseline + 4 * kHalfClosing);
  // The half-closed sessions are still there, waiting for their upstream: nothing ended them.
  CHECK(logLines(daemon.log(), {"proxy route=web ", " end=eof"}).empty());

  // The upstream reads again: every byte of the half-closed clients arrives, then their FIN.
  up.open();
  REQUIRE(waitUntil(
      [&] {
        return logLines(daemon.log(), {"proxy route=web ", " end=eof"}).size() == 2;
      },
      10s));
  const auto records = up.records();
  REQUIRE(records.size() == kResetting + kHalfClosing);
  // The half-closing clients' upstream connections end cleanly with every byte (workers may
  // have connected them in any order: they are told apart by how they ended).
  for (const auto& rec : records) REQUIRE(waitUntil([&] { return rec->end.load() != -1; }, 5s));
  std::vector<uint64_t> clean;
  for (const auto& rec : records) {
    if (rec->end.load() == 0) clean.push_back(rec->bytes.load());
  }
  std::vector<uint64_t> want(half_sent.begin(), half_sent.end());
  std::sort(clean.begin(), clean.end());
  std::sort(want.begin(), want.end());
  CHECK(clean == want);
  for (auto& c : half) CHECK(c.waitClosed(5s) == 0);
  // Their pipes were emptied, so they went back to the daemon's pool (2 fds each) by design.
  size_t last = 0;
  CHECK(waitUntil(
      [&] {
        last = settledFdCount(daemon);
        return last <= baseline + 2 * kHalfClosing;
      },
      5s));
  INFO("fds at the end: " << last << ", baseline " << baseline);
}
