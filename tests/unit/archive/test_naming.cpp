// spliced/archive/naming.hpp: segment name templates (strftime codes + placeholders) and the rule
// that an expanded name never leaves the archive dir.
#include <catch2/catch.hpp>
#include <chrono>
#include <string>
#include <string_view>

#include "spliced/archive/naming.hpp"
#include "spliced/core/address.hpp"
#include "unit_helpers.hpp"

using spliced::isContainedRelativePath;
using spliced::NameTemplate;
using spliced::NameVars;
using spliced::PeerInfo;
using spliced::test::haveZoneInfo;
using spliced::test::ScopedTz;

namespace {

// 2024-03-05 07:08:09 UTC, a Tuesday, day 065 of a leap year.
constexpr int64_t kEpoch = 1709622489;
const auto kWhen = std::chrono::system_clock::time_point(std::chrono::seconds(kEpoch));

NameTemplate compiled(std::string_view text) {
  auto t = NameTemplate::compile(text);
  INFO("compile(\"" << std::string(text) << "\")" << (t.ok() ? "" : " failed: " + t.error()));
  REQUIRE(t.ok());
  return t.value();
}

std::string compileError(std::string_view text) {
  auto t = NameTemplate::compile(text);
  INFO("compile(\"" << std::string(text) << "\") should fail");
  REQUIRE_FALSE(t.ok());
  return t.error();
}

NameVars sampleVars() {
  NameVars v;
  v.route = "app";
  v.peer = "192.0.2.7";
  v.peer_port = 4242;
  v.conn = 17;
  v.seq = 3;
  v.pid = 999;
  return v;
}

std::string expanded(std::string_view text, const NameVars& vars, bool localtime = false,
                     std::chrono::system_clock::time_point when = kWhen) {
  auto t = compiled(text);
  auto out = t.expand(vars, when, localtime);
  INFO("expand(\"" << std::string(text) << "\")" << (out.ok() ? "" : " failed: " + out.error()));
  REQUIRE(out.ok());
  return out.value();
}

const char* const kKnownList = " in name (known: {route} {peer} {peer_port} {conn} {seq} {pid})";

}  // namespace

TEST_CASE("NameTemplate: strftime codes in UTC", "[naming]") {
  ScopedTz tz("Asia/Kolkata");  // must not matter when localtime is false
  auto v = sampleVars();
  CHECK(expanded("%Y/%m/%d/{route}-%H%M%S.log", v) == "2024/03/05/app-070809.log");
  CHECK(expanded("%F_%T", v) == "2024-03-05_07:08:09");
  CHECK(expanded("%y%j-%a-%A-%b-%B-%h", v) == "24065-Tue-Tuesday-Mar-March-Mar");
  CHECK(expanded("%e|%I|%p|%M|%u|%w|%C|%D", v) == " 5|07|AM|08|2|2|20|03/05/24");
  CHECK(expanded("%G-W%V-%U-%W-%g", v) == "2024-W10-09-10-24");
  CHECK(expanded("%z-%Z", v) == "+0000-GMT");
  CHECK(expanded("100%%-%Ey-%Od", v) == "100%-24-05");
}

TEST_CASE("NameTemplate: strftime codes in local time", "[naming]") {
  auto v = sampleVars();
  SECTION("POSIX TZ string, +05:30") {
    ScopedTz tz("XXX-05:30");
    CHECK(expanded("%Y/%m/%d/{route}-%H%M%S.log", v, true) == "2024/03/05/app-123809.log");
    CHECK(expanded("%z", v, true) == "+0530");
    CHECK(expanded("%Z", v, true) == "XXX");
    CHECK(expanded("%H%M", v, false) == "0708");
  }
  SECTION("tzdata Asia/Kolkata") {
    if (!haveZoneInfo("Asia/Kolkata")) {
      WARN("no /usr/share/zoneinfo/Asia/Kolkata; skipped");
      return;
    }
    ScopedTz tz("Asia/Kolkata");
    CHECK(expanded("%F %T %z %Z", v, true) == "2024-03-05 12:38:09 +0530 IST");
  }
  SECTION("a local date that differs from the UTC date") {
    ScopedTz tz("XXX+10");  // UTC-10: still the 4th of March
    CHECK(expanded("%Y/%m/%d/%H", v, true) == "2024/03/04/21");
    CHECK(expanded("%Y/%m/%d/%H", v, false) == "2024/03/05/07");
  }
}

TEST_CASE("NameTemplate: every placeholder", "[naming]") {
  auto v = sampleVars();
  CHECK(expanded("{route}-{peer}-{peer_port}-{conn}-{seq}-{pid}.log", v) ==
        "app-192.0.2.7-4242-17-000003-999.log");
  CHECK(expanded("{route}/{route}", v) == "app/app");
}

