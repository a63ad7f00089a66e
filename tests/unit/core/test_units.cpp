// spliced/core/units.hpp: sizes and durations as the config writes them, and their short log forms.
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <limits>
#include <string>

#include "spliced/core/units.hpp"

using spliced::formatDuration;
using spliced::formatSize;
using spliced::parseDuration;
using spliced::parseSize;
using std::chrono::milliseconds;

namespace {

uint64_t sizeOf(const std::string& text) {
  auto p = parseSize(text);
  INFO("parseSize(\"" << text << "\")" << (p.ok() ? "" : " failed: " + p.error()));
  REQUIRE(p.ok());
  return p.value();
}

std::string sizeError(const std::string& text) {
  auto p = parseSize(text);
  INFO("parseSize(\"" << text << "\") should fail");
  REQUIRE_FALSE(p.ok());
  return p.error();
}

int64_t msOf(const std::string& text) {
  auto p = parseDuration(text);
  INFO("parseDuration(\"" << text << "\")" << (p.ok() ? "" : " failed: " + p.error()));
  REQUIRE(p.ok());
  return p.value().count();
}

std::string durationError(const std::string& text) {
  auto p = parseDuration(text);
  INFO("parseDuration(\"" << text << "\") should fail");
  REQUIRE_FALSE(p.ok());
  return p.error();
}

}  // namespace

TEST_CASE("parseSize: bare integers and bytes", "[units][size]") {
  CHECK(sizeOf("0") == 0);
  CHECK(sizeOf("512") == 512);
  CHECK(sizeOf("4096") == 4096);
  CHECK(sizeOf("8B") == 8);
  CHECK(sizeOf("0B") == 0);
}

TEST_CASE("parseSize: binary units are powers of two", "[units][size]") {
  CHECK(sizeOf("1KiB") == 1024);
  CHECK(sizeOf("64KiB") == 65536);
  CHECK(sizeOf("1kiB") == 1024);
  CHECK(sizeOf("1MiB") == 1048576);
  CHECK(sizeOf("256MiB") == 268435456);
  CHECK(sizeOf("2GiB") == 2147483648ull);
  CHECK(sizeOf("1TiB") == 1099511627776ull);
  CHECK(sizeOf("3TiB") == 3298534883328ull);
}

TEST_CASE("parseSize: decimal units are powers of ten", "[units][size]") {
  CHECK(sizeOf("1KB") == 1000);
  CHECK(sizeOf("1kB") == 1000);
  CHECK(sizeOf("5MB") == 5000000);
  CHECK(sizeOf("2GB") == 2000000000ull);
  CHECK(sizeOf("7TB") == 7000000000000ull);
}

TEST_CASE("parseSize: surrounding and inner whitespace is ignored", "[units][size]") {
  CHECK(sizeOf("  42  ") == 42);
  CHECK(sizeOf("\t1MiB\n") == 1048576);
  CHECK(sizeOf("4 KiB") == 4096);
  CHECK(sizeOf(" 3 KB ") == 3000);
}

TEST_CASE("parseSize: the largest value fits, one more overflows", "[units][size]") {
  CHECK(sizeOf("18446744073709551615") == std::numeric_limits<uint64_t>::max());
  CHECK(sizeError("18446744073709551616") == "size '18446744073709551616' is too large");
  // 2^24 TiB = 2^64: one past the top.
  CHECK(sizeOf("16777215TiB") == 16777215ull * (1ull << 40));
  CHECK(sizeError("16777216TiB") == "size '16777216TiB' is too large");
  CHECK(sizeError("18446744073709552KB") == "size '18446744073709552KB' is too large");
  CHECK(sizeOf("18446744073709551KB") == 18446744073709551000ull);
}

TEST_CASE("parseSize: negatives are refused", "[units][size]") {
  CHECK(sizeError("-1") == "size must not be negative");
  CHECK(sizeError(" -5KiB") == "size must not be negative");
}

TEST_CASE("parseSize: unknown units are refused", "[units][size]") {
  CHECK(sizeError("1XB") == "unknown size unit 'XB' (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)");
  CHECK(sizeError("1mb") == "unknown size unit 'mb' (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)");
  CHECK(sizeError("1kib") == "unknown size unit 'kib' (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)");
  CHECK(sizeError("1K") == "unknown size unit 'K' (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)");
  CHECK(sizeError("1.5MiB") ==
        "unknown size unit '.5MiB' (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)");
  CHECK(sizeError("1KiB2") ==
        "unknown size unit 'KiB2' (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)");
}

TEST_CASE("parseSize: empty and non-numeric text is refused", "[units][size]") {
  CHECK(sizeError("") == "empty size");
  CHECK(sizeError("   ") == "empty size");
  CHECK(sizeError("KiB") == "'KiB' is not a size (expected e.g. 512, 64KiB, 1MiB, 2GiB)");
  CHECK(sizeError("+1") == "'+1' is not a size (expected e.g. 512, 64KiB, 1MiB, 2GiB)");
  CHECK(sizeError("lots") == "'lots' is not a size (expected e.g. 512, 64KiB, 1MiB, 2GiB)");
}

TEST_CASE("parseDuration: each unit", "[units][duration]") {
  CHECK(msOf("250ms") == 250);
  CHECK(msOf("10s") == 10000);
  CHECK(msOf("5m") == 300000);
  CHECK(msOf("1h") == 3600000);
  CHECK(msOf("2d") == 172800000);
  CHECK(msOf("0s") == 0);
  CHECK(msOf("0ms") == 0);
}

