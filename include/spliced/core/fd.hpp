#pragma once
// Owners of file descriptors. A descriptor is closed in exactly one place: UniqueFd's destructor.
#include <unistd.h>

#include <cstddef>
#include <utility>

namespace spliced {

// Move-only owner of one file descriptor.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { reset(); }
  UniqueFd(UniqueFd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  explicit operator bool() const { return valid(); }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_ = -1;
};

// A kernel pipe: owns both ends and knows how many bytes it holds, counted from splice's return
// values (never from its capacity, which is in pages, not bytes).
struct Pipe {
  UniqueFd rd;
  UniqueFd wr;
  size_t bytes = 0;     // bytes spliced in and not yet spliced out
  size_t capacity = 0;  // granted size (F_GETPIPE_SZ)
  bool empty() const { return bytes == 0; }
};

}  // namespace spliced
