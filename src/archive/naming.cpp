#include "spliced/archive/naming.hpp"

#include "spliced/archive/segment_files.hpp"

#include <fmt/format.h>
#include <algorithm>
#include <ctime>

namespace spliced {
namespace {

// strftime conversions allowed in names: the date/time fields an operator uses in paths.
constexpr std::string_view kStrftimeCodes = "aAbBCdDeFgGhHIjmMpsSTuUVwWyYzZ%";

// The longest a file name (one path component) may be on Linux file systems.
constexpr size_t kNameMax = 255;
// What spliced may add to the last part of a name: a numeric suffix when the name is taken
// (".9999", see kMaxNumericSuffix) and the longest of ".open", ".zst.tmp", ".gz.tmp" and
// ".unsynced".
constexpr size_t kSuffixRoom = 5 + 9;

// The longest each strftime code writes (spliced runs in the C locale). %D and %T hold '/' and
// ':'; %D is counted whole in the part it starts in (an overestimate of at most 6 bytes). %Z is a
// zone abbreviation: 16 is beyond any in the tz database.
size_t strftimeMax(char code) {
  switch (code) {
    case 'a':
    case 'b':
    case 'h':
    case 'j':
      return 3;
    case 'A':
    case 'B':
      return 9;
    case 'D':
    case 'T':
      return 8;
    case 'F':
      return 10;
    case 'G':
    case 'Y':
      return 4;
    case 'z':
      return 5;
    case 's':
      return 20;
    case 'Z':
      return 16;
    case 'u':
    case 'w':
    case '%':
      return 1;
    default:
      return 2;  // C d e g H I m M p S U V W y
  }
}

// The longest each placeholder writes: a route name is 1-64 bytes, {peer} an IPv6 address with
// '_' (39), {conn} a 64-bit number, {seq} at least 6 digits (allow 20), {pid} an int (pid_max is
// at most 4194304 on Linux, but the type allows 10 digits).
size_t placeholderMax(std::string_view ph) {
  if (ph == "route") return 64;
  if (ph == "peer") return 39;
  if (ph == "peer_port") return 5;
  if (ph == "pid") return 10;
  return 20;  // conn, seq
}

// Refuses a template one of whose parts can expand to more than NAME_MAX (the last part less the
// room spliced needs for its suffixes). `text` has passed the syntax checks of compile().
Parsed<bool> checkNameMax(std::string_view text) {
  size_t start = 0;
  while (start <= text.size()) {
    size_t end = text.find('/', start);
    const bool last = end == std::string_view::npos;
    if (last) end = text.size();
    std::string_view part = text.substr(start, end - start);
    size_t len = 0;
    for (size_t i = 0; i < part.size(); ++i) {
      if (part[i] == '%' && i + 1 < part.size()) {
        char code = part[i + 1];
        if ((code == 'E' || code == 'O') && i + 2 < part.size()) code = part[++i + 1];
        len += strftimeMax(code);
        ++i;
      } else if (part[i] == '{') {
        size_t close = part.find('}', i);
        len += placeholderMax(part.substr(i + 1, close - i - 1));
        i = close;
      } else {
        ++len;
      }
    }
    if (!last && len > kNameMax) {
      return {
          Fail{fmt::format("part '{}' of the name can expand to {} bytes, more than NAME_MAX "
                           "({})",
                           part, len, kNameMax)}};
    }
    if (last && len + kSuffixRoom > kNameMax) {
      return {
          Fail{fmt::format("the last part of the name, '{}', can expand to {} bytes; with the "
                           "{} bytes spliced may add (\".9999\", \".unsynced\") that is "
                           "more than NAME_MAX ({})",
                           part, len, kSuffixRoom, kNameMax)}};
    }
    if (last) break;
    start = end + 1;
  }
  return {true};
}

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
    } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
      return {Fail{std::string("name contains a control character")}};
    }
  }
  // A '/' inside a placeholder would split parts wrongly: placeholders are known names by now.
  if (auto fits = checkNameMax(text); !fits.ok()) return {Fail{fits.error()}};
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
  // compile() keeps every part within NAME_MAX at the longest placeholder values; a longer value
  // (a route name beyond 64 bytes) is still refused here rather than failing in openat().
  for (size_t start = 0; start < out.size();) {
    size_t end = std::min(out.find('/', start), out.size());
    if (end - start > kNameMax) {
      return {
          Fail{fmt::format("name '{}' expands to a part of {} bytes ('{}'), more than NAME_MAX "
                           "({})",
                           text_, end - start, out.substr(start, end - start), kNameMax)}};
    }
    start = end + 1;
  }
  if (out.front() == '.' || out.find("/.") != std::string::npos) {
    return {Fail{
        fmt::format("name '{}' expands to '{}': no part of it may start with '.'", text_, out)}};
  }
  return {out};
}

}  // namespace spliced
