#pragma once
// Shared pieces of the store-and-forward end-to-end tests (ship_test.cpp, ship_faults_test.cpp):
// numbered lines, the shipping route's config, metrics, a Unix-socket upstream that keeps each
// connection's bytes, and the check that what the upstream received is the archive with only
// whole lines repeated.
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstdio>
#include <mutex>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "harness.hpp"

namespace e2e::ship {

using namespace std::chrono_literals;

// Lines of about 100 bytes, numbered: "client C line N ...\n".
inline std::string lines(int client, size_t bytes) {
  std::string out;
  Prng prng(static_cast<uint64_t>(client) * 7919 + 1);
  for (uint64_t i = 0; out.size() < bytes; ++i) {
    std::string line = "client ";
    line += std::to_string(client);
    line += " line ";
    line += std::to_string(i);
    line += ' ';
    line.append(static_cast<size_t>(prng.between(20, 120)), static_cast<char>('a' + i % 26));
    line += '\n';
    out += line;
  }
  return out;
}

// A route "app" on 127.0.0.1:0, layout shared, framing lines, shipping to `upstream`, with the
// admin endpoint; `archive_extra` and `forward_extra` are lines added to those blocks.
inline std::string config(const TempDir& dir, const std::string& upstream,
                          const std::string& archive_extra = "",
                          const std::string& forward_extra = "") {
  std::string text = R"(log: { level: info }
drain_timeout: 5s
admin: { listen: 127.0.0.1:0 }
routes:
  - name: app
    listen: 127.0.0.1:0
    archive:
      dir: @DIR@/archive
      layout: shared
      framing: lines
      name: "{route}-{seq}.log"
      rotate: { max_bytes: 256KiB }
)";
  text += archive_extra;
  text += "    forward:\n      upstreams: [\"";
  text += upstream;
  text += "\"]\n      connect_timeout: 500ms\n      fail_timeout: 200ms\n";
  text += forward_extra;
  return withDir(text, dir);
}

inline double metric(const MetricValues& m, const std::string& name) {
  auto it = m.find(name + "{route=\"app\"}");
  return it == m.end() ? -1 : it->second;
}

// Waits until the upstream has acknowledged everything archived; false on timeout.
inline bool waitShipped(const std::string& admin, Millis timeout, MetricValues* last) {
  return waitUntil(
      [&] {
        *last = scrapeMetrics(admin);
        const double archived = metric(*last, "spliced_archive_bytes_total");
        return archived > 0 && metric(*last, "spliced_ship_lag_bytes") == 0 &&
               metric(*last, "spliced_ship_acked_bytes_total") >= archived &&
               metric(*last, "spliced_connections_active") == 0;
      },
      timeout, Millis(50));
}

inline std::string describe(const MetricValues& m) {
  std::ostringstream out;
  for (const auto& [k, v] : m) {
    if (k.starts_with("spliced_ship") || k.starts_with("spliced_archive_bytes")) {
      out << k << " " << v << "\n";
    }
  }
  return out.str();
}

// What `spliced cat` reads back from the archive: the shared chain in order.
inline std::string archiveOf(const TempDir& dir) {
  CommandResult r = runSpliced(dir, {"cat", (dir / "archive").string()}, Millis(30000));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  return r.out;
}

// Sends each client's bytes on its own connection, all at once, and closes them.
inline void sendClients(uint16_t port, const std::vector<std::string>& payloads) {
  std::vector<std::jthread> threads;
  std::atomic<int> failures{0};
  for (const auto& p : payloads) {
    threads.emplace_back([&, port] {
      Conn c = connectTcp(port);
      if (!c.valid() || c.sendAll(p) != 0) ++failures;
      c.shutdownWrite();
      if (c.waitClosed(30s) != 0) ++failures;
    });
  }
  threads.clear();
  REQUIRE(failures == 0);
}

// A Unix-socket upstream that keeps what each connection brought. With `close_after`, it closes
// a connection once it has read that many bytes (what it had not read is lost with it, as when
// an aggregator dies). stop() closes the listener and every connection; start() listens again.
class UnixSink {
 public:
  explicit UnixSink(std::string path, uint64_t close_after = 0)
      : path_(std::move(path)), close_after_(close_after) {}
  // Reads at most 16 KiB per `pause` from now on (about 8 MB/s with 2 ms): a slow aggregator.
  void throttle(Millis pause) { pause_ms_ = static_cast<int>(pause.count()); }
  ~UnixSink() { stop(); }

