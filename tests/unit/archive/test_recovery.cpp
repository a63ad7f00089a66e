// spliced/archive/recovery.hpp: start-up recovery of an archive dir after a crash (NAME.open
// finalised without overwriting anything, interrupted compressions' *.tmp removed).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "spliced/archive/recovery.hpp"
#include "spliced/core/fd.hpp"
#include "unit_helpers.hpp"

using spliced::recoverArchive;
using spliced::UniqueFd;
using spliced::test::listAll;
using spliced::test::openDir;
using spliced::test::readFile;
using spliced::test::TempDir;
using spliced::test::writeFile;
using Paths = std::vector<std::string>;
namespace fs = std::filesystem;

namespace {

Paths sorted(Paths p) {
  std::sort(p.begin(), p.end());
  return p;
}

}  // namespace

TEST_CASE("recoverArchive: nothing to do gives an empty result", "[recovery]") {
  TempDir dir;
  writeFile(dir, "2026/11/26/a.log", "closed");
  writeFile(dir, "2026/11/26/b.log.zst", "compressed");
  writeFile(dir, ".spliced.lock", "123\n");
  UniqueFd fd = openDir(dir);
  auto before = listAll(dir);
  auto r = recoverArchive(fd.get(), "app");
  CHECK(r.finalized.empty());
  CHECK(r.removed_tmp == 0);
  CHECK(r.errors.empty());
  CHECK(listAll(dir) == before);

  TempDir empty;
  UniqueFd efd = openDir(empty);
  r = recoverArchive(efd.get(), "app");
  CHECK(r.finalized.empty());
  CHECK(r.removed_tmp == 0);
  CHECK(r.errors.empty());
}

TEST_CASE("recoverArchive: .open segments are finalised in nested dirs, bytes unchanged",
          "[recovery]") {
  TempDir dir;
  const std::string big(300000, 'q');
  writeFile(dir, "2026/11/25/app-1-000000.log.open", "first\nsecond\n");
  writeFile(dir, "2026/11/26/deeper/app-2-000003.log.open", big);
  writeFile(dir, "top-000000.log.open", "");
  writeFile(dir, "2026/11/26/done.log", "done");
  UniqueFd fd = openDir(dir);
  auto r = recoverArchive(fd.get(), "app");
  CHECK(r.errors.empty());
  CHECK(r.removed_tmp == 0);
  CHECK(sorted(r.finalized) == Paths{"2026/11/25/app-1-000000.log",
                                     "2026/11/26/deeper/app-2-000003.log", "top-000000.log"});
  CHECK(readFile(dir, "2026/11/25/app-1-000000.log") == "first\nsecond\n");
  CHECK(readFile(dir, "2026/11/26/deeper/app-2-000003.log") == big);
  CHECK(readFile(dir, "top-000000.log").empty());
  CHECK(listAll(dir) == Paths{"2026", "2026/11", "2026/11/25", "2026/11/25/app-1-000000.log",
                              "2026/11/26", "2026/11/26/deeper",
                              "2026/11/26/deeper/app-2-000003.log", "2026/11/26/done.log",
                              "top-000000.log"});
}

TEST_CASE("recoverArchive: a taken name gets a numeric suffix, nothing is overwritten",
          "[recovery]") {
  TempDir dir;
  writeFile(dir, "d/app-1-000000.log", "existing");
  writeFile(dir, "d/app-1-000000.1.log", "existing one");
  writeFile(dir, "d/app-1-000000.log.open", "crashed");
  writeFile(dir, "d/noext", "existing plain");
  writeFile(dir, "d/noext.open", "crashed plain");
  UniqueFd fd = openDir(dir);
  auto r = recoverArchive(fd.get(), "app");
  CHECK(r.errors.empty());
  CHECK(sorted(r.finalized) == Paths{"d/app-1-000000.2.log", "d/noext.1"});
  CHECK(readFile(dir, "d/app-1-000000.log") == "existing");
  CHECK(readFile(dir, "d/app-1-000000.1.log") == "existing one");
  CHECK(readFile(dir, "d/app-1-000000.2.log") == "crashed");
  CHECK(readFile(dir, "d/noext") == "existing plain");
  CHECK(readFile(dir, "d/noext.1") == "crashed plain");
  CHECK(listAll(dir) == Paths{"d", "d/app-1-000000.1.log", "d/app-1-000000.2.log",
                              "d/app-1-000000.log", "d/noext", "d/noext.1"});
}

