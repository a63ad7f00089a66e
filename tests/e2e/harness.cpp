#include "harness.hpp"

#include <sched.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cstdio>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#ifndef SPLICED_BIN
#error "SPLICED_BIN must name the spliced binary"
#endif

namespace e2e {

FakeNotifySocket::FakeNotifySocket(const fs::path& path) : path_(path.string()) {
  fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path_.c_str());
  if (::bind(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    throw std::runtime_error("bind " + path_ + ": " + std::strerror(errno));
  }
}

FakeNotifySocket::~FakeNotifySocket() { ::close(fd_); }

std::vector<std::string> FakeNotifySocket::receive(
    const std::function<bool(const std::vector<std::string>&)>& until, Millis timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!until(messages_) && Clock::now() < deadline) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    char buf[4096];
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n > 0) messages_.emplace_back(buf, static_cast<size_t>(n));
  }
  return messages_;
}

Shell sh(const TempDir& dir, const std::string& script) {
  writeFile(dir / "script.sh", script);
  const std::string cmd = "cd '" + dir.path().string() + "' && bash ./script.sh 2>&1";
  Shell r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) r.out.append(buf, n);
  const int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

size_t autoWorkers() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) != 0) return 1;
  return static_cast<size_t>(std::max(CPU_COUNT(&set), 1));
}
namespace {

std::string errnoText(const std::string& what) { return what + ": " + std::strerror(errno); }

// Starts SPLICED_BIN with `args` in `cwd`, stdout to `out` and stderr to `err` (truncated; the
// same file when they are equal). Everything the child needs is prepared before fork(): between
// fork and exec only async-signal-safe calls.
pid_t spawn(const std::vector<std::string>& args, const fs::path& cwd, const fs::path& out,
            const fs::path& err, const DaemonOptions& opts = {}) {
  const rlim_t nofile = opts.nofile;
  int log_fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log_fd < 0) throw std::runtime_error(errnoText("open " + out.string()));
  int err_fd = log_fd;
  if (err != out) {
    err_fd = ::open(err.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (err_fd < 0) {
      ::close(log_fd);
      throw std::runtime_error(errnoText("open " + err.string()));
    }
  }
  std::vector<std::string> argv_store;
  argv_store.push_back(opts.binary.empty() ? std::string(SPLICED_BIN) : opts.binary);
  argv_store.insert(argv_store.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : argv_store) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string dir = cwd.string();
  const pid_t parent = ::getpid();

  pid_t pid = ::fork();
  if (pid < 0) {
    ::close(log_fd);
    if (err_fd != log_fd) ::close(err_fd);
    throw std::runtime_error(errnoText("fork"));
  }
  if (pid == 0) {
    // If the test process dies (crash, ctest timeout), the daemon goes with it.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(126);
    ::dup2(log_fd, STDOUT_FILENO);
    ::dup2(err_fd, STDERR_FILENO);
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) ::dup2(devnull, STDIN_FILENO);
    // Sockets handed over as systemd does (LISTEN_FDS): to fds 3, 4, ... (through high numbers
    // first, so that none is overwritten before it is moved).
    const int passed = static_cast<int>(opts.listen_fds.size());
    for (int i = 0; i < passed; ++i) {
      if (::dup2(opts.listen_fds[static_cast<size_t>(i)], 900 + i) < 0) ::_exit(126);
    }
    for (int i = 0; i < passed; ++i) {
      if (::dup2(900 + i, 3 + i) < 0) ::_exit(126);
    }
    // No test socket or file may leak into the daemon (it would skew its fd count).
    ::close_range(static_cast<unsigned>(3 + passed), ~0U, 0);
    for (const auto& [name, value] : opts.env) ::setenv(name.c_str(), value.c_str(), 1);
    if (passed > 0) {
      ::setenv("LISTEN_FDS", std::to_string(passed).c_str(), 1);
      ::setenv("LISTEN_PID", std::to_string(::getpid()).c_str(), 1);
    }
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int sig : {SIGPIPE, SIGTERM, SIGINT, SIGUSR1, SIGHUP}) ::sigaction(sig, &dfl, nullptr);
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (nofile > 0) {
      const rlimit lim{nofile, nofile};
      if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) ::_exit(126);
    }
    if (::chdir(dir.c_str()) != 0) ::_exit(126);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(log_fd);
  if (err_fd != log_fd) ::close(err_fd);
  return pid;
}

