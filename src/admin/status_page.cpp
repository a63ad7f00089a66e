#include "spliced/admin/status_page.hpp"

#include "spliced/admin/exposition.hpp"

#include <fmt/format.h>

#include <cmath>
#include <string_view>

#include "spliced/version.hpp"

namespace spliced {
namespace {

// Built piece by piece: GCC 12 at -O3 reports a false -Wrestrict on `"\"" + string`.
std::string jsonString(std::string_view s) {
  std::string out = "\"";
  out += jsonEscape(s);
  out += '"';
  return out;
}

std::string html(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// 1536 -> "1.5 KiB"; the page's script formats the same way (fmtBytes).
std::string humanBytes(double v) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  size_t u = 0;
  while (v >= 1024 && u + 1 < std::size(kUnits)) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{:.0f} B", v) : fmt::format("{:.1f} {}", v, kUnits[u]);
}

// 93784 -> "1d 2h 3m 4s"; the script's fmtUptime is the same.
std::string humanUptime(int64_t s) {
  if (s < 0) s = 0;
  std::string out;
  if (s >= 86400) out += fmt::format("{}d ", s / 86400);
  if (s >= 3600) out += fmt::format("{}h ", s / 3600 % 24);
  if (s >= 60) out += fmt::format("{}m ", s / 60 % 60);
  return out + fmt::format("{}s", s % 60);
}

int64_t uptimeSeconds(const ServerStatus& st, const StatusExtras& ex) {
  return std::chrono::duration_cast<std::chrono::seconds>(ex.now - st.start_time).count();
}

const char* kindOf(const RouteStatus& r) { return r.proxies ? "proxy" : "collect"; }

RouteRates rateAt(const StatusExtras& ex, size_t i) {
  return i < ex.rates.size() ? ex.rates[i] : RouteRates{};
}

// The rate as JSON: a whole number of bytes per second.
uint64_t wholeRate(double v) { return static_cast<uint64_t>(std::llround(v < 0 ? 0 : v)); }

// A table cell the script updates: `key` is a path into /status.json, `f` how to show it.
std::string cell(const std::string& key, const char* f, const std::string& text) {
  return fmt::format("<td data-k=\"{}\" data-f=\"{}\">{}</td>", html(key), f, html(text));
}
std::string num(const std::string& key, uint64_t v) { return cell(key, "n", std::to_string(v)); }
std::string rate(const std::string& key, double v) {
  return cell(key, "r", humanBytes(static_cast<double>(wholeRate(v))) + "/s");
}

constexpr std::string_view kStyle = R"(
*{box-sizing:border-box}
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d232a;background:#f4f6f8}
header{background:#1f3a5f;color:#fff;padding:12px 16px;display:flex;flex-wrap:wrap;gap:4px 24px;align-items:baseline}
header h1{font-size:20px;margin:0 16px 0 0}
header span b{font-weight:600}
main{padding:8px 16px 24px;max-width:1400px}
h2{font-size:16px;margin:20px 0 6px}
.scroll{overflow-x:auto;background:#fff;border:1px solid #d5dbe1;border-radius:4px}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums}
th,td{padding:5px 8px;border-bottom:1px solid #e6eaee;text-align:right;white-space:nowrap}
th{background:#e9eef3;font-weight:600;font-size:13px}
th.g{text-align:center;border-left:1px solid #d5dbe1}
tr:first-child th:first-child,td:first-child,.t{text-align:left}
tr:last-child td{border-bottom:0}
.up{color:#0a7a32;font-weight:600}.down{color:#b3261e;font-weight:600}
.bad{background:#fde8e6}
.err{color:#b3261e}
footer{color:#5b6670;font-size:12px;padding:0 16px 16px}
@media (max-width:600px){body{font-size:13px}header h1{font-size:18px}th,td{padding:4px 6px}main{padding:4px 8px 16px}}
)";

// Refreshes every cell with a data-k from /status.json; a new config generation (a reload may
// add or remove routes) reloads the whole page instead.
constexpr std::string_view kScript = R"(
(function(){
var U=['B','KiB','MiB','GiB','TiB','PiB'];
function fmtBytes(v){var u=0;while(v>=1024&&u<U.length-1){v/=1024;u++;}return u?v.toFixed(1)+' '+U[u]:Math.round(v)+' B';}
function fmtUptime(s){var o='';if(s>=86400)o+=Math.floor(s/86400)+'d ';if(s>=3600)o+=Math.floor(s/3600)%24+'h ';if(s>=60)o+=Math.floor(s/60)%60+'m ';return o+(s%60)+'s';}
var F={n:String,r:function(v){return fmtBytes(v)+'/s';},b:fmtBytes,u:fmtUptime,
 t:function(v){return v===''?'none':v;},
 h:function(v){return v?'up':'down';}};
var gen=document.body.getAttribute('data-generation');
function get(o,k){var p=k.split('.');for(var i=0;i<p.length&&o!=null;i++)o=o[p[i]];return o;}
function tick(){
 fetch('status.json',{cache:'no-store',credentials:'same-origin'}).then(function(r){
  if(!r.ok)throw new Error('HTTP '+r.status);return r.json();}).then(function(d){
  if(String(d.config_generation)!==gen){location.reload();return;}
  document.querySelectorAll('[data-k]').forEach(function(e){
   var v=get(d,e.getAttribute('data-k'));if(v===undefined)return;
   var f=e.getAttribute('data-f');e.textContent=(F[f]||String)(v);
   if(f==='h')e.className=v?'up':'down';});
  document.getElementById('refresh').textContent='updated '+new Date().toLocaleTimeString();
 }).catch(function(e){document.getElementById('refresh').textContent='refresh failed: '+e.message;});
}
setInterval(tick,3000);
})();
)";

}  // namespace

void RateSampler::sample(const ServerStatus& status, Clock::time_point now) {
  std::vector<Sample> cur;
  cur.reserve(status.routes.size());
  for (const auto& r : status.routes) {
    cur.push_back({r.name, r.counters.bytes_in.get(), r.counters.bytes_out.get(),
                   r.counters.upstream_bytes.get(), r.counters.archive_bytes.get()});
  }
  rates_.assign(cur.size(), RouteRates{});
  const double dt = std::chrono::duration<double>(now - last_time_).count();
  if (!last_.empty() && dt > 0) {
    for (size_t i = 0; i < cur.size(); ++i) {
      // A route that is new or renamed since the last sample has no rate yet.
      if (i >= last_.size() || last_[i].route != cur[i].route) continue;
      auto d = [dt](uint64_t a, uint64_t b) {
        return a >= b ? static_cast<double>(a - b) / dt : 0.0;
      };
      rates_[i] = {d(cur[i].bytes_in, last_[i].bytes_in), d(cur[i].bytes_out, last_[i].bytes_out),
                   d(cur[i].upstream_bytes, last_[i].upstream_bytes),
                   d(cur[i].archive_bytes, last_[i].archive_bytes)};
    }
  }
  last_ = std::move(cur);
  last_time_ = now;
}

std::string renderStatusJson(const ServerStatus& st, const StatusExtras& ex) {
  std::string o = "{";
  o += fmt::format("\"version\":{},", jsonString(kVersion));
  o += fmt::format(
      "\"start_time\":{},",
      std::chrono::duration_cast<std::chrono::seconds>(st.start_time.time_since_epoch()).count());
  o += fmt::format("\"uptime_seconds\":{},", uptimeSeconds(st, ex));
  o += fmt::format("\"config_generation\":{},", st.config_generation);
  o += fmt::format("\"last_reload_error\":{},", jsonString(st.last_reload_error));
  o += fmt::format("\"archive_queue\":{},\"pipes_in_use\":{},\"pipes_pooled\":{},",
                   st.archive_queue, st.pipes_in_use, st.pipes_pooled);
  o += "\"routes\":[";
  for (size_t i = 0; i < st.routes.size(); ++i) {
    const RouteStatus& r = st.routes[i];
    const RouteMetrics& c = r.counters;
    const RouteRates rt = rateAt(ex, i);
    o += i ? "," : "";
    o += fmt::format("{{\"name\":{},\"kind\":\"{}\",\"listen\":{},\"listening\":{},",
                     jsonString(r.name), kindOf(r), jsonString(r.listen),
                     r.listening ? "true" : "false");
    o += fmt::format(
        "\"connections_active\":{},\"connections_total\":{},"
        "\"rejected\":{{\"limit\":{},\"denied\":{},\"no_upstream\":{},\"bad_proxy_header\":{}}},",
        c.connections_active.get(), c.connections_total.get(), c.rejected_limit.get(),
        c.rejected_denied.get(), c.rejected_no_upstream.get(), c.rejected_bad_header.get());
    o += fmt::format(
        "\"bytes_in\":{},\"bytes_out\":{},\"upstream_bytes\":{},\"archive_bytes\":{},"
        "\"copy_fallback_bytes\":{},",
        c.bytes_in.get(), c.bytes_out.get(), c.upstream_bytes.get(), c.archive_bytes.get(),
        c.copy_fallback_bytes.get());
    o += fmt::format(
        "\"rates\":{{\"bytes_in\":{},\"bytes_out\":{},\"upstream_bytes\":{},\"archive_bytes\":{}}}",
        wholeRate(rt.bytes_in), wholeRate(rt.bytes_out), wholeRate(rt.upstream_bytes),
        wholeRate(rt.archive_bytes));
    if (r.collects) {
      o += fmt::format(
          ",\"archive\":{{\"dir\":{},\"segments_closed\":{},\"compressed\":{},"
          "\"compress_errors\":{},\"deleted_segments\":{},\"deleted_bytes\":{},"
          "\"storage_errors\":{},\"stalled_connections\":{},\"unpublished_segments\":{}",
          jsonString(r.archive_dir), c.archive_segments.get(), r.lifecycle.compressed,
          r.lifecycle.compress_errors, r.lifecycle.deleted_files, r.lifecycle.deleted_bytes,
          c.storage_errors.get(), r.stalled, r.unpublished);
      if (i < ex.disks.size() && ex.disks[i]) {
        o += fmt::format(",\"disk_size_bytes\":{},\"disk_free_bytes\":{}", ex.disks[i]->size_bytes,
                         ex.disks[i]->free_bytes);
      }
      o += "}";
    }
    if (r.proxies) {
      o += ",\"upstreams\":[";
      for (size_t k = 0; k < r.upstreams.size(); ++k) {
        const UpstreamStatus& u = r.upstreams[k];
        o += fmt::format("{}{{\"address\":{},\"up\":{},\"active\":{},\"errors\":{}}}", k ? "," : "",
                         jsonString(u.address), u.up ? "true" : "false", u.active, u.errors);
      }
      o += "]";
    }
    o += "}";
  }
  o += "],\"workers\":[";
  for (size_t i = 0; i < st.workers.size(); ++i) {
    const WorkerStatus& w = st.workers[i];
    o += fmt::format(
        "{}{{\"index\":{},\"connections_active\":{},\"connections_total\":{},"
        "\"pipes_in_use\":{}}}",
        i ? "," : "", w.index, w.connections_active, w.connections_total, w.pipes_in_use);
  }
  o += "]}\n";
  return o;
}

std::string renderStatusHtml(const ServerStatus& st, const StatusExtras& ex) {
  std::string o;
  o += "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
       "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
       "<title>spliced status</title><style>";
  o += kStyle;
  o += fmt::format("</style></head>\n<body data-generation=\"{}\">\n", st.config_generation);
  o += fmt::format(
      "<header><h1>spliced</h1><span>version <b>{}</b></span>"
      "<span>uptime <b data-k=\"uptime_seconds\" data-f=\"u\">{}</b></span>"
      "<span>config generation <b>{}</b></span>"
      "<span>last reload error <b class=\"{}\" data-k=\"last_reload_error\" data-f=\"t\">{}</b>"
      "</span></header>\n<main>\n",
      html(kVersion), humanUptime(uptimeSeconds(st, ex)), st.config_generation,
      st.last_reload_error.empty() ? "" : "err",
      st.last_reload_error.empty() ? "none" : html(st.last_reload_error));

  o += "<h2>Routes</h2><div class=\"scroll\"><table id=\"routes\"><tr><th rowspan=\"2\">Route</th>"
       "<th rowspan=\"2\" class=\"t\">Kind</th><th rowspan=\"2\" class=\"t\">Listen</th>"
       "<th rowspan=\"2\">Listener</th><th colspan=\"2\" class=\"g\">Connections</th>"
       "<th colspan=\"4\" class=\"g\">Rejected</th><th colspan=\"5\" class=\"g\">Bytes</th></tr>"
       "<tr><th>active</th><th>total</th><th>limit</th><th>denied</th><th>no upstream</th>"
       "<th>bad header</th><th>in</th><th>in/s</th><th>out</th><th>out/s</th>"
       "<th>copy fallback</th></tr>\n";
  for (size_t i = 0; i < st.routes.size(); ++i) {
    const RouteStatus& r = st.routes[i];
    const RouteMetrics& c = r.counters;
    const RouteRates rt = rateAt(ex, i);
    const std::string k = fmt::format("routes.{}.", i);
    // Out: to the archive for a collect route, to the upstreams for a proxy route.
    const bool proxy = r.proxies;
    o += fmt::format(
        "<tr data-route=\"{}\"><td>{}</td><td class=\"t\">{}</td><td class=\"t\">{}</td>",
        html(r.name), html(r.name), kindOf(r), html(r.listen));
    o += fmt::format("<td data-k=\"{}listening\" data-f=\"h\" class=\"{}\">{}</td>", k,
                     r.listening ? "up" : "down", r.listening ? "up" : "down");
    o += num(k + "connections_active", c.connections_active) +
         num(k + "connections_total", c.connections_total) +
         num(k + "rejected.limit", c.rejected_limit) +
         num(k + "rejected.denied", c.rejected_denied) +
         num(k + "rejected.no_upstream", c.rejected_no_upstream) +
         num(k + "rejected.bad_proxy_header", c.rejected_bad_header) +
         num(k + "bytes_in", c.bytes_in) + rate(k + "rates.bytes_in", rt.bytes_in);
    if (proxy) {
      o += num(k + "upstream_bytes", c.upstream_bytes) +
           rate(k + "rates.upstream_bytes", rt.upstream_bytes);
    } else {
      o += num(k + "archive_bytes", c.archive_bytes) +
           rate(k + "rates.archive_bytes", rt.archive_bytes);
    }
    o += num(k + "copy_fallback_bytes", c.copy_fallback_bytes) + "</tr>\n";
  }
  o += "</table></div>\n<p class=\"note\">Bytes out: written to the archive (collect routes) or "
       "sent to upstreams (proxy routes).</p>\n";

  bool any_archive = false, any_proxy = false;
  for (const auto& r : st.routes) {
    any_archive |= r.collects;
    any_proxy |= r.proxies;
  }
  if (any_archive) {
    o += fmt::format(
        "<h2>Archives</h2><p>Compression and retention queue: <b data-k=\"archive_queue\" "
        "data-f=\"n\">{}</b></p><div class=\"scroll\"><table id=\"archives\"><tr><th>Route</th>"
        "<th class=\"t\">Dir</th><th>Disk used</th><th>Disk free</th><th>Segments closed</th>"
        "<th>Compressed</th><th>Compress errors</th><th>Deleted</th><th>Storage errors</th>"
        "<th>Stalled conns</th><th>Unpublished</th></tr>\n",
        st.archive_queue);
    for (size_t i = 0; i < st.routes.size(); ++i) {
      const RouteStatus& r = st.routes[i];
      if (!r.collects) continue;
      const std::string k = fmt::format("routes.{}.archive.", i);
      std::string used = "?", free = "?";
      if (i < ex.disks.size() && ex.disks[i]) {
        const DiskUsage& d = *ex.disks[i];
        const uint64_t u = d.size_bytes >= d.free_bytes ? d.size_bytes - d.free_bytes : 0;
        used = fmt::format("{} of {} ({:.0f}%)", humanBytes(static_cast<double>(u)),
                           humanBytes(static_cast<double>(d.size_bytes)),
                           d.size_bytes
                               ? 100.0 * static_cast<double>(u) / static_cast<double>(d.size_bytes)
                               : 0.0);
        free = humanBytes(static_cast<double>(d.free_bytes));
      }
      o += fmt::format("<tr{}><td>{}</td><td class=\"t\">{}</td><td>{}</td>",
                       r.counters.storage_errors.get() || r.stalled ? " class=\"bad\"" : "",
                       html(r.name), html(r.archive_dir), html(used));
      o += cell(k + "disk_free_bytes", "b", free);
      o += num(k + "segments_closed", r.counters.archive_segments) +
           num(k + "compressed", r.lifecycle.compressed) +
           num(k + "compress_errors", r.lifecycle.compress_errors) +
           num(k + "deleted_segments", r.lifecycle.deleted_files) +
           num(k + "storage_errors", r.counters.storage_errors) +
           num(k + "stalled_connections", r.stalled) +
           num(k + "unpublished_segments", r.unpublished) + "</tr>\n";
    }
    o += "</table></div>\n";
  }
  if (any_proxy) {
    o += "<h2>Upstreams</h2><div class=\"scroll\"><table id=\"upstreams\"><tr><th>Route</th>"
         "<th class=\"t\">Upstream</th><th>Health</th><th>Active "
         "sessions</th><th>Failures</th></tr>\n";
    for (size_t i = 0; i < st.routes.size(); ++i) {
      const RouteStatus& r = st.routes[i];
      for (size_t n = 0; n < r.upstreams.size(); ++n) {
        const UpstreamStatus& u = r.upstreams[n];
        const std::string k = fmt::format("routes.{}.upstreams.{}.", i, n);
        o += fmt::format("<tr><td>{}</td><td class=\"t\">{}</td>", html(r.name), html(u.address));
        o += fmt::format("<td data-k=\"{}up\" data-f=\"h\" class=\"{}\">{}</td>", k,
                         u.up ? "up" : "down", u.up ? "up" : "down");
        o += num(k + "active", u.active) + num(k + "errors", u.errors) + "</tr>\n";
      }
    }
    o += "</table></div>\n";
  }
  o += fmt::format(
      "<h2>Workers</h2><p>Pipes in use <b data-k=\"pipes_in_use\" data-f=\"n\">{}</b>, pooled "
      "<b data-k=\"pipes_pooled\" data-f=\"n\">{}</b></p><div class=\"scroll\"><table "
      "id=\"workers\"><tr><th>Worker</th><th>Active connections</th><th>Accepted</th>"
      "<th>Pipes in use</th></tr>\n",
      st.pipes_in_use, st.pipes_pooled);
  for (size_t i = 0; i < st.workers.size(); ++i) {
    const WorkerStatus& w = st.workers[i];
    const std::string k = fmt::format("workers.{}.", i);
    o += fmt::format("<tr><td>{}</td>", w.index) +
         num(k + "connections_active", w.connections_active) +
         num(k + "connections_total", w.connections_total) +
         num(k + "pipes_in_use", w.pipes_in_use) + "</tr>\n";
  }
  o += "</table></div>\n</main>\n<footer>Data: <a href=\"status.json\">status.json</a>, "
       "<a href=\"metrics\">metrics</a>. <span id=\"refresh\">Reload the page to refresh.</span>"
       "</footer>\n<script>";
  o += kScript;
  o += "</script>\n</body></html>\n";
  return o;
}

}  // namespace spliced
