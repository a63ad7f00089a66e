#include "spliced/core/log.hpp"

#include <event2/event.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <fmt/format.h>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "spliced/core/log_limit.hpp"

namespace spliced {
namespace {

// Appends `s` as a JSON string. Bytes that are not valid UTF-8 become U+FFFD, so that every line
// parses whatever a peer, a path or an errno text holds.
void appendJsonString(std::string& out, std::string_view s) {
  out.push_back('"');
  size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      switch (c) {
        case '"':
          out += "\\\"";
          break;
        case '\\':
          out += "\\\\";
          break;
        case '\n':
          out += "\\n";
          break;
        case '\r':
          out += "\\r";
          break;
        case '\t':
          out += "\\t";
          break;
        default:
          if (c < 0x20 || c == 0x7f) {
            out += fmt::format("\\u{:04x}", static_cast<int>(c));
          } else {
            out.push_back(static_cast<char>(c));
          }
      }
      ++i;
      continue;
    }
    // A well-formed UTF-8 sequence (no overlongs, no surrogates, at most U+10FFFF) is copied.
    size_t len = 0;
    uint32_t min = 0;
    uint32_t cp = 0;
    if (c >= 0xc2 && c <= 0xdf) {
      len = 2, min = 0x80, cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      len = 3, min = 0x800, cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      len = 4, min = 0x10000, cp = c & 0x07;
    }
    bool ok = len > 0 && i + len <= s.size();
    for (size_t k = 1; ok && k < len; ++k) {
      auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) {
        ok = false;
      } else {
        cp = (cp << 6) | (cc & 0x3f);
      }
    }
    if (ok && (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))) ok = false;
    if (ok) {
      out.append(s.substr(i, len));
      i += len;
    } else {
      out += "\\ufffd";
      ++i;
    }
  }
  out.push_back('"');
}

bool isKeyStart(char c) { return (c >= 'a' && c <= 'z') || c == '_'; }
bool isKeyChar(char c) { return isKeyStart(c) || (c >= '0' && c <= '9'); }

// Values of these keys name things (a route called "7", a peer): always strings.
bool isNameKey(std::string_view key) {
  static constexpr std::string_view kNames[] = {"route",   "peer",   "client", "upstream",
                                                "error",   "end",    "detail", "archive",
                                                "forward", "reason", "event"};
  return std::find(std::begin(kNames), std::end(kNames), key) != std::end(kNames);
}

// Members every line has or may have: a field of the same name stays in the text.
bool isReservedKey(std::string_view key) {
  return key == "ts" || key == "level" || key == "event" || key == "msg";
}

bool isJsonInteger(std::string_view v) {
  size_t i = (!v.empty() && v[0] == '-') ? 1 : 0;
  if (i >= v.size() || v.size() - i > 19) return false;
  if (v[i] == '0' && v.size() - i > 1) return false;
  for (; i < v.size(); ++i) {
    if (v[i] < '0' || v[i] > '9') return false;
  }
  return true;
}

// "16ms", "1.234s", "5m3s", "1h2m3s" (what formatDuration writes) in milliseconds.
std::optional<int64_t> parseDurationMs(std::string_view v) {
  if (v.empty()) return std::nullopt;
  int64_t total = 0;
  size_t i = 0;
  while (i < v.size()) {
    int64_t whole = 0;
    size_t digits = 0;
    while (i < v.size() && v[i] >= '0' && v[i] <= '9') {
      if (++digits > 12) return std::nullopt;
      whole = whole * 10 + (v[i++] - '0');
    }
    if (digits == 0) return std::nullopt;
    int64_t frac_ms = 0;  // the fraction, in thousandths
    if (i < v.size() && v[i] == '.') {
      ++i;
      size_t fdigits = 0;
      int64_t scale = 100;
      while (i < v.size() && v[i] >= '0' && v[i] <= '9') {
        if (++fdigits > 3) return std::nullopt;
        frac_ms += (v[i++] - '0') * scale;
        scale /= 10;
      }
      if (fdigits == 0) return std::nullopt;
    }
    std::string_view rest = v.substr(i);
    int64_t unit_ms = 0;
    if (rest.substr(0, 2) == "ms") {
      if (frac_ms != 0) return std::nullopt;
      unit_ms = 1, i += 2;
    } else if (rest.substr(0, 1) == "s") {
      unit_ms = 1000, i += 1;
    } else if (rest.substr(0, 1) == "m") {
      unit_ms = 60000, i += 1;
    } else if (rest.substr(0, 1) == "h") {
      unit_ms = 3600000, i += 1;
    } else {
      return std::nullopt;
    }
    total += whole * unit_ms + frac_ms * unit_ms / 1000;
  }
  return total;
}

