#pragma once
// The configuration: YAML -> plain structs with defaults -> validated once -> an immutable
// snapshot (std::shared_ptr<const Config>) that the server and its sessions hold. Each feature's
// settings are declared with the feature (ArchiveConfig with the archive, ForwardConfig with the
// proxy, ...); this file holds the route and the whole file.
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "spliced/admin/admin_config.hpp"
#include "spliced/archive/archive_config.hpp"
#include "spliced/core/address.hpp"
#include "spliced/core/log.hpp"
#include "spliced/core/pipe_pool.hpp"
#include "spliced/core/units.hpp"
#include "spliced/proxy/forward_config.hpp"

namespace spliced {

struct RouteConfig {
  std::string name;
  SocketAddress listen;
  uint64_t max_connections = 10000;
  milliseconds idle_timeout{0};  // 0 = none
  std::vector<Cidr> allow;       // empty = everyone
  bool accept_proxy = false;     // clients start with a PROXY v1/v2 header (front load balancer)
  milliseconds accept_proxy_timeout{5000};
  uint64_t udp_rcvbuf = 4 * kMiB;  // listen: udp:...: the receive buffer asked of the kernel
  std::optional<ArchiveConfig> archive;
  std::optional<ForwardConfig> forward;
  // The route's YAML as read (normalised: YAML::Dump), to tell at a reload whether it changed.
  std::string text;
};

struct Config {
  std::string source;  // file the config came from
  LogConfig log;
  AdminConfig admin;
  PipesConfig pipes;
  // Event loops (threads). The file's default is `auto`: the CPUs in the process's affinity mask,
  // resolved when the file is read. A Config made in code runs one.
  uint64_t workers = 1;
  // Run as this user (and group: the user's primary group when empty) once listeners are bound
  // and archive dirs opened; empty: stay as started.
  std::string user;
  std::string group;
  std::string admin_text;  // the admin block's YAML as read (normalised), for a reload's check
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
  // The log section as far as it could be read, also when there are errors: the daemon logs
  // them in the format the file asks for.
  LogConfig log;
};

// Loads and validates a config file. Never throws; every problem found is reported.
ConfigResult loadConfigFile(const std::string& path);
// Same, from text (`source` names it in messages).
ConfigResult loadConfigString(const std::string& text, const std::string& source);

}  // namespace spliced
