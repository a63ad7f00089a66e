// End-to-end: the admin endpoint of the real binary. /metrics (exact counters, and a strict
// Prometheus 0.0.4 parser run over a real scrape), /healthz (ok, removed archive dir, failing
// writes, draining), /archive (listing, byte-exact download with Range and HEAD, and every way
// out of the archive dir refused), methods, admin.allow and a unix-socket admin listener.
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <map>
#include <optional>
#include <regex>
#include <set>

#include "harness.hpp"

using namespace e2e;
using namespace std::chrono_literals;

namespace {

// ---------------------------------------------------------------------------------------------
// Configs

// A collect route NAME on 127.0.0.1:0, archiving into @DIR@/archive-NAME per connection.
std::string route(const std::string& name, const std::string& extra_route_keys = "",
                  const std::string& extra_archive_keys = "",
                  const std::string& segment_name = kPerConnName) {
  return "  - name: " + name + "\n    listen: 127.0.0.1:0\n" + extra_route_keys +
         "    archive:\n      dir: @DIR@/archive-" + name +
         "\n      layout: per_connection\n      name: \"" + segment_name + "\"\n" +
         extra_archive_keys;
}

std::string config(const TempDir& dir, const std::string& routes,
                   const std::string& admin = "{ listen: 127.0.0.1:0 }",
                   const std::string& drain = "5s") {
  return withDir("log: { level: info }\ndrain_timeout: " + drain + "\nadmin: " + admin +
                     "\nroutes:\n" + routes,
                 dir);
}

// ---------------------------------------------------------------------------------------------
// Prometheus text format 0.0.4, strictly: only "# HELP name text", "# TYPE name counter|gauge"
// and "name{label="value",...} value" lines, no empty lines, no other comments, no timestamps.

struct Sample {
  std::map<std::string, std::string> labels;
  double value = 0;
};

struct Family {
  std::string name;
  std::string help;
  std::string type;
  bool has_help = false;
  bool has_type = false;
  std::vector<Sample> samples;
  std::set<std::string> label_sets;  // canonical form of each sample's labels
};

struct Exposition {
  std::vector<Family> families;
  std::string error;  // "" when the text is well formed

  const Family* family(const std::string& name) const {
    for (const auto& f : families) {
      if (f.name == name) return &f;
    }
    return nullptr;
  }
  // The value of the sample of family `name` with exactly `labels`.
  std::optional<double> value(const std::string& name,
                              const std::map<std::string, std::string>& labels = {}) const {
    const Family* f = family(name);
    if (f == nullptr) return std::nullopt;
    for (const auto& s : f->samples) {
      if (s.labels == labels) return s.value;
    }
    return std::nullopt;
  }
};

bool isNameChar(char c, bool first, bool colon) {
  const auto u = static_cast<unsigned char>(c);
  return std::isalpha(u) || c == '_' || (colon && c == ':') || (!first && std::isdigit(u));
}

// A metric name (colon allowed) or label name at s[pos...]; "" when there is none.
std::string readName(std::string_view s, size_t& pos, bool colon) {
  const size_t start = pos;
  while (pos < s.size() && isNameChar(s[pos], pos == start, colon)) ++pos;
  return std::string(s.substr(start, pos - start));
}

bool isSampleValue(const std::string& v) {
  if (v == "NaN" || v == "+Inf" || v == "-Inf") return true;
  static const std::regex kFloat(R"([+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?)");
  return std::regex_match(v, kFloat);
}

Exposition parseExposition(std::string_view text) {
  Exposition x;
  if (text.empty() || text.back() != '\n') {
    x.error = "the text does not end with a newline";
    return x;
  }
  std::map<std::string, size_t> seen;  // family name -> index in x.families
  Family* cur = nullptr;
  size_t lineno = 0;
  size_t start = 0;
  while (start < text.size()) {
    const size_t end = text.find('\n', start);
    const std::string_view line = text.substr(start, end - start);
    start = end + 1;
    ++lineno;
    auto fail = [&](const std::string& why) {
      x.error = "line " + std::to_string(lineno) + ": " + why + ": '" + std::string(line) + "'";
      return x;
    };
    if (line.empty()) return fail("empty line");
    if (line[0] == '#') {
      const bool help = line.starts_with("# HELP ");
      if (!help && !line.starts_with("# TYPE ")) return fail("a comment other than # HELP/# TYPE");
      size_t pos = 7;
      const std::string name = readName(line, pos, true);
      if (name.empty()) return fail("bad metric name");
      if (pos >= line.size() || line[pos] != ' ') return fail("no single space after the name");
      const std::string arg(line.substr(pos + 1));
      if (cur == nullptr || cur->name != name) {
        if (seen.count(name)) return fail("family " + name + " declared again after another one");
        seen[name] = x.families.size();
        x.families.push_back(Family{});
        cur = &x.families.back();
        cur->name = name;
      }
      if (!cur->samples.empty()) return fail("# HELP/# TYPE after the family's samples");
      if (help) {
        if (cur->has_help) return fail("second # HELP for " + name);
        if (arg.empty()) return fail("empty help text");
        for (size_t i = 0; i < arg.size(); ++i) {
          if (arg[i] != '\\') continue;
          if (i + 1 >= arg.size() || (arg[i + 1] != '\\' && arg[i + 1] != 'n')) {
            return fail("bad escape in help text");
          }
          ++i;
        }
        cur->has_help = true;
        cur->help = arg;
      } else {
        if (cur->has_type) return fail("second # TYPE for " + name);
        if (arg != "counter" && arg != "gauge") return fail("type is not counter or gauge");
        cur->has_type = true;
        cur->type = arg;
      }
      continue;
    }
    size_t pos = 0;
    const std::string name = readName(line, pos, true);
    if (name.empty()) return fail("bad metric name");
    if (cur == nullptr || cur->name != name) {
      return fail("sample outside its family (current family: " +
                  (cur ? cur->name : std::string("none")) + ")");
    }
    if (!cur->has_help || !cur->has_type) return fail("sample before # HELP and # TYPE");
    Sample s;
    if (pos < line.size() && line[pos] == '{') {
      ++pos;
      while (true) {
        const std::string label = readName(line, pos, false);
        if (label.empty()) return fail("bad label name");
        if (label.starts_with("__")) return fail("reserved label name");
        if (pos + 1 >= line.size() || line[pos] != '=' || line[pos + 1] != '"') {
          return fail("label without =\"value\"");
        }
        pos += 2;
        std::string value;
        bool closed = false;
        while (pos < line.size()) {
          const char c = line[pos++];
          if (c == '"') {
            closed = true;
            break;
          }
          if (c == '\\') {
            if (pos >= line.size()) return fail("dangling backslash");
            const char e = line[pos++];
            if (e == '\\' || e == '"') {
              value += e;
            } else if (e == 'n') {
              value += '\n';
            } else {
              return fail("bad escape in label value");
            }
          } else {
            value += c;
          }
        }
        if (!closed) return fail("unterminated label value");
        if (!s.labels.emplace(label, value).second) return fail("label " + label + " repeated");
        if (pos < line.size() && line[pos] == ',') {
          ++pos;
          continue;
        }
        if (pos < line.size() && line[pos] == '}') {
          ++pos;
          break;
        }
        return fail("expected ',' or '}' after a label");
      }
    }
    if (pos >= line.size() || line[pos] != ' ') return fail("no single space before the value");
    const std::string value(line.substr(pos + 1));
    if (!isSampleValue(value)) return fail("bad value (or a timestamp)");
    s.value = std::strtod(value.c_str(), nullptr);
    if (cur->type == "counter" && !(s.value >= 0)) return fail("counter not >= 0");
    std::string canonical;
    for (const auto& [k, v] : s.labels) canonical += k + '\x01' + v + '\x02';
    if (!cur->label_sets.insert(canonical).second) return fail("duplicate label set");
    cur->samples.push_back(std::move(s));
  }
  return x;
}

// GET /metrics and parse it; nullopt when either fails (for polling).
std::optional<Exposition> tryScrape(const std::string& admin) {
  HttpResponse r = httpGet(admin, "/metrics");
  if (r.status != 200) return std::nullopt;
  Exposition x = parseExposition(r.body);
  if (!x.error.empty()) return std::nullopt;
  return x;
}

// GET /metrics and parse it; FAILs (showing the text) when either fails.
Exposition scrape(const std::string& admin) {
  HttpResponse r = httpGet(admin, "/metrics");
  INFO("GET /metrics: " << r.error);
  REQUIRE(r.status == 200);
  Exposition x = parseExposition(r.body);
  INFO("exposition: " << x.error << "\n" << r.body);
  REQUIRE(x.error.empty());
  return x;
}

// The value of one sample; FAILs when there is no such sample.
double metric(const Exposition& x, const std::string& name,
              const std::map<std::string, std::string>& labels = {}) {
  auto v = x.value(name, labels);
  INFO("sample " << name << " with " << labels.size() << " label(s)");
  REQUIRE(v.has_value());
  return *v;
}

// Polls /metrics until spliced_connections_active{route} is `n`.
bool waitActive(const std::string& admin, const std::string& route_name, double n) {
  return waitUntil(
      [&] {
        auto x = tryScrape(admin);
        return x && x->value("spliced_connections_active", {{"route", route_name}}) == n;
      },
      10s);
}

// ---------------------------------------------------------------------------------------------
// /archive/<route>/ listing: [{"name":S,"size":N,"mtime":S}, ...], parsed strictly.

struct ListEntry {
  std::string name;
  uint64_t size = 0;
  std::string mtime;
};

class ListingParser {
 public:
  explicit ListingParser(std::string_view s) : s_(s) {}

