#include "spliced/config/validate.hpp"

#include <unistd.h>

#include <fmt/format.h>
#include <set>
#include <utility>

namespace spliced {
namespace {

namespace fs = std::filesystem;

// Records `message` at the value of `key`.
void addAtValue(YamlReader& reader, const std::string& key, const std::string& message) {
  auto mark = reader.valueMark(key);
  reader.addAt(mark ? *mark : YAML::Mark::null_mark(), key, message);
}

}  // namespace

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

void validate(const Config& cfg, const std::vector<std::string>& route_paths, YamlReader& reader) {
  std::set<std::string> names;
  std::vector<std::pair<std::string, std::string>> dirs;  // absolute archive dir, route
  std::vector<std::string> listens;
  for (size_t i = 0; i < cfg.routes.size(); ++i) {
    const RouteConfig& r = cfg.routes[i];
    const std::string& path = route_paths[i];
    if (!r.name.empty() && !names.insert(r.name).second) {
      addAtValue(reader, path + ".name",
                 fmt::format("duplicate route name '{}': names must be unique", r.name));
    }
    // Port 0 asks the kernel for a free port: two such routes never clash.
    if (!r.listen.text.empty() && !r.listen.text.ends_with(":0")) {
      for (const auto& text : listens) {
        if (text == r.listen.text) {
          addAtValue(reader, path + ".listen",
                     fmt::format("address {} is already used by another route", text));
          break;
        }
      }
      listens.push_back(r.listen.text);
    }
    if (r.archive && !r.archive->dir.empty()) {
      const std::string key = path + ".archive.dir";
      // Retention and crash recovery own a whole dir: two routes must not share one.
      std::error_code ec;
      std::string abs = fs::weakly_canonical(r.archive->dir, ec).string();
      for (const auto& [d, other] : dirs) {
        if (d == abs) {
          addAtValue(reader, key,
                     fmt::format("archive dir {} is already used by route {}", abs, other));
          break;
        }
      }
      dirs.emplace_back(abs, r.name);
      std::string why = checkDirUsable(r.archive->dir);
      if (!why.empty()) addAtValue(reader, key, why);
    }
  }
  if (cfg.admin.listen) {
    for (const auto& text : listens) {
      if (text == cfg.admin.listen->text) {
        addAtValue(reader, "admin.listen",
                   fmt::format("address {} is already used by a route", text));
        break;
      }
    }
  }
}

}  // namespace spliced
