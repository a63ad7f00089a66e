#pragma once
// Logging set-up: spdlog to stderr (a service manager collects it), as text or one JSON object
// per line. Error lines carry error=<source> (see ErrorSource in error.hpp).
//
// Call sites write text: an optional event word, then `key=value` fields, then free text, then
// optionally more fields ("close route=app conn=3 peer=1.2.3.4:5 bytes=10 duration=16ms end=eof",
// "error=storage route=app conn=3 archive write failed: No space left on device"). A value with a
// space or a quote is written quoted (logQuote). The JSON format turns that text into members.
#include <string>
#include <string_view>

namespace spliced {

enum class LogLevel { Trace, Debug, Info, Warn, Error };
enum class LogFormat { Text, Json };

struct LogConfig {
  LogLevel level = LogLevel::Info;
  LogFormat format = LogFormat::Text;
};

void setupLogging(const LogConfig& cfg);
// Changes the level of the logger setupLogging made (any thread may log meanwhile: a reload).
void setLogLevel(LogLevel level);

// `value` as a field value: unchanged when it is non-empty and has no space, quote, backslash or
// control character, else in double quotes with `"` and `\` escaped.
std::string logQuote(std::string_view value);

// One line of the JSON format (without the newline): {"ts":TS,"level":LEVEL, then "event" (a
// leading word followed by a field), then one member per field of the leading run of `key=value`
// tokens and of the trailing run, then "msg" (the text between the runs, when there is any)}.
// Keys are [a-z_][a-z0-9_]*; a key seen before, or ts/level/event/msg, ends a run and stays
// text. An unquoted integer is a JSON number, except for keys that name things (route, peer,
// client, upstream, error, end, detail, archive, forward, reason); a duration ("16ms", "1.234s",
// "5m3s") also gives KEY_ms as a number. Bytes that are not UTF-8 become U+FFFD.
std::string jsonLogLine(std::string_view ts, std::string_view level, std::string_view text);

}  // namespace spliced