// One space-separated token of a line: a `key=value` field or a word of free text.
struct Token {
  size_t begin = 0;
  size_t end = 0;
  bool field = false;
  std::string_view key;
  std::string value;
  bool quoted = false;
};

std::vector<Token> tokenize(std::string_view s) {
  std::vector<Token> out;
  size_t i = 0;
  while (i < s.size()) {
    if (s[i] == ' ') {
      ++i;
      continue;
    }
    Token t;
    t.begin = i;
    size_t word_end = s.find(' ', i);
    if (word_end == std::string_view::npos) word_end = s.size();
    size_t k = i;
    if (isKeyStart(s[k])) {
      while (k < s.size() && isKeyChar(s[k])) ++k;
    }
    if (k > i && k < s.size() && s[k] == '=') {
      t.key = s.substr(i, k - i);
      size_t v = k + 1;
      if (v < s.size() && s[v] == '"') {
        // key="..." with \" and \\ inside; it must close before a space or the end.
        std::string value;
        size_t j = v + 1;
        bool closed = false;
        while (j < s.size()) {
          if (s[j] == '\\' && j + 1 < s.size()) {
            value.push_back(s[j + 1]);
            j += 2;
          } else if (s[j] == '"') {
            closed = j + 1 == s.size() || s[j + 1] == ' ';
            break;
          } else {
            value.push_back(s[j++]);
          }
        }
        if (closed) {
          t.field = true;
          t.quoted = true;
          t.value = std::move(value);
          t.end = j + 1;
          out.push_back(std::move(t));
          i = j + 1;
          continue;
        }
      } else {
        t.field = true;
        t.value = std::string(s.substr(v, word_end - v));
      }
    }
    if (!t.field) t.key = {};
    t.end = word_end;
    out.push_back(std::move(t));
    i = word_end;
  }
  return out;
}

void appendMember(std::string& out, std::string_view key, const Token& t) {
  out.push_back(',');
  appendJsonString(out, key);
  out.push_back(':');
  if (!t.quoted && !isNameKey(key) && isJsonInteger(t.value)) {
    out += t.value;
  } else {
    appendJsonString(out, t.value);
  }
}

// The level as log.level spells it ("warn", not spdlog's "warning").
std::string_view logLevelName(spdlog::level::level_enum level) {
  switch (level) {
    case spdlog::level::trace:
      return "trace";
    case spdlog::level::debug:
      return "debug";
    case spdlog::level::info:
      return "info";
    case spdlog::level::warn:
      return "warn";
    case spdlog::level::err:
      return "error";
    case spdlog::level::critical:
      return "critical";
    default:
      return "off";
  }
}

}  // namespace

std::string jsonLogLine(std::string_view ts, std::string_view level, std::string_view text) {
  std::vector<Token> tokens = tokenize(text);
  std::string out = "{\"ts\":";
  appendJsonString(out, ts);
  out += ",\"level\":";
  appendJsonString(out, level);
  size_t first = 0;
  // The leading word names the event when fields follow it: "close route=app ...".
  if (tokens.size() > 1 && !tokens[0].field && tokens[1].field) {
    std::string_view w = text.substr(tokens[0].begin, tokens[0].end - tokens[0].begin);
    if (isKeyStart(w[0]) && std::all_of(w.begin(), w.end(), isKeyChar)) {
      out += ",\"event\":";
      appendJsonString(out, w);
      first = 1;
    }
  }
  // Fields are the run of key=value tokens at the start and the run at the end; what lies between
  // is the message. A key seen before (or a reserved one) ends a run and stays text.
  std::vector<std::string_view> seen;
  auto take = [&](const Token& t) {
    if (!t.field || isReservedKey(t.key) ||
        std::find(seen.begin(), seen.end(), t.key) != seen.end()) {
      return false;
    }
    seen.push_back(t.key);
    return true;
  };
  size_t lead_end = first;
  while (lead_end < tokens.size() && take(tokens[lead_end])) ++lead_end;
  size_t trail_begin = tokens.size();
  while (trail_begin > lead_end && take(tokens[trail_begin - 1])) --trail_begin;
  // "duration=1.2s" also gives "duration_ms":1200.
  auto emit = [&](const Token& t) {
    appendMember(out, t.key, t);
    if (t.quoted || isNameKey(t.key)) return;
    if (std::optional<int64_t> ms = parseDurationMs(t.value)) {
      std::string k = std::string(t.key) + "_ms";
      if (std::find(seen.begin(), seen.end(), k) != seen.end()) return;
      out.push_back(',');
      appendJsonString(out, k);
      out += fmt::format(":{}", *ms);
    }
  };
  for (size_t i = first; i < lead_end; ++i) emit(tokens[i]);
  for (size_t i = trail_begin; i < tokens.size(); ++i) emit(tokens[i]);
  if (lead_end < trail_begin) {
    size_t b = tokens[lead_end].begin;
    size_t e = tokens[trail_begin - 1].end;
    out += ",\"msg\":";
    appendJsonString(out, text.substr(b, e - b));
  } else if (tokens.empty() && !text.empty()) {
    out += ",\"msg\":";
    appendJsonString(out, text);
  }
  out.push_back('}');
  return out;
}

