#pragma once
// The archive dir of a route as its chains, its lifecycle jobs and the admin endpoint see it: a
// directory descriptor that the route can replace when the directory was removed and a new one
// appeared at the configured path (see CollectRoute). Nobody keeps a copy of the descriptor
// across calls: the loop thread asks fd() at each use, another thread holds it with hold() for
// the length of one job, so a replaced descriptor is closed only when its last user is done.
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "spliced/core/fd.hpp"

namespace spliced {

// An ArchiveDir owns the current descriptor (shared with the holders of hold()). reset() is for
// the route's (main) loop thread; fd(), gone(), generation(), checkRemoved() and hold() are for
// any thread: the chains of every worker read them. A replaced descriptor stays open until the
// ArchiveDir goes (a worker may be between fd() and its openat()); a directory is replaced only
// when it was removed and came back, so these are few.
class ArchiveDir {
 public:
  ArchiveDir() = default;
  explicit ArchiveDir(UniqueFd fd) { reset(std::move(fd)); }
  ArchiveDir(const ArchiveDir&) = delete;
  ArchiveDir& operator=(const ArchiveDir&) = delete;

  // The current descriptor (-1 before the first reset()).
  int fd() const { return fd_.load(); }
  // Keeps the current descriptor open while the returned pointer lives (never null).
  std::shared_ptr<const UniqueFd> hold() const;

  // Installs a newly opened directory: generation() goes up, and gone() is false again. The old
  // descriptor is closed once no hold() keeps it.
  void reset(UniqueFd fd);
  // Counts the descriptors installed so far: a segment opened under another generation lives in
  // a directory that is not the archive dir any more.
  uint64_t generation() const { return generation_.load(); }

  // The directory behind fd() was removed (its link count is 0): nothing can be created in it.
  bool gone() const { return gone_.load(); }
  // Looks (fstat) whether the directory was removed, marks it gone if so, and returns gone().
  // Const: it records an observation (/healthz may be the first to make it).
  bool checkRemoved() const;

 private:
  mutable std::mutex mu_;  // guards current_ against hold() from another thread
  std::shared_ptr<const UniqueFd> current_ = std::make_shared<const UniqueFd>();
  std::vector<std::shared_ptr<const UniqueFd>> retired_;  // replaced descriptors, kept open
  std::atomic<int> fd_{-1};
  std::atomic<uint64_t> generation_{0};
  mutable std::atomic<bool> gone_{false};
};

}  // namespace spliced
