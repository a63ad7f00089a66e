// spliced/archive/retention.hpp: which closed segments a retain: policy drops, and dropping them
// from a real directory tree (nested YYYY/MM/DD dirs, mtimes set with utimensat).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "spliced/archive/retention.hpp"
#include "spliced/config/config.hpp"
#include "spliced/core/fd.hpp"
#include "unit_helpers.hpp"

using spliced::applyRetention;
using spliced::RetainConfig;
using spliced::scanSegments;
using spliced::SegmentFile;
using spliced::selectForDeletion;
using spliced::UniqueFd;
using spliced::test::TempDir;
using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::seconds;
using Paths = std::vector<std::string>;
using TimePoint = std::chrono::system_clock::time_point;
namespace fs = std::filesystem;

namespace {

// A fixed "now": 2026-11-26 12:00:00 UTC.
const TimePoint kNow = TimePoint(seconds(1795694400));

SegmentFile seg(std::string path, uint64_t size, seconds age) {
  return {std::move(path), size, kNow - age};
}

RetainConfig policy(uint64_t max_files, milliseconds max_age, uint64_t max_bytes) {
  RetainConfig p;
  p.max_files = max_files;
  p.max_age = max_age;
  p.max_bytes = max_bytes;
  return p;
}

// Writes `size` bytes to dir/rel (creating parents) and sets its mtime to `mtime`.
void writeFile(const TempDir& dir, const std::string& rel, size_t size, TimePoint mtime) {
  fs::path p = dir.path() / rel;
  fs::create_directories(p.parent_path());
  {
    std::ofstream f(p, std::ios::binary);
    f << std::string(size, 'x');
  }
  auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(mtime.time_since_epoch()).count();
  timespec ts[2];
  ts[0].tv_sec = ts[1].tv_sec = static_cast<time_t>(ns / 1000000000);
  ts[0].tv_nsec = ts[1].tv_nsec = static_cast<long>(ns % 1000000000);
  REQUIRE(::utimensat(AT_FDCWD, p.c_str(), ts, AT_SYMLINK_NOFOLLOW) == 0);
}

}  // namespace

TEST_CASE("selectForDeletion: empty input, and no limits at all", "[retention]") {
  CHECK(selectForDeletion({}, policy(1, milliseconds(1), 1), kNow).empty());
  std::vector<SegmentFile> segs = {seg("a", 100, hours(10000)), seg("b", 1 << 30, hours(1))};
  CHECK(selectForDeletion(segs, policy(0, milliseconds(0), 0), kNow).empty());
}

TEST_CASE("selectForDeletion: max_files keeps the newest, deletes oldest first", "[retention]") {
  std::vector<SegmentFile> segs = {seg("c", 1, seconds(30)), seg("a", 1, seconds(10)),
                                   seg("d", 1, seconds(40)), seg("b", 1, seconds(20))};
  CHECK(selectForDeletion(segs, policy(2, milliseconds(0), 0), kNow) == Paths{"d", "c"});
  CHECK(selectForDeletion(segs, policy(1, milliseconds(0), 0), kNow) == Paths{"d", "c", "b"});
  // Exact boundaries: as many files as allowed, or more allowed than there are -> nothing.
  CHECK(selectForDeletion(segs, policy(4, milliseconds(0), 0), kNow).empty());
  CHECK(selectForDeletion(segs, policy(5, milliseconds(0), 0), kNow).empty());
  CHECK(selectForDeletion(segs, policy(3, milliseconds(0), 0), kNow) == Paths{"d"});
}

TEST_CASE("selectForDeletion: max_age deletes what is strictly older", "[retention]") {
  std::vector<SegmentFile> segs = {seg("new", 1, seconds(59)), seg("edge", 1, seconds(60)),
                                   seg("old", 1, seconds(61)), seg("older", 1, hours(5))};
  CHECK(selectForDeletion(segs, policy(0, seconds(60), 0), kNow) == Paths{"older", "old"});
  // Age in milliseconds: one millisecond past the limit is past it.
  std::vector<SegmentFile> fine = {{"x", 1, kNow - milliseconds(1001)},
                                   {"y", 1, kNow - milliseconds(1000)}};
  CHECK(selectForDeletion(fine, policy(0, milliseconds(1000), 0), kNow) == Paths{"x"});
  // A file from the future (clock step) is not old.
  std::vector<SegmentFile> future = {{"f", 1, kNow + hours(1)}};
  CHECK(selectForDeletion(future, policy(0, milliseconds(1), 0), kNow).empty());
}

