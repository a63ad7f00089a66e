#include "spliced/core/socket_sink.hpp"

#include <fcntl.h>
#include <sys/socket.h>

#include <cerrno>

namespace spliced {

SinkResult SocketSink::fromPipe(Pipe& pipe, size_t n) {
  size_t done = 0;
  n = std::min(n, pipe.bytes);
  while (done < n) {
    ssize_t w = sys_.splice(pipe.rd.get(), nullptr, fd_, nullptr, n - done,
                            SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (w > 0) {
      done += static_cast<size_t>(w);
      pipe.bytes -= static_cast<size_t>(w);
      *written_ += static_cast<uint64_t>(w);
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EAGAIN) return {done, IoStatus::Blocked, EAGAIN};
    if (w < 0 && (errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP)) {
      return {done, IoStatus::Unsupported, errno};
    }
    return {done, IoStatus::Error, w == 0 ? EPIPE : errno};
  }
  return {done, IoStatus::Ok, 0};
}

SinkResult SocketSink::fromBuffer(const char* data, size_t n) {
  size_t done = 0;
  while (done < n) {
    ssize_t w = sys_.send(fd_, data + done, n - done, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w > 0) {
      done += static_cast<size_t>(w);
      *written_ += static_cast<uint64_t>(w);
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w < 0 && errno == EAGAIN) return {done, IoStatus::Blocked, EAGAIN};
    return {done, IoStatus::Error, w == 0 ? EPIPE : errno};
  }
  return {done, IoStatus::Ok, 0};
}

SinkResult SocketSink::finish() {
  if (close_follows_) return {};
  if (sys_.shutdown(fd_, SHUT_WR) != 0 && errno != ENOTCONN) return {0, IoStatus::Error, errno};
  return {};
}

}  // namespace spliced
