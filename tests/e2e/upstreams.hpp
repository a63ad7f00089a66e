#pragma once
// Real upstream servers and client helpers for the proxy end-to-end tests.
//
// A TestUpstream listens on 127.0.0.1:0, [::1]:0 or a unix socket and serves every connection it
// accepts in a thread of its own, in one of a few behaviours (echo, sink, fixed reply, reset,
// stall, record). It counts what it saw so that a test can tell which upstream served a session
// and what reached it, byte for byte. Everything it owns (sockets, threads) is released by its
// destructor; every wait inside it is bounded and notices a stop within ~50 ms.
//
// As in harness.hpp, nothing here makes Catch2 assertions: results are returned to the test.
#include <sys/socket.h>
#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "harness.hpp"

namespace e2e {

// What a TestUpstream does with each connection.
enum class UpstreamMode {
  Echo,        // sends back every byte; at EOF shuts its side down and closes
  Sink,        // reads and drops everything until EOF, then closes
  Reply,       // reads `read_first` bytes (kToEof: until EOF), sends `body`, then closes
  ResetAfter,  // reads `reset_after` bytes, then closes with SO_LINGER {1, 0} (a reset)
  Stall,       // never reads; holds the connection open until the upstream is destroyed
};

inline constexpr size_t kToEof = std::numeric_limits<size_t>::max();

struct UpstreamOptions {
  UpstreamMode mode = UpstreamMode::Echo;
  int family = AF_INET;  // AF_INET (127.0.0.1), AF_INET6 (::1) or AF_UNIX (`unix_path`)
  std::string unix_path;
  int backlog = 128;
  // Reply: the body, and how many bytes to read before sending it.
  std::string body;
  size_t read_first = 0;
  // Reply: after the body, shutdown(SHUT_WR) and read on until EOF (a half-close) instead of
  // closing at once.
  bool half_close = false;
  size_t reset_after = 0;  // ResetAfter
  // Every mode: keep the first `keep` bytes of each connection (UpstreamConnRecord::data).
  size_t keep = 0;
};

// What one accepted connection saw.
struct UpstreamConnRecord {
  std::string data;    // its first `keep` bytes
  uint64_t bytes = 0;  // bytes received
  // How it ended: 0 at EOF, the errno of a failed recv/send (ECONNRESET...), -1 while open or
  // when the upstream stopped it, -2 when the upstream itself reset it (ResetAfter).
  int end = -1;
  bool done = false;  // its thread has finished
};

class TestUpstream {
 public:
  explicit TestUpstream(UpstreamOptions opts);
  ~TestUpstream();
  TestUpstream(const TestUpstream&) = delete;
  TestUpstream& operator=(const TestUpstream&) = delete;

  // Shorthands.
  static std::unique_ptr<TestUpstream> echo(int family = AF_INET);
  static std::unique_ptr<TestUpstream> sink(size_t keep = 0);

  uint16_t port() const { return port_; }
  // As the daemon's config spells it: "127.0.0.1:P", "[::1]:P" or "unix:/path".
  std::string address() const;

  size_t accepted() const { return accepted_.load(); }
  // Connections that received at least one byte (health probes connect and close at once).
  size_t served() const { return served_.load(); }
  uint64_t bytesReceived() const { return bytes_.load(); }
  // A snapshot of every connection accepted so far, in accept order.
  std::vector<UpstreamConnRecord> records() const;
  // Waits until `n` connections have finished; false on timeout.
  bool waitDone(size_t n, Millis timeout) const;

  // Closes the listening socket: connects to its port are refused from now on.
  void stopListening();
  // Listens again on the same port (or path). False when it cannot (errno kept in `*err`).
  bool listenAgain(int* err = nullptr);

 private:
  struct Connection {
    int fd = -1;
    std::shared_ptr<UpstreamConnRecord> rec;  // guarded by TestUpstream::mu_
    std::atomic<bool> finished{false};
    std::jthread thread;
  };

  bool openListener(int* err);
  void acceptLoop(std::stop_token stop);
  void serve(Connection& c, std::stop_token stop);
  void reapFinished();