TEST_CASE("parseDuration: compound durations add up", "[units][duration]") {
  CHECK(msOf("1h30m") == 5400000);
  CHECK(msOf("1m30s") == 90000);
  CHECK(msOf("1d2h3m4s5ms") == 86400000 + 2 * 3600000 + 3 * 60000 + 4000 + 5);
  CHECK(msOf("1s500ms") == 1500);
  CHECK(msOf("30m1h") == 5400000);
}

TEST_CASE("parseDuration: zero needs no unit, other bare integers are refused",
          "[units][duration]") {
  CHECK(msOf("0") == 0);
  CHECK(msOf(" 0 ") == 0);
  CHECK(durationError("5") == "duration '5' needs a unit (ms, s, m, h, d)");
  CHECK(durationError("1h30") == "duration '1h30' needs a unit (ms, s, m, h, d)");
  CHECK(durationError("00") == "duration '00' needs a unit (ms, s, m, h, d)");
}

TEST_CASE("parseDuration: whitespace around the value is ignored", "[units][duration]") {
  CHECK(msOf("  10s  ") == 10000);
  CHECK(msOf("\t1h30m\n") == 5400000);
}

TEST_CASE("parseDuration: overflow is refused", "[units][duration]") {
  const int64_t max = std::numeric_limits<int64_t>::max();
  CHECK(msOf("9223372036854775807ms") == max);
  CHECK(durationError("9223372036854775808ms") == "duration '9223372036854775808ms' is too large");
  CHECK(durationError("9223372036854775807ms1ms") ==
        "duration '9223372036854775807ms1ms' is too large");
  CHECK(msOf("106751991167d") == 106751991167ll * 86400000);
  CHECK(durationError("106751991168d") == "duration '106751991168d' is too large");
  CHECK(durationError("300000000000d") == "duration '300000000000d' is too large");
  CHECK(durationError("99999999999999999999s") == "duration '99999999999999999999s' is too large");
}

TEST_CASE("parseDuration: garbage, negatives and empty text are refused", "[units][duration]") {
  CHECK(durationError("") == "empty duration");
  CHECK(durationError("  ") == "empty duration");
  CHECK(durationError("-1s") == "duration must not be negative");
  CHECK(durationError("abc") == "'abc' is not a duration (expected e.g. 250ms, 10s, 5m, 1h, 2d)");
  CHECK(durationError("s") == "'s' is not a duration (expected e.g. 250ms, 10s, 5m, 1h, 2d)");
  CHECK(durationError("10x") == "unknown duration unit in '10x' (use ms, s, m, h, d)");
  CHECK(durationError("1.5h") == "unknown duration unit in '1.5h' (use ms, s, m, h, d)");
  CHECK(durationError("1w") == "unknown duration unit in '1w' (use ms, s, m, h, d)");
  CHECK(durationError("1h 30m") ==
        "'1h 30m' is not a duration (expected e.g. 250ms, 10s, 5m, 1h, 2d)");
  CHECK(durationError("5min") == "'5min' is not a duration (expected e.g. 250ms, 10s, 5m, 1h, 2d)");
}

TEST_CASE("formatSize: bytes below 1KiB exact, larger with one decimal", "[units][format]") {
  CHECK(formatSize(0) == "0B");
  CHECK(formatSize(1) == "1B");
  CHECK(formatSize(1023) == "1023B");
  CHECK(formatSize(1024) == "1.0KiB");
  CHECK(formatSize(1536) == "1.5KiB");
  CHECK(formatSize(4096) == "4.0KiB");
  CHECK(formatSize(1048576) == "1.0MiB");
  CHECK(formatSize(256ull << 20) == "256.0MiB");
  CHECK(formatSize(3ull << 30) == "3.0GiB");
  CHECK(formatSize(1ull << 40) == "1.0TiB");
  CHECK(formatSize(1ull << 50) == "1024.0TiB");
}

TEST_CASE("formatDuration: ms, seconds, minutes, hours", "[units][format]") {
  CHECK(formatDuration(milliseconds(0)) == "0ms");
  CHECK(formatDuration(milliseconds(250)) == "250ms");
  CHECK(formatDuration(milliseconds(999)) == "999ms");
  CHECK(formatDuration(milliseconds(1000)) == "1s");
  CHECK(formatDuration(milliseconds(1500)) == "1.500s");
  CHECK(formatDuration(milliseconds(59999)) == "59.999s");
  CHECK(formatDuration(milliseconds(60000)) == "1m0s");
  CHECK(formatDuration(milliseconds(90000)) == "1m30s");
  CHECK(formatDuration(milliseconds(3599000)) == "59m59s");
  CHECK(formatDuration(milliseconds(3600000)) == "1h0m0s");
  CHECK(formatDuration(milliseconds(5405000)) == "1h30m5s");
  CHECK(formatDuration(milliseconds(172800000)) == "48h0m0s");
}

TEST_CASE("formatDuration output parses back to the same value when whole", "[units][format]") {
  for (int64_t ms : {0ll, 250ll, 60000ll, 90000ll, 3600000ll, 5405000ll, 172800000ll}) {
    INFO(ms);
    CHECK(msOf(formatDuration(milliseconds(ms))) == ms);
  }
}
