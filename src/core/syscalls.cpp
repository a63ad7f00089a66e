#include "spliced/core/syscalls.hpp"

#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>

namespace spliced {

ssize_t SysCalls::splice(int fd_in, loff_t* off_in, int fd_out, loff_t* off_out, size_t len,
                         unsigned int flags) {
  return ::splice(fd_in, off_in, fd_out, off_out, len, flags);
}
ssize_t SysCalls::read(int fd, void* buf, size_t len) { return ::read(fd, buf, len); }
ssize_t SysCalls::write(int fd, const void* buf, size_t len) { return ::write(fd, buf, len); }
ssize_t SysCalls::pwrite(int fd, const void* buf, size_t len, off_t offset) {
  return ::pwrite(fd, buf, len, offset);
}
ssize_t SysCalls::send(int fd, const void* buf, size_t len, int flags) {
  return ::send(fd, buf, len, flags);
}
ssize_t SysCalls::recv(int fd, void* buf, size_t len, int flags) {
  return ::recv(fd, buf, len, flags);
}

int SysCalls::recvmmsg(int fd, mmsghdr* msgs, unsigned int n, int flags) {
  return ::recvmmsg(fd, msgs, n, flags, nullptr);
}
int SysCalls::shutdown(int fd, int how) { return ::shutdown(fd, how); }
int SysCalls::pipe2(int fds[2], int flags) { return ::pipe2(fds, flags); }
int SysCalls::setPipeSize(int fd, int size) { return ::fcntl(fd, F_SETPIPE_SZ, size); }
int SysCalls::accept4(int fd, sockaddr* addr, socklen_t* len, int flags) {
  return ::accept4(fd, addr, len, flags);
}
int SysCalls::openat(int dirfd, const char* path, int flags, mode_t mode) {
  return ::openat(dirfd, path, flags, mode);
}
int SysCalls::mkdirat(int dirfd, const char* path, mode_t mode) {
  return ::mkdirat(dirfd, path, mode);
}
int SysCalls::renameat2(int olddirfd, const char* oldpath, int newdirfd, const char* newpath,
                        unsigned int flags) {
  return ::renameat2(olddirfd, oldpath, newdirfd, newpath, flags);
}
int SysCalls::unlinkat(int dirfd, const char* path, int flags) {
  return ::unlinkat(dirfd, path, flags);
}
int SysCalls::fdatasync(int fd) { return ::fdatasync(fd); }
int SysCalls::fsync(int fd) { return ::fsync(fd); }

ssize_t SysCalls::sendfile(int out_fd, int in_fd, off_t* offset, size_t count) {
  return ::sendfile(out_fd, in_fd, offset, count);
}

int SysCalls::sendQueue(int fd, int* bytes) { return ::ioctl(fd, SIOCOUTQ, bytes); }

int SysCalls::tcpBytesAcked(int fd, uint64_t* bytes) {
  struct tcp_info info {};
  socklen_t len = sizeof info;
  if (::getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0) return -1;
  // Kernels before 4.1 have no tcpi_bytes_acked: a shorter answer is refused, not misread.
  if (len < offsetof(struct tcp_info, tcpi_bytes_acked) + sizeof info.tcpi_bytes_acked) {
    errno = EOPNOTSUPP;
    return -1;
  }
  *bytes = info.tcpi_bytes_acked;
  return 0;
}

SysCalls& SysCalls::kernel() {
  static SysCalls instance;
  return instance;
}

}  // namespace spliced
