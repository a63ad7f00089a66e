#include "spliced/admin/metrics_catalogue.hpp"

#include <fmt/format.h>
#include <array>

#include "spliced/admin/exposition.hpp"
#include "spliced/admin/process_stats.hpp"
#include "spliced/version.hpp"

namespace spliced {
namespace {

using T = MetricType;
using R = RouteStatus;

constexpr const char* kRejectedHelp =
    "Client connections closed at accept (limit: max_connections, denied: allow list).";

// The order of this table is the order of /metrics and of the totals line.
constexpr const char* kPublishRunsHelp =
    "archive.on_publish command runs (success: exit 0; failure: another exit status, a signal, or "
    "it could not start; timeout: killed after on_publish.timeout).";

constexpr std::array<RouteMetricDef, 43> kRouteMetrics{{
    {"spliced_connections_active", T::Gauge, "Open client connections.", "", "", TotalsFor::None,
     [](const R& r) { return r.counters.connections_active.get(); }},
    {"spliced_connections_total", T::Counter, "Client connections accepted.", "", "connections",
     TotalsFor::All, [](const R& r) { return r.counters.connections_total.get(); }},
    {"spliced_connections_rejected_total", T::Counter, kRejectedHelp, "limit", "rejected_limit",
     TotalsFor::All, [](const R& r) { return r.counters.rejected_limit.get(); }},
    {"spliced_connections_rejected_total", T::Counter, kRejectedHelp, "denied", "rejected_denied",
     TotalsFor::All, [](const R& r) { return r.counters.rejected_denied.get(); }},
    {"spliced_connections_rejected_total", T::Counter, kRejectedHelp, "no_upstream",
     "rejected_no_upstream", TotalsFor::Proxy,
     [](const R& r) { return r.counters.rejected_no_upstream.get(); }},
    {"spliced_connections_rejected_total", T::Counter, kRejectedHelp, "bad_proxy_header",
     "rejected_bad_header", TotalsFor::All,
     [](const R& r) { return r.counters.rejected_bad_header.get(); }},
    {"spliced_bytes_in_total", T::Counter, "Bytes received from clients.", "", "bytes_in",
     TotalsFor::All, [](const R& r) { return r.counters.bytes_in.get(); }},
    {"spliced_bytes_out_total", T::Counter, "Bytes sent to clients (proxy routes).", "",
     "bytes_out", TotalsFor::Proxy, [](const R& r) { return r.counters.bytes_out.get(); }},
    {"spliced_upstream_bytes_total", T::Counter, "Bytes sent to upstreams (proxy routes).", "",
     "upstream_bytes", TotalsFor::Proxy,
     [](const R& r) { return r.counters.upstream_bytes.get(); }},
    {"spliced_archive_bytes_total", T::Counter, "Bytes written into archive segments.", "",
     "archive_bytes", TotalsFor::Collect,
     [](const R& r) { return r.counters.archive_bytes.get(); }},
    {"spliced_archive_segments_total", T::Counter, "Archive segments closed.", "", "segments",
     TotalsFor::Collect, [](const R& r) { return r.counters.archive_segments.get(); }},
    {"spliced_copy_fallback_bytes_total", T::Counter,
     "Bytes that passed through user space instead of splice.", "", "copy_fallback_bytes",
     TotalsFor::All, [](const R& r) { return r.counters.copy_fallback_bytes.get(); }},
    {"spliced_storage_errors_total", T::Counter,
     "Failed archive writes (retried), syncs and renames.", "", "", TotalsFor::None,
     [](const R& r) { return r.counters.storage_errors.get(); }},
    {"spliced_archive_stalled_connections", T::Gauge,
     "Connections paused because archive writes fail.", "", "", TotalsFor::None,
     [](const R& r) { return r.stalled; }},
    {"spliced_archive_unsynced_segments_total", T::Counter,
     "Segments published as NAME.unsynced because their fdatasync failed (fsync: on_close).", "",
     "", TotalsFor::None, [](const R& r) { return r.counters.unsynced_segments.get(); }},
    {"spliced_archive_rescued_segments_total", T::Counter,
     "Segments opened under a rescue name (rescue/...) because the configured name could not be "
     "opened, or to write held bytes at exit.",
     "", "", TotalsFor::None, [](const R& r) { return r.counters.archive_rescued_segments.get(); }},
    {"spliced_archive_unpublished_segments", T::Gauge,
     "Closed segments still NAME.open because their rename failed (retried with back-off).", "", "",
     TotalsFor::None, [](const R& r) { return r.unpublished; }},
    {"spliced_lines_split_total", T::Counter,
     "Lines longer than max_line, cut into marked pieces (a line counts once).", "", "",
     TotalsFor::None, [](const R& r) { return r.counters.lines_split.get(); }},
    {"spliced_framing_auto_total", T::Counter,
     "Connections of framing: auto routes, by the framing chosen from their first bytes.",
     "octet_counted", "", TotalsFor::None,
     [](const R& r) { return r.counters.framing_auto_octet.get(); }},
    {"spliced_framing_auto_total", T::Counter, "", "lines", "", TotalsFor::None,
     [](const R& r) { return r.counters.framing_auto_lines.get(); }},
    {"spliced_frame_errors_total", T::Counter,
     "Octet-counted frames: longer than max_line (split or closed, per archive.oversize), "
     "malformed headers (connection closed), cut short by the end of the stream.",
     "oversize", "", TotalsFor::None, [](const R& r) { return r.counters.frames_oversize.get(); }},
    {"spliced_frame_errors_total", T::Counter, "", "malformed", "", TotalsFor::None,
     [](const R& r) { return r.counters.frames_malformed.get(); }},
    {"spliced_frame_errors_total", T::Counter, "", "incomplete", "", TotalsFor::None,
     [](const R& r) { return r.counters.frames_incomplete.get(); }},
    {"spliced_framing_copied_bytes_total", T::Counter,
     "framing: octet_counted and auto: bytes that passed through user space to be framed (every "
     "byte of a record under 4 KiB, the headers of output: lines, what came with a copied read).",
     "", "", TotalsFor::None, [](const R& r) { return r.counters.framing_copied_bytes.get(); }},
    {"spliced_framing_spliced_bytes_total", T::Counter,
     "framing: octet_counted and auto: bytes of records spliced from the socket into the segment "
     "(the header only peeked at), never passing through user space.",
     "", "", TotalsFor::None, [](const R& r) { return r.counters.framing_spliced_bytes.get(); }},
    {"spliced_udp_datagrams_total", T::Counter,
     "Datagrams received on udp: listeners (archived, truncated, denied or rejected alike).", "",
     "", TotalsFor::None, [](const R& r) { return r.counters.udp_datagrams.get(); }},
    {"spliced_udp_truncated_total", T::Counter,
     "Datagrams longer than a record may be (max_line), archived truncated.", "", "",
     TotalsFor::None, [](const R& r) { return r.counters.udp_truncated.get(); }},
    {"spliced_udp_dropped_total", T::Counter,
     "Datagrams the kernel dropped because the socket's receive buffer was full (SO_RXQ_OVFL).", "",
     "", TotalsFor::None, [](const R& r) { return r.counters.udp_dropped.get(); }},
    {"spliced_udp_rejected_total", T::Counter,
     "Datagrams not archived (denied: sender outside the allow list; limit: a new sender of a "
     "layout: per_peer route while max_connections chains are open).",
     "denied", "", TotalsFor::None, [](const R& r) { return r.counters.udp_denied.get(); }},
    {"spliced_udp_rejected_total", T::Counter, "", "limit", "", TotalsFor::None,
     [](const R& r) { return r.counters.udp_rejected_limit.get(); }},
    {"spliced_archive_compressed_total", T::Counter, "Closed segments compressed.", "", "",
     TotalsFor::None, [](const R& r) { return r.lifecycle.compressed; }},
    {"spliced_archive_compress_errors_total", T::Counter,
     "Compressions that failed (the plain segment is kept).", "", "", TotalsFor::None,
     [](const R& r) { return r.lifecycle.compress_errors; }},
    {"spliced_archive_compress_skipped_total", T::Counter,
     "Segments not queued for compression because the queue was full (caught up later).", "", "",
     TotalsFor::None, [](const R& r) { return r.lifecycle.compress_skipped; }},
    {"spliced_archive_deleted_segments_total", T::Counter, "Segments deleted by retention.", "", "",
     TotalsFor::None, [](const R& r) { return r.lifecycle.deleted_files; }},
    {"spliced_archive_deleted_bytes_total", T::Counter, "Bytes deleted by retention.", "", "",
     TotalsFor::None, [](const R& r) { return r.lifecycle.deleted_bytes; }},
    {"spliced_archive_manifest_records_total", T::Counter,
     "Lines appended to the archive manifest (closed, compressed, deleted, published).", "", "",
     TotalsFor::None, [](const R& r) { return r.lifecycle.manifest_records; }},
    {"spliced_archive_manifest_errors_total", T::Counter,
     "Manifest appends (or opens) that failed: the event is not recorded.", "", "", TotalsFor::None,
     [](const R& r) { return r.lifecycle.manifest_errors; }},
    {"spliced_archive_kept_unpublished_total", T::Counter,
     "Deletions retention put off because the segment's on_publish command has not succeeded yet "
     "(retain.require_published).",
     "", "", TotalsFor::None, [](const R& r) { return r.lifecycle.kept_unpublished; }},
    {"spliced_publish_runs_total", T::Counter, kPublishRunsHelp, "success", "", TotalsFor::None,
     [](const R& r) { return r.lifecycle.publish_success; }, "result"},
    {"spliced_publish_runs_total", T::Counter, kPublishRunsHelp, "failure", "", TotalsFor::None,
     [](const R& r) { return r.lifecycle.publish_failure; }, "result"},
    {"spliced_publish_runs_total", T::Counter, kPublishRunsHelp, "timeout", "", TotalsFor::None,
     [](const R& r) { return r.lifecycle.publish_timeout; }, "result"},
    {"spliced_publish_queue", T::Gauge,
     "Segments waiting for an on_publish run (new ones, and failed ones waiting for a retry).", "",
     "", TotalsFor::None, [](const R& r) { return r.lifecycle.publish_queued; }},
    {"spliced_listener_up", T::Gauge, "1 while the route accepts connections.", "", "",
     TotalsFor::None, [](const R& r) { return static_cast<uint64_t>(r.listening ? 1 : 0); }},
}};

constexpr std::array<UpstreamMetricDef, 3> kUpstreamMetrics{{
    {"spliced_upstream_errors_total", T::Counter,
     "Failed upstream connections and transfers (proxy routes).",
     [](const UpstreamStatus& u) { return u.errors; }},
    {"spliced_upstream_up", T::Gauge,
     "1 while an upstream is considered up (passive and active health).",
     [](const UpstreamStatus& u) { return static_cast<uint64_t>(u.up ? 1 : 0); }},
    {"spliced_upstream_active_connections", T::Gauge, "Sessions connected through an upstream now.",
     [](const UpstreamStatus& u) { return u.active; }},
}};

// Shipping routes only (archive: and forward: together).
struct ShipMetricDef {
  std::string_view family;
  MetricType type;
  std::string_view help;
  double (*get)(const RouteStatus&);
};

constexpr std::array<ShipMetricDef, 8> kShipMetrics{{
    {"spliced_ship_bytes_total", T::Counter,
     "Archived bytes sent to the upstream (sent again after a broken connection included).",
     [](const R& r) { return static_cast<double>(r.ship.sent); }},
    {"spliced_ship_acked_bytes_total", T::Counter,
     "Shipped bytes the upstream's kernel acknowledged.",
     [](const R& r) { return static_cast<double>(r.ship.acked); }},
    {"spliced_ship_lag_bytes", T::Gauge, "Archived bytes the upstream has not acknowledged yet.",
     [](const R& r) { return static_cast<double>(r.ship.lag_bytes); }},
    {"spliced_ship_lag_seconds", T::Gauge,
     "Age of the oldest archived byte the upstream has not acknowledged (0: none waits).",
     [](const R& r) { return r.ship.lag_seconds; }},
    {"spliced_ship_resent_bytes_total", T::Counter,
     "Bytes sent again because a connection broke before the upstream acknowledged them.",
     [](const R& r) { return static_cast<double>(r.ship.resent); }},
    {"spliced_ship_dropped_bytes_total", T::Counter,
     "Archived bytes that will never be shipped: deleted by retention (retain.unshipped: drop), "
     "or truncated or removed before they were shipped.",
     [](const R& r) { return static_cast<double>(r.ship.dropped); }},
    {"spliced_ship_cursor_errors_total", T::Counter,
     "Failed saves of the shipping cursor or appends to its segment journal, and cursors found "
     "removed.",
     [](const R& r) { return static_cast<double>(r.ship.cursor_errors); }},
    {"spliced_ship_segment_errors_total", T::Counter,
     "Segments found truncated, removed or unreadable under the shipper before the upstream "
     "acknowledged them.",
     [](const R& r) { return static_cast<double>(r.ship.segment_errors); }},
}};

using P = ProcessStats;
using S = ServerStatus;

constexpr std::array<ProcessMetricDef, 11> kProcessMetrics{{
    {"spliced_archive_queue_length", T::Gauge,
     "Compression and retention jobs waiting for the archive lifecycle thread (the backlog).",
     [](const S& s, const P&) { return s.archive_queue; }, nullptr},
    {"spliced_pipes_in_use", T::Gauge, "Pipes lent to connections (holding bytes).",
     [](const S& s, const P&) { return s.pipes_in_use; }, nullptr},
    {"spliced_pipes_pooled", T::Gauge, "Empty pipes kept for reuse.",
     [](const S& s, const P&) { return s.pipes_pooled; }, nullptr},
    {"spliced_admin_auth_failures_total", T::Counter,
     "Admin requests refused for wrong, malformed or throttled credentials.",
     [](const S& s, const P&) { return s.admin.auth_failures; }, nullptr},
    {"spliced_admin_tls_copy_bytes_total", T::Counter,
     "Archive bytes the admin endpoint sent over TLS (copied through user space, no sendfile).",
     [](const S& s, const P&) { return s.admin.tls_copy_bytes; }, nullptr},
    // The value is 1; the version is its label.
    {"spliced_build_info", T::Gauge, "Build information; the value is always 1.",
     [](const S&, const P&) { return uint64_t{1}; }, nullptr},
    {"process_open_fds", T::Gauge, "Number of open file descriptors.",
     [](const S&, const P& p) { return p.open_fds; }, nullptr},
    {"process_max_fds", T::Gauge, "Maximum number of open file descriptors.",
     [](const S&, const P& p) { return p.max_fds; }, nullptr},
    {"process_resident_memory_bytes", T::Gauge, "Resident memory size in bytes.",
     [](const S&, const P& p) { return p.rss_bytes; }, nullptr},
    {"process_cpu_seconds_total", T::Counter, "Total user and system CPU time in seconds.", nullptr,
     [](const S&, const P& p) { return p.cpu_seconds; }},
    {"process_start_time_seconds", T::Gauge,
     "Start time of the process since the Unix epoch in seconds.", nullptr,
     [](const S& s, const P&) {
       return std::chrono::duration<double>(s.start_time.time_since_epoch()).count();
     }},
}};

Exposition::Type toExposition(MetricType t) {
  return t == MetricType::Counter ? Exposition::Type::Counter : Exposition::Type::Gauge;
}

bool loggedFor(TotalsFor f, const RouteStatus& r) {
  switch (f) {
    case TotalsFor::None:
      return false;
    case TotalsFor::All:
      return true;
    case TotalsFor::Collect:
      return r.collects;
    case TotalsFor::Proxy:
      return r.proxies;
  }
  return false;
}

}  // namespace

std::span<const RouteMetricDef> routeMetrics() { return kRouteMetrics; }
std::span<const UpstreamMetricDef> upstreamMetrics() { return kUpstreamMetrics; }
std::span<const ProcessMetricDef> processMetrics() { return kProcessMetrics; }

std::string renderMetrics(const ServerStatus& status) {
  Exposition x;
  // Entries of one family are adjacent in the table: the family is declared at its first entry,
  // and its samples go route by route, entry by entry.
  for (size_t i = 0; i < kRouteMetrics.size();) {
    size_t end = i;
    while (end < kRouteMetrics.size() && kRouteMetrics[end].family == kRouteMetrics[i].family) {
      ++end;
    }
    x.family(kRouteMetrics[i].family, toExposition(kRouteMetrics[i].type), kRouteMetrics[i].help);
    for (const auto& r : status.routes) {
      for (size_t k = i; k < end; ++k) {
        const RouteMetricDef& m = kRouteMetrics[k];
        Labels labels{{"route", r.name}};
        if (!m.reason.empty()) labels.emplace_back(std::string(m.label), std::string(m.reason));
        x.sample(labels, m.get(r));
      }
    }
    i = end;
  }
  for (const auto& m : kUpstreamMetrics) {
    x.family(m.family, toExposition(m.type), m.help);
    for (const auto& r : status.routes) {
      for (const auto& u : r.upstreams)
        x.sample({{"route", r.name}, {"upstream", u.address}}, m.get(u));
    }
  }
  for (const auto& m : kShipMetrics) {
    x.family(m.family, toExposition(m.type), m.help);
    for (const auto& r : status.routes) {
      if (r.ships) x.sample({{"route", r.name}}, m.get(r));
    }
  }
  x.family("spliced_ship_reconnects_total", Exposition::Type::Counter,
           "Connections to an upstream a shipping route set up after its first one (failover, "
           "resets, restarts of the upstream).");
  for (const auto& r : status.routes) {
    if (!r.ships) continue;
    for (const auto& u : r.upstreams) {
      x.sample({{"route", r.name}, {"upstream", u.address}}, u.ship_reconnects);
    }
  }
  x.family("spliced_config_generation", Exposition::Type::Gauge,
           "Configurations applied: 1 at start, one more per reload applied.");
  x.sample({}, status.config_generation);
  x.family("spliced_config_reloads_total", Exposition::Type::Counter,
           "Reloads (SIGHUP) by result: success (applied) or failure (the running one is kept).");
  x.sample({{"result", "success"}}, status.reloads_ok);
  x.sample({{"result", "failure"}}, status.reloads_failed);
  x.family("spliced_workers", Exposition::Type::Gauge, "Workers (event loops) of the process.");
  x.sample({}, static_cast<uint64_t>(status.workers.size()));
  x.family("spliced_worker_connections_active", Exposition::Type::Gauge,
           "Open client connections on each worker, over every route.");
  for (const auto& w : status.workers) {
    x.sample({{"worker", std::to_string(w.index)}}, w.connections_active);
  }
  x.family("spliced_worker_connections_total", Exposition::Type::Counter,
           "Client connections accepted by each worker, over every route.");
  for (const auto& w : status.workers) {
    x.sample({{"worker", std::to_string(w.index)}}, w.connections_total);
  }
  x.family("spliced_worker_pipes_in_use", Exposition::Type::Gauge,
           "Pipes lent to connections on each worker.");
  for (const auto& w : status.workers) {
    x.sample({{"worker", std::to_string(w.index)}}, w.pipes_in_use);
  }
  ProcessStats ps = readProcessStats();
  for (const auto& m : kProcessMetrics) {
    x.family(m.family, toExposition(m.type), m.help);
    Labels labels;
    if (m.family == "spliced_build_info") labels.emplace_back("version", kVersion);
    if (m.count != nullptr) {
      x.sample(labels, m.count(status, ps));
    } else {
      x.sample(labels, m.real(status, ps));
    }
  }
  return x.text();
}

std::string totalsLine(const RouteStatus& route) {
  std::string out;
  for (const auto& m : kRouteMetrics) {
    if (m.totals.empty() || !loggedFor(m.totals_for, route)) continue;
    if (!out.empty()) out += ' ';
    out += fmt::format("{}={}", m.totals, m.get(route));
  }
  return out;
}

}  // namespace spliced
