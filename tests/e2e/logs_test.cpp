// End-to-end: `log.format: json` - every line the daemon writes is one JSON object whose fields
// are members with their types (close: route, conn, peer, bytes, duration_ms, end), levels spelled
// as log.level spells them, and start-up failures tagged with their real source in both formats.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdint>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "harness.hpp"

using namespace e2e;
using namespace std::chrono_literals;

namespace {

// ---------------------------------------------------------------------------------------------
// A strict reader of the JSON the log format writes: one object of strings, numbers, true, false
// and null (RFC 8259 grammar: escapes, number syntax, UTF-8, no trailing bytes). Nested values
// are rejected: the format has none.

struct JsonValue {
  enum Type { String, Number, Bool, Null } type = Null;
  std::string str;  // String: the decoded text; Number: the literal
};
using JsonObject = std::map<std::string, JsonValue>;

class JsonReader {
 public:
  explicit JsonReader(std::string_view s) : s_(s) {}

  // The object, or nullopt with error() saying where it broke.
  std::optional<JsonObject> object() {
    JsonObject out;
    ws();
    if (!eat('{')) return fail("expected {");
    ws();
    if (eat('}')) return end(out);
    for (;;) {
      ws();
      std::string key;
      if (!string(key)) return std::nullopt;
      if (out.count(key) != 0) return fail("duplicate member " + key);
      ws();
      if (!eat(':')) return fail("expected :");
      ws();
      JsonValue v;
      if (!value(v)) return std::nullopt;
      out.emplace(std::move(key), std::move(v));
      ws();
      if (eat(',')) continue;
      if (eat('}')) return end(out);
      return fail("expected , or }");
    }
  }
  const std::string& error() const { return error_; }

