#include "spliced/core/syscalls.hpp"

#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

namespace spliced {

ssize_t SysCalls::splice(int fd_in, loff_t* off_in, int fd_out, loff_t* off_out, size_t len,
                         unsigned int flags) {
  return ::splice(fd_in, off_in, fd_out, off_out, len, flags);
}
ssize_t SysCalls::read(int fd, void* buf, size_t len) { return ::read(fd, buf, len); }
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

SysCalls& SysCalls::kernel() {
  static SysCalls instance;
  return instance;
}

}  // namespace spliced
