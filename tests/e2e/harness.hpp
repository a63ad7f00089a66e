#pragma once
// End-to-end harness: runs the real spliced binary (SPLICED_BIN) on a temporary config and talks
// to it over real sockets. Everything that owns an OS resource (temp dir, child process, socket)
// releases it in its destructor, so a failing REQUIRE never leaves a daemon or a directory behind.
//
// Catch2 assertions are only made from the thread running the test case: helpers meant for client
// threads return results instead of asserting.
#include <sys/resource.h>
#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace e2e {

namespace fs = std::filesystem;
using Millis = std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

inline constexpr size_t kKiB = 1024;
inline constexpr size_t kMiB = 1024 * kKiB;

// ---------------------------------------------------------------------------------------------
// Files

// A fresh directory /tmp/spliced-e2e-XXXXXX (mkdtemp), removed with everything in it on
// destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& rel) const { return path_ / rel; }

 private:
  fs::path path_;
};

// Whole file as bytes; throws std::runtime_error when it cannot be read.
std::string readFile(const fs::path& path);
// Creates or truncates `path` with `content`; throws std::runtime_error on failure.
void writeFile(const fs::path& path, std::string_view content);

// Regular files below `dir` (recursively) whose names do not end in ".open", sorted by their
// path relative to `dir`. A missing dir gives an empty list.
std::vector<fs::path> closedSegments(const fs::path& dir);
// Files below `dir` whose names end in ".open", sorted the same way.
std::vector<fs::path> openSegments(const fs::path& dir);
// The contents of `files`, concatenated in the given order.
std::string concatFiles(const std::vector<fs::path>& files);
// The contents of the closed segments below `dir`, one string per segment, sorted (for
// comparing what many connections archived as a multiset).
std::vector<std::string> sortedSegmentContents(const fs::path& dir);

// `text` with every "@DIR@" replaced by the temp dir's path (configs are written as raw strings).
std::string withDir(std::string text, const TempDir& dir);

// Segment name template used by per_connection tests: route, connection id, client port, seq.
// The workers a config without `workers:` runs (auto: the CPUs in the affinity mask).
size_t autoWorkers();

inline constexpr const char* kPerConnName = "{route}-{conn}-{peer_port}-{seq}.log";

// The closed segments of one connection, ordered by {seq}.
struct Chain {
  uint64_t conn = 0;
  uint16_t port = 0;
  std::vector<std::pair<uint64_t, fs::path>> segments;  // (seq, file), ascending seq

  std::vector<fs::path> files() const;
  // True when the seqs are exactly 0, 1, 2, ... (no segment missing).
  bool seqsContiguous() const;
};
// Closed segments of `dir` named by kPerConnName, grouped by {conn}. Names that do not parse go
// to `*unparsed` (when given).
std::map<uint64_t, Chain> chainsByConn(const fs::path& dir,
                                       std::vector<std::string>* unparsed = nullptr);
// The chain whose {peer_port} is `port`; nullptr when none or more than one.
const Chain* findByPort(const std::map<uint64_t, Chain>& chains, uint16_t port);

// ---------------------------------------------------------------------------------------------
// The daemon

// A running `spliced -c DIR/spliced.yaml`; its stdout and stderr go to DIR/daemon.log.
// The Daemon owns the child process: the destructor kills (SIGKILL) and reaps it if it still runs.
// How a Daemon is started beyond its config.
struct DaemonOptions {
  rlim_t nofile = 0;  // RLIMIT_NOFILE (soft and hard) of the daemon from its first instruction
  std::vector<std::pair<std::string, std::string>> env;  // set in the daemon's environment
  // Sockets passed as systemd passes them: fds 3, 4, ... with LISTEN_FDS and LISTEN_PID set
  // (LISTEN_FDNAMES goes in `env`). The test keeps its own copies.
  std::vector<int> listen_fds;
  // The binary to run instead of SPLICED_BIN (a copy a test may replace: binary upgrade).
  std::string binary;
};

class Daemon {
 public:
  // Writes `config` to `dir`/spliced.yaml and starts the daemon on it (fork/exec).
  Daemon(const TempDir& dir, const std::string& config, const DaemonOptions& opts = {});
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  pid_t pid() const { return pid_; }
  const fs::path& logPath() const { return log_path_; }
  const fs::path& configPath() const { return config_path_; }

  // Waits for the start-up line "route=ROUTE listening on ADDR" and returns ADDR (e.g.
  // "127.0.0.1:43121" or "unix:/tmp/x/s.sock"). FAILs when the daemon exits first or on timeout.
  std::string waitListening(const std::string& route, Millis timeout = Millis(10000));
  // The TCP port of ROUTE's listener (waitListening, then the digits after the last ':').
  uint16_t port(const std::string& route, Millis timeout = Millis(10000));
  // Waits for the start-up line "admin listening on ADDR" and returns ADDR (as waitListening).
  std::string waitAdmin(Millis timeout = Millis(10000));

