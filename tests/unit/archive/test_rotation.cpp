// spliced/archive/rotation.hpp: where a size limit cuts, and the next wall-clock rotation instant.
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <string>

#include "spliced/archive/rotation.hpp"
#include "unit_helpers.hpp"

using spliced::nextBoundary;
using spliced::roomInSegment;
using spliced::test::haveZoneInfo;
using spliced::test::ScopedTz;
using std::chrono::hours;
using std::chrono::milliseconds;
using std::chrono::minutes;
using std::chrono::seconds;
using TimePoint = std::chrono::system_clock::time_point;

namespace {

// A UTC calendar time as a time point (timegm ignores TZ).
TimePoint utc(int year, int mon, int day, int h, int m, int s, int ms = 0) {
  std::tm tm{};
  tm.tm_year = year - 1900;
  tm.tm_mon = mon - 1;
  tm.tm_mday = day;
  tm.tm_hour = h;
  tm.tm_min = m;
  tm.tm_sec = s;
  return TimePoint(seconds(::timegm(&tm)) + milliseconds(ms));
}

// Readable failures: "2024-03-05T08:00:00.000Z".
std::string iso(TimePoint t) {
  auto ms = std::chrono::duration_cast<milliseconds>(t.time_since_epoch()).count();
  std::time_t s = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  ::gmtime_r(&s, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char out[48];
  std::snprintf(out, sizeof out, "%s.%03dZ", buf, static_cast<int>(ms % 1000));
  return out;
}

}  // namespace

TEST_CASE("roomInSegment: 0 means unlimited", "[rotation]") {
  CHECK(roomInSegment(0, 0) == UINT64_MAX);
  CHECK(roomInSegment(123456789, 0) == UINT64_MAX);
  CHECK(roomInSegment(UINT64_MAX, 0) == UINT64_MAX);
}

TEST_CASE("roomInSegment: below, at and over the limit", "[rotation]") {
  CHECK(roomInSegment(0, 100) == 100);
  CHECK(roomInSegment(1, 100) == 99);
  CHECK(roomInSegment(99, 100) == 1);
  CHECK(roomInSegment(100, 100) == 0);
  CHECK(roomInSegment(101, 100) == 0);
  CHECK(roomInSegment(UINT64_MAX, 100) == 0);
  CHECK(roomInSegment(0, UINT64_MAX) == UINT64_MAX);
}

TEST_CASE("nextBoundary: UTC intervals", "[rotation]") {
  const TimePoint now = utc(2024, 3, 5, 7, 8, 9, 123);
  CHECK(iso(nextBoundary(now, hours(1), false)) == iso(utc(2024, 3, 5, 8, 0, 0)));
  CHECK(iso(nextBoundary(now, hours(24), false)) == iso(utc(2024, 3, 6, 0, 0, 0)));
  CHECK(iso(nextBoundary(now, minutes(15), false)) == iso(utc(2024, 3, 5, 7, 15, 0)));
  CHECK(iso(nextBoundary(now, minutes(1), false)) == iso(utc(2024, 3, 5, 7, 9, 0)));
  CHECK(iso(nextBoundary(now, seconds(1), false)) == iso(utc(2024, 3, 5, 7, 8, 10)));
  CHECK(iso(nextBoundary(now, hours(6), false)) == iso(utc(2024, 3, 5, 12, 0, 0)));
  CHECK(iso(nextBoundary(now, milliseconds(250), false)) == iso(utc(2024, 3, 5, 7, 8, 9, 250)));
}

TEST_CASE("nextBoundary: the result is strictly after now", "[rotation]") {
  // Exactly on a boundary: the next one, never now itself.
  CHECK(iso(nextBoundary(utc(2024, 3, 5, 8, 0, 0), hours(1), false)) ==
        iso(utc(2024, 3, 5, 9, 0, 0)));
  CHECK(iso(nextBoundary(utc(2024, 3, 6, 0, 0, 0), hours(24), false)) ==
        iso(utc(2024, 3, 7, 0, 0, 0)));
  CHECK(iso(nextBoundary(utc(2024, 3, 5, 7, 15, 0), minutes(15), false)) ==
        iso(utc(2024, 3, 5, 7, 30, 0)));
  // One millisecond before a boundary: that boundary.
  CHECK(iso(nextBoundary(utc(2024, 3, 5, 7, 59, 59, 999), hours(1), false)) ==
        iso(utc(2024, 3, 5, 8, 0, 0)));
  // Across a year end.
  CHECK(iso(nextBoundary(utc(2023, 12, 31, 23, 30, 0), hours(24), false)) ==
        iso(utc(2024, 1, 1, 0, 0, 0)));
}

TEST_CASE("nextBoundary: localtime=false ignores TZ", "[rotation]") {
  ScopedTz tz("XXX-05:30");
  const TimePoint now = utc(2024, 3, 5, 7, 8, 9);
  CHECK(iso(nextBoundary(now, hours(1), false)) == iso(utc(2024, 3, 5, 8, 0, 0)));
  CHECK(iso(nextBoundary(now, hours(24), false)) == iso(utc(2024, 3, 6, 0, 0, 0)));
}

TEST_CASE("nextBoundary: local time with a fixed offset", "[rotation]") {
  // 07:08:09 UTC is 12:38:09 at +05:30.
  const TimePoint now = utc(2024, 3, 5, 7, 8, 9);
  auto check = [&] {
    // Next full local hour 13:00 = 07:30 UTC.
    CHECK(iso(nextBoundary(now, hours(1), true)) == iso(utc(2024, 3, 5, 7, 30, 0)));
    // Next local midnight, 2024-03-06 00:00 +05:30 = 2024-03-05 18:30 UTC.
    CHECK(iso(nextBoundary(now, hours(24), true)) == iso(utc(2024, 3, 5, 18, 30, 0)));
    // 12:45 local = 07:15 UTC.
    CHECK(iso(nextBoundary(now, minutes(15), true)) == iso(utc(2024, 3, 5, 7, 15, 0)));
    // Exactly on a local hour (13:00 = 07:30 UTC): the next one, 14:00 = 08:30 UTC.
    CHECK(iso(nextBoundary(utc(2024, 3, 5, 7, 30, 0), hours(1), true)) ==
          iso(utc(2024, 3, 5, 8, 30, 0)));
  };
  SECTION("POSIX TZ string") {
    ScopedTz tz("XXX-05:30");
    check();
  }
  SECTION("tzdata Asia/Kolkata") {
    if (!haveZoneInfo("Asia/Kolkata")) {
      WARN("no /usr/share/zoneinfo/Asia/Kolkata; skipped");
      return;
    }
    ScopedTz tz("Asia/Kolkata");
    check();
  }
  SECTION("a whole-hour offset west of UTC") {
    ScopedTz tz("XXX+2");  // UTC-2: 05:08:09 local
    CHECK(iso(nextBoundary(now, hours(1), true)) == iso(utc(2024, 3, 5, 8, 0, 0)));
    // Next local midnight 2024-03-06 00:00 -02:00 = 02:00 UTC.
    CHECK(iso(nextBoundary(now, hours(24), true)) == iso(utc(2024, 3, 6, 2, 0, 0)));
  }
}

// Daily rotation in a zone with daylight saving time: the offset is taken at `now`, so when a DST
// change falls between now and the next local midnight the result is one hour off.
// Central Europe, 2024: CET (+1) -> CEST (+2) on 2024-03-31 at 01:00 UTC, back on 2024-10-27 at
// 01:00 UTC.
TEST_CASE("nextBoundary: local midnight across a DST change", "[rotation]") {
  ScopedTz tz("CET-1CEST,M3.5.0,M10.5.0/3");
  // 2024-03-31 00:30 UTC = 01:30 CET. Next local midnight: 2024-04-01 00:00 CEST = 03-31 22:00 UTC.
  CHECK(iso(nextBoundary(utc(2024, 3, 31, 0, 30, 0), hours(24), true)) ==
        iso(utc(2024, 3, 31, 22, 0, 0)));  // actual: 23:00 UTC (01:00 CEST)
  // 2024-10-27 00:30 UTC = 02:30 CEST. Next local midnight: 2024-10-28 00:00 CET = 10-27 23:00 UTC.
  CHECK(iso(nextBoundary(utc(2024, 10, 27, 0, 30, 0), hours(24), true)) ==
        iso(utc(2024, 10, 27, 23, 0, 0)));  // actual: 22:00 UTC (23:00 CET, the day before)
}

TEST_CASE("nextBoundary: hourly rotation is unaffected by DST", "[rotation]") {
  ScopedTz tz("CET-1CEST,M3.5.0,M10.5.0/3");
  CHECK(iso(nextBoundary(utc(2024, 3, 31, 0, 30, 0), hours(1), true)) ==
        iso(utc(2024, 3, 31, 1, 0, 0)));
  CHECK(iso(nextBoundary(utc(2024, 10, 27, 0, 30, 0), hours(1), true)) ==
        iso(utc(2024, 10, 27, 1, 0, 0)));
  // Outside any change, local midnight in summer is 22:00 UTC.
  CHECK(iso(nextBoundary(utc(2024, 7, 1, 12, 0, 0), hours(24), true)) ==
        iso(utc(2024, 7, 1, 22, 0, 0)));
}