TEST_CASE("selectForDeletion: a tiny max_age deletes everything, oldest first", "[retention]") {
  std::vector<SegmentFile> segs = {seg("b", 5, seconds(2)), seg("a", 5, seconds(3)),
                                   seg("c", 5, seconds(1))};
  CHECK(selectForDeletion(segs, policy(0, milliseconds(1), 0), kNow) == Paths{"a", "b", "c"});
}

TEST_CASE("selectForDeletion: max_bytes deletes oldest until the total fits", "[retention]") {
  std::vector<SegmentFile> segs = {seg("a", 100, seconds(40)), seg("b", 200, seconds(30)),
                                   seg("c", 300, seconds(20)), seg("d", 400, seconds(10))};
  // Total 1000.
  CHECK(selectForDeletion(segs, policy(0, milliseconds(0), 1000), kNow).empty());
  CHECK(selectForDeletion(segs, policy(0, milliseconds(0), 999), kNow) == Paths{"a"});
  CHECK(selectForDeletion(segs, policy(0, milliseconds(0), 900), kNow) == Paths{"a"});
  CHECK(selectForDeletion(segs, policy(0, milliseconds(0), 899), kNow) == Paths{"a", "b"});
  CHECK(selectForDeletion(segs, policy(0, milliseconds(0), 400), kNow) == Paths{"a", "b", "c"});
  // A newest segment larger than the limit is deleted as well.
  CHECK(selectForDeletion(segs, policy(0, milliseconds(0), 399), kNow) ==
        Paths{"a", "b", "c", "d"});
}

TEST_CASE("selectForDeletion: compressed segments count with their own size", "[retention]") {
  std::vector<SegmentFile> segs = {seg("2026/11/25/a.log.zst", 10, seconds(30)),
                                   seg("2026/11/25/b.log.gz", 20, seconds(20)),
                                   seg("2026/11/26/c.log", 1000, seconds(10))};
  CHECK(selectForDeletion(segs, policy(0, milliseconds(0), 1030), kNow).empty());
  CHECK(selectForDeletion(segs, policy(0, milliseconds(0), 1029), kNow) ==
        Paths{"2026/11/25/a.log.zst"});
  CHECK(selectForDeletion(segs, policy(0, milliseconds(0), 1019), kNow) ==
        Paths{"2026/11/25/a.log.zst", "2026/11/25/b.log.gz"});
}

TEST_CASE("selectForDeletion: equal mtimes are ordered by path", "[retention]") {
  const TimePoint t = kNow - seconds(100);
  std::vector<SegmentFile> segs = {{"d/app-1-000002.log", 1, t},
                                   {"d/app-1-000000.log", 1, t},
                                   {"d/app-1-000001.log", 1, t},
                                   {"d/app-0-000009.log", 1, t + seconds(1)}};
  CHECK(selectForDeletion(segs, policy(2, milliseconds(0), 0), kNow) ==
        Paths{"d/app-1-000000.log", "d/app-1-000001.log"});
  // Input order does not matter.
  std::reverse(segs.begin(), segs.end());
  CHECK(selectForDeletion(segs, policy(2, milliseconds(0), 0), kNow) ==
        Paths{"d/app-1-000000.log", "d/app-1-000001.log"});
}

