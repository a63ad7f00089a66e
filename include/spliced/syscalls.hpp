#pragma once
// The syscall seam: every data-path system call goes through a SysCalls so that a test can force
// EAGAIN, EINVAL, ENOSPC or a short transfer at the exact call. The default methods call the
// kernel; a test derives and overrides what it wants to break. Passed by reference, never global.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <cstddef>

namespace spliced {

class SysCalls {
 public:
  virtual ~SysCalls() = default;
  virtual ssize_t splice(int fd_in, loff_t* off_in, int fd_out, loff_t* off_out, size_t len,
                         unsigned int flags);
  virtual ssize_t read(int fd, void* buf, size_t len);
  virtual ssize_t pwrite(int fd, const void* buf, size_t len, off_t offset);
  virtual int pipe2(int fds[2], int flags);
  virtual int accept4(int fd, sockaddr* addr, socklen_t* len, int flags);
  virtual int openat(int dirfd, const char* path, int flags, mode_t mode);
  virtual int fdatasync(int fd);

  // The process-wide kernel implementation (stateless, so sharing it is safe).
  static SysCalls& kernel();
};

}  // namespace spliced
