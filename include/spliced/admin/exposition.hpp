#pragma once
// Prometheus text exposition format 0.0.4: families with one # HELP and one # TYPE line each,
// then their samples. Label values are escaped (\\, \", \n). Built only when scraped.
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace spliced {

// `s` as the inside of a JSON string: `"` and `\\` escaped, control characters as \\u00XX.
std::string jsonEscape(std::string_view s);

using Labels = std::vector<std::pair<std::string, std::string>>;

class Exposition {
 public:
  enum class Type { Counter, Gauge };
  // Starts a family; samples added after it belong to it. A family is declared once.
  void family(std::string_view name, Type type, std::string_view help);
  void sample(const Labels& labels, double value);
  void sample(const Labels& labels, uint64_t value);
  const std::string& text() const { return out_; }

 private:
  void writeLabels(const Labels& labels);
  std::string out_;
  std::string current_;
  std::vector<std::string> declared_;
};

std::string escapeLabelValue(std::string_view v);

}  // namespace spliced