  std::optional<std::vector<ListEntry>> parse(std::string& error) {
    std::vector<ListEntry> out;
    if (!array(out)) {
      error = why_ + " at offset " + std::to_string(pos_);
      return std::nullopt;
    }
    return out;
  }

 private:
  bool bad(const std::string& why) {
    why_ = why;
    return false;
  }
  void ws() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  bool eat(char c) {
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool array(std::vector<ListEntry>& out) {
    ws();
    if (!eat('[')) return bad("expected '['");
    ws();
    if (!eat(']')) {
      while (true) {
        ListEntry e;
        if (!entry(e)) return false;
        out.push_back(std::move(e));
        ws();
        if (eat(',')) {
          ws();
          continue;
        }
        if (eat(']')) break;
        return bad("expected ',' or ']'");
      }
    }
    ws();
    if (pos_ != s_.size()) return bad("bytes after the array");
    return true;
  }
  bool string(std::string& out) {
    if (!eat('"')) return bad("expected a string");
    while (pos_ < s_.size()) {
      const char c = s_[pos_++];
      if (c == '"') return true;
      if (static_cast<unsigned char>(c) < 0x20) return bad("control character in a string");
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= s_.size()) break;
      const char e = s_[pos_++];
      if (e == '"' || e == '\\' || e == '/') {
        out += e;
      } else if (e == 'n') {
        out += '\n';
      } else if (e == 't') {
        out += '\t';
      } else if (e == 'u' && pos_ + 4 <= s_.size() &&
                 s_.substr(pos_, 4).find_first_not_of("0123456789abcdefABCDEF") ==
                     std::string_view::npos) {
        const unsigned long v = std::stoul(std::string(s_.substr(pos_, 4)), nullptr, 16);
        if (v >= 0x80) return bad("non-ASCII \\u escape");  // names here are ASCII
        out += static_cast<char>(v);
        pos_ += 4;
      } else {
        return bad("bad escape in a string");
      }
    }
    return bad("unterminated string");
  }
  bool entry(ListEntry& e) {
    if (!eat('{')) return bad("expected '{'");
    std::set<std::string> keys;
    ws();
    while (true) {
      std::string key;
      if (!string(key)) return false;
      if (!keys.insert(key).second) return bad("repeated key " + key);
      ws();
      if (!eat(':')) return bad("expected ':'");
      ws();
      if (key == "name" || key == "mtime") {
        if (!string(key == "name" ? e.name : e.mtime)) return false;
      } else if (key == "size") {
        const size_t start = pos_;
        while (pos_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[pos_]))) ++pos_;
        if (pos_ == start) return bad("expected a number");
        e.size = std::stoull(std::string(s_.substr(start, pos_ - start)));
      } else {
        return bad("unexpected key " + key);
      }
      ws();
      if (eat(',')) {
        ws();
        continue;
      }
      if (eat('}')) break;
      return bad("expected ',' or '}'");
    }
    if (keys.size() != 3) return bad("an entry without name, size and mtime");
    return true;
  }

  std::string_view s_;
  size_t pos_ = 0;
  std::string why_;
};

// GET /archive/ROUTE/ and parse it; FAILs when either fails.
std::vector<ListEntry> listing(const std::string& admin, const std::string& route_name) {
  HttpResponse r = httpGet(admin, "/archive/" + route_name + "/");
  INFO("GET /archive/" << route_name << "/: " << r.error << "\n" << r.body);
  REQUIRE(r.status == 200);
  CHECK(r.header("Content-Type").find("application/json") == 0);
  std::string error;
  auto entries = ListingParser(r.body).parse(error);
  INFO("listing: " << error);
  REQUIRE(entries.has_value());
  return *entries;
}

// True when a component of `rel` starts with '.': files the daemon keeps for itself in the
// archive dir (its lock file), never segments.
bool isHidden(const std::string& rel) {
  return rel.starts_with('.') || rel.find("/.") != std::string::npos;
}

// The listing without hidden files (a test of its own checks that there are none).
std::vector<ListEntry> segmentListing(const std::string& admin, const std::string& route_name) {
  auto entries = listing(admin, route_name);
  std::erase_if(entries, [](const ListEntry& e) { return isHidden(e.name); });
  return entries;
}

// closedSegments() without hidden files (whatever closedSegments() itself does about them).
std::vector<fs::path> segmentFiles(const fs::path& dir) {
  auto files = closedSegments(dir);
  std::erase_if(files,
                [&](const fs::path& f) { return isHidden(f.lexically_relative(dir).string()); });
  return files;
}

// ---------------------------------------------------------------------------------------------
// Sockets

