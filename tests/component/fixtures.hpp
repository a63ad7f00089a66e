#pragma once
// Shared pieces of the component tests: a fault-injecting syscall seam, temp dirs, payloads.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
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

// Which seam entry a call went through. The first five are the data path, seen by `hook`; the
// others are seen by `fault` (see FaultySysCalls).
enum class Call {
  SpliceFromSocket,
  SpliceToFile,
  SpliceToSocket,
  Read,
  Pwrite,
  Send,
  Recv,
  Shutdown,
  Openat,
  Mkdirat,
  Renameat2,
  Unlinkat,
  Fdatasync,
  Fsync,
  Write,
};
inline constexpr size_t kCallKinds = static_cast<size_t>(Call::Write) + 1;

inline bool isPipe(int fd) {
  struct stat st;
  return ::fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode);
}

// A SysCalls whose behaviour a test sets per call: a hook returns -1 with errno set to fail the
// call, or a length cap for short transfers; 0 passes the call through unchanged.
//
// Two hooks, so that a test written for the data path keeps seeing only the data path:
//   hook   splice, read, pwrite (the kinds SpliceFromSocket .. Pwrite);
//   fault  send, recv, shutdown, openat, mkdirat, renameat2, unlinkat, fdatasync, fsync,
//          write, with `nth`, the 1-based number of this call among the calls of its kind, so
//          a test can fail an exact call. `len` is the byte count of send/recv/write (a cap
//          makes a short transfer) and 0 for the others.
// Every call is counted per kind (calls(kind)), with atomics: the archive lifecycle thread may
// call compression through the same object. A hook that may run on that thread must itself be
// thread-safe, and hooks are set before the calls they watch can start.
class FaultySysCalls : public SysCalls {
 public:
  // Returns 0 to pass through, -1 (and sets errno) to fail the call.
  std::function<int(Call, size_t& len)> hook;
  std::function<int(Call, int nth, size_t& len)> fault;
  // openat and mkdirat only, asked before `fault` with the path of the call: returns 0 to pass
  // the call on, -1 (and sets errno) to fail it (a name refused, a name that works).
  std::function<int(Call, const char* path)> path_fault;
  std::atomic<int> calls_from_socket{0};
  std::atomic<int> calls_to_file{0};

  // Calls of kind `c` so far (including failed ones).
  int calls(Call c) const { return counts_[static_cast<size_t>(c)].load(); }

  ssize_t splice(int fd_in, loff_t* off_in, int fd_out, loff_t* off_out, size_t len,
                 unsigned int flags) override {
    Call c = Call::SpliceFromSocket;
    if (isPipe(fd_in)) c = off_out != nullptr ? Call::SpliceToFile : Call::SpliceToSocket;
    if (c == Call::SpliceToFile) calls_to_file++;
    if (c == Call::SpliceFromSocket) calls_from_socket++;
    count(c);
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
  // F_SETPIPE_SZ: refused (EPERM, as over pipe-user-pages-soft) above `pipe_size_max` when set.
  std::atomic<int> pipe_size_max{0};
  int setPipeSize(int fd, int size) override {
    const int max = pipe_size_max.load();
    if (max > 0 && size > max) {
      errno = EPERM;
      return -1;
    }
    return SysCalls::setPipeSize(fd, size);
  }
  ssize_t read(int fd, void* buf, size_t len) override {
    count(Call::Read);
    if (hook && hook(Call::Read, len) < 0) return -1;
    return SysCalls::read(fd, buf, len);
  }
  ssize_t pwrite(int fd, const void* buf, size_t len, off_t off) override {
    count(Call::Pwrite);
    if (hook && hook(Call::Pwrite, len) < 0) return -1;
    return SysCalls::pwrite(fd, buf, len, off);
  }

  ssize_t send(int fd, const void* buf, size_t len, int flags) override {
    if (faulted(Call::Send, len)) return -1;
    return SysCalls::send(fd, buf, len, flags);
  }
  ssize_t recv(int fd, void* buf, size_t len, int flags) override {
    if (faulted(Call::Recv, len)) return -1;
    return SysCalls::recv(fd, buf, len, flags);
  }
  int shutdown(int fd, int how) override {
    if (faulted(Call::Shutdown)) return -1;
    return SysCalls::shutdown(fd, how);
  }
  int openat(int dirfd, const char* path, int flags, mode_t mode) override {
    if (path_fault && path_fault(Call::Openat, path) < 0) {
      count(Call::Openat);
      return -1;
    }
    if (faulted(Call::Openat)) return -1;
    return SysCalls::openat(dirfd, path, flags, mode);
  }
  int mkdirat(int dirfd, const char* path, mode_t mode) override {
    if (path_fault && path_fault(Call::Mkdirat, path) < 0) {
      count(Call::Mkdirat);
      return -1;
    }
    if (faulted(Call::Mkdirat)) return -1;
    return SysCalls::mkdirat(dirfd, path, mode);
  }
  int renameat2(int olddirfd, const char* oldpath, int newdirfd, const char* newpath,
                unsigned int flags) override {
    if (faulted(Call::Renameat2)) return -1;
    return SysCalls::renameat2(olddirfd, oldpath, newdirfd, newpath, flags);
  }
  int unlinkat(int dirfd, const char* path, int flags) override {
    if (faulted(Call::Unlinkat)) return -1;
    return SysCalls::unlinkat(dirfd, path, flags);
  }
  int fdatasync(int fd) override {
    if (faulted(Call::Fdatasync)) return -1;
    return SysCalls::fdatasync(fd);
  }
  int fsync(int fd) override {
    if (faulted(Call::Fsync)) return -1;
    return SysCalls::fsync(fd);
  }
  ssize_t write(int fd, const void* buf, size_t len) override {
    if (faulted(Call::Write, len)) return -1;
    return SysCalls::write(fd, buf, len);
  }

 private:
  int count(Call c) { return ++counts_[static_cast<size_t>(c)]; }
  // Counts the call and asks `fault`; true when the call is to fail (errno set by the fault).
  bool faulted(Call c, size_t& len) {
    int nth = count(c);
    return fault && fault(c, nth, len) < 0;
  }
  bool faulted(Call c) {
    size_t none = 0;
    return faulted(c, none);
  }

  std::array<std::atomic<int>, kCallKinds> counts_{};
};

// A `fault` that fails the calls of kind `c` numbered first..last (1-based, per kind) with `err`
// and passes every other call through.
inline std::function<int(Call, int, size_t&)> failCalls(Call c, int err, int first, int last = -1) {
  if (last < 0) last = first;
  return [=](Call k, int nth, size_t&) {
    if (k != c || nth < first || nth > last) return 0;
    errno = err;
    return -1;
  };
}

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
