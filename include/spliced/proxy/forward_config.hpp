#pragma once
// A proxy route's settings (its `forward:` block).
#include <chrono>
#include <cstdint>
#include <optional>
#include <vector>

#include "spliced/core/address.hpp"
#include "spliced/core/units.hpp"

namespace spliced {

enum class Balance { RoundRobin, LeastConnections, SourceHash };
enum class ProxyProtocol { Off, V1, V2 };

// Active TCP health check of each upstream: a connect every `interval`; `fall` failures in a row
// mark it down, `rise` successes in a row up again.
struct HealthCheckConfig {
  milliseconds interval{2000};
  milliseconds timeout{1000};
  uint64_t fall = 3;
  uint64_t rise = 2;
  bool operator==(const HealthCheckConfig&) const = default;
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
  // A shipping route (archive and forward together): how often the cursor (what the upstream has
  // acknowledged) is saved, and the age of the oldest unshipped byte past which /healthz is 503
  // (0: never).
  milliseconds checkpoint_interval{1000};
  milliseconds max_lag{0};
  // A shipping connection on which bytes wait and none is acknowledged for this long is given up
  // (a stuck or black-holed upstream): shipping goes on with the next upstream.
  milliseconds ack_timeout{30000};
  bool operator==(const ForwardConfig&) const = default;
};

}  // namespace spliced
