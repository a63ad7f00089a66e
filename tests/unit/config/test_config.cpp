// spliced/config/config.hpp: contract v1 loaded from inline YAML, its defaults, and every class of
// error with its exact "FILE:LINE:COL: key: message" position (1-based).
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "spliced/config/config.hpp"
#include "spliced/config/validate.hpp"
#include "unit_helpers.hpp"

using namespace spliced;
using Catch::Matchers::StartsWith;
using spliced::test::TempDir;
using std::chrono::milliseconds;

namespace {

namespace fs = std::filesystem;

// Replaces every "@DIR@" in `yaml` by `dir`. Two routes may not share an archive dir, so a bare
// "@DIR@" after the first becomes "dir/r2", "dir/r3", ...
std::string withDir(std::string yaml, const std::string& dir) {
  int bare = 0;
  for (size_t at = yaml.find("@DIR@"); at != std::string::npos; at = yaml.find("@DIR@", at)) {
    bool is_bare = at + 5 >= yaml.size() || yaml[at + 5] != '/';
    std::string with = dir;
    if (is_bare && ++bare > 1) with += "/r" + std::to_string(bare);
    yaml.replace(at, 5, with);
    at += with.size();
  }
  return yaml;
}

ConfigResult load(const std::string& yaml) { return loadConfigString(yaml, "test.yaml"); }

std::string dump(const ConfigResult& r) {
  std::string s = std::to_string(r.errors.size()) + " error(s):";
  for (const auto& e : r.errors) s += "\n  " + e.format() + "   [key=" + e.key + "]";
  return s;
}

struct Expected {
  int line;
  int column;
  std::string key;
  std::string message;
};

std::string prefixOf(const Expected& x) {
  return "test.yaml:" + std::to_string(x.line) + ":" + std::to_string(x.column) + ": " + x.key +
         ":";
}

void checkError(const ConfigError& e, const Expected& x) {
  INFO("error: " << e.format());
  CHECK(e.file == "test.yaml");
  CHECK(e.line == x.line);
  CHECK(e.column == x.column);
  CHECK(e.key == x.key);
  CHECK(e.message == x.message);
  CHECK_THAT(e.format(), StartsWith(prefixOf(x)));
  CHECK(e.format() == prefixOf(x) + " " + x.message);
}

// Loads `yaml` and expects exactly the errors `xs`, in any order (each is looked up by its key).
void expectErrors(const std::string& yaml, const std::vector<Expected>& xs) {
  auto r = load(yaml);
  INFO("config:\n" << yaml);
  INFO(dump(r));
  CHECK_FALSE(r.config);
  REQUIRE(r.errors.size() == xs.size());
  for (const auto& x : xs) {
    const ConfigError* found = nullptr;
    for (const auto& e : r.errors) {
      if (e.key == x.key) found = &e;
    }
    INFO("expected an error for key '" << x.key << "'");
    REQUIRE(found != nullptr);
    checkError(*found, x);
  }
}

void expectError(const std::string& yaml, const Expected& x) { expectErrors(yaml, {x}); }

ConfigPtr loadOk(const std::string& yaml) {
  auto r = load(yaml);
  INFO("config:\n" << yaml);
  INFO(dump(r));
  REQUIRE(r.errors.empty());
  REQUIRE(r.config);
  return r.config;
}

// Lines 1-5: one valid route. Tests append lines 6+ to it.
const char* const kRoute =
    "routes:\n"
    "  - name: app\n"
    "    listen: 127.0.0.1:5140\n"
    "    archive:\n"
    "      dir: @DIR@\n";

const std::string kTopKeys =
    "unknown key (known here: log, admin, pipes, workers, user, group, drain_timeout, routes)";
const std::string kSizeUnits = "(use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)";

}  // namespace

TEST_CASE("config: a full contract v1 file loads with its values", "[config]") {
  TempDir tmp;
  const std::string yaml = withDir(R"(
log:
  level: debug
  format: json
admin:
  listen: 127.0.0.1:9180
  allow: [127.0.0.0/8]
pipes:
  size: 64KiB
  max: 16
drain_timeout: 30s
routes:
  - name: app
    listen: 127.0.0.1:5140
    max_connections: 500
    idle_timeout: 5m
    allow: [127.0.0.0/8, "::1/128"]
    archive:
      dir: @DIR@/app
      layout: shared
      framing: lines
      name: "%Y/%m/%d/{route}-%H%M%S-{seq}.log"
      localtime: true
      rotate: { max_bytes: 128MiB, interval: 1h }
      retain: { max_files: 10, max_age: 7d, max_bytes: 10GiB }
      compress: zstd
      fsync: on_close
      max_line: 64KiB
  - name: b_2-x
    listen: "[::1]:5141"
    archive:
      dir: @DIR@/b
      compress: gzip
      localtime: no
      rotate: { max_bytes: 0, interval: 0 }
  - name: sock
    listen: unix:@DIR@/s.sock
    archive:
      dir: @DIR@
      localtime: yes
)",
                                   tmp.str());
  auto cfg = loadOk(yaml);
  CHECK(cfg->source == "test.yaml");
  CHECK(cfg->log.level == LogLevel::Debug);
  CHECK(cfg->log.format == LogFormat::Json);
  REQUIRE(cfg->admin.listen);
  CHECK(cfg->admin.listen->text == "127.0.0.1:9180");
  REQUIRE(cfg->admin.allow.size() == 1);
  CHECK(cfg->admin.allow[0].text() == "127.0.0.0/8");
  CHECK(cfg->pipes.size == 65536);
  CHECK(cfg->pipes.max == 16);
  CHECK(cfg->drain_timeout == milliseconds(30000));
  REQUIRE(cfg->routes.size() == 3);

  const RouteConfig& app = cfg->routes[0];
  CHECK(app.name == "app");
  CHECK(app.listen.text == "127.0.0.1:5140");
  CHECK(app.listen.family() == AF_INET);
  CHECK(app.max_connections == 500);
  CHECK(app.idle_timeout == milliseconds(300000));
  REQUIRE(app.allow.size() == 2);
  CHECK(app.allow[0].text() == "127.0.0.0/8");
  CHECK(app.allow[1].text() == "::1/128");
  CHECK_FALSE(app.forward);
  REQUIRE(app.archive);
  const ArchiveConfig& a = *app.archive;
  CHECK(a.dir == fs::path(tmp.str() + "/app"));
  CHECK(a.layout == Layout::Shared);
  CHECK(a.framing == Framing::Lines);
  CHECK(a.name.text() == "%Y/%m/%d/{route}-%H%M%S-{seq}.log");
  CHECK(a.localtime);
  CHECK(a.rotate.max_bytes == 128ull << 20);
  CHECK(a.rotate.interval == milliseconds(3600000));
  CHECK(a.retain.max_files == 10);
  CHECK(a.retain.max_age == milliseconds(7ll * 86400000));
  CHECK(a.retain.max_bytes == 10ull << 30);
  CHECK(a.compress == Compress::Zstd);
  CHECK(a.fsync == FsyncPolicy::OnClose);
  CHECK(a.max_line == 65536);

  const RouteConfig& b = cfg->routes[1];
  CHECK(b.name == "b_2-x");
  CHECK(b.listen.text == "[::1]:5141");
  CHECK(b.listen.family() == AF_INET6);
  REQUIRE(b.archive);
  CHECK(b.archive->compress == Compress::Gzip);
  CHECK_FALSE(b.archive->localtime);
  CHECK(b.archive->rotate.max_bytes == 0);
  CHECK(b.archive->rotate.interval == milliseconds(0));

  const RouteConfig& s = cfg->routes[2];
  CHECK(s.listen.isUnix());
  CHECK(s.listen.path == tmp.str() + "/s.sock");
  REQUIRE(s.archive);
  CHECK(s.archive->localtime);
  CHECK(s.archive->dir == fs::path(tmp.str()));

  // Loading checks the archive dir but never creates it.
  CHECK_FALSE(fs::exists(tmp.path() / "app"));
  CHECK_FALSE(fs::exists(tmp.path() / "b"));
}