// A TCP connection to 127.0.0.1:port from `source` (every 127.x.y.z is local on Linux).
Conn connectFrom(const char* source, uint16_t port, int* err) {
  Conn c(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!c.valid()) {
    *err = errno;
    return c;
  }
  sockaddr_in src{};
  src.sin_family = AF_INET;
  ::inet_pton(AF_INET, source, &src.sin_addr);
  if (::bind(c.fd(), reinterpret_cast<const sockaddr*>(&src), sizeof src) != 0) {
    *err = errno;
    return Conn();
  }
  sockaddr_in dst{};
  dst.sin_family = AF_INET;
  dst.sin_port = htons(port);
  dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  while (::connect(c.fd(), reinterpret_cast<const sockaddr*>(&dst), sizeof dst) != 0) {
    if (errno == EINTR) continue;
    *err = errno;
    return Conn();
  }
  *err = 0;
  return c;
}

uint16_t portOf(const std::string& addr) {
  return static_cast<uint16_t>(std::atoi(addr.c_str() + addr.rfind(':') + 1));
}

// A refused connection is closed by the daemon at once: EOF or a reset.
bool closedAtOnce(int result) { return result == 0 || result == ECONNRESET; }

// An IPv4 address of this host outside 127.0.0.0/8, or "" when there is none.
std::string nonLoopbackAddress() {
  ifaddrs* list = nullptr;
  if (::getifaddrs(&list) != 0) return {};
  std::string out;
  for (ifaddrs* i = list; i != nullptr && out.empty(); i = i->ifa_next) {
    if (i->ifa_addr == nullptr || i->ifa_addr->sa_family != AF_INET) continue;
    const auto* sa = reinterpret_cast<const sockaddr_in*>(i->ifa_addr);
    if ((ntohl(sa->sin_addr.s_addr) >> 24) == 127) continue;
    char buf[INET_ADDRSTRLEN];
    if (::inet_ntop(AF_INET, &sa->sin_addr, buf, sizeof buf)) out = buf;
  }
  ::freeifaddrs(list);
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// /metrics

TEST_CASE("admin exposition parser: accepts well-formed text and refuses every malformed line",
          "[e2e][admin][metrics]") {
  const std::string ok = "# HELP a Help with \\\\ and \\n escapes.\n# TYPE a counter\na 1\n";
  CHECK(parseExposition(ok).error == "");
  const std::vector<std::string> good = {
      ok,
      // TYPE before HELP, a family without samples, then another family.
      "# TYPE a gauge\n# HELP a h\n# HELP b h\n# TYPE b gauge\nb{x=\"1\"} -Inf\nb{x=\"2\"} NaN\n",
      "# HELP a h\n# TYPE a counter\na{l=\"q\\\"b\\\\s\\nn\",m=\"\"} 1.5e+09\na{l=\"other\"} 0\n",
      "# HELP spliced_future_thing h\n# TYPE spliced_future_thing gauge\n"
      "spliced_future_thing{route=\"app\"} 3\n",
  };
  for (const auto& text : good) {
    INFO(text);
    CHECK(parseExposition(text).error == "");
  }
  const std::vector<std::string> bad = {
      "",
      "# HELP a h\n# TYPE a counter\na 1",                  // no final newline
      "a 1\n",                                              // sample first
      "# HELP a h\na 1\n",                                  // no TYPE
      "# TYPE a gauge\na 1\n",                              // no HELP
      "# HELP a h\n# HELP a h\n# TYPE a gauge\na 1\n",      // HELP twice
      "# HELP a h\n# TYPE a gauge\n# TYPE a gauge\na 1\n",  // TYPE twice
      "# HELP a h\n# TYPE a gauge\na 1\n# HELP a h\n",      // HELP after samples
      "# HELP a h\n# TYPE a summary\na 1\n",                // type
      "# HELP a h\n# TYPE a untyped\na 1\n",                // type
      "# HELP a h\n# TYPE a counter\na_sum 1\n",            // name mismatch
      "# HELP a h\n# TYPE a gauge\na{x=\"1\",y=\"2\"} 1\na{y=\"2\",x=\"1\"} 2\n",  // dup set
      "# HELP a h\n# TYPE a gauge\na 1\na 2\n",                                // dup (no labels)
      "# HELP a h\n# TYPE a gauge\na{x=\"1\",x=\"2\"} 1\n",                    // dup label
      "# HELP a h\n# TYPE a gauge\na{x=\"\\t\"} 1\n",                          // bad escape
      "# HELP a h\n# TYPE a gauge\na{x=\"1\",} 1\n",                           // trailing comma
      "# HELP a h\n# TYPE a gauge\na{x=1} 1\n",                                // unquoted value
      "# HELP a h\n# TYPE a gauge\na{x=\"1\" 1\n",                             // unterminated
      "# HELP a h\n# TYPE a gauge\na{} 1\n",                                   // empty braces
      "# HELP a h\n# TYPE a gauge\na{__x=\"1\"} 1\n",                          // reserved label
      "# HELP a h\n# TYPE a gauge\na 1 1700000000000\n",                       // timestamp
      "# HELP a h\n# TYPE a gauge\na  1\n",                                    // two spaces
      "# HELP a h\n# TYPE a gauge\na 1,5\n",                                   // value
      "# HELP a h\n# TYPE a gauge\na\n",                                       // no value
      "# HELP a h\n# TYPE a counter\na -1\n",                                  // negative counter
      "# HELP a h\n# TYPE a gauge\n\na 1\n",                                   // empty line
      "# HELP a h\n# TYPE a gauge\n# just a comment\na 1\n",                   // other comment
      "# HELP a h \\t\n# TYPE a gauge\na 1\n",                                 // bad help escape
      "# HELP a\n# TYPE a gauge\na 1\n",                                       // no help text
      "# HELP 1a h\n# TYPE 1a gauge\n1a 1\n",                                  // bad name
      "# HELP a h\n# TYPE a gauge\n# HELP b h\n# TYPE b gauge\na 1\n",         // sample of a in b
      "# HELP a h\n# TYPE a gauge\n# HELP b h\n# TYPE b gauge\n# HELP a h\n",  // a reopened
  };
  for (const auto& text : bad) {
    INFO("should be refused:\n" << text);
    CHECK(parseExposition(text).error != "");
  }
}

TEST_CASE("admin /metrics: a real scrape is well formed and has every family of the contract",
          "[e2e][admin][metrics]") {
  TempDir dir;
  Daemon daemon(dir, config(dir, route("app") + route("db_2")));
  const std::string admin = daemon.waitAdmin();
  const uint16_t port = daemon.port("app");
  daemon.port("db_2");
  {
    Conn c = connectTcp(port);
    REQUIRE(c.valid());
    REQUIRE(c.sendAll("one line\n") == 0);
    c.shutdownWrite();
    REQUIRE(c.waitClosed(10s) == 0);
  }
  REQUIRE(waitActive(admin, "app", 0));

  HttpResponse r = httpGet(admin, "/metrics");
  INFO(r.error);
  REQUIRE(r.status == 200);
  CHECK(r.header("Content-Type") == "text/plain; version=0.0.4; charset=utf-8");
  CHECK(r.headerCount("Content-Length") == 1);
  CHECK(r.header("Content-Length") == std::to_string(r.body.size()));
  const Exposition x = parseExposition(r.body);
  INFO("exposition: " << x.error << "\n" << r.body);
  REQUIRE(x.error == "");

  const std::vector<std::string> routes = {"app", "db_2"};
  struct Want {
    std::string name;
    std::string type;
  };
  const std::vector<Want> per_route = {
      {"spliced_connections_active", "gauge"},
      {"spliced_connections_total", "counter"},
      {"spliced_bytes_in_total", "counter"},
      {"spliced_bytes_out_total", "counter"},
      {"spliced_upstream_bytes_total", "counter"},
      {"spliced_archive_bytes_total", "counter"},
      {"spliced_archive_segments_total", "counter"},
      {"spliced_copy_fallback_bytes_total", "counter"},
      {"spliced_storage_errors_total", "counter"},
      {"spliced_archive_stalled_connections", "gauge"},
      {"spliced_lines_split_total", "counter"},
      {"spliced_listener_up", "gauge"},
  };
  for (const auto& w : per_route) {
    INFO("family " << w.name);
    const Family* f = x.family(w.name);
    REQUIRE(f != nullptr);
    CHECK(f->type == w.type);
    CHECK(f->samples.size() == routes.size());
    for (const auto& rt : routes) CHECK(x.value(w.name, {{"route", rt}}).has_value());
  }
  {
    const Family* f = x.family("spliced_connections_rejected_total");
    REQUIRE(f != nullptr);
    CHECK(f->type == "counter");
    CHECK(f->samples.size() == 4 * routes.size());
    for (const auto& rt : routes) {
      for (const char* reason : {"limit", "denied", "no_upstream", "bad_proxy_header"}) {
        INFO("route " << rt << " reason " << reason);
        CHECK(x.value(f->name, {{"route", rt}, {"reason", reason}}) == 0.0);
      }
    }
  }
  {
    const Family* f = x.family("spliced_upstream_errors_total");
    REQUIRE(f != nullptr);
    CHECK(f->type == "counter");
    CHECK(f->samples.empty());  // no proxy route
  }
  const std::vector<Want> single = {
      {"spliced_pipes_in_use", "gauge"},
      {"spliced_pipes_pooled", "gauge"},
      {"process_open_fds", "gauge"},
      {"process_max_fds", "gauge"},
      {"process_resident_memory_bytes", "gauge"},
      {"process_cpu_seconds_total", "counter"},
      {"process_start_time_seconds", "gauge"},
  };
  for (const auto& w : single) {
    INFO("family " << w.name);
    const Family* f = x.family(w.name);
    REQUIRE(f != nullptr);
    CHECK(f->type == w.type);
    REQUIRE(f->samples.size() == 1);
    CHECK(f->samples[0].labels.empty());
  }
  {
    const Family* f = x.family("spliced_build_info");
    REQUIRE(f != nullptr);
    CHECK(f->type == "gauge");
    REQUIRE(f->samples.size() == 1);
    REQUIRE(f->samples[0].labels.size() == 1);
    REQUIRE(f->samples[0].labels.count("version") == 1);
    CHECK_FALSE(f->samples[0].labels.at("version").empty());
    CHECK(f->samples[0].value == 1);
  }

  // The values make sense.
  CHECK(metric(x, "spliced_listener_up", {{"route", "app"}}) == 1);
  CHECK(metric(x, "spliced_listener_up", {{"route", "db_2"}}) == 1);
  CHECK(metric(x, "spliced_connections_total", {{"route", "app"}}) == 1);
  CHECK(metric(x, "spliced_connections_total", {{"route", "db_2"}}) == 0);
  CHECK(metric(x, "spliced_bytes_in_total", {{"route", "app"}}) == 9);
  CHECK(metric(x, "spliced_pipes_in_use") == 0);
  const double open_fds = metric(x, "process_open_fds");
  CHECK(open_fds > 3);
  CHECK(std::abs(open_fds - static_cast<double>(daemon.fdCount())) <= 2);
  CHECK(metric(x, "process_max_fds") >= open_fds);
  CHECK(metric(x, "process_resident_memory_bytes") > 100 * kKiB);
  CHECK(metric(x, "process_cpu_seconds_total") < 60);
  const double started = metric(x, "process_start_time_seconds");
  const double now = static_cast<double>(std::time(nullptr));
  CHECK(started > now - 60);
  CHECK(started <= now + 1);

  // HEAD: same status and headers, no body.
  HttpResponse head = httpRequest(admin, "HEAD", "/metrics");
  INFO(head.error);
  CHECK(head.status == 200);
  CHECK(head.header("Content-Type") == r.header("Content-Type"));
  CHECK(head.body.empty());

  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
}

TEST_CASE("admin /metrics: counters are exact after known clients, refusals are counted by reason",
          "[e2e][admin][metrics]") {
  TempDir dir;
  // app admits 127.0.0.1 only, and 3 connections at once.
  Daemon daemon(dir,
                config(dir, route("app", "    max_connections: 3\n    allow: [127.0.0.1/32]\n") +
                                route("quiet")));
  const std::string admin = daemon.waitAdmin();
  const uint16_t port = daemon.port("app");
  daemon.port("quiet");
  const std::map<std::string, std::string> app = {{"route", "app"}};

  // Two clients from 127.0.0.2: outside the allow list.
  for (int i = 0; i < 2; ++i) {
    int err = 0;
    Conn c = connectFrom("127.0.0.2", port, &err);
    INFO("connect from 127.0.0.2: errno " << err);
    REQUIRE(c.valid());
    (void)c.sendAll("denied\n");
    CHECK(closedAtOnce(c.waitClosed(5s)));
  }

  const std::vector<size_t> sizes = {1000000, 7, 123457};
  std::vector<std::string> payloads;
  std::vector<Conn> conns;
  for (size_t i = 0; i < sizes.size(); ++i) {
    payloads.push_back(randomPayload(500 + i, sizes[i]));
    conns.push_back(connectTcp(port));
    REQUIRE(conns.back().valid());
  }
  REQUIRE(waitActive(admin, "app", 3));
  // Two more: over max_connections.
  for (int i = 0; i < 2; ++i) {
    Conn c = connectTcp(port);
    REQUIRE(c.valid());
    (void)c.sendAll("over the limit\n");
    CHECK(closedAtOnce(c.waitClosed(5s)));
  }
  for (size_t i = 0; i < conns.size(); ++i) {
    REQUIRE(conns[i].sendAll(payloads[i]) == 0);
    conns[i].shutdownWrite();
  }
  for (auto& c : conns) CHECK(c.waitClosed(10s) == 0);
  REQUIRE(waitActive(admin, "app", 0));

  const Exposition x = scrape(admin);
  const double total = 1000000 + 7 + 123457;
  CHECK(metric(x, "spliced_connections_total", app) == 3);
  CHECK(metric(x, "spliced_bytes_in_total", app) == total);
  CHECK(metric(x, "spliced_archive_bytes_total", app) == total);
  CHECK(metric(x, "spliced_archive_segments_total", app) == 3);
  CHECK(metric(x, "spliced_copy_fallback_bytes_total", app) == 0);
  CHECK(metric(x, "spliced_storage_errors_total", app) == 0);
  CHECK(metric(x, "spliced_archive_stalled_connections", app) == 0);
  CHECK(metric(x, "spliced_lines_split_total", app) == 0);
  CHECK(metric(x, "spliced_bytes_out_total", app) == 0);
  CHECK(metric(x, "spliced_upstream_bytes_total", app) == 0);
  CHECK(metric(x, "spliced_connections_rejected_total", {{"route", "app"}, {"reason", "limit"}}) ==
        2);
  CHECK(metric(x, "spliced_connections_rejected_total", {{"route", "app"}, {"reason", "denied"}}) ==
        2);
  CHECK(metric(x, "spliced_pipes_in_use") == 0);
  // The other route saw nothing.
  for (const char* name :
       {"spliced_connections_active", "spliced_connections_total", "spliced_bytes_in_total",
        "spliced_archive_bytes_total", "spliced_archive_segments_total"}) {
    INFO(name);
    CHECK(metric(x, name, {{"route", "quiet"}}) == 0);
  }
  CHECK(metric(x, "spliced_connections_rejected_total",
               {{"route", "quiet"}, {"reason", "limit"}}) == 0);
  CHECK(metric(x, "spliced_connections_rejected_total",
               {{"route", "quiet"}, {"reason", "denied"}}) == 0);

  // The archive holds exactly those bytes, and the exit totals agree with the metrics.
  auto chains = chainsByConn(dir / "archive-app");
  CHECK(chains.size() == 3);
  for (size_t i = 0; i < conns.size(); ++i) {
    const Chain* c = findByPort(chains, conns[i].localPort());
    REQUIRE(c != nullptr);
    CHECK(firstDifference(concatFiles(c->files()), payloads[i]) == "");
  }
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
  auto totals = parseTotals(daemon.log(), "app");
  INFO(daemon.log());
  CHECK(totals["connections"] == 3);
  CHECK(totals["bytes_in"] == total);
  CHECK(totals["rejected_limit"] == 2);
  CHECK(totals["rejected_denied"] == 2);
}

// ---------------------------------------------------------------------------------------------
// /archive

TEST_CASE("admin /archive listing: closed segments only, sorted by name, with their size and mtime",
          "[e2e][admin][archive]") {
  TempDir dir;
  Daemon daemon(dir, config(dir, route("app", "", "      rotate: { max_bytes: 4KiB }\n",
                                       "d{conn}/{route}-{conn}-{peer_port}-{seq}.log")));
  const std::string admin = daemon.waitAdmin();
  const uint16_t port = daemon.port("app");
  const fs::path archive = dir / "archive-app";

  CHECK(segmentListing(admin, "app").empty());  // the dir exists and holds nothing yet

  // conn 1: 3 segments (4096 + 4096 + 1808); conn 2: one of 5 bytes; conn 3: still open.
  const std::string p1 = randomPayload(1, 10000);
  for (const std::string& p : {p1, std::string("short")}) {
    Conn c = connectTcp(port);
    REQUIRE(c.valid());
    REQUIRE(c.sendAll(p) == 0);
    c.shutdownWrite();
    REQUIRE(c.waitClosed(10s) == 0);
  }
  Conn open = connectTcp(port);
  REQUIRE(open.valid());
  REQUIRE(open.sendAll(randomPayload(3, 100)) == 0);
  REQUIRE(waitUntil([&] { return openSegments(archive).size() == 1; }, 10s));

  const auto entries = segmentListing(admin, "app");
  const auto files = segmentFiles(archive);
  REQUIRE(files.size() == 4);
  REQUIRE(entries.size() == files.size());
  std::vector<std::string> names;
  for (const auto& f : files) names.push_back(f.lexically_relative(archive).string());
  std::sort(names.begin(), names.end());
  const std::regex iso(R"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)");
  const std::time_t now = std::time(nullptr);
  for (size_t i = 0; i < entries.size(); ++i) {
    INFO("entry " << i << ": " << entries[i].name);
    CHECK(entries[i].name == names[i]);
    CHECK(entries[i].name.find(".open") == std::string::npos);
    CHECK(entries[i].size == fs::file_size(archive / names[i]));
    CHECK(std::regex_match(entries[i].mtime, iso));
    std::tm tm{};
    REQUIRE(strptime(entries[i].mtime.c_str(), "%Y-%m-%dT%H:%M:%SZ", &tm) != nullptr);
    const std::time_t mtime = timegm(&tm);
    CHECK(mtime <= now + 1);
    CHECK(mtime >= now - 60);
    // Each listed segment downloads as what is on disk.
    HttpResponse r = httpGet(admin, "/archive/app/" + entries[i].name);
    INFO(r.error);
    CHECK(r.status == 200);
    CHECK(firstDifference(r.body, readFile(archive / names[i])) == "");
  }
  CHECK(entries[0].name.starts_with("d1/"));
  CHECK(entries[0].size == 4096);
  CHECK(entries[1].size == 4096);
  CHECK(entries[2].size == 10000 - 8192);
  CHECK(entries[3].name.starts_with("d2/"));
  CHECK(entries[3].size == 5);

  // An unknown route has no listing.
  CHECK(httpGet(admin, "/archive/nope/").status == 404);
  open.shutdownWrite();
  CHECK(open.waitClosed(10s) == 0);
  CHECK(segmentListing(admin, "app").size() == 5);
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
}

// The target of a `Link: <TARGET>; rel="next"` header; "" when there is none.
std::string nextLink(const HttpResponse& r) {
  const std::string link = r.header("Link");
  static const std::regex next(R"(^<([^>]*)>; rel="next"$)");
  std::smatch m;
  if (!std::regex_match(link, m, next)) return "";
  return m[1];
}

// Creates `rel` below `dir` (and its parents) with `size` bytes.
void makeFile(const fs::path& dir, const std::string& rel, size_t size = 0) {
  fs::create_directories((dir / rel).parent_path());
  writeFile(dir / rel, std::string(size, 's'));
}

TEST_CASE("admin /archive listing is paged: limit, after, Link rel=next, every name exactly once",
          "[e2e][admin][archive]") {
  TempDir dir;
  const fs::path archive = dir / "archive-app";
  // Segments placed before the start: 2,500 plain names, names that need percent-encoding in a
  // cursor, and subdirectories; plus what is never listed (hidden: the daemon's own names).
  std::vector<std::string> expected;
  for (int i = 0; i < 2500; ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "n-%05d.log", i);
    expected.push_back(name);
  }
  for (const char* rel : {"a b.log", "a+b.log", "a&b=c.log", "a%41.log", "a?#.log", "\xc3\xbc.log",
                          "sub/x.log", "sub/deeper/y.log", "z.log.zst", "w.log.unsynced"}) {
    expected.push_back(rel);
  }
  for (size_t i = 0; i < expected.size(); ++i) makeFile(archive, expected[i], i % 7);
  for (const char* rel : {".hidden.log", "sub/.h/z.log"}) {
    makeFile(archive, rel, 3);
  }
  std::sort(expected.begin(), expected.end());  // bytewise
  Daemon daemon(dir, config(dir, route("app")));
  const std::string admin = daemon.waitAdmin();

  // Without a limit: the first 1000, and a link to the rest.
  HttpResponse first = httpGet(admin, "/archive/app/");
  REQUIRE(first.status == 200);
  std::string error;
  auto page = ListingParser(first.body).parse(error);
  INFO(error);
  REQUIRE(page.has_value());
  CHECK(page->size() == 1000);
  CHECK(nextLink(first) == "/archive/app/?limit=1000&after=" + page->back().name);

  // Every page, following the links: each name once, in order, with its size.
  for (const std::string limit : {"1000", "7", "10000"}) {
    INFO("limit " << limit);
    std::vector<std::string> names;
    std::string target = "/archive/app/?limit=" + limit;
    size_t pages = 0;
    while (!target.empty() && pages < 1000) {
      HttpResponse r = httpGet(admin, target);
      INFO(target << ": " << r.status << " " << r.body.substr(0, 200));
      REQUIRE(r.status == 200);
      auto entries = ListingParser(r.body).parse(error);
      REQUIRE(entries.has_value());
      ++pages;
      CHECK(entries->size() <= static_cast<size_t>(std::stoul(limit)));
      for (const auto& e : *entries) {
        names.push_back(e.name);
        CHECK(e.size == fs::file_size(archive / e.name));
      }
      target = nextLink(r);
      if (!target.empty()) CHECK(entries->size() == std::stoul(limit));
    }
    CHECK(names == expected);
    CHECK(pages == (expected.size() + std::stoul(limit) - 1) / std::stoul(limit));
  }

  // `after` is exclusive, by bytes; a cursor past the end gives an empty page without a link.
  HttpResponse r = httpGet(admin, "/archive/app/?limit=2&after=a%20b.log");
  REQUIRE(r.status == 200);
  page = ListingParser(r.body).parse(error);
  REQUIRE(page.has_value());
  REQUIRE(page->size() == 2);
  CHECK((*page)[0].name == "a%41.log");
  CHECK((*page)[1].name == "a&b=c.log");
  CHECK(nextLink(r) == "/archive/app/?limit=2&after=a%26b%3Dc.log");
  r = httpGet(admin, "/archive/app/?after=%C3%BC.log");
  CHECK(r.status == 200);
  CHECK(r.body == "[\n]\n");
  CHECK(r.headerCount("Link") == 0);
  r = httpGet(admin, "/archive/app/?after=sub%2Fdeeper%2Fy.log&limit=5");
  page = ListingParser(r.body).parse(error);
  REQUIRE(page.has_value());
  REQUIRE(page->size() == 4);
  CHECK((*page)[0].name == "sub/x.log");
  CHECK((*page)[3].name == "\xc3\xbc.log");
  CHECK(r.headerCount("Link") == 0);

  // Bad parameters: 400 and what is wrong.
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"limit=0", "limit must be a whole number from 1 to 10000"},
      {"limit=10001", "limit must be a whole number from 1 to 10000"},
      {"limit=-1", "limit must be a whole number from 1 to 10000"},
      {"limit=abc", "limit must be a whole number from 1 to 10000"},
      {"limit=", "limit must be a whole number from 1 to 10000"},
      {"limit=1e3", "limit must be a whole number from 1 to 10000"},
      {"limit=99999999999999999999", "limit must be a whole number from 1 to 10000"},
      {"limit=5&limit=6", "limit is given more than once"},
      {"after=", "after must be a segment name from a listing"},
      {"after=%2Fetc%2Fpasswd", "after must be a segment name from a listing"},
      {"after=" + std::string(5000, 'a'), "after must be a segment name from a listing"},
      {"after=a&after=b", "after is given more than once"},
      {"after=a%00b", "a query parameter contains a NUL byte"},
      {"page=2", "unknown query parameter \"page\""},
  };
  for (const auto& [query, message] : bad) {
    HttpResponse b = httpGet(admin, "/archive/app/?" + query);
    INFO(query << ": " << b.status << " " << b.body);
    CHECK(b.status == 400);
    CHECK(b.body.find(message) != std::string::npos);
  }
  CHECK(httpRequest(admin, "HEAD", "/archive/app/?limit=0").status == 400);
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
}

