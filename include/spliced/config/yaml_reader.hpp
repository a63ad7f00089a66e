#pragma once
// Reading YAML into config structs: every value's checks (type, unit, range, choices) with the
// position of each problem, collected rather than thrown, so that one pass reports them all.
// The schema (schema.cpp) says which keys exist and what they fill; validate.cpp checks what
// spans several keys. Positions are 1-based in messages.
#include <yaml-cpp/yaml.h>

#include <fmt/format.h>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "spliced/config/config.hpp"
#include "spliced/core/address.hpp"
#include "spliced/core/units.hpp"

namespace spliced {

// A YamlReader owns the errors found so far and where each key and value stands.
class YamlReader {
 public:
  explicit YamlReader(std::string source) : source_(std::move(source)) {}

  std::vector<ConfigError> takeErrors() { return std::move(errors_); }
  void addError(ConfigError e) { errors_.push_back(std::move(e)); }
  bool failed() const { return !errors_.empty(); }
  const std::string& source() const { return source_; }

  // Where the value of a key stands ("routes[0].listen"), if that key was read.
  std::optional<YAML::Mark> valueMark(const std::string& key) const;

  // Records a problem with `key` at the node `at` (an empty value: at its key).
  void add(const YAML::Node& at, const std::string& key, const std::string& message);
  void addAt(const YAML::Mark& mark, const std::string& key, const std::string& message);
  // "routes[0]" + "listen" -> "routes[0].listen".
  static std::string join(const std::string& path, const std::string& key);

  // Reports keys of `map` not in `known`. Returns false if `map` is not a mapping.
  bool checkMap(const YAML::Node& map, const std::string& path,
                std::initializer_list<std::string_view> known);

  // Each reader below checks one value; on a problem it records it and leaves `out` as it was.
  std::optional<std::string> scalar(const YAML::Node& n, const std::string& key);
  void size(const YAML::Node& n, const std::string& key, uint64_t& out, uint64_t min, uint64_t max,
            bool zero_ok);
  void count(const YAML::Node& n, const std::string& key, uint64_t& out, uint64_t min,
             uint64_t max);
  void duration(const YAML::Node& n, const std::string& key, milliseconds& out, milliseconds min,
                bool zero_ok);
  void boolean(const YAML::Node& n, const std::string& key, bool& out);
  std::vector<Cidr> cidrs(const YAML::Node& n, const std::string& key);
  std::optional<SocketAddress> address(const YAML::Node& n, const std::string& key);
  template <typename T>
  std::optional<T> choice(const YAML::Node& n, const std::string& key,
                          std::initializer_list<std::pair<std::string_view, T>> options) {
    auto s = scalar(n, key);
    if (!s) return std::nullopt;
    std::string list;
    for (const auto& [name, value] : options) {
      if (*s == name) return value;
      list += (list.empty() ? "" : ", ") + std::string(name);
    }
    add(n, key, fmt::format("'{}' is not one of: {}", *s, list));
    return std::nullopt;
  }

 private:
  std::string source_;
  std::vector<ConfigError> errors_;
  std::map<std::string, YAML::Mark> key_marks_;    // full key path -> where the key stands
  std::map<std::string, YAML::Mark> value_marks_;  // full key path -> where its value stands
};

}  // namespace spliced
