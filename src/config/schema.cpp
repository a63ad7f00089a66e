#include "spliced/config/schema.hpp"

#include <grp.h>
#include <pwd.h>

#include <fmt/format.h>
#include <string>

#include "spliced/core/cpus.hpp"

namespace spliced {
namespace {

// More workers than this is a typo, not a machine.
constexpr uint64_t kMaxWorkers = 1024;

// The keys of each block, their defaults (in the feature's config struct) and their readers.
class Schema {
 public:
  explicit Schema(YamlReader& r) : r_(r) {}

  void parseRoot(const YAML::Node& root, Config& cfg, std::vector<std::string>& route_paths) {
    r_.checkMap(root, "",
                {"log", "admin", "pipes", "workers", "user", "group", "drain_timeout", "routes"});
    if (auto n = root["user"]) parseRunAs(n, "user", cfg.user);
    if (auto n = root["group"]) parseRunAs(n, "group", cfg.group);
    cfg.workers = affinityCpus();  // auto, unless the file says a number
    if (auto n = root["workers"]) {
      if (n.IsScalar() && !n.Scalar().empty() &&
          n.Scalar().find_first_not_of("0123456789") != std::string::npos && n.Scalar() != "auto") {
        r_.add(n, "workers", fmt::format("'{}' is neither auto nor a whole number", n.Scalar()));
      } else if (!(n.IsScalar() && n.Scalar() == "auto")) {
        r_.count(n, "workers", cfg.workers, 1, kMaxWorkers);
      }
    }
    if (auto n = root["log"]) parseLog(n, cfg.log);
    if (auto n = root["admin"]) {
      parseAdmin(n, cfg.admin);
      cfg.admin_text = YAML::Dump(n);
    }
    if (auto n = root["pipes"]) parsePipes(n, cfg.pipes);
    if (auto n = root["drain_timeout"]) {
      r_.duration(n, "drain_timeout", cfg.drain_timeout, milliseconds(0), true);
    }
    auto routes = root["routes"];
    if (!routes) {
      r_.add(root, "routes", "missing: at least one route is needed");
      return;
    }
    if (!routes.IsSequence() || routes.size() == 0) {
      r_.add(routes, "routes", "expected a non-empty list of routes");
      return;
    }
    for (size_t i = 0; i < routes.size(); ++i) {
      RouteConfig r;
      const std::string path = fmt::format("routes[{}]", i);
      if (!parseRoute(routes[i], path, r)) continue;
      r.text = YAML::Dump(routes[i]);
      cfg.routes.push_back(std::move(r));
      route_paths.push_back(path);
    }
  }

  // user: / group: a name that exists on this machine.
  void parseRunAs(const YAML::Node& n, const std::string& key, std::string& out) {
    auto v = r_.scalar(n, key);
    if (!v) return;
    if (v->empty()) return r_.add(n, key, "expected a name");
    std::vector<char> buf(16384);
    bool found = false;
    if (key == "user") {
      passwd pw{};
      passwd* p = nullptr;
      found = ::getpwnam_r(v->c_str(), &pw, buf.data(), buf.size(), &p) == 0 && p != nullptr;
    } else {
      struct group gr {};
      struct group* p = nullptr;
      found = ::getgrnam_r(v->c_str(), &gr, buf.data(), buf.size(), &p) == 0 && p != nullptr;
    }
    if (!found) return r_.add(n, key, fmt::format("no such {} '{}' on this machine", key, *v));
    out = *v;
  }

  void parseLog(const YAML::Node& n, LogConfig& log) {
    if (!r_.checkMap(n, "log", {"level", "format"})) return;
    if (auto v = n["level"]) {
      auto l = r_.choice<LogLevel>(v, "log.level",
                                   {{"trace", LogLevel::Trace},
                                    {"debug", LogLevel::Debug},
                                    {"info", LogLevel::Info},
                                    {"warn", LogLevel::Warn},
                                    {"error", LogLevel::Error}});
      if (l) log.level = *l;
    }
    if (auto v = n["format"]) {
      auto f = r_.choice<LogFormat>(v, "log.format",
                                    {{"text", LogFormat::Text}, {"json", LogFormat::Json}});
      if (f) log.format = *f;
    }
  }