TEST_CASE("config: defaults of every optional key", "[config]") {
  TempDir tmp;
  auto cfg = loadOk(withDir(kRoute, tmp.str()));
  CHECK(cfg->log.level == LogLevel::Info);
  CHECK(cfg->log.format == LogFormat::Text);
  CHECK_FALSE(cfg->admin.listen);
  CHECK(cfg->admin.allow.empty());
  CHECK(cfg->pipes.size == 1048576);
  CHECK(cfg->pipes.max == 1024);
  CHECK(cfg->drain_timeout == milliseconds(10000));
  REQUIRE(cfg->routes.size() == 1);
  const RouteConfig& r = cfg->routes[0];
  CHECK(r.name == "app");
  CHECK(r.max_connections == 10000);
  CHECK(r.idle_timeout == milliseconds(0));
  CHECK(r.allow.empty());
  CHECK_FALSE(r.forward);
  REQUIRE(r.archive);
  const ArchiveConfig& a = *r.archive;
  CHECK(a.dir == fs::path(tmp.str()));
  CHECK(a.layout == Layout::PerConnection);
  CHECK(a.framing == Framing::Raw);
  CHECK(a.name.text() == "%Y/%m/%d/{route}-{peer}-{conn}-%H%M%S-{seq}.log");
  CHECK(a.name.usesPeer());
  CHECK(a.name.usesConn());
  CHECK_FALSE(a.localtime);
  CHECK(a.rotate.max_bytes == 256ull << 20);
  CHECK(a.rotate.interval == milliseconds(0));
  CHECK(a.retain.max_files == 0);
  CHECK(a.retain.max_age == milliseconds(0));
  CHECK(a.retain.max_bytes == 0);
  CHECK(a.compress == Compress::None);
  CHECK(a.fsync == FsyncPolicy::Never);
  CHECK(a.max_line == 1048576);
}

TEST_CASE("config: layout shared gets a default name without {peer} and {conn}", "[config]") {
  TempDir tmp;
  auto cfg = loadOk(withDir(std::string(kRoute) + "      layout: shared\n", tmp.str()));
  REQUIRE(cfg->routes[0].archive);
  CHECK(cfg->routes[0].archive->name.text() == "%Y/%m/%d/{route}-%H%M%S-{seq}.log");
  CHECK_FALSE(cfg->routes[0].archive->name.usesPeer());
  CHECK_FALSE(cfg->routes[0].archive->name.usesConn());
}

TEST_CASE("config: range limits are inclusive", "[config]") {
  TempDir tmp;
  auto cfg = loadOk(withDir(R"(pipes: { size: 4KiB, max: 0 }
drain_timeout: 0
routes:
  - name: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
    listen: 127.0.0.1:1
    max_connections: 10000000
    idle_timeout: 100ms
    archive:
      dir: @DIR@
      max_line: 64MiB
      rotate: { max_bytes: 4KiB, interval: 1s }
      retain: { max_files: 100000000, max_age: 1s, max_bytes: 1KiB }
  - name: b
    listen: 127.0.0.1:2
    max_connections: 1
    archive:
      dir: @DIR@
      max_line: 64B
      rotate: { max_bytes: 1024TiB }
      retain: { max_bytes: 1024TiB }
)",
                            tmp.str()));
  CHECK(cfg->pipes.size == 4096);
  CHECK(cfg->pipes.max == 0);
  CHECK(cfg->drain_timeout == milliseconds(0));
  const auto& a = cfg->routes[0];
  CHECK(a.name.size() == 64);
  CHECK(a.max_connections == 10000000);
  CHECK(a.idle_timeout == milliseconds(100));
  CHECK(a.archive->max_line == 64ull << 20);
  CHECK(a.archive->rotate.max_bytes == 4096);
  CHECK(a.archive->rotate.interval == milliseconds(1000));
  CHECK(a.archive->retain.max_files == 100000000);
  CHECK(a.archive->retain.max_age == milliseconds(1000));
  CHECK(a.archive->retain.max_bytes == 1024);
  const auto& b = cfg->routes[1];
  CHECK(b.max_connections == 1);
  CHECK(b.archive->max_line == 64);
  CHECK(b.archive->rotate.max_bytes == 1024ull << 40);
  CHECK(b.archive->retain.max_bytes == 1024ull << 40);

  auto big =
      loadOk(withDir("pipes: { size: 256MiB, max: 1000000 }\n" + std::string(kRoute), tmp.str()));
  CHECK(big->pipes.size == 256ull << 20);
  CHECK(big->pipes.max == 1000000);
}

TEST_CASE("config: the DESIGN.md example loads except its proxy route", "[config]") {
  TempDir tmp;
  const std::string yaml = withDir(
      R"(log:   { level: info, format: text }          # level: trace|debug|info|warn|error; format: text|json
admin: { listen: 127.0.0.1:9180 }             # optional: /metrics (Prometheus), /healthz
pipes: { size: 1MiB, max: 1024 }
drain_timeout: 10s                            # SIGTERM: stop accepting, finish in-flight bytes, then exit
routes:
  - name: app                                  # [A-Za-z0-9_-]+, unique
    listen: 127.0.0.1:5140                     # host:port, [v6]:port, or unix:/path
    max_connections: 10000                     # beyond: accept and close at once, counted
    idle_timeout: 5m                           # 0 = none
    allow: [127.0.0.0/8, "::1/128"]            # CIDR allow list; default: everyone
    archive:
      dir: @DIR@
      layout: per_connection                   # per_connection | shared
      framing: raw                             # raw | lines   (lines only matters for shared)
      name: "%Y/%m/%d/{route}-{peer}-{conn}-%H%M%S-{seq}.log"
      rotate:  { max_bytes: 256MiB, interval: 1h }
      retain:  { max_files: 0, max_age: 0, max_bytes: 0 }
      compress: none                           # none | gzip | zstd   (closed segments, off the event loop)
      fsync: never                             # never | on_close
  - name: web
    listen: "[::]:8443"
    forward:
      upstreams: [127.0.0.1:9443, 127.0.0.1:9444]
      balance: round_robin                     # round_robin | least_connections | source_hash
      connect_timeout: 3s
      proxy_protocol: off                      # off | v1 | v2 (header sent to the upstream)
)",
      tmp.str());
  // The whole example is valid, the proxy route included.
  auto full = loadOk(yaml);
  REQUIRE(full->routes.size() == 2);
  REQUIRE(full->routes[1].forward);
  CHECK(full->routes[1].forward->upstreams.size() == 2);
  CHECK(full->routes[1].forward->upstreams[1].text == "127.0.0.1:9444");
  CHECK(full->routes[1].forward->connect_timeout == milliseconds(3000));
  CHECK(full->routes[1].forward->proxy_protocol == ProxyProtocol::Off);
  CHECK_FALSE(full->routes[1].archive);

  std::string collect_only = yaml.substr(0, yaml.find("  - name: web"));
  auto cfg = loadOk(collect_only);
  CHECK(cfg->admin.listen->text == "127.0.0.1:9180");
  CHECK(cfg->routes.size() == 1);
  CHECK(cfg->routes[0].archive->rotate.interval == milliseconds(3600000));
}

TEST_CASE("config: YAML syntax errors", "[config][errors]") {
  expectError("log: {level: info\nroutes: []\n", {2, 7, "yaml", "end of map flow not found"});
  expectError("log:\n  level: info\n\tformat: text\n",
              {3, 1, "yaml", "illegal tab when looking for indentation"});
}

TEST_CASE("config: empty file, missing or empty routes", "[config][errors]") {
  expectError("", {1, 1, "routes", "config is empty: at least one route is needed"});
  expectError("# only a comment\n",
              {1, 1, "routes", "config is empty: at least one route is needed"});
  expectError("log: {level: info}\n", {1, 1, "routes", "missing: at least one route is needed"});
  expectError("routes: []\n", {1, 9, "routes", "expected a non-empty list of routes"});
  expectError("routes: app\n", {1, 9, "routes", "expected a non-empty list of routes"});
}

TEST_CASE("config: the top level must be a mapping", "[config][errors]") {
  auto r = load("- a\n- b\n");
  INFO(dump(r));
  REQUIRE(r.errors.size() == 1);
  const auto& e = r.errors[0];
  CHECK(e.line == 1);
  CHECK(e.column == 1);
  CHECK(e.key.empty());
  CHECK(e.format() ==
        "test.yaml:1:1: the top level must be a mapping of keys (log, pipes, routes, ...)");
}