 private:
  std::optional<JsonObject> end(JsonObject& out) {
    ws();
    if (i_ != s_.size()) return fail("bytes after the object");
    return std::move(out);
  }
  std::nullopt_t fail(const std::string& why) {
    if (error_.empty()) error_ = why + " at offset " + std::to_string(i_);
    return std::nullopt;
  }
  bool bad(const std::string& why) {
    fail(why);
    return false;
  }
  void ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r'))
      ++i_;
  }
  bool eat(char c) {
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  bool literal(std::string_view w) {
    if (s_.substr(i_, w.size()) != w) return false;
    i_ += w.size();
    return true;
  }
  bool value(JsonValue& v) {
    if (i_ >= s_.size()) return bad("value expected");
    char c = s_[i_];
    if (c == '"') {
      v.type = JsonValue::String;
      return string(v.str);
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
      v.type = JsonValue::Number;
      return number(v.str);
    }
    if (literal("true") || literal("false")) {
      v.type = JsonValue::Bool;
      return true;
    }
    if (literal("null")) return true;
    fail("not a value (or a nested one)");
    return false;
  }
  bool digits() {
    size_t b = i_;
    while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
    return i_ > b;
  }
  bool number(std::string& out) {
    size_t b = i_;
    eat('-');
    if (eat('0')) {
      // no leading zeros
    } else if (!digits()) {
      fail("bad number");
      return false;
    }
    if (eat('.') && !digits()) {
      fail("bad fraction");
      return false;
    }
    if ((eat('e') || eat('E')) && ((eat('+') || eat('-')), !digits())) {
      fail("bad exponent");
      return false;
    }
    out = std::string(s_.substr(b, i_ - b));
    return true;
  }
  static void utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      out.push_back(static_cast<char>(0xc0 | (cp >> 6)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    } else if (cp < 0x10000) {
      out.push_back(static_cast<char>(0xe0 | (cp >> 12)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    } else {
      out.push_back(static_cast<char>(0xf0 | (cp >> 18)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3f)));
      out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3f)));
      out.push_back(static_cast<char>(0x80 | (cp & 0x3f)));
    }
  }
  bool hex4(uint32_t& v) {
    if (i_ + 4 > s_.size()) return false;
    v = 0;
    for (int k = 0; k < 4; ++k) {
      char c = s_[i_++];
      v <<= 4;
      if (c >= '0' && c <= '9') {
        v |= static_cast<uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        v |= static_cast<uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        v |= static_cast<uint32_t>(c - 'A' + 10);
      } else {
        return false;
      }
    }
    return true;
  }
  bool string(std::string& out) {
    if (!eat('"')) return bad("expected a string");
    for (;;) {
      if (i_ >= s_.size()) return bad("unterminated string");
      auto c = static_cast<unsigned char>(s_[i_]);
      if (c == '"') {
        ++i_;
        return true;
      }
      if (c < 0x20) return bad("raw control byte in a string");
      if (c == '\\') {
        ++i_;
        if (i_ >= s_.size()) return bad("bad escape");
        char e = s_[i_++];
        switch (e) {
          case '"':
          case '\\':
          case '/':
            out.push_back(e);
            break;
          case 'b':
            out.push_back('\b');
            break;
          case 'f':
            out.push_back('\f');
            break;
          case 'n':
            out.push_back('\n');
            break;
          case 'r':
            out.push_back('\r');
            break;
          case 't':
            out.push_back('\t');
            break;
          case 'u': {
            uint32_t cp = 0;
            if (!hex4(cp)) return bad("bad \\u escape");
            if (cp >= 0xd800 && cp <= 0xdbff) {
              uint32_t lo = 0;
              if (!literal("\\u") || !hex4(lo) || lo < 0xdc00 || lo > 0xdfff) {
                return bad("lone surrogate");
              }
              cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp <= 0xdfff) {
              return bad("lone surrogate");
            }
            utf8(out, cp);
            break;
          }
          default:
            return bad("bad escape");
        }
        continue;
      }
      if (c < 0x80) {
        out.push_back(static_cast<char>(c));
        ++i_;
        continue;
      }
      // Raw UTF-8: well formed, shortest form, no surrogates.
      size_t len = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 ? 2 : 0;
      if (len == 0 || c > 0xf4 || i_ + len > s_.size()) {
        return bad("invalid UTF-8");
      }
      uint32_t cp = c & (len == 2 ? 0x1f : len == 3 ? 0x0f : 0x07);
      for (size_t k = 1; k < len; ++k) {
        auto cc = static_cast<unsigned char>(s_[i_ + k]);
        if ((cc & 0xc0) != 0x80) return bad("invalid UTF-8");
        cp = (cp << 6) | (cc & 0x3f);
      }
      const uint32_t min = len == 2 ? 0x80 : len == 3 ? 0x800 : 0x10000;
      if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
        return bad("invalid UTF-8");
      }
      out.append(s_.substr(i_, len));
      i_ += len;
    }
  }

  std::string_view s_;
  size_t i_ = 0;
  std::string error_;
};

// Every line of `log` parsed; a line that does not parse FAILs the test, naming it.
std::vector<JsonObject> parseJsonLines(const std::string& log) {
  std::vector<JsonObject> out;
  std::istringstream in(log);
  std::string line;
  size_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    JsonReader r(line);
    std::optional<JsonObject> o = r.object();
    INFO("line " << n << ": " << line);
    INFO(r.error());
    REQUIRE(o.has_value());
    out.push_back(std::move(*o));
  }
  // The last line ends with a newline too: nothing half-written.
  if (!log.empty()) CHECK(log.back() == '\n');
  return out;
}

bool isString(const JsonObject& o, const std::string& key) {
  auto it = o.find(key);
  return it != o.end() && it->second.type == JsonValue::String;
}
bool isNumber(const JsonObject& o, const std::string& key) {
  auto it = o.find(key);
  return it != o.end() && it->second.type == JsonValue::Number;
}
std::string str(const JsonObject& o, const std::string& key) {
  auto it = o.find(key);
  return it == o.end() ? std::string("<absent>") : it->second.str;
}
std::string show(const JsonObject& o) {
  std::string s;
  for (const auto& [k, v] : o) {
    s += k + "=" + (v.type == JsonValue::String ? "\"" + v.str + "\"" : v.str) + " ";
  }
  return s;
}