TEST_CASE("admin /archive download: a 100 MiB segment byte-exact, ranges, 416 and HEAD",
          "[e2e][admin][archive]") {
  constexpr size_t kSize = 100 * kMiB;
  TempDir dir;
  Daemon daemon(dir, config(dir, route("app")));
  const std::string admin = daemon.waitAdmin();
  const uint16_t port = daemon.port("app");
  const std::string payload = randomPayload(77, kSize);
  {
    Conn c = connectTcp(port);
    REQUIRE(c.valid());
    REQUIRE(c.sendAll(payload) == 0);
    c.shutdownWrite();
    REQUIRE(c.waitClosed(30s) == 0);
  }
  const auto entries = segmentListing(admin, "app");
  REQUIRE(entries.size() == 1);
  CHECK(entries[0].size == kSize);
  const std::string target = "/archive/app/" + entries[0].name;
  const std::string size = std::to_string(kSize);

  HttpResponse full = httpRequest(admin, "GET", target, {}, 60s);
  INFO(full.error);
  REQUIRE(full.status == 200);
  CHECK(full.headerCount("Content-Length") == 1);
  CHECK(full.header("Content-Length") == size);
  CHECK(full.header("Accept-Ranges") == "bytes");
  CHECK(full.headerCount("Content-Range") == 0);
  CHECK(firstDifference(full.body, payload) == "");
  full.body.clear();
  full.body.shrink_to_fit();

  struct Case {
    std::string range;
    size_t first;
    size_t last;
  };
  const std::vector<Case> cases = {
      {"bytes=12345678-23456789", 12345678, 23456789},
      {"bytes=-1000", kSize - 1000, kSize - 1},
      {"bytes=104000000-", 104000000, kSize - 1},
      {"bytes=0-0", 0, 0},
      {"bytes=" + std::to_string(kSize - 10) + "-999999999", kSize - 10, kSize - 1},  // clipped
      {"bytes=-" + std::to_string(kSize + 5), 0, kSize - 1},  // suffix longer than the file
  };
  for (const auto& c : cases) {
    INFO("Range: " << c.range);
    HttpResponse r = httpGet(admin, target, {{"Range", c.range}});
    INFO(r.error);
    REQUIRE(r.status == 206);
    const size_t length = c.last - c.first + 1;
    CHECK(r.header("Content-Range") ==
          "bytes " + std::to_string(c.first) + "-" + std::to_string(c.last) + "/" + size);
    CHECK(r.header("Content-Length") == std::to_string(length));
    CHECK(r.header("Accept-Ranges") == "bytes");
    CHECK(firstDifference(r.body, std::string_view(payload).substr(c.first, length)) == "");
  }
  for (const std::string& range : {"bytes=" + size + "-", "bytes=" + size + "-" + size,
                                   "bytes=" + std::to_string(kSize + 1000) + "-"}) {
    INFO("Range: " << range);
    HttpResponse r = httpGet(admin, target, {{"Range", range}});
    INFO(r.error);
    CHECK(r.status == 416);
    CHECK(r.header("Content-Range") == "bytes */" + size);
  }

  HttpResponse head = httpRequest(admin, "HEAD", target);
  INFO(head.error);
  CHECK(head.status == 200);
  CHECK(head.header("Content-Length") == size);
  CHECK(head.header("Accept-Ranges") == "bytes");
  CHECK(head.header("Content-Type") == full.header("Content-Type"));
  CHECK(head.header("Last-Modified") == full.header("Last-Modified"));
  CHECK(head.body.empty());
  HttpResponse head_range = httpRequest(admin, "HEAD", target, {{"Range", "bytes=-1000"}});
  INFO(head_range.error);
  CHECK(head_range.status == 206);
  CHECK(head_range.header("Content-Length") == "1000");
  CHECK(head_range.header("Content-Range") ==
        "bytes " + std::to_string(kSize - 1000) + "-" + std::to_string(kSize - 1) + "/" + size);
  CHECK(head_range.body.empty());

  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
}

