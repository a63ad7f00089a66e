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
  }
  ++generation_;
  gone_ = false;
  // `next` (the old descriptor) is closed here, or by the last holder.
}

bool ArchiveDir::checkRemoved() const {
  if (gone_ || fd_ < 0) return gone_;
  struct stat st;
  if (::fstat(fd_, &st) == 0 && st.st_nlink == 0) gone_ = true;
  return gone_;
}

}  // namespace spliced
