#pragma once
// Dropping root for good once listeners are bound and archive dirs opened and locked (`user:`,
// `group:` at the top level of the config).
#include <sys/types.h>

#include <string>

#include "spliced/core/error.hpp"

namespace spliced {

struct RunAs {
  std::string user;
  std::string group;
  uid_t uid = 0;
  gid_t gid = 0;
};

// Looks up `user` and `group` (empty: the user's primary group). A name that does not exist is a
// config error.
Result<RunAs> resolveRunAs(const std::string& user, const std::string& group);

// Gives `dir_fd` and everything below it (files, directories, the lock file) to `who`, so that
// the user can go on writing, renaming and deleting there.
Status chownTree(int dir_fd, const RunAs& who);

// setgroups({gid}), setgid, setuid, then checks that root cannot be regained. Applies to every
// thread of the process (glibc).
Status dropPrivileges(const RunAs& who);

}  // namespace spliced