TEST_CASE("admin /archive download: every way out of the archive dir is a 404",
          "[e2e][admin][archive]") {
  TempDir dir;
  Daemon daemon(dir, config(dir, route("app")));
  const std::string admin = daemon.waitAdmin();
  const uint16_t port = daemon.port("app");
  const fs::path archive = dir / "archive-app";
  {
    Conn c = connectTcp(port);
    REQUIRE(c.valid());
    REQUIRE(c.sendAll("closed segment\n") == 0);
    c.shutdownWrite();
    REQUIRE(c.waitClosed(10s) == 0);
  }
  Conn open = connectTcp(port);
  REQUIRE(open.valid());
  REQUIRE(open.sendAll("still streaming\n") == 0);
  REQUIRE(waitUntil([&] { return openSegments(archive).size() == 1; }, 10s));
  const auto closed = segmentFiles(archive);
  REQUIRE(closed.size() == 1);
  const std::string seg = closed[0].filename().string();
  const std::string open_name = openSegments(archive)[0].filename().string();
  const std::string open_final = open_name.substr(0, open_name.size() - 5);

  // Symlinks in the archive dir: out of it, into it, and to directories.
  fs::create_symlink("/etc/passwd", archive / "passwd.log");
  fs::create_symlink(seg, archive / "inside.log");
  fs::create_symlink("/etc", archive / "etcdir");
  fs::create_symlink(".", archive / "selfdir");
  fs::create_directory(archive / "sub");
  fs::create_symlink("../" + seg, archive / "sub" / "up.log");

  // The control: the closed segment itself (also with an encoded unreserved character).
  {
    HttpResponse r = httpGet(admin, "/archive/app/" + seg);
    INFO(r.error);
    CHECK(r.status == 200);
    CHECK(r.body == "closed segment\n");
    std::string encoded = seg;
    encoded.replace(encoded.find('-'), 1, "%2D");
    CHECK(httpGet(admin, "/archive/app/" + encoded).status == 200);
  }
  // Only the closed segment is listed: no symlink, no .open.
  {
    const auto entries = segmentListing(admin, "app");
    REQUIRE(entries.size() == 1);
    CHECK(entries[0].name == seg);
  }

  const std::string abs_seg = (archive / seg).string();  // starts with '/'
  const std::vector<std::string> refused = {
      "/archive/app/../../../etc/passwd",
      "/archive/app/../../../../../../../../etc/passwd",
      "/archive/app/..%2f..%2f..%2fetc%2fpasswd",
      "/archive/app/..%2F..%2F..%2Fetc%2Fpasswd",
      "/archive/app/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
      "/archive/app/%2E%2E/%2E%2E/%2E%2E/etc/passwd",
      "/archive/app/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
      "/archive/app/..",
      "/archive/app/../app/" + seg,
      "/archive/app/sub/../" + seg,
      "/archive/app/passwd.log",
      "/archive/app/inside.log",
      "/archive/app/etcdir/passwd",
      "/archive/app/selfdir/" + seg,
      "/archive/app/sub/up.log",
      "/archive/app/" + open_name,
      "/archive/app/" + open_final,
      "/archive/app/missing.log",
      "/archive/app/sub",
      "/archive/nope/" + seg,
      "/archive/nope/",
      "/archive/app//etc/passwd",
      "/archive/app/%2fetc%2fpasswd",
      "/archive/app/" + abs_seg,
      "/archive/app/%00" + seg,
      "/archive/app/" + seg + "%00",
  };
  for (const auto& target : refused) {
    INFO("GET " << target);
    HttpResponse r = httpGet(admin, target);
    INFO(r.error);
    CHECK(r.status == 404);
    CHECK(r.body.find("root:") == std::string::npos);
    CHECK(r.body.find("closed segment") == std::string::npos);
    HttpResponse h = httpRequest(admin, "HEAD", target);
    CHECK(h.status == 404);
    CHECK(h.body.empty());
  }

  open.shutdownWrite();
  CHECK(open.waitClosed(10s) == 0);
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
}

