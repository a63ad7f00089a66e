#include "spliced/admin.hpp"

#include <dirent.h>
#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fmt/format.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>
#include <vector>

#include "spliced/exposition.hpp"
#include "spliced/listen_socket.hpp"
#include "spliced/server.hpp"
#include "spliced/version.hpp"

namespace spliced {
namespace {

struct Segment {
  std::string name;
  uint64_t size;
  time_t mtime;
};

bool isClosedSegment(std::string_view name) {
  return !name.ends_with(".open") && !name.ends_with(".tmp");
}

// Closed segments below `dir_fd` (relative paths), without following symlinks.
void walk(int dir_fd, const std::string& prefix, std::vector<Segment>& out, int depth = 0) {
  if (depth > 32) return;
  int fd = ::openat(dir_fd, prefix.empty() ? "." : prefix.c_str(),
                    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return;
  DIR* d = ::fdopendir(fd);
  if (d == nullptr) {
    ::close(fd);
    return;
  }
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.empty() || name.front() == '.') continue;  // ., .., .spliced.lock: not segments
    std::string rel = prefix;
    if (!rel.empty()) rel += '/';
    rel += name;
    struct stat st;
    if (::fstatat(dir_fd, rel.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (S_ISDIR(st.st_mode)) {
      walk(dir_fd, rel, out, depth + 1);
    } else if (S_ISREG(st.st_mode) && isClosedSegment(name)) {
      out.push_back({rel, static_cast<uint64_t>(st.st_size), st.st_mtim.tv_sec});
    }
  }
  ::closedir(d);
}

std::string jsonEscape(std::string_view s) {
  std::string out;
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      out += fmt::format("\\u{:04x}", c);
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

std::string httpDate(time_t t) {
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  return buf;
}

std::string isoDate(time_t t) {
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

void reply(evhttp_request* req, int code, const char* reason, std::string_view body,
           const char* type = "text/plain; charset=utf-8") {
  evkeyvalq* h = evhttp_request_get_output_headers(req);
  evhttp_add_header(h, "Content-Type", type);
  evhttp_add_header(h, "Content-Length", std::to_string(body.size()).c_str());
  evbuffer* buf = evbuffer_new();
  if (evhttp_request_get_command(req) != EVHTTP_REQ_HEAD)
    evbuffer_add(buf, body.data(), body.size());
  evhttp_send_reply(req, code, reason, buf);
  evbuffer_free(buf);
}

void notFound(evhttp_request* req) { reply(req, 404, "Not Found", "not found\n"); }

// Process figures from /proc/self, for the process_* metrics.
struct ProcessStats {
  uint64_t open_fds = 0;
  uint64_t max_fds = 0;
  uint64_t rss_bytes = 0;
  double cpu_seconds = 0;
};

ProcessStats processStats() {
  ProcessStats p;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') ++p.open_fds;
    }
    ::closedir(d);
    if (p.open_fds > 0) --p.open_fds;  // the directory stream itself
  }
  std::ifstream statm("/proc/self/statm");
  uint64_t size = 0, resident = 0;
  if (statm >> size >> resident)
    p.rss_bytes = resident * static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  std::ifstream stat("/proc/self/stat");
  std::string line;
  std::getline(stat, line);
  auto close = line.rfind(')');
  if (close != std::string::npos) {
    std::istringstream rest(line.substr(close + 2));
    std::string field;
    uint64_t utime = 0, stime = 0;
    for (int i = 3; i <= 15 && rest >> field; ++i) {
      if (i == 14) utime = std::stoull(field);
      if (i == 15) stime = std::stoull(field);
    }
    p.cpu_seconds =
        static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
  }
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0) p.max_fds = rl.rlim_cur;
  return p;
}

}  // namespace

ByteRange parseRange(const char* header, uint64_t size) {
  ByteRange r;
  if (header == nullptr) return r;
  std::string_view h(header);
  if (!h.starts_with("bytes=")) return r;
  h.remove_prefix(6);
  if (h.find(',') != std::string_view::npos) return r;  // several ranges: send it all
  auto dash = h.find('-');
  if (dash == std::string_view::npos) return r;
  auto number = [](std::string_view s, uint64_t& out) {
    if (s.empty() || s.size() > 19 || s.find_first_not_of("0123456789") != std::string_view::npos) {
      return false;
    }
    out = std::stoull(std::string(s));
    return true;
  };
  std::string_view first = h.substr(0, dash), last = h.substr(dash + 1);
  uint64_t a = 0, b = 0;
  if (first.empty()) {  // bytes=-N: the last N bytes
    if (!number(last, b)) return r;
    if (b == 0 || size == 0) {
      r.kind = ByteRange::Kind::Unsatisfiable;
      return r;
    }
    r.kind = ByteRange::Kind::Satisfiable;
    r.length = std::min(b, size);
    r.start = size - r.length;
    return r;
  }
  if (!number(first, a)) return r;
  if (last.empty()) {
    b = size ? size - 1 : 0;
  } else if (!number(last, b) || b < a) {
    return r;
  }
  if (a >= size) {
    r.kind = ByteRange::Kind::Unsatisfiable;
    return r;
  }
  r.kind = ByteRange::Kind::Satisfiable;
  r.start = a;
  r.length = std::min(b, size - 1) - a + 1;
  return r;
}

Admin::Admin(Server& server, const AdminConfig& cfg) : server_(server), cfg_(cfg) {}

Admin::~Admin() {
  http_.reset();  // closes the listening socket
  if (!unix_path_.empty()) ::unlink(unix_path_.c_str());
}

std::string Admin::start() {
  std::string error;
  UniqueFd fd = openListenSocket(*cfg_.listen, error);
  if (!fd.valid()) return error;
  http_.reset(evhttp_new(server_.base()));
  if (!http_) return "cannot create the HTTP server";
  evhttp_set_allowed_methods(http_.get(), EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                              EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                              EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH |
                                              EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT);
  evhttp_set_timeout(http_.get(), 30);
  evhttp_set_max_headers_size(http_.get(), 16 * 1024);
  evhttp_set_max_body_size(http_.get(), 64 * 1024);
  evhttp_set_gencb(http_.get(), &Admin::onRequest, this);
  fd_ = fd.get();
  if (evhttp_accept_socket_with_handle(http_.get(), fd.release()) == nullptr) {
    return "cannot accept on the admin socket";
  }
  if (cfg_.listen->isUnix()) unix_path_ = cfg_.listen->path;
  return {};
}

std::string Admin::boundAddress() const {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (fd_ < 0 || ::getsockname(fd_, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return {};
  if (ss.ss_family == AF_UNIX) return "unix:" + unix_path_;
  return describePeer(reinterpret_cast<sockaddr*>(&ss), len).display();
}

void Admin::onRequest(evhttp_request* req, void* arg) { static_cast<Admin*>(arg)->handle(req); }

void Admin::handle(evhttp_request* req) {
  evhttp_connection* conn = evhttp_request_get_connection(req);
  const sockaddr* peer = conn ? evhttp_connection_get_addr(conn) : nullptr;
  if (peer != nullptr && peer->sa_family != AF_UNIX) {
    static const std::vector<Cidr> kLoopback = {Cidr::parse("127.0.0.0/8").value(),
                                                Cidr::parse("::1/128").value()};
    if (!allowed(cfg_.allow.empty() ? kLoopback : cfg_.allow, peer)) {
      return reply(req, 403, "Forbidden", "forbidden\n");
    }
  }
  auto method = evhttp_request_get_command(req);
  if (method != EVHTTP_REQ_GET && method != EVHTTP_REQ_HEAD) {
    evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
    return reply(req, 405, "Method Not Allowed", "method not allowed\n");
  }
  const evhttp_uri* uri = evhttp_request_get_evhttp_uri(req);
  const char* p = uri ? evhttp_uri_get_path(uri) : nullptr;
  std::string path = p ? p : "";
  if (path == "/metrics") return metrics(req);
  if (path == "/healthz") return health(req);
  if (path.starts_with("/archive/")) return archive(req, path.substr(9));
  notFound(req);
}

void Admin::metrics(evhttp_request* req) {
  using T = Exposition::Type;
  Exposition x;
  const auto& routes = server_.routes();
  auto perRoute = [&](std::string_view name, T type, std::string_view help, auto get) {
    x.family(name, type, help);
    for (const auto& r : routes) x.sample({{"route", r->config().name}}, get(*r));
  };
  perRoute("spliced_connections_active", T::Gauge, "Open client connections.",
           [](Route& r) { return r.metrics().connections_active; });
  perRoute("spliced_connections_total", T::Counter, "Client connections accepted.",
           [](Route& r) { return r.metrics().connections_total; });
  x.family("spliced_connections_rejected_total", T::Counter,
           "Client connections closed at accept (limit: max_connections, denied: allow list).");
  for (const auto& r : routes) {
    x.sample({{"route", r->config().name}, {"reason", "limit"}}, r->metrics().rejected_limit);
    x.sample({{"route", r->config().name}, {"reason", "denied"}}, r->metrics().rejected_denied);
    x.sample({{"route", r->config().name}, {"reason", "no_upstream"}},
             r->metrics().rejected_no_upstream);
    x.sample({{"route", r->config().name}, {"reason", "bad_proxy_header"}},
             r->metrics().rejected_bad_header);
  }
  perRoute("spliced_bytes_in_total", T::Counter, "Bytes received from clients.",
           [](Route& r) { return r.metrics().bytes_in; });
  perRoute("spliced_bytes_out_total", T::Counter, "Bytes sent to clients (proxy routes).",
           [](Route& r) { return r.metrics().bytes_out; });
  perRoute("spliced_upstream_bytes_total", T::Counter, "Bytes sent to upstreams (proxy routes).",
           [](Route& r) { return r.metrics().upstream_bytes; });
  perRoute("spliced_archive_bytes_total", T::Counter, "Bytes written into archive segments.",
           [](Route& r) { return r.metrics().archive_bytes; });
  perRoute("spliced_archive_segments_total", T::Counter, "Archive segments closed.",
           [](Route& r) { return r.metrics().archive_segments; });
  perRoute("spliced_copy_fallback_bytes_total", T::Counter,
           "Bytes that passed through user space instead of splice.",
           [](Route& r) { return r.metrics().copy_fallback_bytes; });
  perRoute("spliced_storage_errors_total", T::Counter, "Failed archive writes (retried).",
           [](Route& r) { return r.metrics().storage_errors; });
  perRoute("spliced_archive_stalled_connections", T::Gauge,
           "Connections paused because archive writes fail.",
           [](Route& r) { return r.stalledSessions(); });
  perRoute("spliced_lines_split_total", T::Counter, "Lines longer than max_line, cut.",
           [](Route& r) { return r.metrics().lines_split; });
  perRoute("spliced_archive_compressed_total", T::Counter, "Closed segments compressed.",
           [](Route& r) { return r.lifecycle().compressed.load(); });
  perRoute("spliced_archive_compress_errors_total", T::Counter,
           "Compressions that failed (the plain segment is kept).",
           [](Route& r) { return r.lifecycle().compress_errors.load(); });
  perRoute("spliced_archive_compress_skipped_total", T::Counter,
           "Segments not queued for compression because the queue was full (caught up later).",
           [](Route& r) { return r.lifecycle().compress_skipped.load(); });
  perRoute("spliced_archive_deleted_segments_total", T::Counter, "Segments deleted by retention.",
           [](Route& r) { return r.lifecycle().deleted_files.load(); });
  perRoute("spliced_archive_deleted_bytes_total", T::Counter, "Bytes deleted by retention.",
           [](Route& r) { return r.lifecycle().deleted_bytes.load(); });
  perRoute("spliced_listener_up", T::Gauge, "1 while the route accepts connections.",
           [](Route& r) { return static_cast<uint64_t>(r.listening() ? 1 : 0); });
  x.family("spliced_upstream_errors_total", T::Counter,
           "Failed upstream connections and transfers (proxy routes).");
  for (const auto& r : routes) {
    if (r->upstreams() == nullptr) continue;
    for (const auto& u : r->upstreams()->upstreams()) {
      x.sample({{"route", r->config().name}, {"upstream", u->addr.text}}, u->errors);
    }
  }
  x.family("spliced_upstream_up", T::Gauge,
           "1 while an upstream is considered up (passive and active health).");
  auto now = std::chrono::steady_clock::now();
  for (const auto& r : routes) {
    if (r->upstreams() == nullptr) continue;
    for (const auto& u : r->upstreams()->upstreams()) {
      x.sample({{"route", r->config().name}, {"upstream", u->addr.text}},
               static_cast<uint64_t>(u->up(now) ? 1 : 0));
    }
  }
  x.family("spliced_upstream_active_connections", T::Gauge,
           "Sessions connected through an upstream now.");
  for (const auto& r : routes) {
    if (r->upstreams() == nullptr) continue;
    for (const auto& u : r->upstreams()->upstreams()) {
      x.sample({{"route", r->config().name}, {"upstream", u->addr.text}}, u->active);
    }
  }
  x.family("spliced_archive_queue_length", T::Gauge,
           "Compression and retention jobs waiting for the archive worker (the backlog).");
  x.sample({}, static_cast<uint64_t>(server_.worker().queued()));
  x.family("spliced_pipes_in_use", T::Gauge, "Pipes lent to connections (holding bytes).");
  x.sample({}, static_cast<uint64_t>(server_.pipes().inUse()));
  x.family("spliced_pipes_pooled", T::Gauge, "Empty pipes kept for reuse.");
  x.sample({}, static_cast<uint64_t>(server_.pipes().pooled()));
  x.family("spliced_build_info", T::Gauge, "Build information; the value is always 1.");
  x.sample({{"version", kVersion}}, uint64_t{1});
  ProcessStats ps = processStats();
  x.family("process_open_fds", T::Gauge, "Number of open file descriptors.");
  x.sample({}, ps.open_fds);
  x.family("process_max_fds", T::Gauge, "Maximum number of open file descriptors.");
  x.sample({}, ps.max_fds);
  x.family("process_resident_memory_bytes", T::Gauge, "Resident memory size in bytes.");
  x.sample({}, ps.rss_bytes);
  x.family("process_cpu_seconds_total", T::Counter, "Total user and system CPU time in seconds.");
  x.sample({}, ps.cpu_seconds);
  x.family("process_start_time_seconds", T::Gauge,
           "Start time of the process since the Unix epoch in seconds.");
  x.sample({}, std::chrono::duration<double>(server_.startTime().time_since_epoch()).count());
  reply(req, 200, "OK", x.text(), "text/plain; version=0.0.4; charset=utf-8");
}

void Admin::health(evhttp_request* req) {
  std::string body;
  if (server_.shuttingDown()) body += "shutting down\n";
  for (const auto& r : server_.routes()) {
    for (const auto& p : r->problems()) body += p + "\n";
  }
  if (body.empty()) return reply(req, 200, "OK", "ok\n");
  reply(req, 503, "Service Unavailable", body);
}

void Admin::archive(evhttp_request* req, const std::string& raw) {
  // raw: "<route>/", "<route>" or "<route>/<percent-encoded path>"
  auto slash = raw.find('/');
  std::string route_name = raw.substr(0, slash);
  Route* route = server_.route(route_name);
  if (route == nullptr || !route->config().archive || route->dirFd() < 0) return notFound(req);
  std::string rest = slash == std::string::npos ? "" : raw.substr(slash + 1);
  if (rest.empty()) return listSegments(req, *route);
  // An encoded '/' or '\' could smuggle a separator past the checks below: refuse it.
  std::string lower = rest;
  std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
  if (lower.find("%2f") != std::string::npos || lower.find("%5c") != std::string::npos ||
      lower.find("%00") != std::string::npos) {
    return notFound(req);
  }
  size_t len = 0;
  char* decoded = evhttp_uridecode(rest.c_str(), 0, &len);
  if (decoded == nullptr) return notFound(req);
  std::string rel(decoded, len);
  std::free(decoded);
  if (rel.size() != std::strlen(rel.c_str()) || !isContainedRelativePath(rel) ||
      !isClosedSegment(rel) || rel.front() == '.' || rel.find("/.") != std::string::npos) {
    return notFound(req);
  }
  sendSegment(req, *route, rel);
}

void Admin::listSegments(evhttp_request* req, Route& route) {
  std::vector<Segment> segs;
  walk(route.dirFd(), "", segs);
  std::sort(segs.begin(), segs.end(),
            [](const Segment& a, const Segment& b) { return a.name < b.name; });
  std::string body = "[";
  for (size_t i = 0; i < segs.size(); ++i) {
    body += fmt::format("{}\n{{\"name\":\"{}\",\"size\":{},\"mtime\":\"{}\"}}", i ? "," : "",
                        jsonEscape(segs[i].name), segs[i].size, isoDate(segs[i].mtime));
  }
  body += "\n]\n";
  reply(req, 200, "OK", body, "application/json");
}

void Admin::sendSegment(evhttp_request* req, Route& route, const std::string& rel) {
  // openat2 with RESOLVE_BENEATH and RESOLVE_NO_SYMLINKS: no '..', absolute or symlinked path
  // can leave the archive dir.
  open_how how{};
  how.flags = O_RDONLY | O_CLOEXEC | O_NOFOLLOW;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  int fd = static_cast<int>(::syscall(SYS_openat2, route.dirFd(), rel.c_str(), &how, sizeof how));
  if (fd < 0) return notFound(req);
  UniqueFd file(fd);
  struct stat st;
  if (::fstat(file.get(), &st) != 0 || !S_ISREG(st.st_mode)) return notFound(req);
  uint64_t size = static_cast<uint64_t>(st.st_size);
  evkeyvalq* in = evhttp_request_get_input_headers(req);
  evkeyvalq* out = evhttp_request_get_output_headers(req);
  ByteRange range = parseRange(evhttp_find_header(in, "Range"), size);
  evhttp_add_header(out, "Accept-Ranges", "bytes");
  evhttp_add_header(out, "Last-Modified", httpDate(st.st_mtim.tv_sec).c_str());
  if (range.kind == ByteRange::Kind::Unsatisfiable) {
    evhttp_add_header(out, "Content-Range", fmt::format("bytes */{}", size).c_str());
    return reply(req, 416, "Range Not Satisfiable", "range not satisfiable\n");
  }
  uint64_t start = 0, length = size;
  int code = 200;
  const char* reason = "OK";
  if (range.kind == ByteRange::Kind::Satisfiable) {
    start = range.start;
    length = range.length;
    code = 206;
    reason = "Partial Content";
    evhttp_add_header(out, "Content-Range",
                      fmt::format("bytes {}-{}/{}", start, start + length - 1, size).c_str());
  }
  evhttp_add_header(out, "Content-Type", "application/octet-stream");
  evhttp_add_header(out, "Content-Length", std::to_string(length).c_str());
  evbuffer* body = evbuffer_new();
  if (evhttp_request_get_command(req) != EVHTTP_REQ_HEAD && length > 0) {
    // The buffer takes the fd and sends it with sendfile(2) when the connection writes it.
    if (evbuffer_add_file(body, file.get(), static_cast<ev_off_t>(start),
                          static_cast<ev_off_t>(length)) != 0) {
      evbuffer_free(body);
      return reply(req, 500, "Internal Server Error", "cannot send the file\n");
    }
    file.release();  // the buffer closes it once sent
  }
  evhttp_send_reply(req, code, reason, body);
  evbuffer_free(body);
}

}  // namespace spliced