std::vector<fs::path> listSegments(const fs::path& dir, bool open) {
  std::vector<fs::path> out;
  std::error_code ec;
  if (!fs::exists(dir, ec)) return out;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it);
       it.increment(ec)) {
    const std::string name = it->path().filename().string();
    // .spliced.lock (the archive dir's lock) and .spliced/ (the manifest) are not segments.
    if (name.front() == '.') {
      if (it->is_directory(ec)) it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file(ec)) continue;
    const bool is_open = name.size() >= 5 && name.compare(name.size() - 5, 5, ".open") == 0;
    if (is_open == open) out.push_back(it->path());
  }
  std::sort(out.begin(), out.end(), [&](const fs::path& a, const fs::path& b) {
    return a.lexically_relative(dir).string() < b.lexically_relative(dir).string();
  });
  return out;
}

void setTimeouts(int fd) {
  timeval tv{30, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
}

std::atomic<int> g_run_counter{0};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Files

TempDir::TempDir() {
  char tmpl[] = "/tmp/spliced-e2e-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr) throw std::runtime_error(errnoText("mkdtemp"));
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

std::string readFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path.string());
  std::string out;
  in.seekg(0, std::ios::end);
  auto size = in.tellg();
  in.seekg(0, std::ios::beg);
  if (size > 0) out.resize(static_cast<size_t>(size));
  in.read(out.data(), static_cast<std::streamsize>(out.size()));
  out.resize(static_cast<size_t>(in.gcount()));
  return out;
}

void writeFile(const fs::path& path, std::string_view content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(content.data(), static_cast<std::streamsize>(content.size()));
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

std::vector<fs::path> closedSegments(const fs::path& dir) { return listSegments(dir, false); }

std::vector<fs::path> openSegments(const fs::path& dir) { return listSegments(dir, true); }

std::string concatFiles(const std::vector<fs::path>& files) {
  std::string out;
  for (const auto& f : files) out += readFile(f);
  return out;
}

std::vector<std::string> sortedSegmentContents(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& f : closedSegments(dir)) out.push_back(readFile(f));
  std::sort(out.begin(), out.end());
  return out;
}

std::string withDir(std::string text, const TempDir& dir) {
  const std::string token = "@DIR@";
  for (size_t pos = 0; (pos = text.find(token, pos)) != std::string::npos;) {
    text.replace(pos, token.size(), dir.path().string());
    pos += dir.path().string().size();
  }
  return text;
}