TEST_CASE("recoverArchive: .tmp files are removed, their plain segment and NAME.zst kept",
          "[recovery]") {
  TempDir dir;
  writeFile(dir, "2026/11/26/a.log", "plain a");
  writeFile(dir, "2026/11/26/a.log.zst.tmp", "half");
  writeFile(dir, "2026/11/25/b.log", "plain b");
  writeFile(dir, "2026/11/25/b.log.gz.tmp", "");
  // Both NAME and NAME.zst (a crash between rename and unlink): both kept.
  writeFile(dir, "2026/11/25/c.log", "plain c");
  writeFile(dir, "2026/11/25/c.log.zst", "zst c");
  // Names starting with '.' are never touched, even when they end in .tmp or .open.
  writeFile(dir, ".x.tmp", "hidden");
  writeFile(dir, "2026/.y.open", "hidden");
  writeFile(dir, ".hidden/z.log.open", "hidden");
  // A symlink called like an open segment is not followed or renamed.
  fs::create_symlink(dir.path() / "2026/11/26/a.log", dir.path() / "link.log.open");
  fs::create_symlink(dir.path() / "2026/11/26/a.log", dir.path() / "link.log.zst.tmp");
  UniqueFd fd = openDir(dir);
  auto r = recoverArchive(fd.get(), "app");
  CHECK(r.errors.empty());
  CHECK(r.finalized.empty());
  CHECK(r.removed_tmp == 2);
  CHECK(listAll(dir) == Paths{".hidden", ".hidden/z.log.open", ".x.tmp", "2026", "2026/.y.open",
                              "2026/11", "2026/11/25", "2026/11/25/b.log", "2026/11/25/c.log",
                              "2026/11/25/c.log.zst", "2026/11/26", "2026/11/26/a.log",
                              "link.log.open", "link.log.zst.tmp"});
  CHECK(readFile(dir, "2026/11/26/a.log") == "plain a");
  CHECK(readFile(dir, "2026/11/25/c.log.zst") == "zst c");

  // Run again: nothing left to do.
  r = recoverArchive(fd.get(), "app");
  CHECK(r.finalized.empty());
  CHECK(r.removed_tmp == 0);
  CHECK(r.errors.empty());
}

TEST_CASE("recoverArchive: open and tmp files together", "[recovery]") {
  TempDir dir;
  writeFile(dir, "x/s-000000.log", "closed");
  writeFile(dir, "x/s-000000.log.gz.tmp", "partial");
  writeFile(dir, "x/s-000001.log.open", "active");
  UniqueFd fd = openDir(dir);
  auto r = recoverArchive(fd.get(), "app");
  CHECK(r.errors.empty());
  CHECK(r.finalized == Paths{"x/s-000001.log"});
  CHECK(r.removed_tmp == 1);
  CHECK(listAll(dir) == Paths{"x", "x/s-000000.log", "x/s-000001.log"});
  CHECK(readFile(dir, "x/s-000001.log") == "active");
}

TEST_CASE("recoverArchive: an unreadable directory is reported, the rest recovered", "[recovery]") {
  if (::geteuid() == 0) {
    WARN("skipped: root reads any directory");
    return;
  }
  TempDir dir;
  writeFile(dir, "locked/a.log.open", "a");
  writeFile(dir, "open/b.log.open", "b");
  REQUIRE(::chmod((dir.path() / "locked").c_str(), 0) == 0);
  UniqueFd fd = openDir(dir);
  auto r = recoverArchive(fd.get(), "app");
  ::chmod((dir.path() / "locked").c_str(), 0755);
  CHECK(r.finalized == Paths{"open/b.log"});
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].find("locked") != std::string::npos);
}
