#pragma once
// Parsing of human-readable sizes ("256MiB", "1GB", "4096") and durations ("10s", "5m", "1h30m").
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

namespace spliced {

using std::chrono::milliseconds;

inline constexpr uint64_t kKiB = 1024;
inline constexpr uint64_t kMiB = 1024 * kKiB;
inline constexpr uint64_t kGiB = 1024 * kMiB;

// The reason a text could not be parsed, for the operator.
struct Fail {
  std::string message;
};

// Either a value or a human-readable reason why the text is not one.
template <typename T>
struct Parsed {
  Parsed(T value) : v(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  Parsed(Fail f) : v(std::move(f)) {}       // NOLINT(google-explicit-constructor)
  std::variant<T, Fail> v;
  bool ok() const { return v.index() == 0; }
  const T& value() const { return std::get<0>(v); }
  const std::string& error() const { return std::get<1>(v).message; }
};

// "512", "64KiB", "1MiB", "2GiB", "1KB" (10^3), "1MB", "1GB", "8B". Case of the unit matters for
// the i (KiB vs KB); k/K are both accepted. Overflow and negatives are errors.
Parsed<uint64_t> parseSize(std::string_view text);

// "250ms", "10s", "5m", "1h", "2d", "1h30m", "0". A bare integer other than 0 is refused: a
// duration must say its unit.
Parsed<std::chrono::milliseconds> parseDuration(std::string_view text);

// Short forms for logs: 1536 -> "1.5KiB"; 90s -> "1m30s".
std::string formatSize(uint64_t bytes);
std::string formatDuration(std::chrono::milliseconds d);

}  // namespace spliced