  // kill(pid, sig); FAILs if the signal cannot be sent.
  void signal(int sig);
  // Waits for the daemon to exit and returns its exit status. On timeout (or death by a signal)
  // it is killed with SIGKILL and the test FAILs, showing the log.
  int waitExit(Millis timeout);
  // True while the child has not been reaped.
  bool running();

  // What the daemon has logged so far.
  std::string log() const;
  // Polls the log until it contains `needle`; false on timeout.
  bool waitLog(const std::string& needle, Millis timeout) const;
  // The number of log lines holding every one of `needles`, once it reaches `expected` or
  // `timeout` (5 s) has passed. A session's line is written after its sockets close, and another
  // worker thread may write it, so a client that has seen EOF may be a moment ahead of the log.
  size_t countLogLines(const std::vector<std::string>& needles, size_t expected,
                       Millis timeout = Millis(5000)) const;

  // Entries in /proc/PID/fd, and their targets (for a failure message).
  size_t fdCount() const;
  std::string fdListing() const;

 private:
  void reap(int status);
  // Waits for a log line with `needle` (not preceded by '=') and returns the word after it.
  std::string waitAddress(const std::string& needle, Millis timeout);

  fs::path config_path_;
  fs::path log_path_;
  pid_t pid_ = -1;
  bool exited_ = false;
  int exit_status_ = -1;
};

// A datagram socket at `path` that receives what the daemon sends with sd_notify (a fake
// NOTIFY_SOCKET).
class FakeNotifySocket {
 public:
  explicit FakeNotifySocket(const fs::path& path);
  ~FakeNotifySocket();
  FakeNotifySocket(const FakeNotifySocket&) = delete;
  FakeNotifySocket& operator=(const FakeNotifySocket&) = delete;
  const std::string& path() const { return path_; }

  // Messages received until `until` is true of the list or `timeout` passes.
  std::vector<std::string> receive(
      const std::function<bool(const std::vector<std::string>&)>& until, Millis timeout);

 private:
  std::string path_;
  int fd_ = -1;
  std::vector<std::string> messages_;
};

// What a shell script printed (stdout and stderr together) and its exit status (-1: killed).
struct Shell {
  int exit_code = -1;
  std::string out;
};
// Runs `script` with bash in `dir` (written there as script.sh).
Shell sh(const TempDir& dir, const std::string& script);

struct CommandResult {
  int exit_code = -1;  // -1 when killed by a signal or timed out
  std::string out;     // stdout
  std::string err;     // stderr
};
// Runs SPLICED_BIN with `args` (e.g. {"-t", "-c", path}) in `dir`, waits at most `timeout`.
CommandResult runSpliced(const TempDir& dir, const std::vector<std::string>& args,
                         Millis timeout = Millis(10000));

// "route=NAME totals: connections=N ..." from `log`, as {"connections": N, ...}; empty when the
// line is missing.
std::map<std::string, uint64_t> parseTotals(const std::string& log, const std::string& route);
// Lines of `log` that contain every one of `needles`.
std::vector<std::string> logLines(const std::string& log, const std::vector<std::string>& needles);

// ---------------------------------------------------------------------------------------------
// Sockets

// A blocking client socket (close-on-exec, send/receive timeouts of 30 s so that a stuck daemon
// cannot hang a test). Owns its fd.
class Conn {
 public:
  Conn() = default;
  explicit Conn(int fd) : fd_(fd) {}
  ~Conn() { close(); }
  Conn(Conn&& o) noexcept : fd_(o.fd_) { o.fd_ = -1; }
  Conn& operator=(Conn&& o) noexcept;
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  bool valid() const { return fd_ >= 0; }
  int fd() const { return fd_; }
  void close();

  // Sends all of `data`. Returns 0, or the errno that stopped it (MSG_NOSIGNAL: no SIGPIPE).
  int sendAll(const char* data, size_t n);
  int sendAll(std::string_view data) { return sendAll(data.data(), data.size()); }
  // shutdown(SHUT_WR): tells the daemon the stream is over.
  void shutdownWrite();
  // Waits until the daemon closes the connection. Returns 0 on EOF, the errno of a failed recv
  // (ECONNRESET...), ETIMEDOUT when still open after `timeout`, or EPROTO if bytes arrived (the
  // daemon never writes to collect clients).
  int waitClosed(Millis timeout);
  // The local port (the daemon's {peer_port}).
  uint16_t localPort() const;

 private:
  int fd_ = -1;
};

// Connects to 127.0.0.1:port. On failure the Conn is invalid and `*err` (if given) holds errno.
Conn connectTcp(uint16_t port, int* err = nullptr);
// Connects to a unix stream socket at `path`.
Conn connectUnix(const std::string& path, int* err = nullptr);

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 (the admin endpoint)

struct HttpResponse {
  int status = 0;      // 0 when no status line could be parsed
  std::string reason;  // the reason phrase
  std::vector<std::pair<std::string, std::string>> headers;  // in order, values trimmed
  // Everything after the header block up to EOF. For HEAD it must be empty: whatever arrives is
  // kept here so that a test can see it.
  std::string body;
  std::string error;  // "" or why the exchange failed (connect, send, timeout, malformed reply)