TEST_CASE("selectForDeletion: all three limits, each applied after the other", "[retention]") {
  std::vector<SegmentFile> segs = {seg("s1", 10, hours(50)), seg("s2", 10, hours(49)),
                                   seg("s3", 10, hours(30)), seg("s4", 500, hours(20)),
                                   seg("s5", 10, hours(10)), seg("s6", 10, hours(5)),
                                   seg("s7", 10, hours(1))};
  // Age drops s1, s2 (older than 48h); files keep 4 of the rest -> s3 goes; bytes: s4..s7 = 530,
  // at most 100 -> s4 goes (30 left).
  CHECK(selectForDeletion(segs, policy(4, hours(48), 100), kNow) == Paths{"s1", "s2", "s3", "s4"});
  // Age alone dominates when it is the strictest.
  CHECK(selectForDeletion(segs, policy(6, hours(2), 10000), kNow) ==
        Paths{"s1", "s2", "s3", "s4", "s5", "s6"});
  // Bytes alone dominates when it is the strictest: keep only s7.
  CHECK(selectForDeletion(segs, policy(6, hours(100), 15), kNow) ==
        Paths{"s1", "s2", "s3", "s4", "s5", "s6"});
  // Files dominates.
  CHECK(selectForDeletion(segs, policy(2, hours(100), 10000), kNow) ==
        Paths{"s1", "s2", "s3", "s4", "s5"});
}

TEST_CASE("scanSegments: closed segments only, recursively, with sizes and mtimes", "[retention]") {
  TempDir dir;
  const TimePoint t1 = kNow - hours(30);
  const TimePoint t2 = kNow - hours(2) + std::chrono::nanoseconds(123456789);
  writeFile(dir, "2026/11/25/a-000000.log", 11, t1);
  writeFile(dir, "2026/11/26/b-000000.log.zst", 7, t2);
  writeFile(dir, "2026/11/26/c-000000.log.gz", 0, t2);
  writeFile(dir, "top.log", 3, t1);
  writeFile(dir, "2026/11/26/d-000000.log.open", 50, t1);
  writeFile(dir, "2026/11/26/a-000000.log.zst.tmp", 60, t1);
  writeFile(dir, ".spliced.lock", 6, t1);
  writeFile(dir, "2026/.hidden/e.log", 70, t1);
  writeFile(dir, "2026/11/26/.f.log", 80, t1);
  fs::create_directory_symlink(dir.path() / "2026", dir.path() / "link-dir");
  fs::create_symlink(dir.path() / "top.log", dir.path() / "link.log");
  REQUIRE(::mkfifo((dir.path() / "fifo.log").c_str(), 0600) == 0);

  UniqueFd fd = openDir(dir);
  auto segs = scanSegments(fd.get());
  std::sort(segs.begin(), segs.end(),
            [](const SegmentFile& a, const SegmentFile& b) { return a.path < b.path; });
  REQUIRE(segs.size() == 4);
  CHECK(segs[0].path == "2026/11/25/a-000000.log");
  CHECK(segs[0].size == 11);
  CHECK(segs[0].mtime == t1);
  CHECK(segs[1].path == "2026/11/26/b-000000.log.zst");
  CHECK(segs[1].size == 7);
  CHECK(segs[1].mtime == t2);  // nanoseconds kept
  CHECK(segs[2].path == "2026/11/26/c-000000.log.gz");
  CHECK(segs[2].size == 0);
  CHECK(segs[3].path == "top.log");
  CHECK(segs[3].size == 3);
}