TEST_CASE("NameTemplate: {seq} is zero-padded to 6 digits", "[naming]") {
  auto v = sampleVars();
  v.seq = 0;
  CHECK(expanded("{seq}", v) == "000000");
  v.seq = 42;
  CHECK(expanded("{seq}", v) == "000042");
  v.seq = 999999;
  CHECK(expanded("{seq}", v) == "999999");
  v.seq = 1234567;
  CHECK(expanded("{seq}", v) == "1234567");
}

TEST_CASE("NameTemplate: {conn}, {peer_port} and {pid} are plain decimal", "[naming]") {
  auto v = sampleVars();
  v.conn = 18446744073709551615ull;
  v.peer_port = 65535;
  v.pid = 1;
  CHECK(expanded("{conn}-{peer_port}-{pid}", v) == "18446744073709551615-65535-1");
  v.conn = 0;
  v.peer_port = 0;
  CHECK(expanded("{conn}-{peer_port}", v) == "0-0");
}

TEST_CASE("NameTemplate: IPv6 peers are written with '_'", "[naming]") {
  PeerInfo peer{"2001:db8::1", 5000};
  auto v = sampleVars();
  v.peer = peer.fileSafeIp();
  v.peer_port = peer.port;
  CHECK(expanded("{route}-{peer}-{peer_port}.log", v) == "app-2001_db8__1-5000.log");
  PeerInfo lo{"::1", 1};
  v.peer = lo.fileSafeIp();
  CHECK(expanded("{peer}", v) == "__1");
  // A shared chain has no peer: the default value.
  CHECK(expanded("{peer}", NameVars{}) == "shared");
}

TEST_CASE("NameTemplate: the default names compile and say what they use", "[naming]") {
  auto per_conn = compiled("%Y/%m/%d/{route}-{peer}-{conn}-%H%M%S-{seq}.log");
  CHECK(per_conn.usesPeer());
  CHECK(per_conn.usesConn());
  CHECK(per_conn.usesSeq());
  CHECK(per_conn.text() == "%Y/%m/%d/{route}-{peer}-{conn}-%H%M%S-{seq}.log");
  auto out = per_conn.expand(sampleVars(), kWhen, false);
  REQUIRE(out.ok());
  CHECK(out.value() == "2024/03/05/app-192.0.2.7-17-070809-000003.log");

  auto shared = compiled("%Y/%m/%d/{route}-%H%M%S-{seq}.log");
  CHECK_FALSE(shared.usesPeer());
  CHECK_FALSE(shared.usesConn());
  CHECK(shared.usesSeq());

  CHECK(compiled("{peer_port}").usesPeer());
  CHECK_FALSE(compiled("{route}-{pid}").usesPeer());
  CHECK_FALSE(compiled("{route}-{pid}").usesConn());
  CHECK_FALSE(compiled("{route}-{pid}").usesSeq());
}

TEST_CASE("NameTemplate: unknown or malformed placeholders are refused", "[naming]") {
  CHECK(compileError("{host}.log") == std::string("unknown placeholder '{host}'") + kKnownList);
  CHECK(compileError("{}.log") == std::string("unknown placeholder '{}'") + kKnownList);
  CHECK(compileError("{Route}") == std::string("unknown placeholder '{Route}'") + kKnownList);
  CHECK(compileError("{route") == "unclosed '{' in name");
  CHECK(compileError("route}") == "unmatched '}' in name");
}

TEST_CASE("NameTemplate: unsupported % codes are refused", "[naming]") {
  CHECK(compileError("%Q.log") == "unsupported strftime code '%Q' in name");
  CHECK(compileError("%c") == "unsupported strftime code '%c' in name");
  CHECK(compileError("%x") == "unsupported strftime code '%x' in name");
  CHECK(compileError("a%nb") == "unsupported strftime code '%n' in name");
  CHECK(compileError("a%tb") == "unsupported strftime code '%t' in name");
  CHECK(compileError("%{route}") == "unsupported strftime code '%{' in name");
  CHECK(compileError("%Eq") == "unsupported strftime code '%q' in name");
  CHECK(compileError("name%") == "name ends with a lone '%'");
  CHECK(compileError("name%E") == "name ends with an incomplete % code");
}

TEST_CASE("NameTemplate: absolute, empty and control-character names are refused", "[naming]") {
  CHECK(compileError("/var/log/x.log") == "name must be relative to the archive dir");
  CHECK(compileError("/{route}") == "name must be relative to the archive dir");
  CHECK(compileError("") == "name template is empty");
  CHECK(compileError("a\nb") == "name contains a control character");
  CHECK(compileError(std::string_view("a\0b", 3)) == "name contains a control character");
}