TEST_CASE(
    "admin /archive: hidden files of the daemon (its lock file) are neither listed nor served",
    "[e2e][admin][archive]") {
  TempDir dir;
  Daemon daemon(dir, config(dir, route("app")));
  const std::string admin = daemon.waitAdmin();
  daemon.port("app");
  const fs::path archive = dir / "archive-app";
  std::vector<std::string> hidden;  // regular files only: closedSegments() skips hidden ones
  for (const auto& e : fs::recursive_directory_iterator(archive)) {
    const std::string rel = e.path().lexically_relative(archive).string();
    if (e.is_regular_file() && isHidden(rel)) hidden.push_back(rel);
  }
  const auto entries = listing(admin, "app");
  for (const auto& e : entries) {
    INFO("listed: " << e.name);
    CHECK_FALSE(isHidden(e.name));
  }
  for (const auto& rel : hidden) {
    INFO("GET /archive/app/" << rel);
    CHECK(httpGet(admin, "/archive/app/" + rel).status == 404);
  }
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
}

// ---------------------------------------------------------------------------------------------
// /healthz

TEST_CASE(
    "admin /healthz: ok, then 503 naming the route once its archive dir is removed and once its "
    "writes fail",
    "[e2e][admin][healthz]") {
  TempDir dir;
  Daemon daemon(dir, config(dir, route("app") + route("other"), "{ listen: 127.0.0.1:0 }", "1s"));
  const std::string admin = daemon.waitAdmin();
  const uint16_t port = daemon.port("app");
  daemon.port("other");

  HttpResponse ok = httpGet(admin, "/healthz");
  INFO(ok.error);
  CHECK(ok.status == 200);
  CHECK(ok.body == "ok\n");
  HttpResponse head = httpRequest(admin, "HEAD", "/healthz");
  CHECK(head.status == 200);
  CHECK(head.header("Content-Length") == "3");
  CHECK(head.body.empty());

  const fs::path archive = dir / "archive-app";
  fs::remove_all(archive);  // the daemon still holds the directory's fd
  HttpResponse gone = httpGet(admin, "/healthz");
  INFO(gone.error << "\n" << gone.body);
  CHECK(gone.status == 503);
  CHECK(gone.body.find("route app: archive dir " + archive.string() + " was removed\n") !=
        std::string::npos);
  CHECK(gone.body.find("route other") == std::string::npos);
  CHECK(gone.body.find("ok") != 0);

  // A client now: its segment cannot be created, the daemon holds its bytes and says so.
  Conn c = connectTcp(port);
  REQUIRE(c.valid());
  REQUIRE(c.sendAll(randomPayload(5, 1000)) == 0);
  std::string body;
  CHECK(waitUntil(
      [&] {
        body = httpGet(admin, "/healthz").body;
        return body.find("route app: archive writes failing (") != std::string::npos;
      },
      10s));
  INFO(body);
  CHECK(body.find(") for 1 connection(s)\n") != std::string::npos);
  CHECK(body.find("was removed\n") != std::string::npos);
  CHECK(body.find("route other") == std::string::npos);
  const Exposition x = scrape(admin);
  CHECK(metric(x, "spliced_archive_stalled_connections", {{"route", "app"}}) == 1);
  CHECK(metric(x, "spliced_storage_errors_total", {{"route", "app"}}) >= 1);
  CHECK(metric(x, "spliced_archive_stalled_connections", {{"route", "other"}}) == 0);

  daemon.signal(SIGTERM);
  CHECK(daemon.waitExit(10s) == 0);
}

