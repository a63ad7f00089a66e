// libFuzzer target: parseSize/parseDuration on arbitrary text, and formatSize/formatDuration on
// what they return and on raw 64-bit values from the input. Short forms that are exact ("512B",
// "250ms", "10s", "1h2m3s") must parse back to the same value.
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "spliced/core/units.hpp"

namespace {

using std::chrono::milliseconds;

void checkSize(uint64_t bytes) {
  const std::string s = spliced::formatSize(bytes);
  FUZZ_CHECK(!s.empty(), "formatSize gives text");
  if (bytes < 1024) {
    auto back = spliced::parseSize(s);
    FUZZ_CHECK(back.ok() && back.value() == bytes, "formatSize below 1KiB parses back exactly");
  }
}

void checkDuration(milliseconds d) {
  const std::string s = spliced::formatDuration(d);
  FUZZ_CHECK(!s.empty(), "formatDuration gives text");
  if (d.count() >= 0 && (d.count() < 1000 || d.count() % 1000 == 0)) {
    auto back = spliced::parseDuration(s);
    FUZZ_CHECK(back.ok() && back.value() == d, "formatDuration of whole seconds parses back");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  auto sz = spliced::parseSize(text);
  if (sz.ok()) {
    checkSize(sz.value());
  } else {
    FUZZ_CHECK(!sz.error().empty(), "a refused size says why");
  }

  auto d = spliced::parseDuration(text);
  if (d.ok()) {
    FUZZ_CHECK(d.value().count() >= 0, "a parsed duration is not negative");
    checkDuration(d.value());
  } else {
    FUZZ_CHECK(!d.error().empty(), "a refused duration says why");
  }

  // Raw values: every uint64 size and every int64 millisecond count formats.
  if (size >= 8) {
    uint64_t raw = 0;
    std::memcpy(&raw, data, sizeof raw);
    checkSize(raw);
    int64_t ms = 0;
    std::memcpy(&ms, data, sizeof ms);
    (void)spliced::formatDuration(milliseconds(ms));
    if (ms >= 0) checkDuration(milliseconds(ms));
  }
  return 0;
}