TEST_CASE("config: unknown keys, top-level and nested", "[config][errors]") {
  TempDir tmp;
  expectError(withDir(std::string(kRoute) + "bogus: 1\n", tmp.str()), {6, 1, "bogus", kTopKeys});
  expectError(withDir("Routes: []\n" + std::string(kRoute), tmp.str()), {1, 1, "Routes", kTopKeys});
  expectError(withDir(std::string(kRoute) + "log: {level: info, colour: true}\n", tmp.str()),
              {6, 20, "log.colour", "unknown key (known here: level, format)"});
  expectError(withDir(std::string(kRoute) + "admin: {port: 9180}\n", tmp.str()),
              {6, 9, "admin.port", "unknown key (known here: listen, allow, auth, tls)"});
  expectError(withDir(std::string(kRoute) + "pipes:\n  count: 3\n", tmp.str()),
              {7, 3, "pipes.count", "unknown key (known here: size, max)"});
  expectError(withDir(std::string(kRoute) + "    timeout: 5s\n", tmp.str()),
              {6, 5, "routes[0].timeout",
               "unknown key (known here: name, listen, max_connections, idle_timeout, allow, "
               "accept_proxy, accept_proxy_timeout, udp_rcvbuf, archive, forward)"});
  expectError(withDir(std::string(kRoute) + "      dirs: /x\n", tmp.str()),
              {6, 7, "routes[0].archive.dirs",
               "unknown key (known here: dir, layout, framing, name, localtime, rotate, retain, "
               "compress, compress_level, fsync, max_line, output, oversize, manifest, "
               "on_publish)"});
  expectError(
      withDir(std::string(kRoute) + "      rotate: { max_bytes: 1MiB, every: 1h }\n", tmp.str()),
      {6, 34, "routes[0].archive.rotate.every", "unknown key (known here: max_bytes, interval)"});
  expectError(withDir(std::string(kRoute) + "      retain:\n        max_count: 3\n", tmp.str()),
              {7, 9, "routes[0].archive.retain.max_count",
               "unknown key (known here: max_files, max_age, max_bytes, require_published, "
               "unshipped)"});
}

TEST_CASE("config: duplicate keys in one mapping", "[config][errors]") {
  TempDir tmp;
  expectError(withDir("log:\n  level: info\n  level: debug\n" + std::string(kRoute), tmp.str()),
              {3, 3, "log.level", "duplicate key"});
}

TEST_CASE("config: a list where a single value is expected", "[config][errors]") {
  TempDir tmp;
  expectError(withDir(std::string(kRoute) + "drain_timeout: [10s]\n", tmp.str()),
              {6, 16, "drain_timeout", "expected a single value"});
  expectError(withDir(std::string(kRoute) + "drain_timeout:\n  - 10s\n", tmp.str()),
              {7, 3, "drain_timeout", "expected a single value"});
  expectError(withDir(std::string(kRoute) + "      layout: [shared]\n", tmp.str()),
              {6, 15, "routes[0].archive.layout", "expected a single value"});
  expectError(withDir(std::string(kRoute) + "      rotate: { max_bytes: [1, 2] }\n", tmp.str()),
              {6, 28, "routes[0].archive.rotate.max_bytes", "expected a single value"});
  expectError(
      withDir("routes:\n  - name: [a, b]\n    listen: 127.0.0.1:1\n    archive: {dir: @DIR@}\n",
              tmp.str()),
      {2, 11, "routes[0].name", "expected a single value"});
  expectError(withDir("routes:\n  - name: a\n    listen: {host: x}\n    archive: {dir: @DIR@}\n",
                      tmp.str()),
              {3, 13, "routes[0].listen", "expected a single value"});
}

TEST_CASE("config: a single value where a mapping or list is expected", "[config][errors]") {
  TempDir tmp;
  const std::string mapping = "expected a mapping (key: value)";
  expectError(withDir(std::string(kRoute) + "log: info\n", tmp.str()), {6, 6, "log", mapping});
  expectError(withDir(std::string(kRoute) + "pipes: 1MiB\n", tmp.str()), {6, 8, "pipes", mapping});
  expectError(withDir(std::string(kRoute) + "admin: [127.0.0.1:9180]\n", tmp.str()),
              {6, 8, "admin", mapping});
  expectError(withDir(std::string(kRoute) + "      rotate: 1h\n", tmp.str()),
              {6, 15, "routes[0].archive.rotate", mapping});
  expectError(withDir(std::string(kRoute) + "      retain: 10\n", tmp.str()),
              {6, 15, "routes[0].archive.retain", mapping});
  expectError("routes:\n  - name: a\n    listen: 127.0.0.1:1\n    archive: /var/x\n",
              {4, 14, "routes[0].archive", mapping});
  expectError("routes:\n  - app\n", {2, 5, "routes[0]", mapping});
  expectError(
      withDir(std::string(kRoute) + "    allow: 127.0.0.0/8\n", tmp.str()),
      {6, 12, "routes[0].allow", "expected a list of networks, e.g. [127.0.0.0/8, \"::1/128\"]"});
}

TEST_CASE("config: bad sizes", "[config][errors]") {
  TempDir tmp;
  expectError(withDir("pipes: { size: 1XB }\n" + std::string(kRoute), tmp.str()),
              {1, 16, "pipes.size", "unknown size unit 'XB' " + kSizeUnits});
  // The example of the brief: a nested size, pointing at its value.
  expectError(
      withDir(std::string(kRoute) + "      rotate:\n        max_bytes: 1XB\n", tmp.str()),
      {7, 20, "routes[0].archive.rotate.max_bytes", "unknown size unit 'XB' " + kSizeUnits});
  expectError(withDir(std::string(kRoute) + "      max_line: -1\n", tmp.str()),
              {6, 17, "routes[0].archive.max_line", "size must not be negative"});
  expectError(withDir(std::string(kRoute) + "      retain: { max_bytes: lots }\n", tmp.str()),
              {6, 28, "routes[0].archive.retain.max_bytes",
               "'lots' is not a size (expected e.g. 512, 64KiB, 1MiB, 2GiB)"});
  expectError(
      withDir(std::string(kRoute) + "      rotate: { max_bytes: 99999999999TiB }\n", tmp.str()),
      {6, 28, "routes[0].archive.rotate.max_bytes", "size '99999999999TiB' is too large"});
}

TEST_CASE("config: bad durations", "[config][errors]") {
  TempDir tmp;
  expectError(withDir(std::string(kRoute) + "drain_timeout: 10\n", tmp.str()),
              {6, 16, "drain_timeout", "duration '10' needs a unit (ms, s, m, h, d)"});
  expectError(withDir(std::string(kRoute) + "drain_timeout: -1s\n", tmp.str()),
              {6, 16, "drain_timeout", "duration must not be negative"});
  expectError(withDir(std::string(kRoute) + "      rotate: { interval: 1w }\n", tmp.str()),
              {6, 27, "routes[0].archive.rotate.interval",
               "unknown duration unit in '1w' (use ms, s, m, h, d)"});
  expectError(withDir(std::string(kRoute) + "      retain:\n        max_age: soon\n", tmp.str()),
              {7, 18, "routes[0].archive.retain.max_age",
               "'soon' is not a duration (expected e.g. 250ms, 10s, 5m, 1h, 2d)"});
  expectError(
      withDir("routes:\n  - name: a\n    listen: 127.0.0.1:1\n    idle_timeout: 5 min\n"
              "    archive: {dir: @DIR@}\n",
              tmp.str()),
      {4, 19, "routes[0].idle_timeout", "unknown duration unit in '5 min' (use ms, s, m, h, d)"});
}

TEST_CASE("config: out-of-range values", "[config][errors]") {
  TempDir tmp;
  expectErrors(
      withDir(R"(pipes:
  size: 1KiB
  max: 1000001
routes:
  - name: app
    listen: 127.0.0.1:5140
    max_connections: 0
    idle_timeout: 50ms
    archive:
      dir: @DIR@
      max_line: 32
      rotate:
        max_bytes: 4095
        interval: 999ms
      retain:
        max_files: 100000001
        max_age: 500ms
        max_bytes: 1023
)",
              tmp.str()),
      {
          {2, 9, "pipes.size", "1KiB is out of range (4.0KiB to 256.0MiB)"},
          {3, 8, "pipes.max", "1000001 is out of range (0 to 1000000)"},
          {7, 22, "routes[0].max_connections", "0 is out of range (1 to 10000000)"},
          {8, 19, "routes[0].idle_timeout", "50ms is too short (at least 100ms, or 0 for none)"},
          {11, 17, "routes[0].archive.max_line", "32 is out of range (64B to 64.0MiB)"},
          {13, 20, "routes[0].archive.rotate.max_bytes",
           "4095 is out of range (4.0KiB to 1024.0TiB, or 0 for none)"},
          {14, 19, "routes[0].archive.rotate.interval",
           "999ms is too short (at least 1s, or 0 for none)"},
          {16, 20, "routes[0].archive.retain.max_files",
           "100000001 is out of range (0 to 100000000)"},
          {17, 18, "routes[0].archive.retain.max_age",
           "500ms is too short (at least 1s, or 0 for none)"},
          {18, 20, "routes[0].archive.retain.max_bytes",
           "1023 is out of range (1.0KiB to 1024.0TiB, or 0 for none)"},
      });
  // One past the upper limits.
  expectErrors(withDir(R"(pipes: { size: 257MiB }
routes:
  - name: app
    listen: 127.0.0.1:5140
    max_connections: 10000001
    archive:
      dir: @DIR@
      max_line: 65MiB
      rotate: { max_bytes: 1025TiB }
)",
                       tmp.str()),
               {
                   {1, 16, "pipes.size", "257MiB is out of range (4.0KiB to 256.0MiB)"},
                   {5, 22, "routes[0].max_connections", "10000001 is out of range (1 to 10000000)"},
                   {8, 17, "routes[0].archive.max_line", "65MiB is out of range (64B to 64.0MiB)"},
                   {9, 28, "routes[0].archive.rotate.max_bytes",
                    "1025TiB is out of range (4.0KiB to 1024.0TiB, or 0 for none)"},
               });
}