std::map<uint64_t, Chain> chainsByConn(const fs::path& dir, std::vector<std::string>* unparsed) {
  std::map<uint64_t, Chain> chains;
  for (const auto& f : closedSegments(dir)) {
    const std::string name = f.filename().string();
    unsigned long long conn = 0, seq = 0;
    unsigned port = 0;
    char route[65] = {};
    int used = 0;
    // "{route}-{conn}-{peer_port}-{seq}.log", route without '-'.
    if (std::sscanf(name.c_str(), "%64[^-]-%llu-%u-%llu.log%n", route, &conn, &port, &seq, &used) !=
            4 ||
        static_cast<size_t>(used) != name.size()) {
      if (unparsed) unparsed->push_back(name);
      continue;
    }
    Chain& c = chains[conn];
    c.conn = conn;
    c.port = static_cast<uint16_t>(port);
    c.segments.push_back({seq, f});
  }
  for (auto& [conn, c] : chains) {
    std::sort(c.segments.begin(), c.segments.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
  }
  return chains;
}

std::vector<fs::path> Chain::files() const {
  std::vector<fs::path> out;
  for (const auto& s : segments) out.push_back(s.second);
  return out;
}

bool Chain::seqsContiguous() const {
  for (size_t i = 0; i < segments.size(); ++i) {
    if (segments[i].first != i) return false;
  }
  return true;
}

const Chain* findByPort(const std::map<uint64_t, Chain>& chains, uint16_t port) {
  const Chain* found = nullptr;
  for (const auto& [conn, c] : chains) {
    if (c.port != port) continue;
    if (found) return nullptr;  // ambiguous
    found = &c;
  }
  return found;
}

// ---------------------------------------------------------------------------------------------
// The daemon

Daemon::Daemon(const TempDir& dir, const std::string& config, const DaemonOptions& opts)
    : config_path_(dir / "spliced.yaml"), log_path_(dir / "daemon.log") {
  writeFile(config_path_, config);
  pid_ = spawn({"-c", config_path_.string()}, dir.path(), log_path_, log_path_, opts);
}

Daemon::~Daemon() {
  if (pid_ > 0 && !exited_) {
    ::kill(pid_, SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
  }
}

void Daemon::reap(int status) {
  exited_ = true;
  exit_status_ = status;
}

bool Daemon::running() {
  if (exited_) return false;
  int status = 0;
  pid_t r = ::waitpid(pid_, &status, WNOHANG);
  if (r == pid_) reap(status);
  return !exited_;
}

std::string Daemon::waitListening(const std::string& route, Millis timeout) {
  return waitAddress("route=" + route + " listening on ", timeout);
}

std::string Daemon::waitAdmin(Millis timeout) {
  return waitAddress("admin listening on ", timeout);
}

std::string Daemon::waitAddress(const std::string& needle, Millis timeout) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    std::string text = log();
    for (auto pos = text.find(needle); pos != std::string::npos; pos = text.find(needle, pos + 1)) {
      if (pos > 0 && text[pos - 1] == '=') continue;  // "route=admin listening on"
      auto start = pos + needle.size();
      auto end = text.find_first_of(" \n", start);
      if (end != std::string::npos) return text.substr(start, end - start);
    }
    if (!running()) FAIL("spliced exited before listening; log:\n" << log());
    if (Clock::now() > deadline) {
      FAIL("spliced did not log '" << needle << "' within " << timeout.count() << " ms; log:\n"
                                   << log());
    }
    std::this_thread::sleep_for(Millis(10));
  }
}

uint16_t Daemon::port(const std::string& route, Millis timeout) {
  std::string addr = waitListening(route, timeout);
  auto colon = addr.rfind(':');
  REQUIRE(colon != std::string::npos);
  int port = std::atoi(addr.c_str() + colon + 1);
  INFO("listening address: " << addr);
  REQUIRE(port > 0);
  REQUIRE(port < 65536);
  return static_cast<uint16_t>(port);
}

void Daemon::signal(int sig) {
  INFO("signal " << sig << " to pid " << pid_);
  REQUIRE(running());
  REQUIRE(::kill(pid_, sig) == 0);
}

int Daemon::waitExit(Millis timeout) {
  const auto deadline = Clock::now() + timeout;
  while (running()) {
    if (Clock::now() > deadline) {
      ::kill(pid_, SIGKILL);
      int status = 0;
      while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
      reap(status);
      FAIL("spliced did not exit within " << timeout.count() << " ms (killed); log:\n" << log());
    }
    std::this_thread::sleep_for(Millis(5));
  }
  if (WIFSIGNALED(exit_status_)) {
    FAIL("spliced died of signal " << WTERMSIG(exit_status_) << "; log:\n" << log());
  }
  return WEXITSTATUS(exit_status_);
}

