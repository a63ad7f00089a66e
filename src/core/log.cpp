#include "spliced/core/log.hpp"

#include <event2/event.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <fmt/format.h>
#include <chrono>
#include <ctime>
#include <mutex>
#include <optional>
#include <string>

#include "spliced/core/log_limit.hpp"

namespace spliced {
namespace {

void appendJsonString(spdlog::memory_buf_t& out, std::string_view s) {
  out.push_back('"');
  for (char c : s) {
    switch (c) {
      case '"':
        out.append(std::string_view("\\\""));
        break;
      case '\\':
        out.append(std::string_view("\\\\"));
        break;
      case '\n':
        out.append(std::string_view("\\n"));
        break;
      case '\r':
        out.append(std::string_view("\\r"));
        break;
      case '\t':
        out.append(std::string_view("\\t"));
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          fmt::format_to(std::back_inserter(out), "\\u{:04x}", static_cast<int>(c));
        } else {
          out.push_back(c);
        }
    }
  }
  out.push_back('"');
}

// {"ts":"2026-01-02T03:04:05.678Z","level":"info","msg":"..."} per line.
class JsonFormatter : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    auto t = std::chrono::system_clock::to_time_t(msg.time);
    auto ms =
        std::chrono::duration_cast<std::chrono::milliseconds>(msg.time.time_since_epoch()) % 1000;
    std::tm tm{};
    gmtime_r(&t, &tm);
    fmt::format_to(
        std::back_inserter(dest),
        "{{\"ts\":\"{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z\",\"level\":\"{}\",\"msg\":",
        tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
        static_cast<int>(ms.count()), spdlog::level::to_string_view(msg.level));
    appendJsonString(dest, std::string_view(msg.payload.data(), msg.payload.size()));
    dest.append(std::string_view("}\n"));
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
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

void setupLogging(const LogConfig& cfg) {
  auto logger = spdlog::stderr_logger_mt("spliced");
  if (cfg.format == LogFormat::Json) {
    logger->set_formatter(std::make_unique<JsonFormatter>());
  } else {
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %l %v", spdlog::pattern_time_type::utc);
  }
  logger->set_level(toSpdlog(cfg.level));
  logger->flush_on(spdlog::level::trace);
  spdlog::set_default_logger(logger);
  event_set_log_callback(&onLibeventLog);
}

}  // namespace spliced