TEST_CASE("config: counts must be whole numbers", "[config][errors]") {
  TempDir tmp;
  expectError(withDir("pipes: { max: lots }\n" + std::string(kRoute), tmp.str()),
              {1, 15, "pipes.max", "'lots' is not a whole number"});
  expectError(withDir("pipes: { max: -1 }\n" + std::string(kRoute), tmp.str()),
              {1, 15, "pipes.max", "'-1' is not a whole number"});
  expectError(withDir("pipes: { max: 1.5 }\n" + std::string(kRoute), tmp.str()),
              {1, 15, "pipes.max", "'1.5' is not a whole number"});
  // Far beyond the limit: refused (the message calls it "not a whole number").
  auto r = load(
      withDir(std::string(kRoute) + "      retain: { max_files: 1000000000000 }\n", tmp.str()));
  INFO(dump(r));
  REQUIRE(r.errors.size() == 1);
  CHECK_THAT(
      r.errors[0].format(),
      StartsWith(
          "test.yaml:6:28: routes[0].archive.retain.max_files: 1000000000000 is out of range"));
}

TEST_CASE("config: bad enum values", "[config][errors]") {
  TempDir tmp;
  expectErrors(
      withDir(R"(log:
  level: verbose
  format: xml
routes:
  - name: app
    listen: 127.0.0.1:5140
    archive:
      dir: @DIR@
      layout: mixed
      framing: json
      compress: lz4
      fsync: always
      localtime: maybe
)",
              tmp.str()),
      {
          {2, 10, "log.level", "'verbose' is not one of: trace, debug, info, warn, error"},
          {3, 11, "log.format", "'xml' is not one of: text, json"},
          {9, 15, "routes[0].archive.layout",
           "'mixed' is not one of: per_connection, shared, per_peer"},
          {10, 16, "routes[0].archive.framing",
           "'json' is not one of: raw, lines, octet_counted, auto"},
          {11, 17, "routes[0].archive.compress", "'lz4' is not one of: none, gzip, zstd"},
          {12, 14, "routes[0].archive.fsync", "'always' is not one of: never, on_close"},
          {13, 18, "routes[0].archive.localtime", "'maybe' is not one of: true, false, yes, no"},
      });
  // Enum values are case-sensitive.
  expectError(withDir("log: { level: Info }\n" + std::string(kRoute), tmp.str()),
              {1, 15, "log.level", "'Info' is not one of: trace, debug, info, warn, error"});
}

TEST_CASE("config: octet-counted framing, output and oversize", "[config]") {
  TempDir tmp;
  auto c =
      loadOk(withDir(std::string(kRoute) + "      framing: octet_counted\n      output: lines\n"
                                           "      oversize: close\n",
                     tmp.str()));
  CHECK(c->routes[0].archive->framing == Framing::OctetCounted);
  CHECK(c->routes[0].archive->output == RecordOutput::Lines);
  CHECK(c->routes[0].archive->oversize == Oversize::Close);
  auto d = loadOk(withDir(std::string(kRoute) + "      framing: auto\n", tmp.str()));
  CHECK(d->routes[0].archive->framing == Framing::Auto);
  CHECK(d->routes[0].archive->output == RecordOutput::AsReceived);
  CHECK(d->routes[0].archive->oversize == Oversize::Split);
}

TEST_CASE("config: output and oversize need octet-counted framing", "[config][errors]") {
  TempDir tmp;
  expectErrors(
      withDir(std::string(kRoute) +
                  "      framing: lines\n      output: lines\n      oversize: close\n",
              tmp.str()),
      {
          {7, 15, "routes[0].archive.output", "applies to framing: octet_counted or auto only"},
          {8, 17, "routes[0].archive.oversize",
           "applies to framing: octet_counted or auto only (lines are always split)"},
      });
  expectErrors(withDir(std::string(kRoute) + "      framing: octet_counted\n      output: json\n"
                                             "      oversize: truncate\n",
                       tmp.str()),
               {
                   {7, 15, "routes[0].archive.output", "'json' is not one of: as_received, lines"},
                   {8, 17, "routes[0].archive.oversize", "'truncate' is not one of: split, close"},
               });
}

TEST_CASE("config: route names", "[config][errors]") {
  TempDir tmp;
  const std::string rest = "    listen: 127.0.0.1:1\n    archive: {dir: @DIR@}\n";
  expectError(withDir("routes:\n  - name: my app\n" + rest, tmp.str()),
              {2, 11, "routes[0].name", "'my app' is not a valid name (1-64 of A-Z a-z 0-9 _ -)"});
  expectError(withDir("routes:\n  - name: a/b\n" + rest, tmp.str()),
              {2, 11, "routes[0].name", "'a/b' is not a valid name (1-64 of A-Z a-z 0-9 _ -)"});
  expectError(withDir("routes:\n  - name: ''\n" + rest, tmp.str()),
              {2, 11, "routes[0].name", "'' is not a valid name (1-64 of A-Z a-z 0-9 _ -)"});
  const std::string long_name(65, 'a');
  expectError(withDir("routes:\n  - name: " + long_name + "\n" + rest, tmp.str()),
              {2, 11, "routes[0].name",
               "'" + long_name + "' is not a valid name (1-64 of A-Z a-z 0-9 _ -)"});
}

TEST_CASE("config: duplicate route names", "[config][errors]") {
  TempDir tmp;
  expectError(withDir(R"(routes:
  - name: app
    listen: 127.0.0.1:5140
    archive: { dir: @DIR@ }
  - name: app
    listen: 127.0.0.1:5141
    archive: { dir: @DIR@ }
)",
                      tmp.str()),
              {5, 11, "routes[1].name", "duplicate route name 'app': names must be unique"});
}

TEST_CASE("config: duplicate listen addresses, whatever their spelling", "[config][errors]") {
  TempDir tmp;
  expectError(withDir(R"(routes:
  - name: a
    listen: 0.0.0.0:5140
    archive: { dir: @DIR@ }
  - name: b
    listen: "*:5140"
    archive: { dir: @DIR@ }
)",
                      tmp.str()),
              {6, 13, "routes[1].listen", "address 0.0.0.0:5140 is already used by another route"});
  expectError(withDir(R"(routes:
  - name: a
    listen: "[::1]:80"
    archive: { dir: @DIR@ }
  - name: b
    listen: "[0:0::1]:80"
    archive: { dir: @DIR@ }
)",
                      tmp.str()),
              {6, 13, "routes[1].listen", "address [::1]:80 is already used by another route"});
  // admin.listen may not take a route's address either.
  expectError(withDir(std::string(kRoute) + "admin:\n  listen: 127.0.0.1:5140\n", tmp.str()),
              {7, 11, "admin.listen", "address 127.0.0.1:5140 is already used by a route"});
}

TEST_CASE("config: bad CIDR in allow lists", "[config][errors]") {
  TempDir tmp;
  expectErrors(withDir(R"(admin:
  listen: 127.0.0.1:9180
  allow: [localhost]
routes:
  - name: app
    listen: 127.0.0.1:5140
    allow: [127.0.0.0/8, 10.1.2.3/8, "::1/129"]
    archive:
      dir: @DIR@
)",
                       tmp.str()),
               {
                   {3, 11, "admin.allow[0]",
                    "'localhost' is not an IPv4 or IPv6 network (expected e.g. 10.0.0.0/8, "
                    "::1/128)"},
                   {7, 26, "routes[0].allow[1]", "'10.1.2.3/8' has host bits set beyond /8"},
                   {7, 38, "routes[0].allow[2]", "prefix /129 is longer than 128 bits"},
               });
  expectError(withDir(std::string(kRoute) + "    allow:\n      - [10.0.0.0/8]\n", tmp.str()),
              {7, 9, "routes[0].allow[0]", "expected a single value"});
}