std::string Daemon::log() const {
  try {
    return readFile(log_path_);
  } catch (const std::exception&) {
    return {};
  }
}

bool Daemon::waitLog(const std::string& needle, Millis timeout) const {
  return waitUntil([&] { return log().find(needle) != std::string::npos; }, timeout);
}

size_t Daemon::countLogLines(const std::vector<std::string>& needles, size_t expected,
                             Millis timeout) const {
  size_t n = 0;
  waitUntil(
      [&] {
        n = logLines(log(), needles).size();
        return n >= expected;
      },
      timeout);
  return n;
}

size_t Daemon::fdCount() const {
  size_t n = 0;
  std::error_code ec;
  for (auto it = fs::directory_iterator("/proc/" + std::to_string(pid_) + "/fd", ec);
       !ec && it != fs::end(it); it.increment(ec)) {
    ++n;
  }
  return n;
}

std::string Daemon::fdListing() const {
  std::ostringstream out;
  std::error_code ec;
  for (auto it = fs::directory_iterator("/proc/" + std::to_string(pid_) + "/fd", ec);
       !ec && it != fs::end(it); it.increment(ec)) {
    std::error_code ec2;
    out << it->path().filename().string() << " -> " << fs::read_symlink(it->path(), ec2).string()
        << "\n";
  }
  return out.str();
}

CommandResult runSpliced(const TempDir& dir, const std::vector<std::string>& args, Millis timeout) {
  const std::string stem = "run-" + std::to_string(++g_run_counter);
  const fs::path out = dir / (stem + ".out");
  const fs::path err = dir / (stem + ".err");
  pid_t pid = spawn(args, dir.path(), out, err);
  CommandResult result;
  const auto deadline = Clock::now() + timeout;
  int status = 0;
  while (true) {
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (Clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      result.out = readFile(out);
      result.err = readFile(err);
      return result;
    }
    std::this_thread::sleep_for(Millis(5));
  }
  result.out = readFile(out);
  result.err = readFile(err);
  if (WIFEXITED(status)) result.exit_code = WEXITSTATUS(status);
  return result;
}

std::map<std::string, uint64_t> parseTotals(const std::string& log, const std::string& route) {
  std::map<std::string, uint64_t> out;
  const std::string needle = "route=" + route + " totals:";
  auto pos = log.find(needle);
  if (pos == std::string::npos) return out;
  auto end = log.find('\n', pos);
  std::istringstream fields(log.substr(pos + needle.size(), end - pos - needle.size()));
  std::string field;
  while (fields >> field) {
    auto eq = field.find('=');
    if (eq == std::string::npos) continue;
    out[field.substr(0, eq)] = std::strtoull(field.c_str() + eq + 1, nullptr, 10);
  }
  return out;
}