  void parseAdmin(const YAML::Node& n, AdminConfig& admin) {
    if (!r_.checkMap(n, "admin", {"listen", "allow", "auth", "tls"})) return;
    if (auto v = n["listen"]) {
      admin.listen = r_.address(v, "admin.listen");
      if (admin.listen && admin.listen->isUdp()) {
        r_.add(v, "admin.listen", "the admin endpoint is HTTP: it listens on TCP or a unix socket");
        admin.listen.reset();
      }
    }
    if (auto v = n["allow"]) admin.allow = r_.cidrs(v, "admin.allow");
    if (auto v = n["auth"]) {
      AdminAuthConfig auth;
      if (r_.checkMap(v, "admin.auth", {"basic_file", "open"})) {
        if (auto f = v["basic_file"]) {
          if (auto s = r_.scalar(f, "admin.auth.basic_file")) {
            if (s->empty()) {
              r_.add(f, "admin.auth.basic_file", "expected the path of an htpasswd file");
            }
            auth.basic_file = *s;
          }
        } else {
          r_.add(v, "admin.auth.basic_file", "missing: the htpasswd file of the admin users");
        }
        if (auto o = v["open"]) parseOpenPaths(o, auth.open);
      }
      admin.auth = std::move(auth);
    }
    if (auto v = n["tls"]) {
      AdminTlsConfig tls;
      if (r_.checkMap(v, "admin.tls", {"cert", "key"})) {
        for (const auto& [name, out] : {std::pair{"cert", &tls.cert}, {"key", &tls.key}}) {
          const std::string key = std::string("admin.tls.") + name;
          if (auto f = v[name]) {
            if (auto s = r_.scalar(f, key)) {
              if (s->empty()) r_.add(f, key, "expected the path of a PEM file");
              *out = *s;
            }
          } else {
            r_.add(v, key, "missing: admin.tls needs cert and key (PEM files)");
          }
        }
      }
      admin.tls = std::move(tls);
    }
  }

  // admin.auth.open: exact request paths ("/metrics") answered without credentials.
  void parseOpenPaths(const YAML::Node& n, std::vector<std::string>& out) {
    out.clear();
    if (!n.IsSequence()) {
      r_.add(n, "admin.auth.open", "expected a list of paths, e.g. [/metrics, /healthz]");
      return;
    }
    for (size_t i = 0; i < n.size(); ++i) {
      const std::string key = fmt::format("admin.auth.open[{}]", i);
      auto s = r_.scalar(n[i], key);
      if (!s) continue;
      if (s->empty() || s->front() != '/' || s->find_first_of("?# \t") != std::string::npos) {
        r_.add(n[i], key,
               fmt::format("'{}' is not a request path (it starts with /, without ? or #)", *s));
        continue;
      }
      if (s->starts_with("/archive/")) {
        r_.add(n[i], key, "archive paths cannot be left open: they serve archived bytes");
        continue;
      }
      out.push_back(*s);
    }
  }

  void parsePipes(const YAML::Node& n, PipesConfig& pipes) {
    if (!r_.checkMap(n, "pipes", {"size", "max"})) return;
    if (auto v = n["size"]) r_.size(v, "pipes.size", pipes.size, 4 * kKiB, 256 * kMiB, false);
    if (auto v = n["max"]) r_.count(v, "pipes.max", pipes.max, 0, 1000000);
  }