TEST_CASE("config: bad listen addresses", "[config][errors]") {
  TempDir tmp;
  const std::string rest = "    archive: {dir: @DIR@}\n";
  auto route = [&](const std::string& listen) {
    return withDir("routes:\n  - name: a\n    listen: " + listen + "\n" + rest, tmp.str());
  };
  expectError(route("127.0.0.1"),
              {3, 13, "routes[0].listen",
               "'127.0.0.1' has no port (expected host:port, [v6]:port or unix:/path)"});
  expectError(route("5140"), {3, 13, "routes[0].listen",
                              "'5140' has no port (expected host:port, [v6]:port or unix:/path)"});
  expectError(route("\"::1:80\""), {3, 13, "routes[0].listen",
                                    "IPv6 addresses must be written in brackets, e.g. [::1]:5140"});
  expectError(route("127.0.0.1:70000"),
              {3, 13, "routes[0].listen", "port 70000 is out of range (0-65535)"});
  expectError(route("\"unix:\""),
              {3, 13, "routes[0].listen", "unix: needs a path, e.g. unix:/run/spliced.sock"});
  expectError(
      withDir(std::string(kRoute) + "admin: { listen: \"9180\" }\n", tmp.str()),
      {6, 18, "admin.listen", "'9180' has no port (expected host:port, [v6]:port or unix:/path)"});
}

TEST_CASE("config: missing name, listen, archive and dir", "[config][errors]") {
  TempDir tmp;
  expectError(withDir("routes:\n  - listen: 127.0.0.1:1\n    archive: {dir: @DIR@}\n", tmp.str()),
              {2, 5, "routes[0].name", "missing: every route needs a name"});
  expectError(withDir("routes:\n  - name: a\n    archive: {dir: @DIR@}\n", tmp.str()),
              {2, 5, "routes[0].listen", "missing: every route needs a listen address"});
  expectError(
      "routes:\n  - name: a\n    listen: 127.0.0.1:1\n",
      {2, 5, "routes[0]", "a route needs an archive block (collect) or a forward block (proxy)"});
  expectError("routes:\n  - name: a\n    listen: 127.0.0.1:1\n    archive:\n      layout: shared\n",
              {5, 7, "routes[0].archive.dir", "missing: the directory segments are written to"});
  expectError("routes:\n  - name: a\n    listen: 127.0.0.1:1\n    archive: { layout: shared }\n",
              {4, 14, "routes[0].archive.dir", "missing: the directory segments are written to"});
  // All three at once on the same route.
  expectErrors("routes:\n  - max_connections: 5\n",
               {
                   {2, 5, "routes[0].name", "missing: every route needs a name"},
                   {2, 5, "routes[0].listen", "missing: every route needs a listen address"},
                   {2, 5, "routes[0]",
                    "a route needs an archive block (collect) or a forward block (proxy)"},
               });
}

TEST_CASE("config: forward routes and their checks", "[config][errors]") {
  TempDir tmp;
  auto cfg = loadOk(R"(routes:
  - name: web
    listen: "[::]:8443"
    accept_proxy: true
    accept_proxy_timeout: 2s
    forward:
      upstreams: [127.0.0.1:9443, "[::1]:9444", unix:/run/app.sock]
      balance: source_hash
      connect_timeout: 250ms
      proxy_protocol: v2
      retries: 1
      max_fails: 5
      fail_timeout: 30s
      health_check: { interval: 1s, timeout: 500ms, fall: 2, rise: 4 }
)");
  const RouteConfig& r = cfg->routes[0];
  CHECK(r.accept_proxy);
  CHECK(r.accept_proxy_timeout == milliseconds(2000));
  REQUIRE(r.forward);
  const ForwardConfig& f = *r.forward;
  REQUIRE(f.upstreams.size() == 3);
  CHECK(f.upstreams[1].text == "[::1]:9444");
  CHECK(f.upstreams[2].isUnix());
  CHECK(f.balance == Balance::SourceHash);
  CHECK(f.connect_timeout == milliseconds(250));
  CHECK(f.proxy_protocol == ProxyProtocol::V2);
  CHECK(f.retries == 1);
  CHECK(f.max_fails == 5);
  CHECK(f.fail_timeout == milliseconds(30000));
  REQUIRE(f.health_check);
  CHECK(f.health_check->interval == milliseconds(1000));
  CHECK(f.health_check->timeout == milliseconds(500));
  CHECK(f.health_check->fall == 2);
  CHECK(f.health_check->rise == 4);
  // Defaults.
  auto d = loadOk(
      "routes:\n  - name: w\n    listen: 127.0.0.1:1\n    forward: { upstreams: "
      "[127.0.0.1:2] }\n");
  CHECK(d->routes[0].forward->retries == 2);
  CHECK(d->routes[0].forward->max_fails == 3);
  CHECK(d->routes[0].forward->fail_timeout == milliseconds(10000));
  CHECK_FALSE(d->routes[0].forward->health_check);
  CHECK_FALSE(d->routes[0].accept_proxy);

  // Each connection's chain shipped on its own upstream connection (layout: per_connection).
  auto per_conn = loadOk(withDir(R"(routes:
  - name: ship
    listen: 127.0.0.1:5140
    archive: { dir: @DIR@ }
    forward:
      upstreams: [127.0.0.1:9443]
)",
                                 tmp.str()));
  CHECK(per_conn->routes[0].archive->layout == Layout::PerConnection);
  expectError(withDir(R"(routes:
  - name: ship
    listen: udp:127.0.0.1:5140
    archive:
      dir: @DIR@
      layout: per_peer
    forward:
      upstreams: [127.0.0.1:9443]
)",
                      tmp.str()),
              {6, 15, "routes[0].archive.layout",
               "shipping (archive and forward together) takes layout: shared or per_connection"});
  // A shipping route (archive and forward together), its defaults and its own keys.
  auto ship = loadOk(withDir(R"(routes:
  - name: ship
    listen: 127.0.0.1:5140
    archive: { dir: @DIR@, layout: shared, retain: { max_files: 3, unshipped: drop } }
    forward: { upstreams: [127.0.0.1:9443], max_lag: 5m, ack_timeout: 2s }
)",
                             tmp.str()));
  REQUIRE(ship->routes[0].archive);
  REQUIRE(ship->routes[0].forward);
  CHECK(ship->routes[0].forward->checkpoint_interval == milliseconds(1000));
  CHECK(ship->routes[0].forward->max_lag == milliseconds(300000));
  CHECK(ship->routes[0].forward->ack_timeout == milliseconds(2000));
  CHECK(ship->routes[0].archive->retain.drop_unshipped);
  expectError(withDir(R"(routes:
  - name: app
    listen: 127.0.0.1:5140
    archive:
      dir: @DIR@
      retain: { unshipped: keep }
)",
                      tmp.str()),
              {6, 28, "routes[0].archive.retain.unshipped",
               "applies to a shipping route (archive and forward together) only"});
  expectErrors(
      R"(routes:
  - name: web
    listen: 127.0.0.1:1
    forward:
      upstreams: [127.0.0.1]
      balance: random
      connect_timeout: 0
      proxy_protocol: v3
      retry: 2
      health_check: { interval: 1s, timeout: 2s, fall: 0 }
)",
      {
          {9, 7, "routes[0].forward.retry",
           "unknown key (known here: upstreams, balance, connect_timeout, "
           "proxy_protocol, retries, max_fails, fail_timeout, health_check, "
           "checkpoint_interval, max_lag, ack_timeout)"},
          {5, 19, "routes[0].forward.upstreams[0]",
           "'127.0.0.1' has no port (expected host:port, [v6]:port or unix:/path)"},
          {6, 16, "routes[0].forward.balance",
           "'random' is not one of: round_robin, least_connections, source_hash"},
          {7, 24, "routes[0].forward.connect_timeout", "0 is too short (at least 1ms)"},
          {10, 56, "routes[0].forward.health_check.fall", "0 is out of range (1 to 100)"},
          {10, 21, "routes[0].forward.health_check.timeout", "must not be longer than interval"},
          {8, 23, "routes[0].forward.proxy_protocol", "'v3' is not one of: off, v1, v2"},
      });
}

TEST_CASE("config: {peer}, {peer_port} and {conn} are refused with layout shared",
          "[config][errors]") {
  TempDir tmp;
  const std::string message =
      "{peer}, {peer_port} and {conn} have no meaning with layout: shared (one chain for all "
      "connections)";
  expectError(withDir(std::string(kRoute) + "      name: \"x/{peer}.log\"\n      layout: shared\n",
                      tmp.str()),
              {6, 13, "routes[0].archive.name", message});
  expectError(withDir(std::string(kRoute) + "      layout: shared\n      name: \"{conn}.log\"\n",
                      tmp.str()),
              {7, 13, "routes[0].archive.name", message});
  expectError(withDir(std::string(kRoute) + "      layout: shared\n      name: \"{peer_port}\"\n",
                      tmp.str()),
              {7, 13, "routes[0].archive.name", message});
  // The same names are fine per connection ({seq} added: rotation is on by default).
  auto cfg = loadOk(withDir(
      std::string(kRoute) + "      name: \"{peer}-{peer_port}-{conn}-{seq}\"\n", tmp.str()));
  CHECK(cfg->routes[0].archive->name.text() == "{peer}-{peer_port}-{conn}-{seq}");
}