std::vector<std::string> logLines(const std::string& log, const std::vector<std::string>& needles) {
  std::vector<std::string> out;
  std::istringstream in(log);
  std::string line;
  while (std::getline(in, line)) {
    bool all = true;
    for (const auto& n : needles) all = all && line.find(n) != std::string::npos;
    if (all) out.push_back(line);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Sockets

Conn& Conn::operator=(Conn&& o) noexcept {
  if (this != &o) {
    close();
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

void Conn::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

int Conn::sendAll(const char* data, size_t n) {
  size_t done = 0;
  while (done < n) {
    ssize_t w = ::send(fd_, data + done, n - done, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    done += static_cast<size_t>(w);
  }
  return 0;
}

void Conn::shutdownWrite() { ::shutdown(fd_, SHUT_WR); }

int Conn::waitClosed(Millis timeout) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now());
    if (left.count() <= 0) return ETIMEDOUT;
    pollfd p{fd_, POLLIN, 0};
    int r = ::poll(&p, 1, static_cast<int>(left.count()));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return errno;
    if (r == 0) return ETIMEDOUT;
    char buf[256];
    ssize_t n = ::recv(fd_, buf, sizeof buf, MSG_DONTWAIT);
    if (n == 0) return 0;
    if (n > 0) return EPROTO;
    if (errno == EINTR || errno == EAGAIN) continue;
    return errno;
  }
}

uint16_t Conn::localPort() const {
  sockaddr_in sa{};
  socklen_t len = sizeof sa;
  if (::getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &len) != 0) return 0;
  return ntohs(sa.sin_port);
}

Conn connectTcp(uint16_t port, int* err) {
  Conn c(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!c.valid()) {
    if (err) *err = errno;
    return c;
  }
  setTimeouts(c.fd());
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  while (::connect(c.fd(), reinterpret_cast<const sockaddr*>(&sa), sizeof sa) != 0) {
    if (errno == EINTR) continue;
    if (err) *err = errno;
    return Conn();
  }
  if (err) *err = 0;
  return c;
}

Conn connectUnix(const std::string& path, int* err) {
  Conn c(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!c.valid()) {
    if (err) *err = errno;
    return c;
  }
  setTimeouts(c.fd());
  sockaddr_un sa{};
  sa.sun_family = AF_UNIX;
  if (path.size() >= sizeof sa.sun_path) {
    if (err) *err = ENAMETOOLONG;
    return Conn();
  }
  std::memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  while (::connect(c.fd(), reinterpret_cast<const sockaddr*>(&sa), sizeof sa) != 0) {
    if (errno == EINTR) continue;
    if (err) *err = errno;
    return Conn();
  }
  if (err) *err = 0;
  return c;
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1

namespace {

bool equalsNoCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

std::string trimmed(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return std::string(s);
}

// "unix:/path", "a.b.c.d:port" or "[v6]:port".
Conn connectAddress(const std::string& addr, int* err) {
  if (addr.rfind("unix:", 0) == 0) return connectUnix(addr.substr(5), err);
  auto colon = addr.rfind(':');
  if (colon == std::string::npos) {
    *err = EINVAL;
    return Conn();
  }
  std::string host = addr.substr(0, colon);
  const int port = std::atoi(addr.c_str() + colon + 1);
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    auto* sa = reinterpret_cast<sockaddr_in6*>(&ss);
    sa->sin6_family = AF_INET6;
    sa->sin6_port = htons(static_cast<uint16_t>(port));
    if (::inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), &sa->sin6_addr) != 1) {
      *err = EINVAL;
      return Conn();
    }
    len = sizeof *sa;
  } else {
    auto* sa = reinterpret_cast<sockaddr_in*>(&ss);
    sa->sin_family = AF_INET;
    sa->sin_port = htons(static_cast<uint16_t>(port));
    if (::inet_pton(AF_INET, host.c_str(), &sa->sin_addr) != 1) {
      *err = EINVAL;
      return Conn();
    }
    len = sizeof *sa;
  }
  Conn c(::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!c.valid()) {
    *err = errno;
    return c;
  }
  setTimeouts(c.fd());
  while (::connect(c.fd(), reinterpret_cast<const sockaddr*>(&ss), len) != 0) {
    if (errno == EINTR) continue;
    *err = errno;
    return Conn();
  }
  *err = 0;
  return c;
}

}  // namespace

std::string HttpResponse::header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (equalsNoCase(k, name)) return v;
  }
  return {};
}

size_t HttpResponse::headerCount(std::string_view name) const {
  return static_cast<size_t>(std::count_if(
      headers.begin(), headers.end(), [&](const auto& h) { return equalsNoCase(h.first, name); }));
}