TEST_CASE("applyRetention: deletes, leaves the rest, prunes emptied dirs", "[retention]") {
  TempDir dir;
  // Day 23: two old segments, only closed ones -> emptied dir goes, and its empty parents.
  writeFile(dir, "2025/12/31/old-000000.log", 100, kNow - hours(24 * 300));
  writeFile(dir, "2026/11/23/a-000000.log", 100, kNow - hours(80));
  writeFile(dir, "2026/11/23/a-000001.log.zst", 40, kNow - hours(79));
  // Day 24: an old segment next to an .open one -> the dir stays.
  writeFile(dir, "2026/11/24/b-000000.log", 100, kNow - hours(60));
  writeFile(dir, "2026/11/24/b-000001.log.open", 100, kNow - hours(60));
  // Day 25: an old segment next to a .tmp and a dotfile -> the dir stays.
  writeFile(dir, "2026/11/25/c-000000.log", 100, kNow - hours(50));
  writeFile(dir, "2026/11/25/c-000000.log.gz.tmp", 10, kNow - hours(50));
  writeFile(dir, "2026/11/25/.keep", 0, kNow - hours(50));
  // Day 26: new segments -> kept.
  writeFile(dir, "2026/11/26/d-000000.log", 100, kNow - hours(3));
  writeFile(dir, "2026/11/26/d-000001.log.gz", 30, kNow - hours(2));
  // Not segments.
  writeFile(dir, ".spliced.lock", 5, kNow - hours(9000));
  fs::create_directories(dir.path() / "empty-before");
  fs::create_symlink(dir.path() / "2026/11/26/d-000000.log", dir.path() / "2026/11/23/link.log");
  // The symlink keeps day 23 non-empty, and is neither followed nor deleted.
  UniqueFd fd = openDir(dir);

  auto r = applyRetention(fd.get(), policy(0, hours(48), 0), kNow, "app");
  CHECK(r.files == 5);
  CHECK(r.bytes == 100 + 100 + 40 + 100 + 100);
  CHECK(listAll(dir) == Paths{".spliced.lock", "2026", "2026/11", "2026/11/23",
                              "2026/11/23/link.log", "2026/11/24", "2026/11/24/b-000001.log.open",
                              "2026/11/25", "2026/11/25/.keep", "2026/11/25/c-000000.log.gz.tmp",
                              "2026/11/26", "2026/11/26/d-000000.log", "2026/11/26/d-000001.log.gz",
                              "empty-before"});
  // The symlink's target is intact.
  CHECK(fs::file_size(dir.path() / "2026/11/26/d-000000.log") == 100);

  // Now by count: the one closed segment that is older goes; day 26 keeps one file.
  fs::remove(dir.path() / "2026/11/23/link.log");
  r = applyRetention(fd.get(), policy(1, milliseconds(0), 0), kNow, "app");
  CHECK(r.files == 1);
  CHECK(r.bytes == 100);
  // A second pass finds nothing to do.
  r = applyRetention(fd.get(), policy(1, milliseconds(0), 0), kNow, "app");
  CHECK(r.files == 0);
  CHECK(r.bytes == 0);
  // Day 23 was already empty before this pass (the symlink was removed by hand): not this pass's
  // to remove.
  CHECK(listAll(dir) == Paths{".spliced.lock", "2026", "2026/11", "2026/11/23", "2026/11/24",
                              "2026/11/24/b-000001.log.open", "2026/11/25", "2026/11/25/.keep",
                              "2026/11/25/c-000000.log.gz.tmp", "2026/11/26",
                              "2026/11/26/d-000001.log.gz", "empty-before"});
}

TEST_CASE("applyRetention: deleting everything keeps the archive dir itself", "[retention]") {
  TempDir dir;
  writeFile(dir, "a/b/c/x.log", 10, kNow - hours(2));
  writeFile(dir, "y.log", 20, kNow - hours(1));
  UniqueFd fd = openDir(dir);
  auto r = applyRetention(fd.get(), policy(0, milliseconds(1), 0), kNow, "app");
  CHECK(r.files == 2);
  CHECK(r.bytes == 30);
  CHECK(listAll(dir).empty());
  CHECK(fs::is_directory(dir.path()));
  // With no limits nothing is scanned or deleted.
  writeFile(dir, "z.log", 20, kNow - hours(1000));
  r = applyRetention(fd.get(), policy(0, milliseconds(0), 0), kNow, "app");
  CHECK(r.files == 0);
  CHECK(listAll(dir) == Paths{"z.log"});
}

TEST_CASE("applyRetention: max_bytes over a nested tree counts compressed sizes", "[retention]") {
  TempDir dir;
  writeFile(dir, "2026/11/24/a.log.zst", 300, kNow - hours(50));
  writeFile(dir, "2026/11/25/b.log.gz", 300, kNow - hours(40));
  writeFile(dir, "2026/11/25/c.log", 300, kNow - hours(30));
  writeFile(dir, "2026/11/26/d.log", 300, kNow - hours(20));
  UniqueFd fd = openDir(dir);
  auto r = applyRetention(fd.get(), policy(0, milliseconds(0), 650), kNow, "app");
  CHECK(r.files == 2);
  CHECK(r.bytes == 600);
  CHECK(listAll(dir) == Paths{"2026", "2026/11", "2026/11/25", "2026/11/25/c.log", "2026/11/26",
                              "2026/11/26/d.log"});
}
