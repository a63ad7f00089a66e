// libFuzzer target: the shipping cursor parser (parseCursor) on arbitrary bytes, as the daemon
// reads .spliced/ship/*.cursor at start, a file anyone with access to the archive dir can edit or
// cut. A cursor that parses must format back to the same text (formatCursor is the writer's
// format), and a parsed cursor never holds an offset without a segment.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "spliced/ship/cursor.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::string why;
  auto c = spliced::parseCursor(text, why);
  if (!c) {
    FUZZ_CHECK(!why.empty(), "a refused cursor says why");
    return 0;
  }
  FUZZ_CHECK(!c->segment.empty() || (c->offset == 0 && c->pending.empty()),
             "an offset or pending segments come with a segment");
  const std::string again_text = spliced::formatCursor(*c);
  FUZZ_CHECK(again_text == text, "a cursor that parses is exactly what formatCursor writes");
  std::string again_why;
  auto again = spliced::parseCursor(again_text, again_why);
  FUZZ_CHECK(again.has_value() && *again == *c, "format and parse round-trip");
  return 0;
}
