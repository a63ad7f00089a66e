#pragma once
// What the admin endpoint reads of the running daemon: plain values copied when a request comes
// in, never a pointer into a route. The server provides them (AdminSource); with several workers
// this is where their counters are summed.
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "spliced/core/metrics.hpp"

namespace spliced {

struct UpstreamStatus {
  std::string address;
  uint64_t errors = 0;
  uint64_t active = 0;
  bool up = false;
  uint64_t ship_reconnects = 0;  // shipping routes: connections set up again to it
};

// A shipping route's figures (store-and-forward).
struct ShipCounts {
  uint64_t sent = 0;
  uint64_t acked = 0;
  uint64_t lag_bytes = 0;
  double lag_seconds = 0;
  uint64_t resent = 0;
  uint64_t dropped = 0;
  uint64_t cursor_errors = 0;
  uint64_t segment_errors = 0;
};

// The lifecycle thread's counters for one route.
struct LifecycleCounts {
  uint64_t compressed = 0;
  uint64_t compress_errors = 0;
  uint64_t compress_skipped = 0;
  uint64_t deleted_files = 0;
  uint64_t deleted_bytes = 0;
  uint64_t manifest_records = 0;
  uint64_t manifest_errors = 0;
  uint64_t kept_unpublished = 0;
  uint64_t publish_success = 0;
  uint64_t publish_failure = 0;
  uint64_t publish_timeout = 0;
  uint64_t publish_queued = 0;
};

struct RouteStatus {
  std::string name;
  bool collects = false;  // an archive: block
  bool proxies = false;   // a forward: block
  bool listening = false;
  std::string listen;       // the bound address ("127.0.0.1:5140", "unix:/run/x.sock")
  std::string archive_dir;  // collect routes: the configured archive dir
  RouteMetrics counters;
  uint64_t stalled = 0;      // connections paused because archive writes fail
  uint64_t unpublished = 0;  // closed segments whose rename failed, waiting for a retry
  LifecycleCounts lifecycle;
  std::vector<UpstreamStatus> upstreams;
  bool ships = false;  // archive: and forward: together
  ShipCounts ship;
};

// One worker's gauges (its share of the process's): imbalance between workers shows here.
struct WorkerStatus {
  size_t index = 0;
  uint64_t connections_active = 0;  // over every route
  uint64_t connections_total = 0;   // accepted by this worker, over every route
  uint64_t pipes_in_use = 0;
};

// The admin endpoint's own counters.
struct AdminCounters {
  uint64_t auth_failures = 0;   // requests refused for wrong, malformed or throttled credentials
  uint64_t tls_copy_bytes = 0;  // archive bytes sent over TLS (read into user space)
};

struct ServerStatus {
  std::vector<RouteStatus> routes;
  std::vector<WorkerStatus> workers;
  AdminCounters admin;             // filled in by the admin endpoint
  uint64_t config_generation = 1;  // 1 at start, +1 per reload applied
  uint64_t reloads_ok = 0;
  uint64_t reloads_failed = 0;
  std::string last_reload_error;  // "" when the last reload (if any) was applied
  uint64_t archive_queue = 0;
  uint64_t pipes_in_use = 0;
  uint64_t pipes_pooled = 0;
  std::chrono::system_clock::time_point start_time;
};

// What the admin endpoint may ask of the daemon that runs it.
class AdminSource {
 public:
  virtual ServerStatus status() const = 0;
  // Problems for /healthz, one line each; empty when healthy.
  virtual std::vector<std::string> problems() const = 0;
  // Lines /healthz shows after "ok" without turning 503 (the last failed reload).
  virtual std::vector<std::string> notes() const { return {}; }
  // The archive dir of a collect route (borrowed), or -1 for an unknown or proxy route.
  virtual int archiveDir(std::string_view route) const = 0;

 protected:
  ~AdminSource() = default;
};

}  // namespace spliced