TEST_CASE("NameTemplate: literal '..' and other non-contained shapes are refused", "[naming]") {
  CHECK(compileError("../x.log") ==
        "name '../x.log' expands to '../x.log', which is not inside the archive dir");
  CHECK(compileError("a/../../b") ==
        "name 'a/../../b' expands to 'a/../../b', which is not inside the archive dir");
  CHECK(compileError("%Y/..") ==
        "name '%Y/..' expands to '1970/..', which is not inside the archive dir");
  CHECK(compileError("./x") == "name './x' expands to './x', which is not inside the archive dir");
  CHECK(compileError("a//b") ==
        "name 'a//b' expands to 'a//b', which is not inside the archive dir");
  CHECK(compileError("dir/") ==
        "name 'dir/' expands to 'dir/', which is not inside the archive dir");
  // Dots inside a component are fine; a component may not start with one (hidden files are
  // not segments: the lifecycle skips them).
  CHECK(expanded("{route}../x..y/a...", sampleVars()) == "app../x..y/a...");
  CHECK(compileError("..{route}/x") ==
        "name '..{route}/x' expands to '..route/x': no part of it may start with '.'");
}

TEST_CASE("NameTemplate::expand: a placeholder value cannot climb out", "[naming]") {
  auto t = compiled("{route}/x.log");
  auto v = sampleVars();
  v.route = "..";
  auto out = t.expand(v, kWhen, false);
  REQUIRE_FALSE(out.ok());
  CHECK(out.error() ==
        "name '{route}/x.log' expands to '../x.log', which is not inside the archive dir");

  v.route = "a/../../etc";
  out = t.expand(v, kWhen, false);
  REQUIRE_FALSE(out.ok());
  CHECK(out.error() ==
        "name '{route}/x.log' expands to 'a/../../etc/x.log', which is not inside the archive dir");

  // "x/{route}" compiles (the sample route is not empty) but a value of ".." climbs out.
  auto dots = compiled("x/{route}");
  v.route = "..";
  out = dots.expand(v, kWhen, false);
  REQUIRE_FALSE(out.ok());
  CHECK(out.error() == "name 'x/{route}' expands to 'x/..', which is not inside the archive dir");
  v.route = "";

  // A name that expands to nothing at all.
  auto bare = compiled("{route}");
  out = bare.expand(v, kWhen, false);
  REQUIRE_FALSE(out.ok());
  CHECK(out.error() == "name '{route}' expands to '', which is not inside the archive dir");
}

TEST_CASE("isContainedRelativePath", "[naming]") {
  CHECK(isContainedRelativePath("a"));
  CHECK(isContainedRelativePath("a/b/c.log"));
  CHECK(isContainedRelativePath("..a"));
  CHECK(isContainedRelativePath("a..b/c"));
  CHECK(isContainedRelativePath("..."));
  CHECK(isContainedRelativePath(".hidden/x"));

  CHECK_FALSE(isContainedRelativePath(""));
  CHECK_FALSE(isContainedRelativePath("/"));
  CHECK_FALSE(isContainedRelativePath("/a"));
  CHECK_FALSE(isContainedRelativePath("a/"));
  CHECK_FALSE(isContainedRelativePath("a//b"));
  CHECK_FALSE(isContainedRelativePath("."));
  CHECK_FALSE(isContainedRelativePath(".."));
  CHECK_FALSE(isContainedRelativePath("../a"));
  CHECK_FALSE(isContainedRelativePath("a/.."));
  CHECK_FALSE(isContainedRelativePath("a/./b"));
  CHECK_FALSE(isContainedRelativePath("a/../b"));
  CHECK_FALSE(isContainedRelativePath(std::string_view("a\0b", 3)));
}

// %s is seconds since the Epoch, the same number in every time zone. glibc's strftime computes it
// with mktime(), which reads the broken-down time as *local* time, so a name expanded in UTC
// (localtime: false, the default) gets an epoch shifted by the local UTC offset.
TEST_CASE("NameTemplate: %s is the epoch whatever TZ is", "[naming]") {
  auto v = sampleVars();
  {
    ScopedTz tz("UTC0");
    CHECK(expanded("%s", v, false) == std::to_string(kEpoch));
    CHECK(expanded("%s", v, true) == std::to_string(kEpoch));
  }
  ScopedTz tz("XXX-05:30");
  CHECK(expanded("%s", v, true) == std::to_string(kEpoch));
  CHECK(expanded("%s", v, false) == std::to_string(kEpoch));  // actual: kEpoch - 19800
}

TEST_CASE("NameTemplate: names the archive lifecycle uses are refused", "[naming]") {
  for (const char* bad : {"{route}.open", "{route}-{seq}.tmp", "x/{seq}.log.zst", "{seq}.gz",
                          ".hidden-{seq}", "%Y/.x/{seq}.log"}) {
    INFO(bad);
    CHECK_FALSE(NameTemplate::compile(bad).ok());
  }
  CHECK(NameTemplate::compile("{route}-{seq}.log").ok());
  CHECK(NameTemplate::compile("a.b/{seq}.open.log").ok());
}