HttpResponse httpExchange(Conn& conn, std::string_view request, Millis timeout) {
  HttpResponse r;
  if (int e = conn.sendAll(request)) {
    r.error = std::string("send: ") + std::strerror(e);
    return r;
  }
  std::string raw;
  std::string buf(256 * kKiB, '\0');
  const auto deadline = Clock::now() + timeout;
  while (true) {
    auto left = std::chrono::duration_cast<Millis>(deadline - Clock::now());
    if (left.count() <= 0) {
      r.error = "timed out after " + std::to_string(raw.size()) + " bytes";
      return r;
    }
    pollfd p{conn.fd(), POLLIN, 0};
    int pr = ::poll(&p, 1, static_cast<int>(left.count()));
    if (pr < 0 && errno == EINTR) continue;
    if (pr < 0) {
      r.error = errnoText("poll");
      return r;
    }
    if (pr == 0) continue;
    ssize_t n = ::recv(conn.fd(), buf.data(), buf.size(), MSG_DONTWAIT);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      r.error = errnoText("recv");
      return r;
    }
    raw.append(buf.data(), static_cast<size_t>(n));
  }
  const auto head_end = raw.find("\r\n\r\n");
  if (head_end == std::string::npos) {
    r.error = "no complete header block in " + std::to_string(raw.size()) + " bytes";
    return r;
  }
  std::istringstream head(raw.substr(0, head_end + 2));
  std::string line;
  std::getline(head, line);
  // "HTTP/1.x NNN reason\r"
  if (line.size() < 13 || line.rfind("HTTP/1.", 0) != 0 || line.back() != '\r' || line[8] != ' ' ||
      line[12] != ' ' || !std::isdigit(static_cast<unsigned char>(line[9])) ||
      !std::isdigit(static_cast<unsigned char>(line[10])) ||
      !std::isdigit(static_cast<unsigned char>(line[11]))) {
    r.error = "malformed status line: " + line;
    return r;
  }
  r.status = std::atoi(line.substr(9, 3).c_str());
  r.reason = line.substr(13, line.size() - 14);
  while (std::getline(head, line)) {
    if (line.empty() || line.back() != '\r') {
      r.error = "header line not ended by CRLF: " + line;
      return r;
    }
    line.pop_back();
    auto colon = line.find(':');
    if (colon == std::string::npos || colon == 0) {
      r.error = "malformed header line: " + line;
      return r;
    }
    r.headers.emplace_back(line.substr(0, colon),
                           trimmed(std::string_view(line).substr(colon + 1)));
  }
  r.body = raw.substr(head_end + 4);
  return r;
}

HttpResponse httpRequest(const std::string& addr, const std::string& method,
                         const std::string& target,
                         const std::vector<std::pair<std::string, std::string>>& headers,
                         Millis timeout) {
  int err = 0;
  Conn conn = connectAddress(addr, &err);
  if (!conn.valid()) {
    HttpResponse r;
    r.error = "connect " + addr + ": " + std::strerror(err);
    return r;
  }
  std::string request = method + " " + target + " HTTP/1.1\r\nHost: " +
                        (addr.rfind("unix:", 0) == 0 ? std::string("localhost") : addr) +
                        "\r\nConnection: close\r\n";
  for (const auto& [k, v] : headers) request += k + ": " + v + "\r\n";
  request += "\r\n";
  return httpExchange(conn, request, timeout);
}

// ---------------------------------------------------------------------------------------------
// Payloads