namespace {

std::string utcTimestamp(spdlog::log_clock::time_point time) {
  auto t = std::chrono::system_clock::to_time_t(time);
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(time.time_since_epoch()) % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms.count()));
}

// One JSON object per line (jsonLogLine).
class JsonFormatter : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    std::string line = jsonLogLine(utcTimestamp(msg.time), logLevelName(msg.level),
                                   std::string_view(msg.payload.data(), msg.payload.size()));
    line.push_back('\n');
    dest.append(line.data(), line.data() + line.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }
};

// "2026-01-02T03:04:05.678Z warn TEXT" per line.
class TextFormatter : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    std::string line = fmt::format("{} {} ", utcTimestamp(msg.time), logLevelName(msg.level));
    line.append(msg.payload.data(), msg.payload.size());
    line.push_back('\n');
    dest.append(line.data(), line.data() + line.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<TextFormatter>();
  }
};

spdlog::level::level_enum toSpdlog(LogLevel l) {
  switch (l) {
    case LogLevel::Trace:
      return spdlog::level::trace;
    case LogLevel::Debug:
      return spdlog::level::debug;
    case LogLevel::Info:
      return spdlog::level::info;
    case LogLevel::Warn:
      return spdlog::level::warn;
    case LogLevel::Error:
      return spdlog::level::err;
  }
  return spdlog::level::info;
}

spdlog::level::level_enum fromLibevent(int severity) {
  switch (severity) {
    case EVENT_LOG_DEBUG:
      return spdlog::level::debug;
    case EVENT_LOG_MSG:
      return spdlog::level::info;
    case EVENT_LOG_WARN:
      return spdlog::level::warn;
    default:
      return spdlog::level::err;
  }
}

// libevent's own messages, through spdlog (same format and destination as ours), each run of one
// repeated message as one line with a count: a library that logs and retries in a loop cannot
// flood the log.
void onLibeventLog(int severity, const char* msg) {
  static std::mutex mutex;
  static std::string last;
  static LogLimiter limiter("libevent");
  std::lock_guard lock(mutex);
  if (last != msg) {
    if (std::optional<uint64_t> n = limiter.end(); n && *n > 0) {
      spdlog::info("libevent: the previous message was repeated {} more time(s)", *n);
    }
    last = msg;
  }
  if (limiter.hit()) spdlog::log(fromLibevent(severity), "libevent: {}", msg);
}

}  // namespace

std::string logQuote(std::string_view value) {
  bool plain = !value.empty() && std::none_of(value.begin(), value.end(), [](char c) {
    return c == ' ' || c == '"' || c == '\\' || static_cast<unsigned char>(c) < 0x20;
  });
  if (plain) return std::string(value);
  std::string out = "\"";
  for (char c : value) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

void setupLogging(const LogConfig& cfg) {
  auto logger = spdlog::stderr_logger_mt("spliced");
  if (cfg.format == LogFormat::Json) {
    logger->set_formatter(std::make_unique<JsonFormatter>());
  } else {
    logger->set_formatter(std::make_unique<TextFormatter>());
  }
  logger->set_level(toSpdlog(cfg.level));
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
  event_set_log_callback(&onLibeventLog);
}

void setLogLevel(LogLevel level) { spdlog::default_logger()->set_level(toSpdlog(level)); }

}  // namespace spliced