TEST_CASE("config: bad name templates", "[config][errors]") {
  TempDir tmp;
  expectError(withDir(std::string(kRoute) + "      name: /abs/{route}.log\n", tmp.str()),
              {6, 13, "routes[0].archive.name", "name must be relative to the archive dir"});
  expectError(withDir(std::string(kRoute) + "      name: \"{host}.log\"\n", tmp.str()),
              {6, 13, "routes[0].archive.name",
               "unknown placeholder '{host}' in name (known: {route} {peer} {peer_port} {conn} "
               "{seq} {pid})"});
  expectError(withDir(std::string(kRoute) + "      name: \"%Q.log\"\n", tmp.str()),
              {6, 13, "routes[0].archive.name", "unsupported strftime code '%Q' in name"});
  expectError(withDir(std::string(kRoute) + "      name: ../{route}.log\n", tmp.str()),
              {6, 13, "routes[0].archive.name",
               "name '../{route}.log' expands to '../route.log', which is not inside the archive "
               "dir"});
}

TEST_CASE("config: an archive dir that cannot be created", "[config][errors]") {
  TempDir tmp;
  const std::string file = tmp.str() + "/file";
  std::ofstream(file) << "x";
  REQUIRE(fs::is_regular_file(file));
  auto route = [](const std::string& dir) {
    return "routes:\n  - name: a\n    listen: 127.0.0.1:1\n    archive:\n      dir: " + dir + "\n";
  };
  expectError(route(file + "/sub"),
              {5, 12, "routes[0].archive.dir",
               "cannot create '" + file + "/sub': '" + file + "' is not a directory"});
  expectError(route(file + "/a/b/c"),
              {5, 12, "routes[0].archive.dir",
               "cannot create '" + file + "/a/b/c': '" + file + "' is not a directory"});
  expectError(route(file),
              {5, 12, "routes[0].archive.dir", "'" + file + "' exists and is not a directory"});
  expectError(route("''"), {5, 12, "routes[0].archive.dir", "must not be empty"});

  // A directory that does not exist yet under a writable one is fine (created at start-up).
  auto cfg = loadOk(route(tmp.str() + "/new/deeper"));
  CHECK(cfg->routes[0].archive->dir == fs::path(tmp.str() + "/new/deeper"));
  CHECK_FALSE(fs::exists(tmp.path() / "new"));
}

TEST_CASE("config: an archive dir under a read-only directory", "[config][errors]") {
  if (::geteuid() == 0) {
    WARN("running as root: permission checks always pass; skipped");
    return;
  }
  TempDir tmp;
  const std::string ro = tmp.str() + "/ro";
  REQUIRE(::mkdir(ro.c_str(), 0555) == 0);
  auto route = [](const std::string& dir) {
    return "routes:\n  - name: a\n    listen: 127.0.0.1:1\n    archive:\n      dir: " + dir + "\n";
  };
  expectError(route(ro + "/x"), {5, 12, "routes[0].archive.dir",
                                 "cannot create '" + ro + "/x': '" + ro + "' is not writable"});
  expectError(route(ro),
              {5, 12, "routes[0].archive.dir", "directory '" + ro + "' is not writable"});
  ::chmod(ro.c_str(), 0755);
}

TEST_CASE("config: several errors in one file are all reported", "[config][errors]") {
  TempDir tmp;
  expectErrors(
      withDir(R"(log:
  level: loud
pipes:
  size: 1XB
routes:
  - name: app
    listen: 127.0.0.1
    archive:
      dir: @DIR@
      layout: mixed
  - listen: 127.0.0.1:5141
    archive: { fsync: sometimes, dir: @DIR@ }
bogus: 1
)",
              tmp.str()),
      {
          {13, 1, "bogus", kTopKeys},
          {2, 10, "log.level", "'loud' is not one of: trace, debug, info, warn, error"},
          {4, 9, "pipes.size", "unknown size unit 'XB' " + kSizeUnits},
          {7, 13, "routes[0].listen",
           "'127.0.0.1' has no port (expected host:port, [v6]:port or unix:/path)"},
          {10, 15, "routes[0].archive.layout",
           "'mixed' is not one of: per_connection, shared, per_peer"},
          {11, 5, "routes[1].name", "missing: every route needs a name"},
          {12, 23, "routes[1].archive.fsync", "'sometimes' is not one of: never, on_close"},
      });
}

TEST_CASE("config: loadConfigFile names the file in errors", "[config]") {
  TempDir tmp;
  const std::string path = tmp.str() + "/spliced.yaml";
  std::ofstream(path) << withDir(std::string(kRoute) + "drain_timeout: 5s\n", tmp.str());
  auto ok = loadConfigFile(path);
  INFO(dump(ok));
  REQUIRE(ok.config);
  CHECK(ok.config->source == path);
  CHECK(ok.config->drain_timeout == milliseconds(5000));

  std::ofstream(path) << withDir(std::string(kRoute) + "drain_timeout: 5\n", tmp.str());
  auto bad = loadConfigFile(path);
  REQUIRE(bad.errors.size() == 1);
  CHECK(bad.errors[0].format() ==
        path + ":6:16: drain_timeout: duration '5' needs a unit (ms, s, m, h, d)");

  auto missing = loadConfigFile(tmp.str() + "/nope.yaml");
  CHECK_FALSE(missing.config);
  REQUIRE(missing.errors.size() == 1);
  CHECK(missing.errors[0].line == 0);
  CHECK(missing.errors[0].format() ==
        tmp.str() + "/nope.yaml: cannot read config: No such file or directory");
}

TEST_CASE("config: checkDirUsable", "[config]") {
  TempDir tmp;
  CHECK(checkDirUsable(tmp.path()).empty());
  CHECK(checkDirUsable(tmp.path() / "a" / "b").empty());
  const std::string file = tmp.str() + "/f";
  std::ofstream(file) << "x";
  CHECK(checkDirUsable(file) == "'" + file + "' exists and is not a directory");
  CHECK(checkDirUsable(file + "/d") ==
        "cannot create '" + file + "/d': '" + file + "' is not a directory");
}

// A key written with no value ("name:") is a null node, which yaml-cpp marks at the *next* token.
// The error then names the line after the key (or a line past the end of the file), not the key's.
TEST_CASE("config: an empty value is reported on its own line", "[config][errors]") {
  TempDir tmp;
  auto r = load(withDir(
      "routes:\n  - name:\n    listen: 127.0.0.1:1\n    archive:\n      dir: @DIR@\n", tmp.str()));
  INFO(dump(r));
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].key == "routes[0].name");
  CHECK(r.errors[0].line == 2);  // actual: 3 (the "listen:" line)

  r = load(withDir(std::string(kRoute) + "      layout:\n", tmp.str()));
  INFO(dump(r));
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].key == "routes[0].archive.layout");
  CHECK(r.errors[0].line == 6);  // actual: 7, past the last line of the file
}

// When more than one earlier holder of an address exists (two routes on it already), a clash is
// reported once per earlier holder instead of once: routes[2].listen and admin.listen get the same
// error twice.
TEST_CASE("config: a listen clash is reported once per key", "[config][errors]") {
  TempDir tmp;
  auto count = [](const ConfigResult& r, const std::string& key) {
    int n = 0;
    for (const auto& e : r.errors) n += e.key == key;
    return n;
  };
  auto r = load(withDir(R"(routes:
  - { name: a, listen: "127.0.0.1:5140", archive: { dir: @DIR@ } }
  - { name: b, listen: "127.0.0.1:5140", archive: { dir: @DIR@ } }
  - { name: c, listen: "127.0.0.1:5140", archive: { dir: @DIR@ } }
)",
                        tmp.str()));
  INFO(dump(r));
  CHECK(count(r, "routes[1].listen") == 1);
  CHECK(count(r, "routes[2].listen") == 1);  // actual: 2, identical
  CHECK(r.errors.size() == 2);               // actual: 3

  r = load(withDir(R"(routes:
  - name: a
    listen: 127.0.0.1:5140
    archive: { dir: @DIR@ }
  - name: b
    listen: 127.0.0.1:5140
    archive: { dir: @DIR@ }
admin:
  listen: 127.0.0.1:5140
)",
                   tmp.str()));
  INFO(dump(r));
  CHECK(count(r, "routes[1].listen") == 1);
  CHECK(count(r, "admin.listen") == 1);  // actual: 2, identical
  CHECK(r.errors.size() == 2);           // actual: 3
}