  UpstreamOptions opts_;
  uint16_t port_ = 0;
  int listen_fd_ = -1;
  std::atomic<size_t> accepted_{0};
  std::atomic<size_t> served_{0};
  std::atomic<uint64_t> bytes_{0};
  mutable std::mutex mu_;
  std::vector<std::shared_ptr<UpstreamConnRecord>> records_;  // guarded by mu_
  std::list<std::unique_ptr<Connection>> conns_;              // touched by the accept thread only
  std::jthread accept_thread_;
};

// A TCP port on 127.0.0.1 with nothing listening (bound to port 0, then closed): connects to it
// are refused.
uint16_t refusingPort();

// A listener whose accept queue is full (backlog 0, one connection queued, never accepted): the
// kernel drops further SYNs, so a connect to it never completes. Owns its sockets.
class Blackhole {
 public:
  Blackhole();
  ~Blackhole();
  Blackhole(const Blackhole&) = delete;
  Blackhole& operator=(const Blackhole&) = delete;
  uint16_t port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  bool ok() const { return ok_; }

 private:
  int listen_fd_ = -1;
  int filler_fd_ = -1;
  uint16_t port_ = 0;
  bool ok_ = false;
};

// ---------------------------------------------------------------------------------------------
// Clients

// Connects to `ip`:`port` (an IPv4 or IPv6 literal), after binding to `bind_ip` (port 0) when
// given. Same timeouts as connectTcp. On failure the Conn is invalid and `*err` holds errno.
Conn connectIp(const std::string& ip, uint16_t port, const std::string& bind_ip = "",
               int* err = nullptr);

// The local or remote address of a connected socket: {"127.0.0.1", 40000}, {"::1", 40000}.
struct Endpoint {
  std::string ip;
  uint16_t port = 0;
};
Endpoint localEndpoint(int fd);

// Closes `conn` with a reset (SO_LINGER {1, 0}).
void resetClose(Conn& conn);

// Sends `msg`, then reads exactly msg.size() bytes back. "" when they came back equal, else why
// not.
std::string echoOnce(Conn& conn, std::string_view msg, Millis timeout = Millis(5000));

// A client exchange on a borrowed Conn, both directions at once in two threads: one sends
// `send_bytes` of PayloadStream(send_seed) (in `chunk`-sized sends with `pause` between them) and
// then, if `shut_write`, shutdown(SHUT_WR); the other receives until EOF, an error or the
// deadline, checking that what arrives is the start of PayloadStream(recv_seed).
struct ExchangeSpec {
  uint64_t send_seed = 1;
  uint64_t send_bytes = 0;
  bool shut_write = true;
  uint64_t recv_seed = 1;
  size_t chunk = 64 * kKiB;
  Millis pause{0};
  Millis timeout{30000};
};

struct ExchangeResult {
  uint64_t sent = 0;
  int send_err = 0;  // errno of the send that failed (EPIPE, ECONNRESET), ETIMEDOUT at deadline
  uint64_t received = 0;
  int recv_err = 0;  // errno of the recv that failed, ETIMEDOUT at the deadline
  bool eof = false;
  std::string mismatch;    // "" or where the received bytes first differ from the stream
  Millis recv_elapsed{0};  // from the start until the receiver stopped
};

class Exchange {
 public:
  Exchange(Conn& conn, ExchangeSpec spec);
  // Stops both threads (each notices within ~50 ms) and waits for them.
  ~Exchange();
  Exchange(const Exchange&) = delete;
  Exchange& operator=(const Exchange&) = delete;

  uint64_t sent() const { return sent_.load(); }
  uint64_t received() const { return received_.load(); }
  // Waits for both threads and returns what they saw.
  ExchangeResult join();

 private:
  void sendLoop(std::stop_token stop);
  void recvLoop(std::stop_token stop);

  Conn& conn_;
  ExchangeSpec spec_;
  Clock::time_point start_;
  Clock::time_point deadline_;
  std::atomic<uint64_t> sent_{0};
  std::atomic<uint64_t> received_{0};
  ExchangeResult result_;  // fields written by one thread each, read after join
  std::jthread sender_;
  std::jthread receiver_;
};

// ---------------------------------------------------------------------------------------------
// The daemon process

// VmRSS of process `pid` in KiB (0 when it cannot be read).
uint64_t rssKiB(pid_t pid);

}  // namespace e2e
