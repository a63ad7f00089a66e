#pragma once
// The configuration: YAML -> plain structs with defaults -> validated once -> an immutable
// snapshot (std::shared_ptr<const Config>) that the server and its sessions hold.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "spliced/address.hpp"
#include "spliced/naming.hpp"

namespace spliced {

using std::chrono::milliseconds;

enum class LogLevel { Trace, Debug, Info, Warn, Error };
enum class LogFormat { Text, Json };
enum class Layout { PerConnection, Shared };
enum class Framing { Raw, Lines };
enum class Compress { None, Gzip, Zstd };
enum class FsyncPolicy { Never, OnClose };
enum class Balance { RoundRobin, LeastConnections, SourceHash };
enum class ProxyProtocol { Off, V1, V2 };

inline constexpr uint64_t kKiB = 1024;
inline constexpr uint64_t kMiB = 1024 * kKiB;
inline constexpr uint64_t kGiB = 1024 * kMiB;

struct LogConfig {
  LogLevel level = LogLevel::Info;
  LogFormat format = LogFormat::Text;
};

struct AdminConfig {
  std::optional<SocketAddress> listen;  // off when absent
  std::vector<Cidr> allow;              // empty = loopback only (decided when admin lands)
};

struct PipesConfig {
  uint64_t size = kMiB;  // requested with F_SETPIPE_SZ; the granted size is read back
  uint64_t max = 1024;   // pipes in existence (in use + pooled); 0 forces the copy path
};

struct RotateConfig {
  uint64_t max_bytes = 256 * kMiB;  // 0 = no size limit
  milliseconds interval{0};         // 0 = no time rotation; else aligned to the wall clock
};

struct RetainConfig {
  uint64_t max_files = 0;  // 0 = unlimited
  milliseconds max_age{0};
  uint64_t max_bytes = 0;
};

struct ArchiveConfig {
  std::filesystem::path dir;
  Layout layout = Layout::PerConnection;
  Framing framing = Framing::Raw;
  NameTemplate name;
  bool localtime = false;
  RotateConfig rotate;
  RetainConfig retain;
  Compress compress = Compress::None;
  int compress_level = 0;  // 0 = the codec's default (zstd 3, gzip 6)
  FsyncPolicy fsync = FsyncPolicy::Never;
  uint64_t max_line = kMiB;  // framing: lines only; a longer line is split (and counted)
};

// Active TCP health check of each upstream: a connect every `interval`; `fall` failures in a row
// mark it down, `rise` successes in a row up again.
struct HealthCheckConfig {
  milliseconds interval{2000};
  milliseconds timeout{1000};
  uint64_t fall = 3;
  uint64_t rise = 2;
};

struct ForwardConfig {
  std::vector<SocketAddress> upstreams;
  Balance balance = Balance::RoundRobin;
  milliseconds connect_timeout{3000};
  ProxyProtocol proxy_protocol = ProxyProtocol::Off;
  uint64_t retries = 2;              // further upstreams tried after a failed connect
  uint64_t max_fails = 3;            // passive health: failed connects in a row that mark one down
  milliseconds fail_timeout{10000};  // ... for this long, then it is tried again
  std::optional<HealthCheckConfig> health_check;  // off when absent
};

struct RouteConfig {
  std::string name;
  SocketAddress listen;
  uint64_t max_connections = 10000;
  milliseconds idle_timeout{0};  // 0 = none
  std::vector<Cidr> allow;       // empty = everyone
  bool accept_proxy = false;     // clients start with a PROXY v1/v2 header (front load balancer)
  milliseconds accept_proxy_timeout{5000};
  std::optional<ArchiveConfig> archive;
  std::optional<ForwardConfig> forward;
};

struct Config {
  std::string source;  // file the config came from
  LogConfig log;
  AdminConfig admin;
  PipesConfig pipes;
  milliseconds drain_timeout{10000};
  std::vector<RouteConfig> routes;
};
using ConfigPtr = std::shared_ptr<const Config>;

// One problem in a config file, printed as "FILE:LINE:COL: key: message" (1-based line/column).
struct ConfigError {
  std::string file;
  int line = 0;
  int column = 0;
  std::string key;
  std::string message;
  std::string format() const;
};

struct ConfigResult {
  ConfigPtr config;  // set only when errors is empty
  std::vector<ConfigError> errors;
};

// Loads and validates a config file. Never throws; every problem found is reported.
ConfigResult loadConfigFile(const std::string& path);
// Same, from text (`source` names it in messages).
ConfigResult loadConfigString(const std::string& text, const std::string& source);

// Checks that `dir` exists as a writable directory or could be created (its nearest existing
// ancestor is a writable directory). Returns an empty string when fine, else the reason.
std::string checkDirUsable(const std::filesystem::path& dir);

}  // namespace spliced
