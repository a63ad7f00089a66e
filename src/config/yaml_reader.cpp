#include "spliced/config/yaml_reader.hpp"

#include <set>

namespace spliced {

std::optional<YAML::Mark> YamlReader::valueMark(const std::string& key) const {
  auto it = value_marks_.find(key);
  if (it == value_marks_.end()) return std::nullopt;
  return it->second;
}

void YamlReader::add(const YAML::Node& at, const std::string& key, const std::string& message) {
  // yaml-cpp places an empty value at the next token (often the next line): point at its key.
  if (at.IsNull()) {
    auto it = key_marks_.find(key);
    if (it != key_marks_.end()) return addAt(it->second, key, message);
  }
  addAt(at.Mark(), key, message);
}

void YamlReader::addAt(const YAML::Mark& mark, const std::string& key, const std::string& message) {
  int line = mark.line >= 0 ? mark.line + 1 : 1;
  int col = mark.column >= 0 ? mark.column + 1 : 1;
  errors_.push_back({source_, line, col, key, message});
}

std::string YamlReader::join(const std::string& path, const std::string& key) {
  return path.empty() ? key : path + "." + key;
}

bool YamlReader::checkMap(const YAML::Node& map, const std::string& path,
                          std::initializer_list<std::string_view> known) {
  if (!map.IsMap()) {
    add(map, path, "expected a mapping (key: value)");
    return false;
  }
  std::set<std::string> seen;
  for (auto it = map.begin(); it != map.end(); ++it) {
    if (!it->first.IsScalar()) {
      add(it->first, path, "keys must be plain names");
      continue;
    }
    const std::string key = it->first.Scalar();
    key_marks_.emplace(join(path, key), it->first.Mark());
    value_marks_.emplace(join(path, key), it->second.Mark());
    bool ok = false;
    for (auto k : known) ok = ok || k == key;
    if (!ok) {
      std::string list;
      for (auto k : known) list += (list.empty() ? "" : ", ") + std::string(k);
      add(it->first, join(path, key), fmt::format("unknown key (known here: {})", list));
    }
    if (!seen.insert(key).second) add(it->first, join(path, key), "duplicate key");
  }
  return true;
}

std::optional<std::string> YamlReader::scalar(const YAML::Node& n, const std::string& key) {
  if (n.IsNull()) {
    add(n, key, "missing value");
    return std::nullopt;
  }
  if (!n.IsScalar()) {
    add(n, key, "expected a single value");
    return std::nullopt;
  }
  return n.Scalar();
}

void YamlReader::size(const YAML::Node& n, const std::string& key, uint64_t& out, uint64_t min,
                      uint64_t max, bool zero_ok) {
  auto s = scalar(n, key);
  if (!s) return;
  auto p = parseSize(*s);
  if (!p.ok()) return add(n, key, p.error());
  if (p.value() == 0 && zero_ok) {
    out = 0;
    return;
  }
  if (p.value() < min || p.value() > max) {
    return add(n, key,
               fmt::format("{} is out of range ({} to {}{})", *s, formatSize(min), formatSize(max),
                           zero_ok ? ", or 0 for none" : ""));
  }
  out = p.value();
}

void YamlReader::count(const YAML::Node& n, const std::string& key, uint64_t& out, uint64_t min,
                       uint64_t max) {
  auto s = scalar(n, key);
  if (!s) return;
  if (s->empty() || s->find_first_not_of("0123456789") != std::string::npos) {
    return add(n, key, fmt::format("'{}' is not a whole number", *s));
  }
  if (s->size() > 12) {
    return add(n, key, fmt::format("{} is out of range ({} to {})", *s, min, max));
  }
  uint64_t v = std::stoull(*s);
  if (v < min || v > max) {
    return add(n, key, fmt::format("{} is out of range ({} to {})", v, min, max));
  }
  out = v;
}

void YamlReader::duration(const YAML::Node& n, const std::string& key, milliseconds& out,
                          milliseconds min, bool zero_ok) {
  auto s = scalar(n, key);
  if (!s) return;
  auto p = parseDuration(*s);
  if (!p.ok()) return add(n, key, p.error());
  if (p.value().count() == 0 && zero_ok) {
    out = p.value();
    return;
  }
  if (p.value() < min) {
    return add(n, key,
               fmt::format("{} is too short (at least {}{})", *s, formatDuration(min),
                           zero_ok ? ", or 0 for none" : ""));
  }
  // Ten years is beyond any timeout or retention; far beyond, clock arithmetic overflows.
  constexpr milliseconds kMax{10LL * 366 * 86400 * 1000};
  if (p.value() > kMax) {
    return add(
        n, key,
        fmt::format("{} is too long (at most 3660d{})", *s, zero_ok ? "; 0 means none" : ""));
  }
  out = p.value();
}

void YamlReader::boolean(const YAML::Node& n, const std::string& key, bool& out) {
  auto v = choice<bool>(n, key, {{"true", true}, {"false", false}, {"yes", true}, {"no", false}});
  if (v) out = *v;
}

std::vector<Cidr> YamlReader::cidrs(const YAML::Node& n, const std::string& key) {
  std::vector<Cidr> out;
  if (!n.IsSequence()) {
    add(n, key, "expected a list of networks, e.g. [127.0.0.0/8, \"::1/128\"]");
    return out;
  }
  for (size_t i = 0; i < n.size(); ++i) {
    auto s = scalar(n[i], fmt::format("{}[{}]", key, i));
    if (!s) continue;
    auto c = Cidr::parse(*s);
    if (!c.ok()) {
      add(n[i], fmt::format("{}[{}]", key, i), c.error());
    } else {
      out.push_back(c.value());
    }
  }
  return out;
}

std::optional<SocketAddress> YamlReader::address(const YAML::Node& n, const std::string& key) {
  auto s = scalar(n, key);
  if (!s) return std::nullopt;
  auto a = parseSocketAddress(*s);
  if (!a.ok()) {
    add(n, key, a.error());
    return std::nullopt;
  }
  return a.value();
}

}  // namespace spliced