TEST_CASE("admin /healthz: 503 shutting down while the daemon drains after SIGTERM",
          "[e2e][admin][healthz]") {
  TempDir dir;
  Daemon daemon(dir, config(dir, route("app"), "{ listen: 127.0.0.1:0 }", "30s"));
  const std::string admin = daemon.waitAdmin();
  const uint16_t port = daemon.port("app");
  const std::string payload = randomPayload(9, 200 * kKiB);

  Conn c = connectTcp(port);
  REQUIRE(c.valid());
  REQUIRE(c.sendAll(payload.data(), 1000) == 0);
  REQUIRE(waitActive(admin, "app", 1));
  CHECK(httpGet(admin, "/healthz").status == 200);

  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitLog("shutting down", 5s));
  HttpResponse r = httpGet(admin, "/healthz");
  INFO(r.error << "\n" << r.body);
  CHECK(r.status == 503);
  CHECK(r.body.starts_with("shutting down\n"));
  const Exposition x = scrape(admin);  // still served while draining
  CHECK(metric(x, "spliced_listener_up", {{"route", "app"}}) == 0);
  CHECK(metric(x, "spliced_connections_active", {{"route", "app"}}) == 1);

  // The client finishes; the daemon exits long before drain_timeout.
  REQUIRE(c.sendAll(payload.data() + 1000, payload.size() - 1000) == 0);
  c.shutdownWrite();
  CHECK(c.waitClosed(10s) == 0);
  REQUIRE(daemon.waitExit(10s) == 0);
  auto chains = chainsByConn(dir / "archive-app");
  REQUIRE(chains.size() == 1);
  CHECK(firstDifference(concatFiles(chains.begin()->second.files()), payload) == "");
}

