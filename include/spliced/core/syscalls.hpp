#pragma once
// The syscall seam: every system call on the data and durability paths goes through a SysCalls,
// so that a test can force EAGAIN, EINVAL, ENOSPC, EIO or a short transfer at the exact call.
// The default methods call the kernel; a test derives and overrides what it wants to break.
// Passed by reference, never global; the kernel implementation is stateless, so the archive
// lifecycle thread may share it with the event loop.
//
// Each entry keeps the kernel's contract: the return value and errno are the kernel's.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>

namespace spliced {

class SysCalls {
 public:
  virtual ~SysCalls() = default;
  // Bytes: socket -> pipe -> file or socket, or through a buffer.
  virtual ssize_t splice(int fd_in, loff_t* off_in, int fd_out, loff_t* off_out, size_t len,
                         unsigned int flags);
  virtual ssize_t read(int fd, void* buf, size_t len);
  // Into a pipe (the bytes of a record that surround a spliced body).
  virtual ssize_t write(int fd, const void* buf, size_t len);
  virtual ssize_t pwrite(int fd, const void* buf, size_t len, off_t offset);
  virtual ssize_t send(int fd, const void* buf, size_t len, int flags);
  virtual ssize_t recv(int fd, void* buf, size_t len, int flags);
  // Datagrams (udp: listeners): up to `n` at once.
  virtual int recvmmsg(int fd, mmsghdr* msgs, unsigned int n, int flags);
  virtual int shutdown(int fd, int how);
  // File -> socket (shipping from archive segments); `offset` as sendfile(2)'s.
  virtual ssize_t sendfile(int out_fd, int in_fd, off_t* offset, size_t count);
  // Bytes a socket's send queue still holds: not yet sent, or sent and not acknowledged by the
  // peer's kernel (ioctl SIOCOUTQ). Returns 0 or -1 with errno.
  virtual int sendQueue(int fd, int* bytes);
  // Bytes of a TCP connection the peer has acknowledged since it was set up (tcpi_bytes_acked of
  // TCP_INFO; it keeps its value after a reset, when the send queue is already purged).
  virtual int tcpBytesAcked(int fd, uint64_t* bytes);
  // Descriptors.
  virtual int pipe2(int fds[2], int flags);
  // fcntl(F_SETPIPE_SZ): the size granted, or -1 with errno (EPERM over pipe-user-pages-soft).
  virtual int setPipeSize(int fd, int size);
  virtual int accept4(int fd, sockaddr* addr, socklen_t* len, int flags);
  // Archive files and their durability.
  virtual int openat(int dirfd, const char* path, int flags, mode_t mode);
  virtual int mkdirat(int dirfd, const char* path, mode_t mode);
  virtual int renameat2(int olddirfd, const char* oldpath, int newdirfd, const char* newpath,
                        unsigned int flags);
  virtual int unlinkat(int dirfd, const char* path, int flags);
  virtual int fdatasync(int fd);
  virtual int fsync(int fd);

  // The process-wide kernel implementation (stateless, so sharing it is safe).
  static SysCalls& kernel();
};

}  // namespace spliced