TEST_CASE("NameTemplate: a modifier code is one unit when expanded too", "[naming]") {
  // compile() reads "%E%" as one code; expand() must too, or the "%s" after "%%" becomes a
  // field width that makes every expansion fail at run time (found by fuzz_naming).
  auto t = NameTemplate::compile("%E%%%sY.log");
  REQUIRE(t.ok());
  NameVars v{"app", "127.0.0.1", 1, 1, 0, 1};
  auto when = std::chrono::system_clock::from_time_t(1795725160);
  auto out = t.value().expand(v, when, false);
  REQUIRE(out.ok());
  CHECK(out.value() == "%%sY.log");  // glibc writes "%E%" as "%"; no epoch crept in
}

TEST_CASE("NameTemplate: long day and month names still fit", "[naming]") {
  std::string text;
  for (int i = 0; i < 128; ++i) text += "%F/";  // one part of 1,300 bytes would pass NAME_MAX
  text += "%A%B.log";
  auto t = NameTemplate::compile(text);
  REQUIRE(t.ok());
  NameVars v{"app", "127.0.0.1", 1, 1, 0, 1};
  // A Wednesday in September: the longest names.
  auto when = std::chrono::system_clock::from_time_t(1758700800);  // 2025-09-24
  auto out = t.value().expand(v, when, false);
  REQUIRE(out.ok());
  CHECK(out.value().ends_with("2025-09-24/WednesdaySeptember.log"));
}

TEST_CASE("NameTemplate: every control character is refused", "[naming]") {
  for (int c = 1; c < 0x20; ++c) {
    INFO("byte " << c);
    CHECK(compileError(std::string("a") + static_cast<char>(c) + "b-{seq}.log") ==
          "name contains a control character");
  }
  CHECK(compileError("a\x7f"
                     "b-{seq}.log") == "name contains a control character");
  CHECK(compileError("a\x1b[31m-{seq}.log") == "name contains a control character");
  // Bytes above 0x7f (UTF-8) are not control characters.
  CHECK(NameTemplate::compile("caf\xc3\xa9-{seq}.log").ok());
}

TEST_CASE("NameTemplate: a part that can expand beyond NAME_MAX is refused", "[naming]") {
  // Each part is measured at the longest its placeholders and % codes can expand to: {route} 64,
  // {peer} 39, {peer_port} 5, {conn} 20, {seq} 20, {pid} 10, %A 9, %s 20 ...; the last part also
  // keeps 14 bytes for what spliced adds (".9999" and ".unsynced").
  CHECK(compileError(std::string(256, 'd') + "/{seq}.log") ==
        "part '" + std::string(256, 'd') +
            "' of the name can expand to 256 bytes, more than NAME_MAX (255)");
  CHECK(NameTemplate::compile(std::string(255, 'd') + "/{seq}.log").ok());
  CHECK(NameTemplate::compile(std::string(241, 'f')).ok());
  CHECK(compileError(std::string(242, 'f')) ==
        "the last part of the name, '" + std::string(242, 'f') +
            "', can expand to 242 bytes; with the 14 bytes spliced may add (\".9999\", "
            "\".unsynced\") that is more than NAME_MAX (255)");
  // 64 + 1 + 150 + 1 + 20 + 4 = 240: fits; one more byte does not.
  const std::string part = "{route}-" + std::string(150, 'x') + "-{seq}.log";
  CHECK(NameTemplate::compile("%Y/" + part).ok());
  const std::string longer = "{route}-" + std::string(152, 'x') + "-{seq}.log";
  CHECK_THAT(compileError("%Y/" + longer),
             Catch::Matchers::StartsWith("the last part of the name, '" + longer +
                                         "', can expand to 242 bytes"));
  // Placeholders and codes in a directory part count at their longest too: 20 + 9 + 217 + 10.
  const std::string dir_part = "{conn}%A" + std::string(217, 'y') + "{pid}";
  CHECK(compileError(dir_part + "/{seq}") ==
        "part '" + dir_part + "' of the name can expand to 256 bytes, more than NAME_MAX (255)");
}

TEST_CASE("NameTemplate::expand: a part over NAME_MAX is refused at run time", "[naming]") {
  // compile() allows {route} 64 bytes; a longer value (which config never gives) is still caught.
  auto t = compiled("{route}-{seq}.log");
  NameVars v = sampleVars();
  v.route = std::string(300, 'r');
  auto out = t.expand(v, kWhen, false);
  REQUIRE_FALSE(out.ok());
  CHECK(out.error() == "name '{route}-{seq}.log' expands to a part of 311 bytes ('" +
                           std::string(300, 'r') + "-000003.log'), more than NAME_MAX (255)");
}
