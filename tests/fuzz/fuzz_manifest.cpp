// libFuzzer target: the manifest line parser (parseRecord) on arbitrary text, as `spliced verify`
// and the daemon's start-up replay read .spliced/manifest.jsonl, which anyone with access to the
// archive dir can edit. A line that parses must format back to a line that parses to the same
// record (formatRecord is the writer's own format).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "spliced/archive/manifest.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::string error;
  auto r = spliced::parseRecord(text, error);
  if (!r) {
    FUZZ_CHECK(!error.empty(), "a refused line says why");
    return 0;
  }
  FUZZ_CHECK(!r->name.empty(), "a record names a file");
  const std::string line = spliced::formatRecord(*r);
  FUZZ_CHECK(line.find('\n') == std::string::npos, "a formatted record is one line");
  std::string again_error;
  auto again = spliced::parseRecord(line, again_error);
  FUZZ_CHECK(again.has_value(), "a formatted record parses");
  FUZZ_CHECK(spliced::formatRecord(*again) == line, "format and parse round-trip");
  FUZZ_CHECK(again->name == r->name && again->size == r->size && again->hash == r->hash,
             "the round trip keeps name, size and hash");
  spliced::ManifestState state;
  (void)state.apply(*r, 1);
  (void)spliced::linkHash(spliced::hashAlgOf(r->prev), line);
  return 0;
}
