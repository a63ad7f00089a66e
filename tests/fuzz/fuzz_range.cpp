// libFuzzer target: parseRange(header, size), the admin endpoint's "Range: bytes=..." parser.
// Input: the header value up to the first '\n'; after it, 8 bytes of file size (little endian).
// Each header is tried against that size and a few fixed ones. Properties: Satisfiable means
// 0 < length, start < size and start + length <= size; an absent header is Kind::None.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "spliced/admin/byte_range.hpp"

namespace {

void check(const std::string& header, uint64_t size) {
  const spliced::ByteRange r = spliced::parseRange(header.c_str(), size);
  if (r.kind != spliced::ByteRange::Kind::Satisfiable) return;
  FUZZ_CHECK(r.length > 0, "a satisfiable range is not empty");
  FUZZ_CHECK(r.start < size, "a satisfiable range starts inside the file");
  FUZZ_CHECK(r.length <= size - r.start, "a satisfiable range ends inside the file");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nl = input.find('\n');
  const std::string header(input.substr(0, nl));

  static constexpr uint64_t kSizes[] = {
      0, 1, 2, 99, 100, 101, 1000, 4096, 1ull << 32, 1ull << 63, UINT64_MAX - 1, UINT64_MAX};
  for (uint64_t s : kSizes) check(header, s);
  if (nl != std::string_view::npos) {
    uint64_t fuzzed = 0;
    std::memcpy(&fuzzed, data + nl + 1, std::min<size_t>(sizeof fuzzed, size - nl - 1));
    check(header, fuzzed);
  }
  FUZZ_CHECK(spliced::parseRange(nullptr, 100).kind == spliced::ByteRange::Kind::None,
             "no header is no range");
  return 0;
}
