#pragma once
// HTTP byte ranges (RFC 9110 section 14): the one "Range: bytes=..." form the archive download
// answers.
#include <cstdint>

namespace spliced {

// A parsed single "Range: bytes=..." header against a file of `size` bytes.
struct ByteRange {
  enum class Kind { None, Satisfiable, Unsatisfiable } kind = Kind::None;
  uint64_t start = 0;
  uint64_t length = 0;
};
// Kind::None when the header is absent, malformed or asks for several ranges (the whole file is
// sent then, as RFC 9110 allows).
ByteRange parseRange(const char* header, uint64_t size);

}  // namespace spliced