  void start() {
    ::unlink(path_.c_str());
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un sa{};
    sa.sun_family = AF_UNIX;
    std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path_.c_str());
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
    REQUIRE(::listen(fd, 16) == 0);
    listen_fd_ = fd;
    running_ = true;
    thread_ = std::jthread([this, fd] { acceptLoop(fd); });
  }

  void stop() {
    if (!running_) return;
    running_ = false;
    ::shutdown(listen_fd_, SHUT_RDWR);
    thread_ = {};  // joins (the accept loop polls running_)
    ::close(listen_fd_);
    ::unlink(path_.c_str());
  }

  // Every connection's bytes, in accept order.
  std::vector<std::string> streams() const {
    std::lock_guard lock(mu_);
    return streams_;
  }
  std::string joined() const {
    std::string out;
    for (const auto& s : streams()) out += s;
    return out;
  }
  // The streams joined, each without a torn last line: a connection that broke mid-line (or
  // whose sender died) may end in one; the next connection starts with that line whole.
  std::string joinedWholeLines() const {
    std::string out;
    for (const auto& s : streams()) out.append(s, 0, s.rfind('\n') + 1);
    return out;
  }
  // Bytes that connections still held unread when the sink was stopped (lost with them).
  uint64_t unreadAtStop() const { return unread_.load(); }
  // Bytes received over every connection.
  uint64_t received() const {
    std::lock_guard lock(mu_);
    uint64_t n = 0;
    for (const auto& st : streams_) n += st.size();
    return n;
  }
  // A connection is open (its sender has not closed it).
  bool serving() const { return serving_.load(); }
  size_t connections() const {
    std::lock_guard lock(mu_);
    return streams_.size();
  }
  std::string address() const { return "unix:" + path_; }

 private:
  void acceptLoop(int lfd) {
    while (running_) {
      pollfd p{lfd, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      int c = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) continue;
      size_t index;
      {
        std::lock_guard lock(mu_);
        streams_.emplace_back();
        index = streams_.size() - 1;
      }
      serving_ = true;
      serve(c, index);  // one connection at a time: a shipper opens one
      if (!running_) {
        // Stopped (killed): what the connection holds unread is lost with it. The sender's
        // further writes fail once the read side is shut, so the count is final.
        ::shutdown(c, SHUT_RDWR);
        int unread = 0;
        if (::ioctl(c, FIONREAD, &unread) == 0 && unread > 0)
          unread_ += static_cast<uint64_t>(unread);
      }
      ::close(c);
      serving_ = false;
    }
  }
  void serve(int c, size_t index) {
    char buf[65536];
    uint64_t got = 0;
    while (running_) {
      pollfd p{c, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      size_t want = sizeof buf;
      if (pause_ms_ > 0) {
        want = 16384;
        std::this_thread::sleep_for(Millis(pause_ms_.load()));
      }
      if (close_after_ > 0) want = std::min<uint64_t>(want, close_after_ - got);
      ssize_t n = ::recv(c, buf, want, 0);
      if (n <= 0) return;
      got += static_cast<uint64_t>(n);
      {
        std::lock_guard lock(mu_);
        streams_[index].append(buf, static_cast<size_t>(n));
      }
      if (close_after_ > 0 && got >= close_after_) return;
    }
  }

  std::string path_;
  uint64_t close_after_;
  std::atomic<int> pause_ms_{0};
  std::atomic<uint64_t> unread_{0};
  std::atomic<bool> serving_{false};
  int listen_fd_ = -1;
  std::atomic<bool> running_{false};
  mutable std::mutex mu_;
  std::vector<std::string> streams_;
  std::jthread thread_;
};

// Checks that `got` (what the upstream received, joined) is `want` (the archive) with only whole
// lines repeated: walking both, a line of `got` that is not the next line of `want` must be a
// line seen shortly before (a resent one). Returns the duplicated bytes, or -1 (with a reason).
inline int64_t duplicatedWholeLines(const std::string& got, const std::string& want,
                                    std::string& why) {
  // Every line of the archive (they are unique here) and its place in it.
  std::unordered_map<std::string_view, size_t> index;
  std::vector<std::string_view> wl;
  for (size_t at = 0; at < want.size();) {
    size_t nl = want.find('\n', at);
    if (nl == std::string::npos) nl = want.size() - 1;
    wl.emplace_back(want.data() + at, nl + 1 - at);
    index.emplace(wl.back(), wl.size() - 1);
    at = nl + 1;
  }
  size_t g = 0, w = 0;  // w: the next archive line expected
  int64_t dup = 0;
  while (g < got.size()) {
    size_t gn = got.find('\n', g);
    if (gn == std::string::npos) {
      why = "the upstream's stream ends in a torn line at byte " + std::to_string(g);
      return -1;
    }
    const std::string_view gl(got.data() + g, gn + 1 - g);
    if (w < wl.size() && wl[w] == gl) {
      ++w;
    } else {
      // A resent line: one the archive has before the current position.
      auto it = index.find(gl);
      if (it == index.end() || it->second >= w) {
        why = "byte " + std::to_string(g) +
              " of the upstream's stream starts a line that the archive does not have before "
              "that point: " +
              std::string(gl.substr(0, 60));
        return -1;
      }
      dup += static_cast<int64_t>(gl.size());
    }
    g = gn + 1;
  }
  if (w != wl.size()) {
    why = "the upstream is missing the archive's lines from line " + std::to_string(w) + " of " +
          std::to_string(wl.size());
    return -1;
  }
  return dup;
}

}  // namespace e2e::ship
