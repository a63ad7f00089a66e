#include "spliced/config.hpp"

#include <unistd.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <fmt/format.h>
#include <fstream>
#include <initializer_list>
#include <map>
#include <set>
#include <sstream>
#include <utility>

namespace spliced {
namespace {

namespace fs = std::filesystem;

// Records where each document starts, without building it.
struct DocumentStarts : YAML::EventHandler {
  std::vector<YAML::Mark> marks;
  void OnDocumentStart(const YAML::Mark& m) override { marks.push_back(m); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

// Walks the YAML tree once, filling a Config and collecting every error with its position.
class Loader {
 public:
  explicit Loader(std::string source) : source_(std::move(source)) {}

  ConfigResult load(const std::string& text) {
    ConfigResult result;
    auto cfg = std::make_shared<Config>();
    cfg->source = source_;
    YAML::Node root;
    try {
      root = YAML::Load(text);
      // A second document ('---') would be ignored silently: refuse it. The parser is asked for
      // at most two documents: yaml-cpp 0.7's LoadAll() never ends on some inputs (a leading
      // ',' yields empty documents forever).
      std::istringstream in(text);
      YAML::Parser parser(in);
      DocumentStarts starts;
      for (int i = 0; i < 2 && parser.HandleNextDocument(starts); ++i) {
      }
      if (starts.marks.size() > 1 && starts.marks[1].pos > starts.marks[0].pos) {
        errors_.push_back({source_, starts.marks[1].line + 1, starts.marks[1].column + 1, "",
                           "only one YAML document is allowed (found a second after '---')"});
        result.errors = std::move(errors_);
        return result;
      }
    } catch (const YAML::ParserException& e) {
      errors_.push_back({source_, e.mark.line + 1, e.mark.column + 1, "yaml", e.msg});
      result.errors = std::move(errors_);
      return result;
    }
    if (!root.IsDefined() || root.IsNull()) {
      add(root, "routes", "config is empty: at least one route is needed");
    } else if (!root.IsMap()) {
      add(root, "", "the top level must be a mapping of keys (log, pipes, routes, ...)");
    } else {
      try {
        parseRoot(root, *cfg);
      } catch (const YAML::Exception& e) {  // a shape the checks above did not foresee
        errors_.push_back({source_, e.mark.line + 1, e.mark.column + 1, "", e.msg});
      }
    }
    if (errors_.empty()) {
      result.config = std::move(cfg);
    }
    result.errors = std::move(errors_);
    return result;
  }

 private:
  std::string source_;
  std::vector<ConfigError> errors_;
  std::map<std::string, YAML::Mark> key_marks_;  // full key path -> where the key stands

  void add(const YAML::Node& at, const std::string& key, const std::string& message) {
    // yaml-cpp places an empty value at the next token (often the next line): point at its key.
    if (at.IsNull()) {
      auto it = key_marks_.find(key);
      if (it != key_marks_.end()) return addAt(it->second, key, message);
    }
    addAt(at.Mark(), key, message);
  }

  void addAt(const YAML::Mark& mark, const std::string& key, const std::string& message) {
    int line = mark.line >= 0 ? mark.line + 1 : 1;
    int col = mark.column >= 0 ? mark.column + 1 : 1;
    errors_.push_back({source_, line, col, key, message});
  }

  static std::string join(const std::string& path, const std::string& key) {
    return path.empty() ? key : path + "." + key;
  }

  // Reports keys of `map` not in `known`. Returns false if `map` is not a mapping.
  bool checkMap(const YAML::Node& map, const std::string& path,
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

  std::optional<std::string> scalar(const YAML::Node& n, const std::string& key) {
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

  template <typename T>
  std::optional<T> choice(const YAML::Node& n, const std::string& key,
                          std::initializer_list<std::pair<std::string_view, T>> options) {
    auto s = scalar(n, key);
    if (!s) return std::nullopt;
    std::string list;
    for (const auto& [name, value] : options) {
      if (*s == name) return value;
      list += (list.empty() ? "" : ", ") + std::string(name);
    }
    add(n, key, fmt::format("'{}' is not one of: {}", *s, list));
    return std::nullopt;
  }

  void size(const YAML::Node& n, const std::string& key, uint64_t& out, uint64_t min, uint64_t max,
            bool zero_ok) {
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
                 fmt::format("{} is out of range ({} to {}{})", *s, formatSize(min),
                             formatSize(max), zero_ok ? ", or 0 for none" : ""));
    }
    out = p.value();
  }

  void count(const YAML::Node& n, const std::string& key, uint64_t& out, uint64_t min,
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

  void duration(const YAML::Node& n, const std::string& key, milliseconds& out, milliseconds min,
                bool zero_ok) {
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

  void boolean(const YAML::Node& n, const std::string& key, bool& out) {
    auto v = choice<bool>(n, key, {{"true", true}, {"false", false}, {"yes", true}, {"no", false}});
    if (v) out = *v;
  }

  std::vector<Cidr> cidrs(const YAML::Node& n, const std::string& key) {
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

  std::optional<SocketAddress> address(const YAML::Node& n, const std::string& key) {
    auto s = scalar(n, key);
    if (!s) return std::nullopt;
    auto a = parseSocketAddress(*s);
    if (!a.ok()) {
      add(n, key, a.error());
      return std::nullopt;
    }
    return a.value();
  }

  void parseRoot(const YAML::Node& root, Config& cfg) {
    checkMap(root, "", {"log", "admin", "pipes", "drain_timeout", "routes"});
    if (auto n = root["log"]) parseLog(n, cfg.log);
    if (auto n = root["admin"]) parseAdmin(n, cfg.admin);
    if (auto n = root["pipes"]) parsePipes(n, cfg.pipes);
    if (auto n = root["drain_timeout"]) {
      duration(n, "drain_timeout", cfg.drain_timeout, milliseconds(0), true);
    }
    auto routes = root["routes"];
    if (!routes) {
      add(root, "routes", "missing: at least one route is needed");
      return;
    }
    if (!routes.IsSequence() || routes.size() == 0) {
      add(routes, "routes", "expected a non-empty list of routes");
      return;
    }
    std::set<std::string> names;
    std::vector<std::pair<std::string, std::string>> dirs;  // absolute archive dir, route
    std::vector<std::pair<std::string, YAML::Node>> listens;
    for (size_t i = 0; i < routes.size(); ++i) {
      RouteConfig r;
      const std::string path = fmt::format("routes[{}]", i);
      if (!parseRoute(routes[i], path, r)) continue;
      if (!r.name.empty() && !names.insert(r.name).second) {
        add(routes[i]["name"], path + ".name",
            fmt::format("duplicate route name '{}': names must be unique", r.name));
      }
      // Port 0 asks the kernel for a free port: two such routes never clash.
      if (!r.listen.text.empty() && !r.listen.text.ends_with(":0")) {
        for (const auto& [text, node] : listens) {
          if (text == r.listen.text) {
            add(routes[i]["listen"], path + ".listen",
                fmt::format("address {} is already used by another route", text));
            break;
          }
        }
        listens.emplace_back(r.listen.text, routes[i]["listen"]);
      }
      if (r.archive && !r.archive->dir.empty()) {
        // Retention and crash recovery own a whole dir: two routes must not share one.
        std::error_code ec;
        std::string abs = std::filesystem::weakly_canonical(r.archive->dir, ec).string();
        for (const auto& [d, other] : dirs) {
          if (d == abs) {
            add(routes[i]["archive"]["dir"], path + ".archive.dir",
                fmt::format("archive dir {} is already used by route {}", abs, other));
            break;
          }
        }
        dirs.emplace_back(abs, r.name);
      }
      cfg.routes.push_back(std::move(r));
    }
    if (cfg.admin.listen) {
      for (const auto& [text, node] : listens) {
        if (text == cfg.admin.listen->text) {
          add(root["admin"]["listen"], "admin.listen",
              fmt::format("address {} is already used by a route", text));
          break;
        }
      }
    }
  }

  void parseLog(const YAML::Node& n, LogConfig& log) {
    if (!checkMap(n, "log", {"level", "format"})) return;
    if (auto v = n["level"]) {
      auto l = choice<LogLevel>(v, "log.level",
                                {{"trace", LogLevel::Trace},
                                 {"debug", LogLevel::Debug},
                                 {"info", LogLevel::Info},
                                 {"warn", LogLevel::Warn},
                                 {"error", LogLevel::Error}});
      if (l) log.level = *l;
    }
    if (auto v = n["format"]) {
      auto f = choice<LogFormat>(v, "log.format",
                                 {{"text", LogFormat::Text}, {"json", LogFormat::Json}});
      if (f) log.format = *f;
    }
  }

  void parseAdmin(const YAML::Node& n, AdminConfig& admin) {
    if (!checkMap(n, "admin", {"listen", "allow"})) return;
    if (auto v = n["listen"]) admin.listen = address(v, "admin.listen");
    if (auto v = n["allow"]) admin.allow = cidrs(v, "admin.allow");
  }

  void parsePipes(const YAML::Node& n, PipesConfig& pipes) {
    if (!checkMap(n, "pipes", {"size", "max"})) return;
    if (auto v = n["size"]) size(v, "pipes.size", pipes.size, 4 * kKiB, 256 * kMiB, false);
    if (auto v = n["max"]) count(v, "pipes.max", pipes.max, 0, 1000000);
  }

  bool parseRoute(const YAML::Node& n, const std::string& path, RouteConfig& r) {
    if (!checkMap(n, path,
                  {"name", "listen", "max_connections", "idle_timeout", "allow", "accept_proxy",
                   "accept_proxy_timeout", "archive", "forward"})) {
      return false;
    }
    if (auto v = n["name"]) {
      if (auto s = scalar(v, path + ".name")) {
        if (s->empty() || s->size() > 64 ||
            s->find_first_not_of(
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") !=
                std::string::npos) {
          add(v, path + ".name",
              fmt::format("'{}' is not a valid name (1-64 of A-Z a-z 0-9 _ -)", *s));
        } else {
          r.name = *s;
        }
      }
    } else {
      add(n, path + ".name", "missing: every route needs a name");
    }
    if (auto v = n["listen"]) {
      if (auto a = address(v, path + ".listen")) r.listen = *a;
    } else {
      add(n, path + ".listen", "missing: every route needs a listen address");
    }
    if (auto v = n["max_connections"]) {
      count(v, path + ".max_connections", r.max_connections, 1, 10000000);
    }
    if (auto v = n["idle_timeout"]) {
      duration(v, path + ".idle_timeout", r.idle_timeout, milliseconds(100), true);
    }
    if (auto v = n["allow"]) r.allow = cidrs(v, path + ".allow");
    if (auto v = n["accept_proxy"]) boolean(v, path + ".accept_proxy", r.accept_proxy);
    if (auto v = n["accept_proxy_timeout"]) {
      duration(v, path + ".accept_proxy_timeout", r.accept_proxy_timeout, milliseconds(1), false);
    }
    auto archive = n["archive"];
    auto forward = n["forward"];
    if (archive) {
      ArchiveConfig a;
      parseArchive(archive, path + ".archive", a);
      r.archive = std::move(a);
    }
    if (forward) {
      ForwardConfig f;
      parseForward(forward, path + ".forward", f);
      r.forward = std::move(f);
    }
    if (archive && forward) {
      add(forward, path + ".forward",
          "a route with both archive and forward (collect + ship) is not supported yet");
    } else if (!archive && !forward) {
      add(n, path, "a route needs an archive block (collect) or a forward block (proxy)");
    }
    return true;
  }

  void parseArchive(const YAML::Node& n, const std::string& path, ArchiveConfig& a) {
    if (!checkMap(n, path,
                  {"dir", "layout", "framing", "name", "localtime", "rotate", "retain", "compress",
                   "compress_level", "fsync", "max_line"})) {
      return;
    }
    if (auto v = n["dir"]) {
      if (auto s = scalar(v, path + ".dir")) {
        if (s->empty()) {
          add(v, path + ".dir", "must not be empty");
        } else {
          a.dir = *s;
          std::string why = checkDirUsable(a.dir);
          if (!why.empty()) add(v, path + ".dir", why);
        }
      }
    } else {
      add(n, path + ".dir", "missing: the directory segments are written to");
    }
    if (auto v = n["layout"]) {
      auto l =
          choice<Layout>(v, path + ".layout",
                         {{"per_connection", Layout::PerConnection}, {"shared", Layout::Shared}});
      if (l) a.layout = *l;
    }
    if (auto v = n["framing"]) {
      auto f =
          choice<Framing>(v, path + ".framing", {{"raw", Framing::Raw}, {"lines", Framing::Lines}});
      if (f) a.framing = *f;
    }
    std::string name_text = a.layout == Layout::Shared
                                ? "%Y/%m/%d/{route}-%H%M%S-{seq}.log"
                                : "%Y/%m/%d/{route}-{peer}-{conn}-%H%M%S-{seq}.log";
    YAML::Mark name_mark = n.Mark();
    if (auto v = n["name"]) {
      name_mark = v.Mark();
      if (auto s = scalar(v, path + ".name")) name_text = *s;
    }
    auto t = NameTemplate::compile(name_text);
    if (!t.ok()) {
      addAt(name_mark, path + ".name", t.error());
    } else {
      a.name = t.value();
      if (a.layout == Layout::Shared && (a.name.usesPeer() || a.name.usesConn())) {
        addAt(name_mark, path + ".name",
              "{peer}, {peer_port} and {conn} have no meaning with layout: shared (one chain for "
              "all connections)");
      }
    }
    if (auto v = n["localtime"]) boolean(v, path + ".localtime", a.localtime);
    if (auto v = n["rotate"]) {
      if (checkMap(v, path + ".rotate", {"max_bytes", "interval"})) {
        if (auto m = v["max_bytes"]) {
          size(m, path + ".rotate.max_bytes", a.rotate.max_bytes, 4 * kKiB, 1024 * kGiB * 1024,
               true);
        }
        if (auto m = v["interval"]) {
          duration(m, path + ".rotate.interval", a.rotate.interval, milliseconds(1000), true);
        }
      }
    }
    if (auto v = n["retain"]) {
      if (checkMap(v, path + ".retain", {"max_files", "max_age", "max_bytes"})) {
        if (auto m = v["max_files"]) {
          count(m, path + ".retain.max_files", a.retain.max_files, 0, 100000000);
        }
        if (auto m = v["max_age"]) {
          duration(m, path + ".retain.max_age", a.retain.max_age, milliseconds(1000), true);
        }
        if (auto m = v["max_bytes"]) {
          size(m, path + ".retain.max_bytes", a.retain.max_bytes, kKiB, 1024 * kGiB * 1024, true);
        }
      }
    }
    if (auto v = n["compress"]) {
      auto c = choice<Compress>(
          v, path + ".compress",
          {{"none", Compress::None}, {"gzip", Compress::Gzip}, {"zstd", Compress::Zstd}});
      if (c) a.compress = *c;
    }
    if (auto v = n["compress_level"]) {
      uint64_t level = 0;
      bool zstd = a.compress == Compress::Zstd;
      count(v, path + ".compress_level", level, 1, zstd ? 19 : 9);
      a.compress_level = static_cast<int>(level);
      if (a.compress == Compress::None) {
        add(v, path + ".compress_level", "has no effect without compress: gzip or zstd");
      }
    }
    if (auto v = n["fsync"]) {
      auto f = choice<FsyncPolicy>(
          v, path + ".fsync", {{"never", FsyncPolicy::Never}, {"on_close", FsyncPolicy::OnClose}});
      if (f) a.fsync = *f;
    }
    if (auto v = n["max_line"]) {
      size(v, path + ".max_line", a.max_line, 64, 64 * kMiB, false);
    }
  }

  void parseForward(const YAML::Node& n, const std::string& path, ForwardConfig& f) {
    if (!checkMap(n, path,
                  {"upstreams", "balance", "connect_timeout", "proxy_protocol", "retries",
                   "max_fails", "fail_timeout", "health_check"})) {
      return;
    }
    if (auto v = n["upstreams"]) {
      if (!v.IsSequence() || v.size() == 0) {
        add(v, path + ".upstreams", "expected a non-empty list of addresses");
      } else {
        for (size_t i = 0; i < v.size(); ++i) {
          if (auto a = address(v[i], fmt::format("{}.upstreams[{}]", path, i))) {
            f.upstreams.push_back(*a);
          }
        }
      }
    } else {
      add(n, path + ".upstreams", "missing: a forward block needs upstreams");
    }
    if (auto v = n["balance"]) {
      auto b = choice<Balance>(v, path + ".balance",
                               {{"round_robin", Balance::RoundRobin},
                                {"least_connections", Balance::LeastConnections},
                                {"source_hash", Balance::SourceHash}});
      if (b) f.balance = *b;
    }
    if (auto v = n["connect_timeout"]) {
      duration(v, path + ".connect_timeout", f.connect_timeout, milliseconds(1), false);
    }
    if (auto v = n["retries"]) count(v, path + ".retries", f.retries, 0, 100);
    if (auto v = n["max_fails"]) count(v, path + ".max_fails", f.max_fails, 1, 1000);
    if (auto v = n["fail_timeout"]) {
      duration(v, path + ".fail_timeout", f.fail_timeout, milliseconds(100), false);
    }
    if (auto v = n["health_check"]) {
      HealthCheckConfig h;
      const std::string hp = path + ".health_check";
      if (checkMap(v, hp, {"interval", "timeout", "fall", "rise"})) {
        if (auto m = v["interval"]) {
          duration(m, hp + ".interval", h.interval, milliseconds(100), false);
        }
        if (auto m = v["timeout"]) duration(m, hp + ".timeout", h.timeout, milliseconds(10), false);
        if (auto m = v["fall"]) count(m, hp + ".fall", h.fall, 1, 100);
        if (auto m = v["rise"]) count(m, hp + ".rise", h.rise, 1, 100);
        if (h.timeout > h.interval) add(v, hp + ".timeout", "must not be longer than interval");
      }
      f.health_check = h;
    }
    if (auto v = n["proxy_protocol"]) {
      auto p = choice<ProxyProtocol>(
          v, path + ".proxy_protocol",
          {{"off", ProxyProtocol::Off}, {"v1", ProxyProtocol::V1}, {"v2", ProxyProtocol::V2}});
      if (p) f.proxy_protocol = *p;
    }
  }
};

}  // namespace

std::string ConfigError::format() const {
  if (line == 0) return fmt::format("{}: {}", file, message);
  if (key.empty()) return fmt::format("{}:{}:{}: {}", file, line, column, message);
  return fmt::format("{}:{}:{}: {}: {}", file, line, column, key, message);
}

std::string checkDirUsable(const std::filesystem::path& dir) {
  std::error_code ec;
  fs::path p = fs::absolute(dir, ec);
  if (ec) return fmt::format("cannot resolve '{}': {}", dir.string(), ec.message());
  fs::path probe = p;
  while (true) {
    auto st = fs::status(probe, ec);
    if (!ec && fs::exists(st)) {
      if (!fs::is_directory(st)) {
        return probe == p ? fmt::format("'{}' exists and is not a directory", p.string())
                          : fmt::format("cannot create '{}': '{}' is not a directory", p.string(),
                                        probe.string());
      }
      if (::access(probe.c_str(), W_OK | X_OK) != 0) {
        return probe == p ? fmt::format("directory '{}' is not writable", p.string())
                          : fmt::format("cannot create '{}': '{}' is not writable", p.string(),
                                        probe.string());
      }
      return {};
    }
    if (!probe.has_parent_path() || probe.parent_path() == probe) {
      return fmt::format("cannot create '{}'", p.string());
    }
    probe = probe.parent_path();
  }
}

ConfigResult loadConfigString(const std::string& text, const std::string& source) {
  return Loader(source).load(text);
}

ConfigResult loadConfigFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    ConfigResult r;
    r.errors.push_back(
        {path, 0, 0, "", fmt::format("cannot read config: {}", std::strerror(errno))});
    return r;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return loadConfigString(ss.str(), path);
}

}  // namespace spliced
