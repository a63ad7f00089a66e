#include "spliced/admin/exposition.hpp"

#include <fmt/format.h>
#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace spliced {

std::string jsonEscape(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      out += fmt::format("\\u{:04x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string escapeLabelValue(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

void Exposition::family(std::string_view name, Type type, std::string_view help) {
  if (std::find(declared_.begin(), declared_.end(), name) != declared_.end()) {
    throw std::logic_error(fmt::format("metric family {} declared twice", name));
  }
  declared_.emplace_back(name);
  current_ = std::string(name);
  // HELP text escapes only backslash and newline.
  std::string h;
  for (char c : help) {
    if (c == '\\') {
      h += "\\\\";
    } else if (c == '\n') {
      h += "\\n";
    } else {
      h += c;
    }
  }
  fmt::format_to(std::back_inserter(out_), "# HELP {} {}\n# TYPE {} {}\n", name, h, name,
                 type == Type::Counter ? "counter" : "gauge");
}

void Exposition::writeLabels(const Labels& labels) {
  out_ += current_;
  if (!labels.empty()) {
    out_ += '{';
    for (size_t i = 0; i < labels.size(); ++i) {
      if (i) out_ += ',';
      fmt::format_to(std::back_inserter(out_), "{}=\"{}\"", labels[i].first,
                     escapeLabelValue(labels[i].second));
    }
    out_ += '}';
  }
  out_ += ' ';
}

void Exposition::sample(const Labels& labels, uint64_t value) {
  writeLabels(labels);
  fmt::format_to(std::back_inserter(out_), "{}\n", value);
}

void Exposition::sample(const Labels& labels, double value) {
  writeLabels(labels);
  if (std::isnan(value)) {
    out_ += "NaN\n";
  } else if (std::isinf(value)) {
    out_ += value > 0 ? "+Inf\n" : "-Inf\n";
  } else {
    fmt::format_to(std::back_inserter(out_), "{}\n", value);
  }
}

}  // namespace spliced