TEST_CASE("config: durations beyond ten years are refused", "[config][errors]") {
  TempDir tmp;
  // 1000000d would overflow the clock arithmetic (and once deleted every segment as too old).
  auto r = load(withDir(R"(routes:
  - name: app
    listen: 127.0.0.1:5140
    archive:
      dir: @DIR@
      retain: { max_age: 1000000d }
      rotate: { interval: 3661d }
)",
                        tmp.str()));
  REQUIRE(r.errors.size() == 2);
  CHECK(r.errors[0].key == "routes[0].archive.rotate.interval");
  CHECK(r.errors[0].message == "3661d is too long (at most 3660d; 0 means none)");
  CHECK(r.errors[1].key == "routes[0].archive.retain.max_age");
  CHECK(r.errors[1].message == "1000000d is too long (at most 3660d; 0 means none)");
  auto ok = load(withDir(R"(routes:
  - name: app
    listen: 127.0.0.1:5140
    archive: { dir: @DIR@, retain: { max_age: 3650d } }
)",
                         tmp.str()));
  CHECK(ok.errors.empty());
}

TEST_CASE("config: a leading comma is an error, not a hang", "[config][errors]") {
  // yaml-cpp 0.7's LoadAll() never returns on this input (found by fuzz_config).
  auto r = load(",\n");
  REQUIRE_FALSE(r.errors.empty());
  CHECK_FALSE(r.config);
}

TEST_CASE("config: control characters in a name template are refused at the name",
          "[config][errors]") {
  TempDir tmp;
  for (std::string esc : {"\\t", "\\x01", "\\e", "\\x7f", "\\r"}) {
    const std::string name_line = "      name: \"a" + esc + "b-{seq}.log\"\n";
    expectError(withDir(kRoute + name_line, tmp.str()),
                {6, 13, "routes[0].archive.name", "name contains a control character"});
  }
}

TEST_CASE("config: a name part longer than NAME_MAX is refused at the name", "[config][errors]") {
  TempDir tmp;
  const std::string part = std::string(300, 'n');
  expectError(
      withDir(std::string(kRoute) + "      name: " + part + "/{seq}.log\n", tmp.str()),
      {6, 13, "routes[0].archive.name",
       "part '" + part + "' of the name can expand to 300 bytes, more than NAME_MAX (255)"});
}

TEST_CASE("config: a name without {seq} is refused while rotation is on", "[config][errors]") {
  TempDir tmp;
  const std::string message =
      "has no {seq} while rotation is on: each rotation would have to probe for a free "
      "numeric suffix (at most 9,999); add {seq}, or set rotate.max_bytes and "
      "rotate.interval to 0";
  // rotate.max_bytes is 256MiB by default.
  expectError(withDir(std::string(kRoute) + "      name: \"{route}-{conn}.log\"\n", tmp.str()),
              {6, 13, "routes[0].archive.name", message});
  expectError(withDir(std::string(kRoute) + "      layout: shared\n      name: \"{route}.log\"\n"
                                            "      rotate: { max_bytes: 0, interval: 1h }\n",
                      tmp.str()),
              {7, 13, "routes[0].archive.name", message});
  // With rotation off, a name without {seq} is fine (one segment per connection, or one for all).
  auto cfg = loadOk(withDir(std::string(kRoute) + "      name: \"{route}-{conn}.log\"\n"
                                                  "      rotate: { max_bytes: 0, interval: 0 }\n",
                            tmp.str()));
  CHECK_FALSE(cfg->routes[0].archive->name.usesSeq());
  loadOk(withDir(std::string(kRoute) + "      layout: shared\n      name: \"{route}.log\"\n"
                                       "      rotate: { max_bytes: 0 }\n",
                 tmp.str()));
  // A name already refused for another reason gets that one error only.
  expectError(withDir(std::string(kRoute) + "      layout: shared\n      name: \"{conn}.log\"\n",
                      tmp.str()),
              {7, 13, "routes[0].archive.name",
               "{peer}, {peer_port} and {conn} have no meaning with layout: shared (one chain for "
               "all connections)"});
}

TEST_CASE("config: a unix socket in a directory that does not exist", "[config][errors]") {
  TempDir tmp;
  const std::string missing = tmp.str() + "/missing";
  expectErrors(withDir("admin:\n  listen: unix:" + missing + "/admin.sock\n" + kRoute +
                           "  - name: b\n    listen: unix:" + missing +
                           "/deeper/b.sock\n"
                           "    archive: { dir: @DIR@/b }\n",
                       tmp.str()),
               {{2, 11, "admin.listen", "directory " + missing + " does not exist"},
                {9, 13, "routes[1].listen", "directory " + missing + "/deeper does not exist"}});
  // A file where the directory should be.
  std::ofstream(tmp.str() + "/file") << "x";
  expectError(withDir(std::string("routes:\n  - name: a\n    listen: unix:") + tmp.str() +
                          "/file/a.sock\n    archive: { dir: @DIR@ }\n",
                      tmp.str()),
              {3, 13, "routes[0].listen", tmp.str() + "/file is not a directory"});
  // An existing directory is fine (the socket itself is created at start-up).
  loadOk(withDir(std::string("routes:\n  - name: a\n    listen: unix:") + tmp.str() +
                     "/a.sock\n    archive: { dir: @DIR@ }\n",
                 tmp.str()));
}

TEST_CASE("config: an archive dir on a pseudo or read-only filesystem", "[config][errors]") {
  auto route = [](const std::string& dir) {
    return "routes:\n  - name: a\n    listen: 127.0.0.1:1\n    archive:\n      dir: " + dir + "\n";
  };
  expectError(route("/proc/nope"),
              {5, 12, "routes[0].archive.dir",
               "cannot create '/proc/nope': '/proc' is on a proc filesystem, where files cannot "
               "be created"});
  expectError(route("/proc/self/x/y"),
              {5, 12, "routes[0].archive.dir",
               "cannot create '/proc/self/x/y': '/proc/self' is on a proc filesystem, where files "
               "cannot be created"});
  expectError(route("/sys/nope"),
              {5, 12, "routes[0].archive.dir",
               "cannot create '/sys/nope': '/sys' is on a sysfs filesystem, where files cannot be "
               "created"});
  CHECK(checkDirUsable("/proc") ==
        "directory '/proc' is on a proc filesystem, where files cannot be created");
}

TEST_CASE("config: manifest and on_publish keys", "[config][errors]") {
  TempDir tmp;
  {
    ConfigResult r = load(withDir(R"(routes:
  - name: app
    listen: 127.0.0.1:5140
    archive:
      dir: @DIR@
      manifest: { hash: sha256 }
      on_publish: { exec: [rclone, copy, "{path}", "/backup/{route}/{name}"], timeout: 5m, concurrency: 4 }
      retain: { max_files: 10, require_published: true }
)",
                                  tmp.str()));
    INFO((r.errors.empty() ? "" : r.errors[0].format()));
    REQUIRE(r.errors.empty());
    const ArchiveConfig& a = *r.config->routes[0].archive;
    CHECK(a.manifest.hash == ManifestHash::Sha256);
    CHECK(a.on_publish.exec ==
          std::vector<std::string>{"rclone", "copy", "{path}", "/backup/{route}/{name}"});
    CHECK(a.on_publish.timeout == std::chrono::minutes(5));
    CHECK(a.on_publish.concurrency == 4);
    CHECK(a.retain.require_published);
  }
  {
    ConfigResult r = load(withDir(std::string(kRoute), tmp.str()));
    REQUIRE(r.errors.empty());
    const ArchiveConfig& a = *r.config->routes[0].archive;
    CHECK(a.manifest.hash == ManifestHash::Xxh3);  // the default
    CHECK_FALSE(a.on_publish.enabled());
  }
  expectErrors(
      withDir(R"(routes:
  - name: app
    listen: 127.0.0.1:5140
    archive:
      dir: @DIR@
      manifest: { hash: md5 }
      on_publish: { exec: [] }
)",
              tmp.str()),
      {
          {6, 25, "routes[0].archive.manifest.hash", "'md5' is not one of: sha256, xxh3, none"},
          {7, 27, "routes[0].archive.on_publish.exec",
           "expected a non-empty list: the program and its arguments, e.g. [rclone, "
           "copy, \"{path}\", \"remote:bucket\"]"},
      });
  expectError(withDir(R"(routes:
  - name: app
    listen: 127.0.0.1:5140
    archive:
      dir: @DIR@
      on_publish: { exec: [cp, "{file}", /x] }
)",
                      tmp.str()),
              {6, 32, "routes[0].archive.on_publish.exec[1]",
               "\"{file}\" has an unknown placeholder: only {path}, {name} and {route} are "
               "replaced"});
  expectError(withDir(R"(routes:
  - name: app
    listen: 127.0.0.1:5140
    archive:
      dir: @DIR@
      on_publish: { timeout: 10s }
)",
                      tmp.str()),
              {6, 19, "routes[0].archive.on_publish.exec",
               "missing: the command to run for each published segment"});
  expectError(withDir(R"(routes:
  - name: app
    listen: 127.0.0.1:5140
    archive:
      dir: @DIR@
      retain: { max_files: 3, require_published: true }
)",
                      tmp.str()),
              {6, 50, "routes[0].archive.retain.require_published",
               "needs archive.on_publish (a command whose success marks a segment published)"});
}