uint64_t Prng::next() {
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

void PayloadStream::fill(char* out, size_t n) {
  while (n > 0 && left_ > 0) {
    *out++ = static_cast<char>(word_ & 0xff);
    word_ >>= 8;
    --left_;
    --n;
  }
  while (n >= 8) {
    uint64_t w = prng_.next();
    for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((w >> (8 * i)) & 0xff);
    out += 8;
    n -= 8;
  }
  if (n > 0) {
    word_ = prng_.next();
    left_ = 8;
    while (n > 0) {
      *out++ = static_cast<char>(word_ & 0xff);
      word_ >>= 8;
      --left_;
      --n;
    }
  }
}

std::string randomPayload(uint64_t seed, size_t n) {
  std::string out(n, '\0');
  PayloadStream(seed).fill(out.data(), n);
  return out;
}

std::string firstDifference(std::string_view got, std::string_view want) {
  if (got == want) return {};
  std::ostringstream out;
  out << "got " << got.size() << " bytes, want " << want.size() << " bytes";
  auto [g, w] = std::mismatch(got.begin(), got.end(), want.begin(), want.end());
  size_t off = static_cast<size_t>(g - got.begin());
  if (g != got.end() && w != want.end()) {
    out << "; first difference at offset " << off << " (got 0x" << std::hex
        << (static_cast<unsigned>(static_cast<unsigned char>(*g))) << ", want 0x"
        << (static_cast<unsigned>(static_cast<unsigned char>(*w))) << std::dec << ")";
  } else {
    out << "; identical over the first " << off << " bytes";
  }
  return out.str();
}

EndlessWriter::EndlessWriter(Conn& conn, uint64_t seed)
    : thread_([this, &conn, seed](std::stop_token stop) {
        PayloadStream stream(seed);
        std::string buf(16 * kKiB, '\0');
        while (!stop.stop_requested()) {
          stream.fill(buf.data(), buf.size());
          size_t off = 0;
          while (off < buf.size()) {
            ssize_t w = ::send(conn.fd(), buf.data() + off, buf.size() - off, MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR) continue;
            if (w < 0) {
              error_ = errno;
              finished_ = true;
              return;
            }
            off += static_cast<size_t>(w);
            written_ += static_cast<uint64_t>(w);
          }
          std::this_thread::sleep_for(Millis(1));
        }
        finished_ = true;
      }) {}

void EndlessWriter::stop() {
  if (thread_.joinable()) {
    thread_.request_stop();
    thread_.join();
  }
}

// ---------------------------------------------------------------------------------------------
// Time

bool waitUntil(const std::function<bool()>& cond, Millis timeout, Millis step) {
  const auto deadline = Clock::now() + timeout;
  while (true) {
    if (cond()) return true;
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(step);
  }
}

bool rssIsMeaningful() {
  static const bool meaningful = [] {
    const char* v = std::getenv("SPLICED_SANITIZED");
    return v == nullptr || std::string(v) != "1";
  }();
  if (!meaningful) WARN("sanitized build: RSS checks skipped (fd checks still apply)");
  return meaningful;
}

MetricValues scrapeMetrics(const std::string& admin) {
  MetricValues out;
  HttpResponse r = httpGet(admin, "/metrics");
  if (r.status != 200) return out;
  std::istringstream in(r.body);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    auto sp = line.rfind(' ');
    if (sp == std::string::npos) continue;
    out[line.substr(0, sp)] = std::strtod(line.c_str() + sp + 1, nullptr);
  }
  return out;
}

double metricValue(const std::string& admin, const std::string& key) {
  MetricValues m = scrapeMetrics(admin);
  auto it = m.find(key);
  return it == m.end() ? -1 : it->second;
}

bool waitReloads(const Daemon& d, size_t n) {
  return waitUntil(
      [&] {
        const std::string log = d.log();
        return logLines(log, {"reload applied"}).size() + logLines(log, {"reload failed"}).size() >=
               n;
      },
      Millis(10000));
}

TmpfsMount::TmpfsMount(const fs::path& path, const std::string& options, unsigned long flags)
    : path_(path) {
  fs::create_directories(path_);
  if (::mount("tmpfs", path_.c_str(), "tmpfs", flags | MS_NOSUID | MS_NODEV, options.c_str()) ==
      0) {
    mounted_ = true;
  } else {
    error_ = std::strerror(errno);
  }
}

TmpfsMount::~TmpfsMount() {
  if (!mounted_) return;
  if (::umount2(path_.c_str(), 0) != 0) ::umount2(path_.c_str(), MNT_DETACH);
}

}  // namespace e2e