// ---------------------------------------------------------------------------------------------
// Methods, unknown paths, admin.allow, unix socket

TEST_CASE("admin: methods other than GET and HEAD get 405 with Allow, unknown paths 404",
          "[e2e][admin]") {
  TempDir dir;
  Daemon daemon(dir, config(dir, route("app")));
  const std::string admin = daemon.waitAdmin();
  daemon.port("app");

  for (const char* method : {"POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"}) {
    for (const char* target : {"/metrics", "/healthz", "/archive/app/", "/nowhere"}) {
      INFO(method << " " << target);
      HttpResponse r = httpRequest(admin, method, target, {{"Content-Length", "0"}});
      INFO(r.error);
      CHECK(r.status == 405);
      CHECK(r.headerCount("Allow") == 1);
      CHECK(r.header("Allow") == "GET, HEAD");
    }
  }
  // A request body does not change the answer.
  {
    Conn c = connectTcp(portOf(admin));
    REQUIRE(c.valid());
    HttpResponse r = httpExchange(
        c,
        "POST /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello");
    INFO(r.error);
    CHECK(r.status == 405);
    CHECK(r.header("Allow") == "GET, HEAD");
  }

  for (const char* target : {"/index.html", "/status.jsonx", "/status.json/", "/metricsx",
                             "/metrics/", "/healthzx", "/archive/", "/archive", "/favicon.ico"}) {
    INFO("GET " << target);
    HttpResponse r = httpGet(admin, target);
    INFO(r.error);
    CHECK(r.status == 404);
    // Nothing about the daemon: a fixed body, and no version in Server.
    CHECK(r.body == "not found\n");
    CHECK(r.header("Server") == "spliced");
  }
  // With a query string, the path is what counts.
  CHECK(httpGet(admin, "/healthz?verbose=1").status == 200);

  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
}

TEST_CASE("admin.allow: a peer outside the list gets 403, one inside gets answers",
          "[e2e][admin][allow]") {
  TempDir dir;
  Daemon daemon(
      dir, config(dir, route("app"), "{ listen: 127.0.0.1:0, allow: [10.0.0.0/8, 127.0.0.2/32] }"));
  const std::string admin = daemon.waitAdmin();
  daemon.port("app");

  for (const char* target : {"/metrics", "/healthz", "/archive/app/", "/nowhere"}) {
    INFO("GET " << target << " from 127.0.0.1");
    HttpResponse r = httpGet(admin, target);
    INFO(r.error);
    CHECK(r.status == 403);
    CHECK(r.body == "forbidden\n");
    CHECK(r.header("Server") == "spliced");
  }
  CHECK(httpRequest(admin, "POST", "/metrics", {{"Content-Length", "0"}}).status == 403);

  int err = 0;
  Conn c = connectFrom("127.0.0.2", portOf(admin), &err);
  INFO("connect from 127.0.0.2: errno " << err);
  REQUIRE(c.valid());
  HttpResponse r = httpExchange(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  INFO(r.error);
  CHECK(r.status == 200);
  CHECK(r.body == "ok\n");

  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
}

TEST_CASE("admin.allow: by default only loopback peers are answered", "[e2e][admin][allow]") {
  const std::string ip = nonLoopbackAddress();
  if (ip.empty()) {
    WARN("no non-loopback IPv4 address on this host: only the loopback half is tested");
  }
  TempDir dir;
  Daemon daemon(dir,
                config(dir, route("app"), "{ listen: " + (ip.empty() ? "127.0.0.1" : ip) + ":0 }"));
  const std::string admin = daemon.waitAdmin();
  daemon.port("app");
  if (!ip.empty()) {
    HttpResponse r = httpGet(admin, "/healthz");  // from `ip` itself: not loopback
    INFO("GET /healthz via " << admin << ": " << r.error);
    CHECK(r.status == 403);
  } else {
    CHECK(httpGet(admin, "/healthz").status == 200);
  }
  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
}

TEST_CASE("admin on a unix socket answers /healthz and /metrics, and removes the socket at exit",
          "[e2e][admin][unix]") {
  TempDir dir;
  const std::string sock = (dir / "admin.sock").string();
  Daemon daemon(dir, config(dir, route("app"), "{ listen: \"unix:" + sock + "\" }"));
  const std::string admin = daemon.waitAdmin();
  CHECK(admin == "unix:" + sock);
  daemon.port("app");

  HttpResponse r = httpGet(admin, "/healthz");
  INFO(r.error);
  CHECK(r.status == 200);
  CHECK(r.body == "ok\n");
  const Exposition x = scrape(admin);
  CHECK(metric(x, "spliced_listener_up", {{"route", "app"}}) == 1);

  daemon.signal(SIGTERM);
  REQUIRE(daemon.waitExit(10s) == 0);
  CHECK_FALSE(fs::exists(fs::symlink_status(sock)));
}
