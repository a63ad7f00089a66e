// spliced/core/error.hpp: which source an errno met while setting up points at.
#include <catch2/catch.hpp>
#include <cerrno>
#include <string>

#include "spliced/core/error.hpp"

using spliced::ErrorSource;
using spliced::sourceOfSetupErrno;
using spliced::toString;

TEST_CASE("setup errno: the machine's faults are environment, not internal", "[error]") {
  // A port in use, a permission, a limit; a path that is missing, read-only, runs through a
  // file, is a directory where a file belongs, loops or is too long.
  for (int err : {EADDRINUSE, EADDRNOTAVAIL, EACCES, EPERM, EMFILE, ENFILE, ENOMEM, ENOBUFS, ENOENT,
                  ENOTDIR, EEXIST, EISDIR, ELOOP, ENAMETOOLONG, EBUSY, EROFS, ENOSPC, EDQUOT}) {
    INFO("errno " << err);
    CHECK(toString(sourceOfSetupErrno(err)) == "environment");
  }
  // What only a bug of ours can cause.
  for (int err : {EBADF, EINVAL, EFAULT, ENOTSOCK}) {
    INFO("errno " << err);
    CHECK(sourceOfSetupErrno(err) == ErrorSource::Internal);
  }
}
