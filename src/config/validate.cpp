#include "spliced/config/validate.hpp"

#include <linux/magic.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <fmt/format.h>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "spliced/admin/basic_auth.hpp"
#include "spliced/admin/tls.hpp"

namespace spliced {
namespace {

namespace fs = std::filesystem;

// Records `message` at the value of `key`.
void addAtValue(YamlReader& reader, const std::string& key, const std::string& message) {
  auto mark = reader.valueMark(key);
  reader.addAt(mark ? *mark : YAML::Mark::null_mark(), key, message);
}

// The name of a pseudo filesystem where no regular file can be created (the kernel's own views:
// /proc, /sys, cgroups, ...), or nullptr.
const char* pseudoFilesystem(const fs::path& dir) {
  struct statfs sf {};
  if (::statfs(dir.c_str(), &sf) != 0) return nullptr;
  switch (static_cast<unsigned long>(sf.f_type)) {
    case PROC_SUPER_MAGIC:
      return "proc";
    case SYSFS_MAGIC:
      return "sysfs";
    case CGROUP_SUPER_MAGIC:
      return "cgroup";
    case CGROUP2_SUPER_MAGIC:
      return "cgroup2";
    case DEBUGFS_MAGIC:
      return "debugfs";
    case TRACEFS_MAGIC:
      return "tracefs";
    case SECURITYFS_MAGIC:
      return "securityfs";
    case SELINUX_MAGIC:
      return "selinuxfs";
    case SMACK_MAGIC:
      return "smackfs";
    case DEVPTS_SUPER_MAGIC:
      return "devpts";
    case PSTOREFS_MAGIC:
      return "pstore";
    case EFIVARFS_MAGIC:
      return "efivarfs";
    case BINFMTFS_MAGIC:
      return "binfmt_misc";
    case NSFS_MAGIC:
      return "nsfs";
    case BPF_FS_MAGIC:
      return "bpf";
    default:
      return nullptr;
  }
}

bool readOnlyMount(const fs::path& dir) {
  struct statvfs sv {};
  return ::statvfs(dir.c_str(), &sv) == 0 && (sv.f_flag & ST_RDONLY) != 0;
}

// Empty when the directory of the unix socket `path` exists (the socket itself is created at
// start-up), else why binding it cannot work.
std::string checkSocketDir(const std::string& path) {
  fs::path parent = fs::path(path).parent_path();
  if (parent.empty()) parent = ".";
  std::error_code ec;
  auto st = fs::status(parent, ec);
  if (!fs::exists(st)) return fmt::format("directory {} does not exist", parent.string());
  if (!fs::is_directory(st)) return fmt::format("{} is not a directory", parent.string());
  if (::access(parent.c_str(), W_OK | X_OK) != 0) {
    return fmt::format("directory {} is not writable", parent.string());
  }
  return {};
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
      // Checked before access(): root may "write" to /proc, yet no file can be created there.
      if (const char* pseudo = pseudoFilesystem(probe)) {
        return probe == p ? fmt::format(
                                "directory '{}' is on a {} filesystem, where files cannot be "
                                "created",
                                p.string(), pseudo)
                          : fmt::format(
                                "cannot create '{}': '{}' is on a {} filesystem, where files "
                                "cannot be created",
                                p.string(), probe.string(), pseudo);
      }
      if (::access(probe.c_str(), W_OK | X_OK) != 0) {
        return probe == p ? fmt::format("directory '{}' is not writable", p.string())
                          : fmt::format("cannot create '{}': '{}' is not writable", p.string(),
                                        probe.string());
      }
      if (readOnlyMount(probe)) {
        return probe == p ? fmt::format("directory '{}' is on a read-only filesystem", p.string())
                          : fmt::format("cannot create '{}': '{}' is on a read-only filesystem",
                                        p.string(), probe.string());
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
  // Hash sets, not scans over earlier routes: -t stays linear in the number of routes.
  std::unordered_set<std::string> names;
  std::unordered_map<std::string, std::string> dirs;  // absolute archive dir -> route
  std::unordered_set<std::string> listens;
  names.reserve(cfg.routes.size());
  dirs.reserve(cfg.routes.size());
  listens.reserve(cfg.routes.size());
  for (size_t i = 0; i < cfg.routes.size(); ++i) {
    const RouteConfig& r = cfg.routes[i];
    const std::string& path = route_paths[i];
    if (!r.name.empty() && !names.insert(r.name).second) {
      addAtValue(reader, path + ".name",
                 fmt::format("duplicate route name '{}': names must be unique", r.name));
    }
    if (r.listen.isUnix()) {
      std::string why = checkSocketDir(r.listen.path);
      if (!why.empty()) addAtValue(reader, path + ".listen", why);
    }
    // Port 0 asks the kernel for a free port: two such routes never clash.
    if (!r.listen.text.empty() && !r.listen.text.ends_with(":0") &&
        !listens.insert(r.listen.text).second) {
      addAtValue(reader, path + ".listen",
                 fmt::format("address {} is already used by another route", r.listen.text));
    }
    if (r.archive && !r.archive->dir.empty()) {
      const std::string key = path + ".archive.dir";
      // Retention and crash recovery own a whole dir: two routes must not share one.
      std::error_code ec;
      std::string abs = fs::weakly_canonical(r.archive->dir, ec).string();
      auto [it, fresh] = dirs.emplace(abs, r.name);
      if (!fresh) {
        addAtValue(reader, key,
                   fmt::format("archive dir {} is already used by route {}", abs, it->second));
      }
      std::string why = checkDirUsable(r.archive->dir);
      if (!why.empty()) addAtValue(reader, key, why);
    }
  }
  if (cfg.admin.listen && cfg.admin.listen->isUnix()) {
    std::string why = checkSocketDir(cfg.admin.listen->path);
    if (!why.empty()) addAtValue(reader, "admin.listen", why);
  }
  if (cfg.admin.listen && listens.contains(cfg.admin.listen->text)) {
    addAtValue(reader, "admin.listen",
               fmt::format("address {} is already used by a route", cfg.admin.listen->text));
  }
  if (cfg.admin.auth && !cfg.admin.auth->basic_file.empty()) {
    // The same reading as at start (and at a reload): each problem with its FILE:LINE.
    Htpasswd::Load users = Htpasswd::read(cfg.admin.auth->basic_file);
    for (const auto& e : users.errors) addAtValue(reader, "admin.auth.basic_file", e);
  }
  if (cfg.admin.tls && !cfg.admin.tls->cert.empty() && !cfg.admin.tls->key.empty()) {
    Result<SslCtxPtr> ctx = makeTlsContext(*cfg.admin.tls);
    if (!ctx) addAtValue(reader, "admin.tls", ctx.error().message());
  }
  if ((cfg.admin.auth || cfg.admin.tls) && !cfg.admin.listen) {
    auto mark = reader.valueMark(cfg.admin.auth ? "admin.auth" : "admin.tls");
    reader.addAt(mark ? *mark : YAML::Mark::null_mark(),
                 cfg.admin.auth ? "admin.auth" : "admin.tls", "has no effect without admin.listen");
  }
}

}  // namespace spliced
