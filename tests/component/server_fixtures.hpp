#pragma once
// Shared pieces of the component tests that run a whole Server in-process on loopback port 0:
// driving its loop with deadlines, clients, an echo upstream, and byte-exact comparisons that
// print a short message instead of megabytes when they fail.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <map>
#include <string>
#include <thread>

#include "fixtures.hpp"
#include "spliced/server/server.hpp"

namespace spliced::testing {

inline sockaddr_in loopbackAddr(uint16_t port) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return sa;
}

// A blocking client connected to "127.0.0.1:port".
inline UniqueFd connectTo(const std::string& hostport) {
  auto colon = hostport.rfind(':');
  sockaddr_in sa = loopbackAddr(static_cast<uint16_t>(std::stoi(hostport.substr(colon + 1))));
  UniqueFd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(::connect(fd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
  return fd;
}

inline void sendAll(int fd, const std::string& data) {
  size_t off = 0;
  while (off < data.size()) {
    ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    off += static_cast<size_t>(n);
  }
}

// How a peer's stream ended as a client saw it.
struct Received {
  std::string bytes;
  int end = 0;  // 0: EOF; ECONNRESET, ...: the error; ETIMEDOUT: still open at the deadline
};

// Reads `fd` until EOF, an error, or the deadline.
inline Received recvUntilClosed(int fd, std::chrono::milliseconds limit) {
  Received out;
  auto deadline = std::chrono::steady_clock::now() + limit;
  char buf[65536];
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      out.end = ETIMEDOUT;
      return out;
    }
    pollfd p{fd, POLLIN, 0};
    int ready = ::poll(&p, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) continue;  // the deadline check above ends it
    ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      out.bytes.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    out.end = n == 0 ? 0 : errno;
    return out;
  }
}

// Joins on scope exit, so a failed REQUIRE does not terminate the process.
struct ThreadGuard {
  std::thread t;
  explicit ThreadGuard(std::thread th) : t(std::move(th)) {}
  ~ThreadGuard() { join(); }
  void join() {
    if (t.joinable()) t.join();
  }
};

// Runs the loop until `done()` holds or the deadline passes.
template <typename Pred>
bool loopUntil(Server& server, Pred done, std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    timeval tv{0, 10000};
    event_base_loopexit(server.base(), &tv);
    event_base_dispatch(server.base());
  }
  return true;
}

// Runs the loop for `d` (to show that something does NOT happen meanwhile).
inline void runFor(Server& server, std::chrono::milliseconds d) {
  loopUntil(
      server, [] { return false; }, d);
}

// Stops the server's routes and gives the loop a moment to close what is left.
inline void stopServer(Server& server) {
  server.beginShutdown();
  runFor(server, std::chrono::milliseconds(50));
}

// "" when a == b, else a one-line description of how they differ (never the bytes themselves).
inline std::string difference(const std::string& a, const std::string& b) {
  if (a == b) return "";
  size_t i = 0;
  while (i < a.size() && i < b.size() && a[i] == b[i]) ++i;
  return "sizes " + std::to_string(a.size()) + " and " + std::to_string(b.size()) +
         ", first difference at byte " + std::to_string(i);
}

// Every regular file below `dir` with no part of its path starting with '.' (spliced's own lock
// file and its .spliced/ state), by relative path, with its content.
inline std::map<std::string, std::string> filesIn(const std::filesystem::path& dir) {
  std::map<std::string, std::string> out;
  for (auto& e : std::filesystem::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    const std::string rel = std::filesystem::relative(e.path(), dir).string();
    if (rel.front() == '.' || rel.find("/.") != std::string::npos) continue;
    out[rel] = readFile(e.path());
  }
  return out;
}

// The names of filesIn(dir), for messages.
inline std::string namesIn(const std::filesystem::path& dir) {
  std::string out;
  for (const auto& [name, content] : filesIn(dir)) {
    out += (out.empty() ? "" : " ") + name + "(" + std::to_string(content.size()) + ")";
  }
  return out;
}

// An echo server on 127.0.0.1:0 serving one connection at a time in a thread; it echoes until
// EOF (or an error), then shuts its write side. Counts what it saw.
struct EchoUpstream {
  UniqueFd listener;
  uint16_t port = 0;
  std::thread thread;
  std::atomic<bool> stop{false};
  std::atomic<int> accepted{0};
  std::atomic<int> finished{0};  // connections served to their end
  std::atomic<uint64_t> bytes{0};

  EchoUpstream() {
    listener.reset(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    sockaddr_in sa = loopbackAddr(0);
    REQUIRE(::bind(listener.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    REQUIRE(::listen(listener.get(), 16) == 0);
    socklen_t len = sizeof sa;
    ::getsockname(listener.get(), reinterpret_cast<sockaddr*>(&sa), &len);
    port = ntohs(sa.sin_port);
    thread = std::thread([this] {
      while (!stop) {
        pollfd p{listener.get(), POLLIN, 0};
        if (::poll(&p, 1, 20) <= 0) continue;
        UniqueFd c(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
        if (!c.valid()) continue;
        ++accepted;
        char buf[65536];
        while (!stop) {
          pollfd q{c.get(), POLLIN, 0};
          if (::poll(&q, 1, 20) <= 0) continue;
          ssize_t n = ::recv(c.get(), buf, sizeof buf, 0);
          if (n <= 0) break;
          bytes += static_cast<uint64_t>(n);
          for (ssize_t off = 0; off < n;) {
            ssize_t w = ::send(c.get(), buf + off, static_cast<size_t>(n - off), MSG_NOSIGNAL);
            if (w <= 0) break;
            off += w;
          }
        }
        ::shutdown(c.get(), SHUT_WR);
        ++finished;
      }
    });
  }
  ~EchoUpstream() {
    stop = true;
    thread.join();
  }
};

// Waits (off the loop) until `done()` holds or the deadline passes.
template <typename Pred>
bool waitUntil(Pred done, std::chrono::milliseconds limit) {
  auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

}  // namespace spliced::testing
