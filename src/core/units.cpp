#include "spliced/core/units.hpp"

#include <fmt/format.h>
#include <cctype>
#include <limits>

namespace spliced {
namespace {

bool mulOverflows(uint64_t a, uint64_t b) {
  return a != 0 && b > std::numeric_limits<uint64_t>::max() / a;
}

// Reads a run of decimal digits; returns false when there is none or it overflows.
bool readNumber(std::string_view& s, uint64_t& out) {
  size_t i = 0;
  out = 0;
  while (i < s.size() && std::isdigit(static_cast<unsigned char>(s[i]))) {
    uint64_t d = static_cast<uint64_t>(s[i] - '0');
    if (mulOverflows(out, 10) || out * 10 > std::numeric_limits<uint64_t>::max() - d) return false;
    out = out * 10 + d;
    ++i;
  }
  if (i == 0) return false;
  s.remove_prefix(i);
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

}  // namespace

Parsed<uint64_t> parseSize(std::string_view text) {
  std::string_view s = trim(text);
  if (s.empty()) return {Fail{std::string("empty size")}};
  if (s.front() == '-') return {Fail{std::string("size must not be negative")}};
  uint64_t n = 0;
  if (!std::isdigit(static_cast<unsigned char>(s.front()))) {
    return {Fail{fmt::format("'{}' is not a size (expected e.g. 512, 64KiB, 1MiB, 2GiB)", text)}};
  }
  if (!readNumber(s, n)) return {Fail{fmt::format("size '{}' is too large", text)}};
  s = trim(s);
  uint64_t mult = 1;
  if (s.empty() || s == "B") {
    mult = 1;
  } else if (s == "KiB" || s == "kiB") {
    mult = 1ull << 10;
  } else if (s == "MiB") {
    mult = 1ull << 20;
  } else if (s == "GiB") {
    mult = 1ull << 30;
  } else if (s == "TiB") {
    mult = 1ull << 40;
  } else if (s == "KB" || s == "kB") {
    mult = 1000;
  } else if (s == "MB") {
    mult = 1000 * 1000;
  } else if (s == "GB") {
    mult = 1000ull * 1000 * 1000;
  } else if (s == "TB") {
    mult = 1000ull * 1000 * 1000 * 1000;
  } else {
    return {
        Fail{fmt::format("unknown size unit '{}' (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)", s)}};
  }
  if (mulOverflows(n, mult)) return {Fail{fmt::format("size '{}' is too large", text)}};
  return {n * mult};
}

Parsed<std::chrono::milliseconds> parseDuration(std::string_view text) {
  std::string_view s = trim(text);
  if (s.empty()) return {Fail{std::string("empty duration")}};
  if (s.front() == '-') return {Fail{std::string("duration must not be negative")}};
  if (s == "0") return {std::chrono::milliseconds(0)};
  uint64_t total_ms = 0;
  while (!s.empty()) {
    uint64_t n = 0;
    if (!std::isdigit(static_cast<unsigned char>(s.front()))) {
      return {
          Fail{fmt::format("'{}' is not a duration (expected e.g. 250ms, 10s, 5m, 1h, 2d)", text)}};
    }
    if (!readNumber(s, n)) return {Fail{fmt::format("duration '{}' is too large", text)}};
    uint64_t mult = 0;
    if (s.substr(0, 2) == "ms") {
      mult = 1;
      s.remove_prefix(2);
    } else if (!s.empty() && s.front() == 's') {
      mult = 1000;
      s.remove_prefix(1);
    } else if (!s.empty() && s.front() == 'm') {
      mult = 60 * 1000;
      s.remove_prefix(1);
    } else if (!s.empty() && s.front() == 'h') {
      mult = 3600 * 1000;
      s.remove_prefix(1);
    } else if (!s.empty() && s.front() == 'd') {
      mult = 86400 * 1000;
      s.remove_prefix(1);
    } else if (s.empty()) {
      return {Fail{fmt::format("duration '{}' needs a unit (ms, s, m, h, d)", text)}};
    } else {
      return {Fail{fmt::format("unknown duration unit in '{}' (use ms, s, m, h, d)", text)}};
    }
    if (mulOverflows(n, mult) || total_ms + n * mult < total_ms ||
        total_ms + n * mult > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      return {Fail{fmt::format("duration '{}' is too large", text)}};
    }
    total_ms += n * mult;
  }
  return {std::chrono::milliseconds(static_cast<int64_t>(total_ms))};
}

std::string formatSize(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  if (u == 0) return fmt::format("{}B", bytes);
  return fmt::format("{:.1f}{}", v, kUnits[u]);
}

std::string formatDuration(std::chrono::milliseconds d) {
  auto ms = d.count();
  if (ms < 1000) return fmt::format("{}ms", ms);
  if (ms < 60000) {
    if (ms % 1000 == 0) return fmt::format("{}s", ms / 1000);
    return fmt::format("{:.3f}s", static_cast<double>(ms) / 1000.0);
  }
  auto s = ms / 1000;
  if (s < 3600) return fmt::format("{}m{}s", s / 60, s % 60);
  return fmt::format("{}h{}m{}s", s / 3600, (s / 60) % 60, s % 60);
}

}  // namespace spliced
