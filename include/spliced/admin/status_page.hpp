#pragma once
// The admin endpoint's status page: `/` (HTML, complete without JavaScript) and `/status.json`
// (the same figures, which the page's small script fetches every few seconds). Both are rendered
// from a ServerStatus and the figures only the admin endpoint keeps (rates, disk usage). The
// JSON's members are listed in docs/OPERATIONS.md.
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "spliced/admin/admin_status.hpp"

namespace spliced {

// The filesystem an archive dir lives on (statvfs).
struct DiskUsage {
  uint64_t size_bytes = 0;
  uint64_t free_bytes = 0;  // available to an unprivileged writer
};

// Bytes per second of a route's counters, over the last sampling interval.
struct RouteRates {
  double bytes_in = 0;
  double bytes_out = 0;
  double upstream_bytes = 0;
  double archive_bytes = 0;
};

// What the page shows besides the ServerStatus: one entry per route, in its order.
struct StatusExtras {
  std::vector<RouteRates> rates;
  std::vector<std::optional<DiskUsage>> disks;  // nullopt: a proxy route, or statvfs failed
  std::chrono::system_clock::time_point now;
};

// Keeps the previous sample of each route's byte counters to give rates. The admin endpoint
// feeds it from a timer; the page reads the rates of the last two samples.
class RateSampler {
 public:
  using Clock = std::chrono::steady_clock;
  void sample(const ServerStatus& status, Clock::time_point now);
  // One entry per route of the last sample (zero until two samples exist).
  const std::vector<RouteRates>& rates() const { return rates_; }

 private:
  struct Sample {
    std::string route;
    uint64_t bytes_in = 0, bytes_out = 0, upstream_bytes = 0, archive_bytes = 0;
  };
  std::vector<Sample> last_;
  Clock::time_point last_time_{};
  std::vector<RouteRates> rates_;
};

std::string renderStatusJson(const ServerStatus& status, const StatusExtras& extras);
std::string renderStatusHtml(const ServerStatus& status, const StatusExtras& extras);

}  // namespace spliced
