#include "spliced/archive/archive_dir.hpp"

#include <sys/stat.h>

#include <utility>

namespace spliced {

std::shared_ptr<const UniqueFd> ArchiveDir::hold() const {
  std::lock_guard lock(mu_);
  return current_;
}

void ArchiveDir::reset(UniqueFd fd) {
  auto next = std::make_shared<const UniqueFd>(std::move(fd));
  fd_ = next->get();
  {
    std::lock_guard lock(mu_);
    current_.swap(next);
    if (next->valid()) retired_.push_back(std::move(next));
  }
  ++generation_;
  gone_ = false;
}

bool ArchiveDir::checkRemoved() const {
  const int fd = fd_.load();
  if (gone_ || fd < 0) return gone_;
  struct stat st;
  if (::fstat(fd, &st) == 0 && st.st_nlink == 0) gone_ = true;
  return gone_;
}

}  // namespace spliced