  bool parseRoute(const YAML::Node& n, const std::string& path, RouteConfig& r) {
    if (!r_.checkMap(n, path,
                     {"name", "listen", "max_connections", "idle_timeout", "allow", "accept_proxy",
                      "accept_proxy_timeout", "udp_rcvbuf", "archive", "forward"})) {
      return false;
    }
    if (auto v = n["name"]) {
      if (auto s = r_.scalar(v, path + ".name")) {
        if (s->empty() || s->size() > 64 ||
            s->find_first_not_of(
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") !=
                std::string::npos) {
          r_.add(v, path + ".name",
                 fmt::format("'{}' is not a valid name (1-64 of A-Z a-z 0-9 _ -)", *s));
        } else {
          r.name = *s;
        }
      }
    } else {
      r_.add(n, path + ".name", "missing: every route needs a name");
    }
    if (auto v = n["listen"]) {
      if (auto a = r_.address(v, path + ".listen")) r.listen = *a;
    } else {
      r_.add(n, path + ".listen", "missing: every route needs a listen address");
    }
    if (auto v = n["max_connections"]) {
      r_.count(v, path + ".max_connections", r.max_connections, 1, 10000000);
    }
    if (auto v = n["idle_timeout"]) {
      r_.duration(v, path + ".idle_timeout", r.idle_timeout, milliseconds(100), true);
    }
    if (auto v = n["allow"]) r.allow = r_.cidrs(v, path + ".allow");
    if (auto v = n["accept_proxy"]) r_.boolean(v, path + ".accept_proxy", r.accept_proxy);
    const bool udp = r.listen.isUdp();
    if (auto v = n["udp_rcvbuf"]) {
      r_.size(v, path + ".udp_rcvbuf", r.udp_rcvbuf, 4 * kKiB, 1 * kGiB, false);
      if (!udp) r_.add(v, path + ".udp_rcvbuf", "applies to udp: listeners only");
    }
    if (udp && r.accept_proxy) {
      r_.add(n["accept_proxy"], path + ".accept_proxy",
             "has no meaning on a udp: listener (datagrams carry no PROXY header)");
    }
    if (auto v = n["accept_proxy_timeout"]) {
      r_.duration(v, path + ".accept_proxy_timeout", r.accept_proxy_timeout, milliseconds(1),
                  false);
    }
    auto archive = n["archive"];
    auto forward = n["forward"];
    if (forward && udp && !archive) {
      r_.add(n["listen"], path + ".listen",
             "udp: listeners are for collect routes (an archive block, which may ship: archive "
             "and forward together) only; a proxy route listens on TCP or a unix socket");
    }
    if (archive) {
      ArchiveConfig a;
      parseArchive(archive, path + ".archive", a, udp);
      r.archive = std::move(a);
    }
    if (forward) {
      ForwardConfig f;
      parseForward(forward, path + ".forward", f);
      r.forward = std::move(f);
    }
    if (archive && forward) {
      // Collect + ship: the archive is written as for a collect route and shipped from there.
      if (archive.IsMap() && r.archive && r.archive->layout == Layout::PerPeer) {
        r_.add(archive["layout"], path + ".archive.layout",
               "shipping (archive and forward together) takes layout: shared or per_connection");
      }
      if (forward.IsMap() && r.forward && r.forward->proxy_protocol != ProxyProtocol::Off) {
        r_.add(forward["proxy_protocol"], path + ".forward.proxy_protocol",
               "a shipping route carries many clients' bytes in one stream: there is no client to "
               "name in a PROXY header; use off");
      }
    } else if (!archive && !forward) {
      r_.add(n, path, "a route needs an archive block (collect) or a forward block (proxy)");
    }
    if (forward && forward.IsMap() && !archive) {
      for (const char* key : {"checkpoint_interval", "max_lag", "ack_timeout"}) {
        if (auto v = forward[key]) {
          r_.add(v, path + ".forward." + key,
                 "applies to a shipping route (archive and forward together) only");
        }
      }
    }
    if (archive && archive.IsMap() && !forward && archive["retain"] && archive["retain"].IsMap() &&
        archive["retain"]["unshipped"]) {
      r_.add(archive["retain"]["unshipped"], path + ".archive.retain.unshipped",
             "applies to a shipping route (archive and forward together) only");
    }
    return true;
  }

  // `udp`: the route listens on udp: (a datagram is a record; see docs/DESIGN.md, "UDP").
  void parseArchive(const YAML::Node& n, const std::string& path, ArchiveConfig& a, bool udp) {
    if (!r_.checkMap(n, path,
                     {"dir", "layout", "framing", "name", "localtime", "rotate", "retain",
                      "compress", "compress_level", "fsync", "max_line", "output", "oversize",
                      "manifest", "on_publish"})) {
      return;
    }
    if (auto v = n["dir"]) {
      if (auto s = r_.scalar(v, path + ".dir")) {
        if (s->empty()) {
          r_.add(v, path + ".dir", "must not be empty");
        } else {
          a.dir = *s;  // whether it is usable is validate()'s question
        }
      }
    } else {
      r_.add(n, path + ".dir", "missing: the directory segments are written to");
    }
    if (udp) {
      // UDP has no connections: one chain for the route, or one per sender; lines by default.
      a.layout = Layout::Shared;
      a.framing = Framing::Lines;
    }
    if (auto v = n["layout"]) {
      auto l = r_.choice<Layout>(v, path + ".layout",
                                 {{"per_connection", Layout::PerConnection},
                                  {"shared", Layout::Shared},
                                  {"per_peer", Layout::PerPeer}});
      if (l) a.layout = *l;
      if (l && udp && *l == Layout::PerConnection) {
        r_.add(v, path + ".layout",
               "a udp: listener has no connections: use shared (one chain for the route) or "
               "per_peer (one chain per sender IP)");
      } else if (l && !udp && *l == Layout::PerPeer) {
        r_.add(v, path + ".layout",
               "per_peer is for udp: listeners; a TCP or unix route uses per_connection or "
               "shared");
      }
    }
    if (auto v = n["framing"]) {
      auto f = r_.choice<Framing>(v, path + ".framing",
                                  {{"raw", Framing::Raw},
                                   {"lines", Framing::Lines},
                                   {"octet_counted", Framing::OctetCounted},
                                   {"auto", Framing::Auto}});
      if (f) a.framing = *f;
      if (f && udp && *f == Framing::Auto) {
        r_.add(v, path + ".framing",
               "auto has no meaning on a udp: listener (a datagram is one record): use lines, "
               "octet_counted or raw");
      }
    }
    const bool records = a.framing == Framing::OctetCounted || a.framing == Framing::Auto;
    if (auto v = n["output"]) {
      auto o = r_.choice<RecordOutput>(
          v, path + ".output",
          {{"as_received", RecordOutput::AsReceived}, {"lines", RecordOutput::Lines}});
      if (o) a.output = *o;
      if (o && !records) {
        r_.add(v, path + ".output", "applies to framing: octet_counted or auto only");
      }
    }
    if (auto v = n["oversize"]) {
      auto o = r_.choice<Oversize>(v, path + ".oversize",
                                   {{"split", Oversize::Split}, {"close", Oversize::Close}});
      if (o) a.oversize = *o;
      if (o && !records) {
        r_.add(v, path + ".oversize",
               "applies to framing: octet_counted or auto only (lines are always split)");
      } else if (o && udp) {
        r_.add(v, path + ".oversize",
               "has no effect on a udp: listener: a datagram longer than max_line is truncated "
               "and counted (spliced_udp_truncated_total)");
      }
    }
    const bool name_ok = parseName(n, path, a);
    if (auto v = n["localtime"]) r_.boolean(v, path + ".localtime", a.localtime);
    if (auto v = n["rotate"]) parseRotate(v, path + ".rotate", a.rotate);
    // Without {seq}, every rotation of a chain reuses its name and must probe for a free numeric
    // suffix: O(n) per segment, and past kMaxNumericSuffix no segment can be opened at all (the
    // client stalls and its held bytes are lost at stop). Both layouts rotate the same way.
    if (name_ok && !a.name.usesSeq() && (a.rotate.max_bytes > 0 || a.rotate.interval.count() > 0)) {
      YAML::Mark mark = n["name"] ? n["name"].Mark() : n.Mark();
      r_.addAt(mark, path + ".name",
               "has no {seq} while rotation is on: each rotation would have to probe for a free "
               "numeric suffix (at most 9,999); add {seq}, or set rotate.max_bytes and "
               "rotate.interval to 0");
    }
    if (auto v = n["retain"]) parseRetain(v, path + ".retain", a.retain);
    if (auto v = n["compress"]) {
      auto c = r_.choice<Compress>(
          v, path + ".compress",
          {{"none", Compress::None}, {"gzip", Compress::Gzip}, {"zstd", Compress::Zstd}});
      if (c) a.compress = *c;
    }
    if (auto v = n["compress_level"]) {
      uint64_t level = 0;
      bool zstd = a.compress == Compress::Zstd;
      r_.count(v, path + ".compress_level", level, 1, zstd ? 19 : 9);
      a.compress_level = static_cast<int>(level);
      if (a.compress == Compress::None) {
        r_.add(v, path + ".compress_level", "has no effect without compress: gzip or zstd");
      }
    }
    if (auto v = n["fsync"]) {
      auto f = r_.choice<FsyncPolicy>(
          v, path + ".fsync", {{"never", FsyncPolicy::Never}, {"on_close", FsyncPolicy::OnClose}});
      if (f) a.fsync = *f;
    }
    if (auto v = n["max_line"]) {
      r_.size(v, path + ".max_line", a.max_line, 64, 64 * kMiB, false);
    }
    if (auto v = n["manifest"]) {
      if (r_.checkMap(v, path + ".manifest", {"hash"})) {
        if (auto h = v["hash"]) {
          auto c = r_.choice<ManifestHash>(h, path + ".manifest.hash",
                                           {{"sha256", ManifestHash::Sha256},
                                            {"xxh3", ManifestHash::Xxh3},
                                            {"none", ManifestHash::None}});
          if (c) a.manifest.hash = *c;
        }
      }
    }
    if (auto v = n["on_publish"]) parseOnPublish(v, path + ".on_publish", a.on_publish);
    if (a.retain.require_published && !a.on_publish.enabled()) {
      YAML::Node at = n["retain"]["require_published"];
      r_.add(at, path + ".retain.require_published",
             "needs archive.on_publish (a command whose success marks a segment published)");
    }
  }

  void parseOnPublish(const YAML::Node& v, const std::string& path, OnPublishConfig& p) {
    if (!r_.checkMap(v, path, {"exec", "timeout", "concurrency"})) return;
    if (auto e = v["exec"]) {
      if (!e.IsSequence() || e.size() == 0) {
        r_.add(e, path + ".exec",
               "expected a non-empty list: the program and its arguments, e.g. [rclone, copy, "
               "\"{path}\", \"remote:bucket\"]");
      } else {
        std::vector<std::string> argv;
        for (size_t i = 0; i < e.size(); ++i) {
          const std::string key = fmt::format("{}.exec[{}]", path, i);
          auto s = r_.scalar(e[i], key);
          if (!s) return;
          // Only {path}, {name} and {route} are placeholders: anything else in braces is a typo.
          std::string rest = *s;
          for (const char* ph : {"{path}", "{name}", "{route}"}) {
            for (size_t at; (at = rest.find(ph)) != std::string::npos;)
              rest.erase(at, std::string_view(ph).size());
          }
          if (rest.find('{') != std::string::npos || rest.find('}') != std::string::npos) {
            r_.add(e[i], key,
                   fmt::format("\"{}\" has an unknown placeholder: only {{path}}, {{name}} and "
                               "{{route}} are replaced",
                               *s));
            return;
          }
          argv.push_back(*s);
        }
        if (argv[0].empty()) {
          r_.add(e[0], path + ".exec[0]", "the program must not be empty");
          return;
        }
        p.exec = std::move(argv);
      }
    } else {
      r_.add(v, path + ".exec", "missing: the command to run for each published segment");
    }
    if (auto t = v["timeout"]) {
      r_.duration(t, path + ".timeout", p.timeout, milliseconds(1000), false);
    }
    if (auto c = v["concurrency"]) r_.count(c, path + ".concurrency", p.concurrency, 1, 64);
  }

  // The segment name template; its default depends on the layout. False when it was refused.
  bool parseName(const YAML::Node& n, const std::string& path, ArchiveConfig& a) {
    std::string name_text = a.layout == Layout::Shared
                                ? "%Y/%m/%d/{route}-%H%M%S-{seq}.log"
                                : "%Y/%m/%d/{route}-{peer}-{conn}-%H%M%S-{seq}.log";
    YAML::Mark name_mark = n.Mark();
    if (auto v = n["name"]) {
      name_mark = v.Mark();
      if (auto s = r_.scalar(v, path + ".name")) name_text = *s;
    }
    auto t = NameTemplate::compile(name_text);
    if (!t.ok()) {
      r_.addAt(name_mark, path + ".name", t.error());
      return false;
    }
    a.name = t.value();
    if (a.layout == Layout::Shared && (a.name.usesPeer() || a.name.usesConn())) {
      r_.addAt(name_mark, path + ".name",
               "{peer}, {peer_port} and {conn} have no meaning with layout: shared (one chain for "
               "all connections)");
      return false;
    }
    return true;
  }

  void parseRotate(const YAML::Node& v, const std::string& path, RotateConfig& rotate) {
    if (!r_.checkMap(v, path, {"max_bytes", "interval"})) return;
    if (auto m = v["max_bytes"]) {
      r_.size(m, path + ".max_bytes", rotate.max_bytes, 4 * kKiB, 1024 * kGiB * 1024, true);
    }
    if (auto m = v["interval"]) {
      r_.duration(m, path + ".interval", rotate.interval, milliseconds(1000), true);
    }
  }

  void parseRetain(const YAML::Node& v, const std::string& path, RetainConfig& retain) {
    if (!r_.checkMap(v, path,
                     {"max_files", "max_age", "max_bytes", "require_published", "unshipped"})) {
      return;
    }
    if (auto m = v["unshipped"]) {
      auto u = r_.choice<bool>(m, path + ".unshipped", {{"keep", false}, {"drop", true}});
      if (u) retain.drop_unshipped = *u;
    }
    if (auto m = v["require_published"]) {
      r_.boolean(m, path + ".require_published", retain.require_published);
    }
    if (auto m = v["max_files"]) r_.count(m, path + ".max_files", retain.max_files, 0, 100000000);
    if (auto m = v["max_age"]) {
      r_.duration(m, path + ".max_age", retain.max_age, milliseconds(1000), true);
    }
    if (auto m = v["max_bytes"]) {
      r_.size(m, path + ".max_bytes", retain.max_bytes, kKiB, 1024 * kGiB * 1024, true);
    }
  }

  void parseForward(const YAML::Node& n, const std::string& path, ForwardConfig& f) {
    if (!r_.checkMap(
            n, path,
            {"upstreams", "balance", "connect_timeout", "proxy_protocol", "retries", "max_fails",
             "fail_timeout", "health_check", "checkpoint_interval", "max_lag", "ack_timeout"})) {
      return;
    }
    if (auto v = n["upstreams"]) {
      if (!v.IsSequence() || v.size() == 0) {
        r_.add(v, path + ".upstreams", "expected a non-empty list of addresses");
      } else {
        for (size_t i = 0; i < v.size(); ++i) {
          const std::string key = fmt::format("{}.upstreams[{}]", path, i);
          auto a = r_.address(v[i], key);
          if (a && a->isUdp()) {
            r_.add(v[i], key, "upstreams are TCP or unix stream sockets; udp: is for listeners");
          } else if (a) {
            f.upstreams.push_back(*a);
          }
        }
      }
    } else {
      r_.add(n, path + ".upstreams", "missing: a forward block needs upstreams");
    }
    if (auto v = n["balance"]) {
      auto b = r_.choice<Balance>(v, path + ".balance",
                                  {{"round_robin", Balance::RoundRobin},
                                   {"least_connections", Balance::LeastConnections},
                                   {"source_hash", Balance::SourceHash}});
      if (b) f.balance = *b;
    }
    if (auto v = n["connect_timeout"]) {
      r_.duration(v, path + ".connect_timeout", f.connect_timeout, milliseconds(1), false);
    }
    if (auto v = n["retries"]) r_.count(v, path + ".retries", f.retries, 0, 100);
    if (auto v = n["checkpoint_interval"]) {
      r_.duration(v, path + ".checkpoint_interval", f.checkpoint_interval, milliseconds(10), false);
    }
    if (auto v = n["max_lag"]) r_.duration(v, path + ".max_lag", f.max_lag, milliseconds(1), true);
    if (auto v = n["ack_timeout"]) {
      r_.duration(v, path + ".ack_timeout", f.ack_timeout, milliseconds(100), false);
    }
    if (auto v = n["max_fails"]) r_.count(v, path + ".max_fails", f.max_fails, 1, 1000);
    if (auto v = n["fail_timeout"]) {
      r_.duration(v, path + ".fail_timeout", f.fail_timeout, milliseconds(100), false);
    }
    if (auto v = n["health_check"]) {
      HealthCheckConfig h;
      const std::string hp = path + ".health_check";
      if (r_.checkMap(v, hp, {"interval", "timeout", "fall", "rise"})) {
        if (auto m = v["interval"]) {
          r_.duration(m, hp + ".interval", h.interval, milliseconds(100), false);
        }
        if (auto m = v["timeout"])
          r_.duration(m, hp + ".timeout", h.timeout, milliseconds(10), false);
        if (auto m = v["fall"]) r_.count(m, hp + ".fall", h.fall, 1, 100);
        if (auto m = v["rise"]) r_.count(m, hp + ".rise", h.rise, 1, 100);
        if (h.timeout > h.interval) r_.add(v, hp + ".timeout", "must not be longer than interval");
      }
      f.health_check = h;
    }
    if (auto v = n["proxy_protocol"]) {
      auto p = r_.choice<ProxyProtocol>(
          v, path + ".proxy_protocol",
          {{"off", ProxyProtocol::Off}, {"v1", ProxyProtocol::V1}, {"v2", ProxyProtocol::V2}});
      if (p) f.proxy_protocol = *p;
    }
  }

 private:
  YamlReader& r_;
};

}  // namespace

void readConfig(YamlReader& reader, const YAML::Node& root, Config& cfg,
                std::vector<std::string>& route_paths) {
  Schema(reader).parseRoot(root, cfg, route_paths);
}

}  // namespace spliced