TEST_CASE("config: admin.auth and admin.tls", "[config][admin]") {
  TempDir tmp;
  const std::string users = tmp.str() + "/users";
  {
    std::ofstream f(users);
    // htpasswd -nbB -C 4 alice 's3cret:x'
    f << "alice:$2y$04$LZ0p4KrbuhmqK5yM0eh9B.4iu8/8TJupUWFR.N1g7p6yN1M2Mj/Ce\n";
  }
  ConfigPtr c = loadOk(withDir(std::string(kRoute) + "admin:\n  listen: 127.0.0.1:0\n  auth: " +
                                   "{ basic_file: " + users + " }\n",
                               tmp.str()));
  REQUIRE(c->admin.auth);
  CHECK(c->admin.auth->basic_file == users);
  CHECK(c->admin.auth->open == std::vector<std::string>{"/metrics", "/healthz"});
  CHECK_FALSE(c->admin.tls);
  c = loadOk(withDir(std::string(kRoute) + "admin:\n  listen: 127.0.0.1:0\n  auth: " +
                         "{ basic_file: " + users + ", open: [] }\n",
                     tmp.str()));
  CHECK(c->admin.auth->open.empty());

  const std::string head = std::string(kRoute) + "admin:\n  listen: 127.0.0.1:0\n";
  expectError(withDir(head + "  auth: { open: [/metrics] }\n", tmp.str()),
              {8, 9, "admin.auth.basic_file", "missing: the htpasswd file of the admin users"});
  expectError(
      withDir(head + "  auth: { basic_file: " + users + ", open: [/archive/app/] }\n", tmp.str()),
      {8, 32 + static_cast<int>(users.size()), "admin.auth.open[0]",
       "archive paths cannot be left open: they serve archived bytes"});
  {
    std::ofstream f(users, std::ios::app);
    f << "bob:$apr1$piXYS5Hh$Rt2q/3CUQSO0jMt.HFmYi0\n";
  }
  expectError(
      withDir(head + "  auth: { basic_file: " + users + " }\n", tmp.str()),
      {8, 23, "admin.auth.basic_file",
       users + ":2: user bob: Apache MD5 ($apr1$, htpasswd's default) is not supported: "
               "make the entry with `htpasswd -B` (bcrypt) or `htpasswd -5` (sha512-crypt)"});
  expectError(withDir(head + "  tls: { cert: /nonexistent/c.pem }\n", tmp.str()),
              {8, 8, "admin.tls.key", "missing: admin.tls needs cert and key (PEM files)"});
  expectError(
      withDir(head + "  tls: { cert: /nonexistent/c.pem, key: /nonexistent/k.pem }\n", tmp.str()),
      {8, 8, "admin.tls",
       "cannot read the TLS certificate /nonexistent/c.pem: No such file or directory"});
  expectError(withDir(head + "  tls: { cert: " + users + ", key: " + users + " }\n", tmp.str()),
              {8, 8, "admin.tls",
               "the TLS certificate " + users + " is not a usable PEM certificate: " +
                   "error:0480006C:PEM routines::no start line"});
}

TEST_CASE("config: udp: routes default to layout shared, framing lines, udp_rcvbuf 4MiB",
          "[config]") {
  TempDir tmp;
  const std::string udp =
      "routes:\n"
      "  - name: app\n"
      "    listen: udp:127.0.0.1:5140\n"
      "    archive:\n"
      "      dir: @DIR@\n";
  auto c = loadOk(withDir(udp, tmp.str()));
  const RouteConfig& r = c->routes[0];
  CHECK(r.listen.isUdp());
  CHECK(r.udp_rcvbuf == 4 * kMiB);
  CHECK(r.archive->layout == Layout::Shared);
  CHECK(r.archive->framing == Framing::Lines);
  CHECK_FALSE(r.archive->name.usesPeer());
  auto p = loadOk(withDir(
      "routes:\n  - name: app\n    listen: \"udp:[::1]:5140\"\n    udp_rcvbuf: 16MiB\n"
      "    archive:\n      dir: @DIR@\n      layout: per_peer\n      framing: octet_counted\n",
      tmp.str()));
  CHECK(p->routes[0].udp_rcvbuf == 16 * kMiB);
  CHECK(p->routes[0].archive->layout == Layout::PerPeer);
  CHECK(p->routes[0].archive->framing == Framing::OctetCounted);
  CHECK(p->routes[0].archive->name.usesPeer());  // the per-connection default name
  // A TCP and a UDP route may share a port number.
  loadOk(withDir(std::string(kRoute) +
                     "  - name: udp\n    listen: udp:127.0.0.1:5140\n    archive: {dir: @DIR@}\n",
                 tmp.str()));
}

TEST_CASE("config: what a udp: route refuses", "[config][errors]") {
  TempDir tmp;
  expectErrors(withDir("routes:\n  - name: app\n    listen: udp:127.0.0.1:5140\n"
                       "    accept_proxy: true\n    udp_rcvbuf: 1KiB\n"
                       "    archive:\n      dir: @DIR@\n      layout: per_connection\n"
                       "      framing: auto\n",
                       tmp.str()),
               {
                   {4, 19, "routes[0].accept_proxy",
                    "has no meaning on a udp: listener (datagrams carry no PROXY header)"},
                   {5, 17, "routes[0].udp_rcvbuf", "1KiB is out of range (4.0KiB to 1.0GiB)"},
                   {8, 15, "routes[0].archive.layout",
                    "a udp: listener has no connections: use shared (one chain for the route) or "
                    "per_peer (one chain per sender IP)"},
                   {9, 16, "routes[0].archive.framing",
                    "auto has no meaning on a udp: listener (a datagram is one record): use "
                    "lines, octet_counted or raw"},
               });
  expectError(withDir("routes:\n  - name: app\n    listen: udp:127.0.0.1:5140\n"
                      "    archive:\n      dir: @DIR@\n      framing: octet_counted\n"
                      "      oversize: split\n",
                      tmp.str()),
              {7, 17, "routes[0].archive.oversize",
               "has no effect on a udp: listener: a datagram longer than max_line is truncated "
               "and counted (spliced_udp_truncated_total)"});
  expectError(withDir("routes:\n  - name: app\n    listen: udp:127.0.0.1:5140\n"
                      "    forward: {upstreams: [127.0.0.1:1]}\n",
                      tmp.str()),
              {3, 13, "routes[0].listen",
               "udp: listeners are for collect routes (an archive block, which may ship: archive "
               "and forward together) only; a proxy route "
               "listens on TCP or a unix socket"});
  expectErrors(withDir(std::string(kRoute) + "      layout: per_peer\n", tmp.str()),
               {{6, 15, "routes[0].archive.layout",
                 "per_peer is for udp: listeners; a TCP or unix route uses per_connection or "
                 "shared"}});
  expectError(withDir("routes:\n  - name: app\n    listen: 127.0.0.1:5140\n    udp_rcvbuf: 8MiB\n"
                      "    archive:\n      dir: @DIR@\n",
                      tmp.str()),
              {4, 17, "routes[0].udp_rcvbuf", "applies to udp: listeners only"});
  expectError(
      withDir("admin: {listen: udp:127.0.0.1:9}\n" + std::string(kRoute), tmp.str()),
      {1, 17, "admin.listen", "the admin endpoint is HTTP: it listens on TCP or a unix socket"});
  expectError(withDir("routes:\n  - name: app\n    listen: 127.0.0.1:5140\n"
                      "    forward: {upstreams: [udp:127.0.0.1:1]}\n",
                      tmp.str()),
              {4, 27, "routes[0].forward.upstreams[0]",
               "upstreams are TCP or unix stream sockets; udp: is for listeners"});
}
