#pragma once
// Logging set-up: spdlog to stderr (a service manager collects it), as text or one JSON object
// per line. Error lines carry error=<source> (see ErrorSource in error.hpp).

namespace spliced {

enum class LogLevel { Trace, Debug, Info, Warn, Error };
enum class LogFormat { Text, Json };

struct LogConfig {
  LogLevel level = LogLevel::Info;
  LogFormat format = LogFormat::Text;
};

void setupLogging(const LogConfig& cfg);

}  // namespace spliced
