#include "spliced/archive/naming.hpp"

#include "spliced/archive/segment_files.hpp"

#include <fmt/format.h>
#include <ctime>

namespace spliced {
namespace {

// strftime conversions allowed in names: the date/time fields an operator uses in paths.
constexpr std::string_view kStrftimeCodes = "aAbBCdDeFgGhHIjmMpsSTuUVwWyYzZ%";

}  // namespace

bool isContainedRelativePath(std::string_view rel) {
  if (rel.empty() || rel.front() == '/' || rel.back() == '/') return false;
  size_t start = 0;
  while (start <= rel.size()) {
    size_t end = rel.find('/', start);
    if (end == std::string_view::npos) end = rel.size();
    std::string_view part = rel.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") return false;
    if (part.find('\0') != std::string_view::npos) return false;
    start = end + 1;
  }
  return true;
}

Parsed<NameTemplate> NameTemplate::compile(std::string_view text) {
  NameTemplate t;
  t.text_ = std::string(text);
  if (text.empty()) return {Fail{std::string("name template is empty")}};
  if (text.front() == '/') return {Fail{std::string("name must be relative to the archive dir")}};
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '%') {
      if (i + 1 >= text.size()) return {Fail{std::string("name ends with a lone '%'")}};
      char code = text[i + 1];
      if (code == 'E' || code == 'O') {  // modifiers: %Ey, %Od ...
        if (i + 2 >= text.size()) return {Fail{std::string("name ends with an incomplete % code")}};
        code = text[i + 2];
        ++i;
      }
      if (kStrftimeCodes.find(code) == std::string_view::npos) {
        return {Fail{fmt::format("unsupported strftime code '%{}' in name", code)}};
      }
      ++i;
    } else if (c == '{') {
      auto close = text.find('}', i);
      if (close == std::string_view::npos) return {Fail{std::string("unclosed '{' in name")}};
      std::string_view ph = text.substr(i + 1, close - i - 1);
      if (ph == "peer" || ph == "peer_port") {
        t.uses_peer_ = true;
      } else if (ph == "conn") {
        t.uses_conn_ = true;
      } else if (ph == "seq") {
        t.uses_seq_ = true;
      } else if (ph != "route" && ph != "pid") {
        return {Fail{fmt::format(
            "unknown placeholder '{{{}}}' in name (known: {{route}} {{peer}} {{peer_port}} "
            "{{conn}} {{seq}} {{pid}})",
            ph)}};
      }
      i = close;
    } else if (c == '}') {
      return {Fail{std::string("unmatched '}' in name")}};
    } else if (c == '\0' || c == '\n') {
      return {Fail{std::string("name contains a control character")}};
    }
  }
  // Check the shape with sample values: nothing may climb out of the archive dir.
  NameVars sample{"route", "127.0.0.1", 1, 1, 0, 1};
  auto probe = t.expand(sample, std::chrono::system_clock::time_point{}, false);
  if (!probe.ok()) return {Fail{probe.error()}};
  return {t};
}

Parsed<std::string> NameTemplate::expand(const NameVars& vars,
                                         std::chrono::system_clock::time_point when,
                                         bool localtime) const {
  // Placeholders first (their values never contain '%'), then strftime over the whole string.
  std::string pattern;
  pattern.reserve(text_.size() + 32);
  for (size_t i = 0; i < text_.size(); ++i) {
    char c = text_[i];
    if (c == '%') {  // keep strftime codes (and their modifier) for the second pass
      if (i + 1 < text_.size() && text_[i + 1] == 's') {
        // Epoch seconds, written here: glibc computes %s with mktime(), which would read a UTC
        // broken-down time as local time.
        pattern += std::to_string(
            std::chrono::duration_cast<std::chrono::seconds>(when.time_since_epoch()).count());
        ++i;
        continue;
      }
      pattern += c;
      // A modifier and its conversion are one code (%Ey, %Od), as compile() reads them.
      if (i + 1 < text_.size() && (text_[i + 1] == 'E' || text_[i + 1] == 'O')) {
        pattern += text_[++i];
      }
      if (i + 1 < text_.size()) pattern += text_[++i];
      continue;
    }
    if (c != '{') {
      pattern += c;
      continue;
    }
    auto close = text_.find('}', i);
    std::string_view ph = std::string_view(text_).substr(i + 1, close - i - 1);
    if (ph == "route") {
      pattern += vars.route;
    } else if (ph == "peer") {
      pattern += vars.peer;
    } else if (ph == "peer_port") {
      pattern += std::to_string(vars.peer_port);
    } else if (ph == "conn") {
      pattern += std::to_string(vars.conn);
    } else if (ph == "seq") {
      pattern += fmt::format("{:06}", vars.seq);
    } else if (ph == "pid") {
      pattern += std::to_string(vars.pid);
    }
    i = close;
  }
  std::time_t tt = std::chrono::system_clock::to_time_t(when);
  std::tm tm{};
  if (localtime) {
    localtime_r(&tt, &tm);
  } else {
    gmtime_r(&tt, &tm);
  }
  // Day and month names make codes several times longer than themselves: grow until it fits.
  std::string out;
  size_t n = 0;
  for (size_t size = pattern.size() * 4 + 256; size <= 65536; size *= 4) {
    out.assign(size, '\0');
    n = std::strftime(out.data(), out.size(), pattern.c_str(), &tm);
    if (n > 0) break;
  }
  if (n == 0 && !pattern.empty()) {
    return {Fail{std::string("name expands to nothing or is too long")}};
  }
  out.resize(n);
  if (!isContainedRelativePath(out)) {
    return {Fail{
        fmt::format("name '{}' expands to '{}', which is not inside the archive dir", text_, out)}};
  }
  // Names the archive lifecycle gives a meaning to are not segment names.
  for (std::string_view suffix : {kOpenSuffix, kTmpSuffix, kZstdSuffix, kGzipSuffix}) {
    if (out.ends_with(suffix)) {
      return {Fail{fmt::format("name '{}' must not end in '{}' (spliced uses that suffix itself)",
                               text_, suffix)}};
    }
  }
  if (out.front() == '.' || out.find("/.") != std::string::npos) {
    return {Fail{
        fmt::format("name '{}' expands to '{}': no part of it may start with '.'", text_, out)}};
  }
  return {out};
}

}  // namespace spliced
