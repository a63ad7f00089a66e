#pragma once
// Every metric spliced exports, declared once (as Envoy's ALL_..._STATS lists are): its name,
// type, help and where its value comes from. /metrics and the totals line logged at shutdown
// both read these tables, and so do the tests.
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "spliced/admin/admin_status.hpp"
#include "spliced/admin/process_stats.hpp"

namespace spliced {

enum class MetricType { Counter, Gauge };
// Which routes a value is logged for in the shutdown totals line.
enum class TotalsFor { None, All, Collect, Proxy };

// One sample per route. Several entries may share a family (told apart by `reason`).
struct RouteMetricDef {
  std::string_view family;
  MetricType type;
  std::string_view help;    // the family's, taken from its first entry
  std::string_view reason;  // the value of a reason="" label, or empty for none
  std::string_view totals;  // the key in the totals line, or empty
  TotalsFor totals_for;
  uint64_t (*get)(const RouteStatus&);
  std::string_view label = "reason";  // the name of the label whose value `reason` is
};

// One sample per upstream of each proxy route, labelled route and upstream.
struct UpstreamMetricDef {
  std::string_view family;
  MetricType type;
  std::string_view help;
  uint64_t (*get)(const UpstreamStatus&);
};

// One sample for the process: a count, or a real number (seconds).
struct ProcessMetricDef {
  std::string_view family;
  MetricType type;
  std::string_view help;
  uint64_t (*count)(const ServerStatus&, const ProcessStats&);
  double (*real)(const ServerStatus&, const ProcessStats&);
};

std::span<const RouteMetricDef> routeMetrics();
std::span<const UpstreamMetricDef> upstreamMetrics();
std::span<const ProcessMetricDef> processMetrics();

// The whole /metrics page (Prometheus text format 0.0.4), process figures read from /proc now.
std::string renderMetrics(const ServerStatus& status);

// "connections=3 rejected_limit=0 ... copy_fallback_bytes=0": the route's totals as logged when
// spliced stops, the keys its kind has.
std::string totalsLine(const RouteStatus& route);

}  // namespace spliced