// Every line has a ts string and one of the levels log.level spells.
void checkCommonMembers(const std::vector<JsonObject>& lines) {
  for (const auto& o : lines) {
    INFO(show(o));
    CHECK(isString(o, "ts"));
    CHECK(str(o, "ts").size() == 24);  // 2026-01-02T03:04:05.678Z
    const std::string level = str(o, "level");
    CHECK((level == "trace" || level == "debug" || level == "info" || level == "warn" ||
           level == "error" || level == "critical"));
  }
}

std::string jsonConfig(const TempDir& dir, const std::string& listen,
                       const std::string& format = "json") {
  return withDir(R"(log: { format: )" + format + R"(, level: debug }
drain_timeout: 2s
routes:
  - name: app
    listen: )" + listen +
                     R"(
    max_connections: 2
    archive:
      dir: @DIR@/archive
      layout: per_connection
      name: "{route}-{conn}-{peer_port}-{seq}.log"
)",
                 dir);
}

// The port of the route's "listening on" line, read from the JSON log.
uint16_t waitJsonPort(const Daemon& d) {
  std::string addr;
  bool found = waitUntil(
      [&] {
        const std::string log = d.log();
        std::istringstream in(log);
        std::string line;
        while (std::getline(in, line)) {
          std::optional<JsonObject> o = JsonReader(line).object();
          if (!o || str(*o, "route") != "app") continue;
          const std::string msg = str(*o, "msg");
          if (msg.rfind("listening on ", 0) == 0) {
            addr = msg.substr(13);
            return true;
          }
        }
        return false;
      },
      10s);
  INFO(d.log());
  REQUIRE(found);
  return static_cast<uint16_t>(std::stoi(addr.substr(addr.rfind(':') + 1)));
}

// A listening socket on a free loopback port, held for the life of the object.
class TakenPort {
 public:
  TakenPort() : fd_(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    REQUIRE(fd_ >= 0);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(fd_, reinterpret_cast<const sockaddr*>(&sa), sizeof sa) == 0);
    REQUIRE(::listen(fd_, 16) == 0);
    socklen_t len = sizeof sa;
    REQUIRE(::getsockname(fd_, reinterpret_cast<sockaddr*>(&sa), &len) == 0);
    port_ = ntohs(sa.sin_port);
  }
  ~TakenPort() { ::close(fd_); }
  TakenPort(const TakenPort&) = delete;
  TakenPort& operator=(const TakenPort&) = delete;
  uint16_t port() const { return port_; }

 private:
  int fd_;
  uint16_t port_ = 0;
};

}  // namespace