  // Value of the first header named `name` (case-insensitive); "" when absent.
  std::string header(std::string_view name) const;
  // How many headers are named `name` (case-insensitive).
  size_t headerCount(std::string_view name) const;
};

// Sends `request` (raw bytes, e.g. "GET / HTTP/1.1\r\n...\r\n\r\n") on `conn`, reads until
// EOF (or `timeout`), and parses status line, headers and body. Safe to call from any thread.
HttpResponse httpExchange(Conn& conn, std::string_view request, Millis timeout = Millis(10000));
// "METHOD TARGET HTTP/1.1" with Host, `Connection: close` and `headers`, to `addr`
// ("127.0.0.1:PORT" or "unix:/path"). `target` is sent verbatim: no normalisation or encoding.
HttpResponse httpRequest(const std::string& addr, const std::string& method,
                         const std::string& target,
                         const std::vector<std::pair<std::string, std::string>>& headers = {},
                         Millis timeout = Millis(10000));
inline HttpResponse httpGet(const std::string& addr, const std::string& target,
                            const std::vector<std::pair<std::string, std::string>>& headers = {}) {
  return httpRequest(addr, "GET", target, headers);
}

// ---------------------------------------------------------------------------------------------
// Payloads

// splitmix64: small, fast, and the same sequence on every platform.
class Prng {
 public:
  explicit Prng(uint64_t seed) : state_(seed) {}
  uint64_t next();
  // Uniform in [lo, hi] (lo <= hi); the tiny modulo bias does not matter here.
  uint64_t between(uint64_t lo, uint64_t hi) { return lo + next() % (hi - lo + 1); }

 private:
  uint64_t state_;
};

// An endless deterministic byte stream: fill() called with any split of sizes yields the same
// bytes as randomPayload(seed, total).
class PayloadStream {
 public:
  explicit PayloadStream(uint64_t seed) : prng_(seed) {}
  void fill(char* out, size_t n);

 private:
  Prng prng_;
  uint64_t word_ = 0;
  int left_ = 0;  // bytes of word_ not handed out yet
};

// The first `n` bytes of PayloadStream(seed).
std::string randomPayload(uint64_t seed, size_t n);

// "" when equal, else where and how `got` differs from `want` (sizes, first differing offset).
std::string firstDifference(std::string_view got, std::string_view want);

// A client that streams PayloadStream(seed) into `conn` at about 16 KiB per millisecond until a
// send fails (the daemon closed the connection) or it is stopped. Owns its thread; the Conn is
// borrowed and must outlive it.
class EndlessWriter {
 public:
  EndlessWriter(Conn& conn, uint64_t seed);
  ~EndlessWriter() { stop(); }
  EndlessWriter(const EndlessWriter&) = delete;
  EndlessWriter& operator=(const EndlessWriter&) = delete;

  // Bytes the kernel accepted so far.
  uint64_t written() const { return written_.load(); }
  // True once the thread has returned.
  bool finished() const { return finished_.load(); }
  // errno of the send that failed, 0 while none has.
  int error() const { return error_.load(); }
  // Stops the thread and waits for it.
  void stop();

 private:
  std::atomic<uint64_t> written_{0};
  std::atomic<bool> finished_{false};
  std::atomic<int> error_{0};
  std::jthread thread_;  // last: starts after, and is joined before, the counters it updates
};

// ---------------------------------------------------------------------------------------------
// Time

// Polls `cond` every `step` until it is true (returns true) or `timeout` passes (returns false).
bool waitUntil(const std::function<bool()>& cond, Millis timeout, Millis step = Millis(10));

// False under AddressSanitizer (tools/test.sh --sanitize sets SPLICED_SANITIZED=1): its
// quarantine and shadow memory grow RSS by design, so RSS says nothing about leaks there. The fd
// checks still apply. Warns once when it returns false.
bool rssIsMeaningful();

// /metrics, loosely: "name{labels} value" lines keyed by everything before the value (empty when
// the scrape fails).
using MetricValues = std::map<std::string, double>;
MetricValues scrapeMetrics(const std::string& admin);
// One sample of a fresh scrape ("name{labels}" as exposed), or -1 when it is missing.
double metricValue(const std::string& admin, const std::string& key);
// Waits (10 s at most) until the daemon has logged `n` reloads, applied or failed.
bool waitReloads(const Daemon& d, size_t n);

// A tmpfs mounted at `path` with `options` (and extra mount `flags`, e.g. MS_RDONLY) for the life
// of the object, unmounted even when the test fails. mounted() is false where mounting is not
// permitted; error() says why.
class TmpfsMount {
 public:
  TmpfsMount(const fs::path& path, const std::string& options, unsigned long flags = 0);
  ~TmpfsMount();
  TmpfsMount(const TmpfsMount&) = delete;
  TmpfsMount& operator=(const TmpfsMount&) = delete;

  bool mounted() const { return mounted_; }
  const std::string& error() const { return error_; }

 private:
  fs::path path_;
  bool mounted_ = false;
  std::string error_;
};

}  // namespace e2e
