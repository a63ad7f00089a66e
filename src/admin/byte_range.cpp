#include "spliced/admin/byte_range.hpp"

#include <algorithm>
#include <string>
#include <string_view>

namespace spliced {

ByteRange parseRange(const char* header, uint64_t size) {
  ByteRange r;
  if (header == nullptr) return r;
  std::string_view h(header);
  if (!h.starts_with("bytes=")) return r;
  h.remove_prefix(6);
  if (h.find(',') != std::string_view::npos) return r;  // several ranges: send it all
  auto dash = h.find('-');
  if (dash == std::string_view::npos) return r;
  auto number = [](std::string_view s, uint64_t& out) {
    if (s.empty() || s.size() > 19 || s.find_first_not_of("0123456789") != std::string_view::npos) {
      return false;
    }
    out = std::stoull(std::string(s));
    return true;
  };
  std::string_view first = h.substr(0, dash), last = h.substr(dash + 1);
  uint64_t a = 0, b = 0;
  if (first.empty()) {  // bytes=-N: the last N bytes
    if (!number(last, b)) return r;
    if (b == 0 || size == 0) {
      r.kind = ByteRange::Kind::Unsatisfiable;
      return r;
    }
    r.kind = ByteRange::Kind::Satisfiable;
    r.length = std::min(b, size);
    r.start = size - r.length;
    return r;
  }
  if (!number(first, a)) return r;
  if (last.empty()) {
    b = size ? size - 1 : 0;
  } else if (!number(last, b) || b < a) {
    return r;
  }
  if (a >= size) {
    r.kind = ByteRange::Kind::Unsatisfiable;
    return r;
  }
  r.kind = ByteRange::Kind::Satisfiable;
  r.start = a;
  r.length = std::min(b, size - 1) - a + 1;
  return r;
}

}  // namespace spliced