TEST_CASE("logs: json - every line is an object, each field a typed member", "[e2e][logs]") {
  TempDir dir;
  Daemon daemon(dir, jsonConfig(dir, "127.0.0.1:0"));
  const uint16_t port = waitJsonPort(daemon);

  // A clean stream (end=eof) and a reset one (end=client_error, warn, error=downstream).
  const std::string payload = randomPayload(13, 100 * 1000);
  {
    Conn c = connectTcp(port);
    REQUIRE(c.valid());
    REQUIRE(c.sendAll(payload) == 0);
    c.shutdownWrite();
    REQUIRE(c.waitClosed(10s) == 0);
  }
  {
    Conn c = connectTcp(port);
    REQUIRE(c.valid());
    REQUIRE(c.sendAll("abc\n") == 0);
    REQUIRE(waitUntil([&] { return openSegments(dir / "archive").size() == 1; }, 5s));
    linger lg{1, 0};
    REQUIRE(::setsockopt(c.fd(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg) == 0);
    c.close();
  }
  // Three at once with max_connections 2: one is refused (a warn line).
  {
    REQUIRE(waitUntil([&] { return daemon.log().find("client_error") != std::string::npos; }, 5s));
    Conn a = connectTcp(port);
    Conn b = connectTcp(port);
    REQUIRE(a.valid());
    REQUIRE(b.valid());
    REQUIRE(a.sendAll("a\n") == 0);
    REQUIRE(b.sendAll("b\n") == 0);
    REQUIRE(waitUntil([&] { return openSegments(dir / "archive").size() == 2; }, 5s));
    Conn third = connectTcp(port);
    REQUIRE(third.valid());
    REQUIRE(third.waitClosed(5s) != ETIMEDOUT);
    REQUIRE(daemon.waitLog("max_connections", 5s));
  }
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);

  const std::string log = daemon.log();
  INFO(log);
  const std::vector<JsonObject> lines = parseJsonLines(log);
  REQUIRE(lines.size() >= 6);
  checkCommonMembers(lines);

  std::vector<JsonObject> closes;
  for (const auto& o : lines) {
    if (str(o, "event") == "close") closes.push_back(o);
  }
  REQUIRE(closes.size() == 4);
  bool saw_eof = false;
  bool saw_reset = false;
  for (const auto& o : closes) {
    INFO(show(o));
    CHECK(str(o, "route") == "app");
    CHECK(isNumber(o, "conn"));
    CHECK(isString(o, "peer"));
    CHECK(str(o, "peer").rfind("127.0.0.1:", 0) == 0);
    CHECK(isNumber(o, "bytes"));
    CHECK(isNumber(o, "segments"));
    CHECK(isString(o, "duration"));
    CHECK(isNumber(o, "duration_ms"));
    CHECK(isString(o, "end"));
    CHECK(o.count("msg") == 0);  // nothing left over as free text
    if (str(o, "bytes") == std::to_string(payload.size())) {
      saw_eof = true;
      CHECK(str(o, "end") == "eof");
      CHECK(str(o, "level") == "info");
    }
    if (str(o, "end") == "client_error") {
      saw_reset = true;
      CHECK(str(o, "level") == "warn");
      CHECK(str(o, "error") == "downstream");
      CHECK(str(o, "detail") == "Connection reset by peer");
      CHECK(str(o, "bytes") == "4");
    }
  }
  CHECK(saw_eof);
  CHECK(saw_reset);

  // The refusal (a debug line: one per refused client) with route and the reason as text.
  bool saw_refusal = false;
  for (const auto& o : lines) {
    if (str(o, "msg").find("max_connections (2) reached") == std::string::npos) continue;
    saw_refusal = true;
    INFO(show(o));
    CHECK(str(o, "level") == "debug");
    CHECK(str(o, "route") == "app");
  }
  CHECK(saw_refusal);

  // Start-up and exit lines: the listening line's archive member, the totals as numbers.
  bool saw_listening = false;
  bool saw_totals = false;
  for (const auto& o : lines) {
    if (str(o, "msg").rfind("listening on", 0) == 0) {
      saw_listening = true;
      CHECK(str(o, "archive") == (dir / "archive").string());
    }
    if (str(o, "msg") == "totals:") {
      saw_totals = true;
      INFO(show(o));
      CHECK(isNumber(o, "connections"));
      CHECK(str(o, "connections") == "4");
      CHECK(isNumber(o, "rejected_limit"));
      CHECK(str(o, "rejected_limit") == "1");
    }
  }
  CHECK(saw_listening);
  CHECK(saw_totals);
}

TEST_CASE("logs: a port in use is error=environment, as JSON and as text", "[e2e][logs]") {
  TempDir dir;
  TakenPort taken;
  const std::string addr = "127.0.0.1:" + std::to_string(taken.port());
  for (const std::string format : {"json", "text"}) {
    INFO("format " << format);
    const fs::path cfg = dir / ("taken-" + format + ".yaml");
    writeFile(cfg, jsonConfig(dir, addr, format));
    CommandResult r = runSpliced(dir, {"-c", cfg.string()}, 10s);
    INFO("stderr:\n" << r.err);
    CHECK(r.exit_code == 1);
    if (format == "text") {
      CHECK(r.err.find(" error error=environment cannot start: route app: cannot bind " + addr +
                       ": Address already in use") != std::string::npos);
      continue;
    }
    const std::vector<JsonObject> lines = parseJsonLines(r.err);
    checkCommonMembers(lines);
    REQUIRE_FALSE(lines.empty());
    const JsonObject& last = lines.back();
    INFO(show(last));
    CHECK(str(last, "level") == "error");
    CHECK(str(last, "error") == "environment");
    CHECK(str(last, "msg") ==
          "cannot start: route app: cannot bind " + addr + ": Address already in use");
  }
}

