#pragma once
// A real rsyslogd (Debian's) for end-to-end tests: where it is installed, and one foreground
// process owned by the test.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "harness.hpp"

namespace e2e {

// rsyslogd on PATH or in /usr/sbin; "" when not installed.
inline std::string findRsyslogd() {
  std::vector<std::string> dirs{"/usr/sbin", "/sbin"};
  if (const char* path = std::getenv("PATH")) {
    std::istringstream in(path);
    for (std::string d; std::getline(in, d, ':');) dirs.push_back(d);
  }
  for (const auto& d : dirs) {
    const fs::path p = fs::path(d) / "rsyslogd";
    if (::access(p.c_str(), X_OK) == 0) return p.string();
  }
  return "";
}

// A foreground `rsyslogd -n -f CONF -i PIDFILE`, its output in `log`. Owns the process: the
// destructor kills (SIGKILL) and reaps it if it still runs.
class Rsyslogd {
 public:
  Rsyslogd(const std::string& bin, const fs::path& conf, const fs::path& pidfile,
           const fs::path& log) {
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    REQUIRE(fd >= 0);
    std::vector<std::string> args{bin, "-n", "-f", conf.string(), "-i", pidfile.string()};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_ = ::fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      ::dup2(fd, STDOUT_FILENO);
      ::dup2(fd, STDERR_FILENO);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(fd);
  }
  ~Rsyslogd() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      reap();
    }
  }
  Rsyslogd(const Rsyslogd&) = delete;
  Rsyslogd& operator=(const Rsyslogd&) = delete;

  // SIGTERM, then waits for the exit; true when it exited (SIGKILL after `timeout`).
  bool stop(Millis timeout) {
    if (pid_ <= 0) return true;
    ::kill(pid_, SIGTERM);
    const bool exited = waitUntil(
        [&] {
          int status = 0;
          return ::waitpid(pid_, &status, WNOHANG) == pid_;
        },
        timeout);
    if (exited) {
      pid_ = -1;
      return true;
    }
    ::kill(pid_, SIGKILL);
    reap();
    return false;
  }

 private:
  void reap() {
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
  }
  pid_t pid_ = -1;
};

}  // namespace e2e
