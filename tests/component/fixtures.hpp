#pragma once
// Shared pieces of the component tests: a fault-injecting syscall seam, temp dirs, payloads.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <thread>

#include "spliced/core/syscalls.hpp"

namespace spliced::testing {

// Which data-path call a fault applies to.
enum class Call { SpliceFromSocket, SpliceToFile, SpliceToSocket, Read, Pwrite };

inline bool isPipe(int fd) {
  struct stat st;
  return ::fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode);
}

// A SysCalls whose behaviour a test sets per call: a hook returns -1 with errno set to fail the
// call, or a length cap for short transfers; 0 passes the call through unchanged.
class FaultySysCalls : public SysCalls {
 public:
  // Returns 0 to pass through, -1 (and sets errno) to fail the call.
  std::function<int(Call, size_t& len)> hook;
  std::atomic<int> calls_from_socket{0};
  std::atomic<int> calls_to_file{0};

  ssize_t splice(int fd_in, loff_t* off_in, int fd_out, loff_t* off_out, size_t len,
                 unsigned int flags) override {
    Call c = Call::SpliceFromSocket;
    if (isPipe(fd_in)) c = off_out != nullptr ? Call::SpliceToFile : Call::SpliceToSocket;
    if (c == Call::SpliceToFile) calls_to_file++;
    if (c == Call::SpliceFromSocket) calls_from_socket++;
    if (hook && hook(c, len) < 0) return -1;
    return SysCalls::splice(fd_in, off_in, fd_out, off_out, len, flags);
  }
  // Pipes: fails the calls for which `pipe_fails` returns true (EMFILE).
  std::function<bool(int call)> pipe_fails;
  std::atomic<int> pipe_calls{0};
  int pipe2(int fds[2], int flags) override {
    int k = ++pipe_calls;
    if (pipe_fails && pipe_fails(k)) {
      errno = EMFILE;
      return -1;
    }
    return SysCalls::pipe2(fds, flags);
  }
  ssize_t read(int fd, void* buf, size_t len) override {
    if (hook && hook(Call::Read, len) < 0) return -1;
    return SysCalls::read(fd, buf, len);
  }
  ssize_t pwrite(int fd, const void* buf, size_t len, off_t off) override {
    if (hook && hook(Call::Pwrite, len) < 0) return -1;
    return SysCalls::pwrite(fd, buf, len, off);
  }
};

// A directory under /tmp removed with everything in it at scope exit.
struct TempDir {
  std::filesystem::path path;
  TempDir() {
    char tmpl[] = "/tmp/spliced-component-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

// Deterministic bytes (splitmix64), different per seed.
inline std::string payload(size_t n, uint64_t seed) {
  std::string s(n, '\0');
  uint64_t x = seed;
  for (size_t i = 0; i < n; i += 8) {
    x += 0x9e3779b97f4a7c15ull;
    uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    for (size_t k = 0; k < 8 && i + k < n; ++k) s[i + k] = static_cast<char>(z >> (8 * k));
  }
  return s;
}

inline std::string readFile(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Writes `data` into `fd` from a thread in chunks of `chunk` bytes, then shuts the write side.
inline std::thread writer(int fd, std::string data, size_t chunk) {
  return std::thread([fd, data = std::move(data), chunk] {
    size_t off = 0;
    while (off < data.size()) {
      ssize_t n = ::send(fd, data.data() + off, std::min(chunk, data.size() - off), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return;
      off += static_cast<size_t>(n);
    }
    ::shutdown(fd, SHUT_WR);
  });
}

}  // namespace spliced::testing