TEST_CASE(
    "logs: a listening socket in a missing directory is refused at start, naming it, as JSON and "
    "as text",
    "[e2e][logs]") {
  // The config check finds it before anything starts: error=config (what the operator wrote),
  // never error=internal, and nothing is created.
  TempDir dir;
  const std::string missing = (dir / "missing").string();
  for (const std::string format : {"json", "text"}) {
    INFO("format " << format);
    const fs::path cfg = dir / ("missing-" + format + ".yaml");
    writeFile(cfg, jsonConfig(dir, "unix:" + missing + "/app.sock", format));
    CommandResult r = runSpliced(dir, {"-c", cfg.string()}, 10s);
    INFO("stderr:\n" << r.err);
    CHECK(r.exit_code == 1);
    const std::string why =
        cfg.string() + ":5:13: routes[0].listen: directory " + missing + " does not exist";
    const std::string last_msg =
        "cannot start: " + cfg.string() + ": configuration is invalid (1 error(s))";
    if (format == "text") {
      CHECK(r.err.find(" error error=config " + why + "\n") != std::string::npos);
      CHECK(r.err.find(" error error=config " + last_msg + "\n") != std::string::npos);
      CHECK(r.err.find("error=internal") == std::string::npos);
      continue;
    }
    const std::vector<JsonObject> lines = parseJsonLines(r.err);
    checkCommonMembers(lines);
    REQUIRE(lines.size() == 2);
    for (const JsonObject& o : lines) {
      INFO(show(o));
      CHECK(str(o, "level") == "error");
      CHECK(str(o, "error") == "config");
    }
    CHECK(str(lines[0], "msg") == why);
    CHECK(str(lines[1], "msg") == last_msg);
  }
  CHECK_FALSE(fs::exists(missing));
}

TEST_CASE("logs: a refused config is error=config, as JSON and as text", "[e2e][logs]") {
  TempDir dir;
  // The archive dir's parent is a regular file: it can never be created; or the dir itself is a
  // file. The config check finds both, before anything starts.
  writeFile(dir / "file", "x");
  for (const std::string archive : {"@DIR@/file/archive", "@DIR@/file"}) {
    for (const std::string format : {"json", "text"}) {
      INFO("archive " << archive << ", format " << format);
      const fs::path cfg = dir / "bad-dir.yaml";
      std::string text = jsonConfig(dir, "127.0.0.1:0", format);
      const std::string from = dir.path().string() + "/archive";
      text.replace(text.find(from), from.size(), withDir(archive, dir));
      writeFile(cfg, text);
      CommandResult r = runSpliced(dir, {"-c", cfg.string()}, 10s);
      INFO("stderr:\n" << r.err);
      CHECK(r.exit_code == 1);
      CHECK(r.err.find("internal") == std::string::npos);
      CHECK(r.err.find("listening on") == std::string::npos);
      const std::string where = cfg.string() + ":8:12: routes[0].archive.dir: ";
      const std::string last_msg =
          "cannot start: " + cfg.string() + ": configuration is invalid (1 error(s))";
      if (format == "text") {
        CHECK(r.err.find(" error error=config " + where) != std::string::npos);
        CHECK(r.err.find(" error error=config " + last_msg + "\n") != std::string::npos);
        continue;
      }
      const std::vector<JsonObject> lines = parseJsonLines(r.err);
      checkCommonMembers(lines);
      REQUIRE(lines.size() == 2);
      for (const auto& o : lines) {
        INFO(show(o));
        CHECK(str(o, "level") == "error");
        CHECK(str(o, "error") == "config");
      }
      CHECK(str(lines[0], "msg").rfind(where, 0) == 0);
      CHECK(str(lines[1], "msg") == last_msg);
    }
  }
}
