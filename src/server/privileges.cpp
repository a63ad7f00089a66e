#include "spliced/server/privileges.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <cerrno>
#include <cstring>
#include <vector>

#include "spliced/core/fd.hpp"

namespace spliced {

Result<RunAs> resolveRunAs(const std::string& user, const std::string& group) {
  RunAs who;
  who.user = user;
  std::vector<char> buf(16384);
  passwd pw{};
  passwd* pwp = nullptr;
  if (::getpwnam_r(user.c_str(), &pw, buf.data(), buf.size(), &pwp) != 0 || pwp == nullptr) {
    return Error(ErrorSource::Config, fmt::format("user: no such user '{}'", user));
  }
  who.uid = pw.pw_uid;
  who.gid = pw.pw_gid;
  if (!group.empty()) {
    struct group gr {};
    struct group* grp = nullptr;
    if (::getgrnam_r(group.c_str(), &gr, buf.data(), buf.size(), &grp) != 0 || grp == nullptr) {
      return Error(ErrorSource::Config, fmt::format("group: no such group '{}'", group));
    }
    who.gid = gr.gr_gid;
    who.group = group;
  } else {
    struct group gr {};
    struct group* grp = nullptr;
    if (::getgrgid_r(who.gid, &gr, buf.data(), buf.size(), &grp) == 0 && grp != nullptr) {
      who.group = gr.gr_name;
    } else {
      who.group = std::to_string(who.gid);
    }
  }
  return who;
}

namespace {

Status chownBelow(int dir_fd, const RunAs& who, int depth) {
  if (depth > 64) return Ok{};  // deeper than any name template makes
  int dup = ::fcntl(dir_fd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) return Error(ErrorSource::Environment, "dup of an archive dir", errno);
  DIR* d = ::fdopendir(dup);
  if (d == nullptr) {
    ::close(dup);
    return Error(ErrorSource::Environment, "opendir of an archive dir", errno);
  }
  Status result = Ok{};
  while (dirent* e = ::readdir(d)) {
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    if (::fchownat(dir_fd, e->d_name, who.uid, who.gid, AT_SYMLINK_NOFOLLOW) != 0) {
      result = Error(ErrorSource::Environment,
                     fmt::format("cannot give {} to {}", e->d_name, who.user), errno);
      break;
    }
    if (e->d_type == DT_DIR) {
      UniqueFd sub(::openat(dir_fd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (sub.valid()) {
        if (Status s = chownBelow(sub.get(), who, depth + 1); !s) {
          result = std::move(s);
          break;
        }
      }
    }
  }
  ::closedir(d);
  return result;
}

}  // namespace

Status chownTree(int dir_fd, const RunAs& who) {
  if (::fchown(dir_fd, who.uid, who.gid) != 0) {
    return Error(ErrorSource::Environment,
                 fmt::format("cannot give the archive dir to user {}", who.user), errno);
  }
  return chownBelow(dir_fd, who, 0);
}

Status dropPrivileges(const RunAs& who) {
  if (::setgroups(1, &who.gid) != 0) {
    return Error(ErrorSource::Environment, "setgroups", errno);
  }
  if (::setgid(who.gid) != 0) {
    return Error(ErrorSource::Environment, fmt::format("setgid({})", who.gid), errno);
  }
  if (::setuid(who.uid) != 0) {
    return Error(ErrorSource::Environment, fmt::format("setuid({})", who.uid), errno);
  }
  // For good: neither the real, effective nor saved ids are root any more.
  if (who.uid != 0 && (::setuid(0) == 0 || ::seteuid(0) == 0)) {
    return Error(ErrorSource::Internal, "root could be regained after dropping privileges");
  }
  uid_t r = 0, e = 0, s = 0;
  ::getresuid(&r, &e, &s);
  if (r != who.uid || e != who.uid || s != who.uid) {
    return Error(ErrorSource::Internal, "user ids are not all the target's after the drop");
  }
  return Ok{};
}

}  // namespace spliced
