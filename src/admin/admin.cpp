#include "spliced/admin/admin.hpp"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fmt/format.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <mutex>
#include <vector>

#include "spliced/admin/byte_range.hpp"
#include "spliced/admin/exposition.hpp"
#include "spliced/admin/metrics_catalogue.hpp"
#include "spliced/archive/listing.hpp"
#include "spliced/archive/naming.hpp"
#include "spliced/archive/segment_files.hpp"
#include "spliced/core/listen_socket.hpp"
#include "spliced/core/units.hpp"

namespace spliced {
namespace {

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

// Every reply names the server without its version (the version is in /metrics'
// spliced_build_info, and an unauthenticated client learns nothing from a header).
void addServerHeader(evhttp_request* req) {
  evhttp_add_header(evhttp_request_get_output_headers(req), "Server", "spliced");
}

void reply(evhttp_request* req, int code, const char* reason, std::string_view body,
           const char* type = "text/plain; charset=utf-8") {
  evkeyvalq* h = evhttp_request_get_output_headers(req);
  addServerHeader(req);
  evhttp_add_header(h, "Content-Type", type);
  evhttp_add_header(h, "Content-Length", std::to_string(body.size()).c_str());
  evbuffer* buf = evbuffer_new();
  if (evhttp_request_get_command(req) != EVHTTP_REQ_HEAD)
    evbuffer_add(buf, body.data(), body.size());
  evhttp_send_reply(req, code, reason, buf);
  evbuffer_free(buf);
}

void notFound(evhttp_request* req) { reply(req, 404, "Not Found", "not found\n"); }

// 401: the same for every protected path, whether it exists or not.
void unauthorized(evhttp_request* req) {
  evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
                    "Basic realm=\"spliced\"");
  reply(req, 401, "Unauthorized", "authentication required\n");
}

// The throttle's key for a client: an IPv4 address (also when IPv4-mapped), an IPv6 /64, or
// "unix" for the admin's unix socket.
std::string clientKey(const sockaddr* sa) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (sa == nullptr) return "unknown";
  if (sa->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    ::inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf);
    return buf;
  }
  if (sa->sa_family == AF_INET6) {
    in6_addr a = reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr;
    if (IN6_IS_ADDR_V4MAPPED(&a)) {
      ::inet_ntop(AF_INET, &a.s6_addr[12], buf, sizeof buf);
      return buf;
    }
    std::memset(&a.s6_addr[8], 0, 8);
    ::inet_ntop(AF_INET6, &a, buf, sizeof buf);
    return std::string(buf) + "/64";
  }
  return "unix";
}

// A user name fit for a log line: printable ASCII, at most 64 characters.
std::string printableUser(std::string_view user) {
  std::string out;
  for (unsigned char c : user.substr(0, 64))
    out += (c >= 0x20 && c < 0x7f) ? static_cast<char>(c) : '?';
  return out;
}

void badRequest(evhttp_request* req, const std::string& why) {
  reply(req, 400, "Bad Request", why + "\n");
}

// The listing's query: ?limit=N&after=NAME (both optional). "" when valid, else the message.
struct ListQuery {
  size_t limit = Admin::kDefaultListLimit;
  std::string after;
};
// The longest `after` accepted (a relative path; PATH_MAX).
constexpr size_t kMaxCursor = 4096;

std::string parseListQuery(const char* query, ListQuery& out) {
  if (query == nullptr || *query == '\0') return "";
  std::string lower = query;
  std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
  if (lower.find("%00") != std::string::npos) return "a query parameter contains a NUL byte";
  evkeyvalq params;
  params.tqh_first = nullptr;
  params.tqh_last = &params.tqh_first;
  if (evhttp_parse_query_str(query, &params) != 0) {
    evhttp_clear_headers(&params);
    return "malformed query string";
  }
  std::string err;
  bool seen_limit = false, seen_after = false;
  for (evkeyval* kv = params.tqh_first; kv != nullptr && err.empty(); kv = kv->next.tqe_next) {
    std::string_view key = kv->key, value = kv->value;
    if (key == "limit") {
      if (seen_limit) {
        err = "limit is given more than once";
        break;
      }
      seen_limit = true;
      size_t n = 0;
      bool ok = !value.empty() && value.size() <= 6;
      for (char c : value) {
        if (c < '0' || c > '9') ok = false;
        if (ok) n = n * 10 + static_cast<size_t>(c - '0');
      }
      if (!ok || n < 1 || n > Admin::kMaxListLimit) {
        err = fmt::format("limit must be a whole number from 1 to {} (got \"{}\")",
                          Admin::kMaxListLimit, jsonEscape(value.substr(0, 32)));
        break;
      }
      out.limit = n;
    } else if (key == "after") {
      if (seen_after) {
        err = "after is given more than once";
        break;
      }
      seen_after = true;
      if (value.empty() || value.size() > kMaxCursor || value.front() == '/') {
        err = fmt::format("after must be a segment name from a listing (relative, 1 to {} bytes)",
                          kMaxCursor);
        break;
      }
      out.after = value;
    } else {
      err = fmt::format("unknown query parameter \"{}\" (only limit and after)",
                        jsonEscape(key.substr(0, 32)));
    }
  }
  evhttp_clear_headers(&params);
  return err;
}

std::string uriEncode(const std::string& s) {
  char* enc = evhttp_encode_uri(s.c_str());
  if (enc == nullptr) return {};
  std::string out = enc;
  std::free(enc);
  return out;
}

// The JSON array of a page (the body of a listing).
std::string renderPage(const SegmentPage& page) {
  std::string body = "[";
  for (size_t i = 0; i < page.items.size(); ++i) {
    const SegmentFile& f = page.items[i];
    time_t mtime = std::chrono::system_clock::to_time_t(f.mtime);
    body += fmt::format("{}\n{{\"name\":\"{}\",\"size\":{},\"mtime\":\"{}\"}}", i ? "," : "",
                        jsonEscape(f.path), f.size, isoDate(mtime));
  }
  body += "\n]\n";
  return body;
}

constexpr std::chrono::milliseconds kAcceptPause{100};

// evhttp passes its own pointer to the listener's error callback: the admins that listen, to find
// the one whose listener failed.
std::mutex g_admins_mutex;
std::vector<std::pair<evconnlistener*, Admin*>> g_admins;

}  // namespace

Admin::Admin(event_base* base, const AdminSource& source, const AdminConfig& cfg)
    : base_(base), source_(source), cfg_(cfg) {}

Admin::~Admin() {
  // Joined first: a walk or a check in progress ends, and no completion runs after this.
  lister_.reset();
  checker_.reset();
  if (listener_ != nullptr) {
    std::lock_guard lock(g_admins_mutex);
    std::erase_if(g_admins, [this](const auto& e) { return e.second == this; });
  }
  resume_ev_.reset();
  rate_ev_.reset();
  http_.reset();  // closes the listening socket
  if (!unix_path_.empty()) ::unlink(unix_path_.c_str());
}

Status Admin::loadUsers() {
  if (!cfg_.auth) return Ok{};
  Htpasswd::Load load = Htpasswd::read(cfg_.auth->basic_file);
  if (!load.errors.empty()) {
    std::string all;
    for (const auto& e : load.errors) all += (all.empty() ? "" : "; ") + e;
    return Error(ErrorSource::Config, "admin.auth.basic_file: " + all);
  }
  users_ = std::make_shared<const Htpasswd>(std::move(load.users));
  spdlog::info("admin authentication: {} user(s) from {}", users_->size(), cfg_.auth->basic_file);
  return Ok{};
}

void Admin::pauseAccepting() {
  if (listener_ != nullptr) evconnlistener_disable(listener_);
}

void Admin::resumeAccepting() {
  if (listener_ != nullptr) evconnlistener_enable(listener_);
}

Status Admin::start(UniqueFd inherited) {
  if (Status s = loadUsers(); !s) return s;
  if (cfg_.tls) {
    Result<SslCtxPtr> ctx = makeTlsContext(*cfg_.tls);
    if (!ctx) return std::move(ctx).takeError().withContext("admin.tls");
    tls_ = std::move(ctx.value());
  }
  UniqueFd fd;
  if (inherited.valid()) {
    fd = std::move(inherited);
  } else {
    Result<UniqueFd> sock = openListenSocket(*cfg_.listen);
    if (!sock) return std::move(sock).takeError();
    fd = std::move(sock.value());
  }
  http_.reset(evhttp_new(base_));
  if (!http_) return Error(ErrorSource::Internal, "cannot create the HTTP server");
  evhttp_set_allowed_methods(http_.get(), EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                              EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                              EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH |
                                              EVHTTP_REQ_TRACE | EVHTTP_REQ_CONNECT);
  evhttp_set_timeout(http_.get(), 30);
  evhttp_set_max_headers_size(http_.get(), 16 * 1024);
  evhttp_set_max_body_size(http_.get(), 64 * 1024);
  evhttp_set_gencb(http_.get(), &Admin::onRequest, this);
  if (tls_) evhttp_set_bevcb(http_.get(), &Admin::makeTlsBufferevent, this);
  lister_ = std::make_unique<LoopWorker>(base_, "admin listing", kMaxListings);
  if (users_) checker_ = std::make_unique<LoopWorker>(base_, "admin auth", kMaxChecks);
  fd_ = fd.get();
  evhttp_bound_socket* bound = evhttp_accept_socket_with_handle(http_.get(), fd.release());
  if (bound == nullptr) return Error(ErrorSource::Internal, "cannot accept on the admin socket");
  // Without an error callback libevent logs a failed accept and retries at once: at the
  // descriptor limit that is a busy loop. With one, the listener pauses (acceptFailed).
  listener_ = evhttp_bound_socket_get_listener(bound);
  resume_ev_.reset(evtimer_new(base_, &Admin::onResume, this));
  {
    std::lock_guard lock(g_admins_mutex);
    g_admins.emplace_back(listener_, this);
  }
  evconnlistener_set_error_cb(listener_, &Admin::onAcceptError);
  rates_.sample(source_.status(), RateSampler::Clock::now());
  rate_ev_.reset(event_new(base_, -1, EV_PERSIST, &Admin::onRateTimer, this));
  addEvent(rate_ev_.get(), kRateInterval);
  if (cfg_.listen->isUnix()) unix_path_ = cfg_.listen->path;
  return Ok{};
}

std::string Admin::boundAddress() const {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (fd_ < 0 || ::getsockname(fd_, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return {};
  if (ss.ss_family == AF_UNIX) return "unix:" + unix_path_;
  return describePeer(reinterpret_cast<sockaddr*>(&ss), len).display();
}

void Admin::onRequest(evhttp_request* req, void* arg) { static_cast<Admin*>(arg)->handle(req); }

bufferevent* Admin::makeTlsBufferevent(event_base* base, void* arg) {
  auto* self = static_cast<Admin*>(arg);
  SSL* ssl = SSL_new(self->tls_.get());
  if (ssl == nullptr) return nullptr;
  // The bufferevent owns the SSL (freed with it) and the socket evhttp gives it.
  bufferevent* bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                    BEV_OPT_CLOSE_ON_FREE);
  if (bev == nullptr) {
    SSL_free(ssl);
    return nullptr;
  }
  // A client that closes without close_notify (most do after a full response) is not an error.
  bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
  return bev;
}

void Admin::onAcceptError(evconnlistener* lev, void*) {
  const int err = EVUTIL_SOCKET_ERROR();
  Admin* admin = nullptr;
  {
    std::lock_guard lock(g_admins_mutex);
    for (const auto& [l, a] : g_admins) {
      if (l == lev) admin = a;
    }
  }
  if (admin != nullptr) admin->acceptFailed(err);
}

void Admin::acceptFailed(int err) {
  // Out of descriptors (or anything else libevent does not retry itself) would fire again at
  // once: stop accepting for a moment, as the route listeners do. One line per episode.
  if (accept_log_.hit()) {
    spdlog::warn("error=internal admin accept paused for {}: {}", formatDuration(kAcceptPause),
                 std::strerror(err));
  }
  paused_ = true;
  evconnlistener_disable(listener_);
  addEvent(resume_ev_.get(), kAcceptPause);
}

void Admin::onResume(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Admin*>(arg);
  if (self->paused_) {
    // Listen again; if no accept has failed one pause later, the episode is over.
    self->paused_ = false;
    evconnlistener_enable(self->listener_);
    addEvent(self->resume_ev_.get(), kAcceptPause);
    return;
  }
  if (std::optional<uint64_t> n = self->accept_log_.end()) {
    spdlog::info("admin accepting again ({} failed accepts suppressed)", *n);
  }
}

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
  if (users_) {
    const evhttp_uri* uri = evhttp_request_get_evhttp_uri(req);
    const char* p = uri ? evhttp_uri_get_path(uri) : nullptr;
    const std::string path = p ? p : "";
    const auto& open = cfg_.auth->open;
    if (std::find(open.begin(), open.end(), path) == open.end()) return authenticate(req);
  }
  dispatch(req);
}

void Admin::dispatch(evhttp_request* req) {
  const evhttp_uri* uri = evhttp_request_get_evhttp_uri(req);
  const char* p = uri ? evhttp_uri_get_path(uri) : nullptr;
  std::string path = p ? p : "";
  if (path == "/metrics") return metrics(req);
  if (path == "/healthz") return health(req);
  if (path == "/") return statusPage(req, false);
  if (path == "/status.json") return statusPage(req, true);
  if (path.starts_with("/archive/")) {
    return archive(req, path.substr(9), uri ? evhttp_uri_get_query(uri) : nullptr);
  }
  notFound(req);
}

void Admin::metrics(evhttp_request* req) {
  ServerStatus status = source_.status();
  status.admin = counters_;
  reply(req, 200, "OK", renderMetrics(status), "text/plain; version=0.0.4; charset=utf-8");
}

void Admin::onRateTimer(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Admin*>(arg);
  self->rates_.sample(self->source_.status(), RateSampler::Clock::now());
}

void Admin::statusPage(evhttp_request* req, bool json) {
  ServerStatus status = source_.status();
  status.admin = counters_;
  StatusExtras extras;
  extras.now = std::chrono::system_clock::now();
  extras.rates = rates_.rates();
  for (const RouteStatus& r : status.routes) {
    std::optional<DiskUsage> disk;
    const int dir = r.collects ? source_.archiveDir(r.name) : -1;
    struct statvfs vfs {};
    if (dir >= 0 && ::fstatvfs(dir, &vfs) == 0) {
      disk = DiskUsage{static_cast<uint64_t>(vfs.f_blocks) * vfs.f_frsize,
                       static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize};
    }
    extras.disks.push_back(disk);
  }
  evhttp_add_header(evhttp_request_get_output_headers(req), "Cache-Control", "no-store");
  if (json) {
    return reply(req, 200, "OK", renderStatusJson(status, extras),
                 "application/json; charset=utf-8");
  }
  // The page runs only its own inline script and loads nothing from elsewhere.
  evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Security-Policy",
                    "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
                    "connect-src 'self'; img-src 'self'");
  reply(req, 200, "OK", renderStatusHtml(status, extras), "text/html; charset=utf-8");
}

uint64_t Admin::addPending(Pending p) {
  const uint64_t id = ++last_pending_;
  evhttp_connection* conn = p.conn;
  pending_.emplace(id, std::move(p));
  evhttp_connection_set_closecb(conn, &Admin::onConnectionClose, this);
  return id;
}

void Admin::authenticate(evhttp_request* req) {
  evhttp_connection* conn = evhttp_request_get_connection(req);
  const char* header = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
  if (header == nullptr || conn == nullptr) return unauthorized(req);  // asking is not failing
  const std::string client = clientKey(evhttp_connection_get_addr(conn));
  const auto now = AuthThrottle::Clock::now();
  AuthThrottle::Admission adm = throttle_.admit(client, now);
  if (adm.kind == AuthThrottle::Admission::Kind::RefuseNow) {
    ++counters_.auth_failures;
    evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "2");
    evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
    return reply(req, 429, "Too Many Requests", "too many failed attempts; retry later\n");
  }
  Pending p;
  p.wait = adm.kind == AuthThrottle::Admission::Kind::Check ? Wait::Check : Wait::Refusal;
  p.req = req;
  p.conn = conn;
  p.client = client;
  p.credentials = parseBasicAuthorization(header);
  const uint64_t id = addPending(std::move(p));
  if (adm.delay <= AuthThrottle::Clock::duration::zero()) return attempt(id);
  Pending& q = pending_.at(id);
  q.ticket = std::make_unique<Ticket>(Ticket{this, id});
  q.timer.reset(evtimer_new(base_, &Admin::onAttemptTimer, q.ticket.get()));
  addEvent(q.timer.get(), std::max(std::chrono::milliseconds(1),
                                   std::chrono::ceil<std::chrono::milliseconds>(adm.delay)));
}

void Admin::onAttemptTimer(evutil_socket_t, short, void* arg) {
  auto* t = static_cast<Ticket*>(arg);
  t->admin->attempt(t->id);
}

void Admin::attempt(uint64_t id) {
  auto it = pending_.find(id);
  if (it == pending_.end()) return;
  Pending& p = it->second;
  evhttp_request* req = p.req;
  const std::string client = p.client;
  if (p.wait == Wait::Refusal) {
    // Too many attempts of this address are being checked: refused without a look at the
    // password, after the same wait.
    pending_.erase(it);
    throttle_.refused(client);
    ++counters_.auth_failures;
    evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "2");
    return reply(req, 429, "Too Many Requests", "too many failed attempts; retry later\n");
  }
  if (!p.credentials) {
    pending_.erase(it);
    return authFailed(req, client, "");
  }
  Htpasswd::Lookup who = users_->find(p.credentials->user);
  std::string password = p.credentials->password;
  bool posted = checker_->post([this, id, hash = std::move(who.hash), known = who.known,
                                password = std::move(password),
                                gone = p.gone]() mutable -> LoopWorker::Completion {
    if (gone->load()) return {};
    // An unknown user is checked against a real hash too: the answer takes as long.
    const bool ok = checkPassword(hash, password) && known;
    std::fill(password.begin(), password.end(), '\0');
    return [this, id, ok]() { checked(id, ok); };
  });
  if (!posted) {
    pending_.erase(it);
    throttle_.abandoned(client, true);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
    return reply(req, 503, "Service Unavailable", "too many password checks; retry later\n");
  }
}

void Admin::checked(uint64_t id, bool ok) {
  auto it = pending_.find(id);
  if (it == pending_.end()) return;  // the client has gone
  evhttp_request* req = it->second.req;
  const std::string client = it->second.client;
  const std::string user = it->second.credentials ? it->second.credentials->user : "";
  pending_.erase(it);
  if (!ok) return authFailed(req, client, user);
  throttle_.succeeded(client);
  dispatch(req);
}

void Admin::authFailed(evhttp_request* req, const std::string& client, const std::string& user) {
  ++counters_.auth_failures;
  AuthThrottle::Report r = throttle_.failed(client, AuthThrottle::Clock::now());
  if (r.log) {
    spdlog::warn(
        "error=downstream admin authentication failed from {} (user \"{}\"; {} in a row, next "
        "attempt waits {}{})",
        client, printableUser(user), r.failures,
        formatDuration(std::chrono::duration_cast<std::chrono::milliseconds>(
            throttle_.delayAfter(r.failures))),
        r.suppressed ? fmt::format("; {} more not logged in the last minute", r.suppressed) : "");
  }
  unauthorized(req);
}

void Admin::health(evhttp_request* req) {
  std::string body;
  for (const auto& p : source_.problems()) body += p + "\n";
  if (body.empty()) {
    std::string ok = "ok\n";
    for (const auto& n : source_.notes()) ok += n + "\n";
    return reply(req, 200, "OK", ok);
  }
  reply(req, 503, "Service Unavailable", body);
}

void Admin::archive(evhttp_request* req, const std::string& raw, const char* query) {
  // raw: "<route>/", "<route>" or "<route>/<percent-encoded path>"
  auto slash = raw.find('/');
  std::string route_name = raw.substr(0, slash);
  int dir_fd = source_.archiveDir(route_name);
  if (dir_fd < 0) return notFound(req);
  std::string rest = slash == std::string::npos ? "" : raw.substr(slash + 1);
  if (rest.empty()) return listSegments(req, dir_fd, route_name, query);
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
      !isClosedSegmentName(rel)) {
    return notFound(req);
  }
  sendSegment(req, dir_fd, rel);
}

void Admin::listSegments(evhttp_request* req, int dir_fd, const std::string& route,
                         const char* query) {
  ListQuery q;
  if (std::string err = parseListQuery(query, q); !err.empty()) return badRequest(req, err);
  evhttp_connection* conn = evhttp_request_get_connection(req);
  // The walk gets its own descriptor of the dir: the route may close or reopen its own meanwhile.
  auto dir = std::make_shared<UniqueFd>(::fcntl(dir_fd, F_DUPFD_CLOEXEC, 0));
  if (conn == nullptr || !dir->valid()) {
    return reply(req, 503, "Service Unavailable",
                 fmt::format("cannot list now: {}\n", std::strerror(conn ? errno : ENOTCONN)));
  }
  const uint64_t id = last_pending_ + 1;  // the id addPending() gives next
  const std::string prefix = "/archive/" + route + "/";
  auto gone = std::make_shared<std::atomic<bool>>(false);
  bool posted = lister_->post([this, id, dir, q, prefix, gone]() -> LoopWorker::Completion {
    if (gone->load()) return {};  // nobody is waiting for it any more
    SegmentPage page = listSegmentPage(dir->get(), q.after, q.limit);
    dir->reset();
    for (const auto& e : page.errors) spdlog::warn("error=storage archive listing: {}", e);
    std::string link;
    if (page.more) {
      link = fmt::format("<{}?limit={}&after={}>; rel=\"next\"", prefix, q.limit,
                         uriEncode(page.last));
    }
    return [this, id, body = renderPage(page), link]() mutable { listed(id, 200, body, link); };
  });
  if (!posted) {
    evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
    return reply(req, 503, "Service Unavailable",
                 fmt::format("{} archive listings are in progress; retry later\n", kMaxListings));
  }
  Pending p;
  p.wait = Wait::Listing;
  p.req = req;
  p.conn = conn;
  p.gone = gone;
  addPending(std::move(p));
}

void Admin::listed(uint64_t id, int code, const std::string& body, const std::string& link) {
  auto it = pending_.find(id);
  if (it == pending_.end()) return;  // the client has gone
  evhttp_request* req = it->second.req;
  pending_.erase(it);
  if (!link.empty())
    evhttp_add_header(evhttp_request_get_output_headers(req), "Link", link.c_str());
  reply(req, code, code == 200 ? "OK" : "Internal Server Error", body, "application/json");
}

void Admin::onConnectionClose(evhttp_connection* conn, void* arg) {
  auto* self = static_cast<Admin*>(arg);
  for (auto it = self->pending_.begin(); it != self->pending_.end();) {
    if (it->second.conn != conn) {
      ++it;
      continue;
    }
    if (it->second.wait == Wait::Check || it->second.wait == Wait::Refusal) {
      self->throttle_.abandoned(it->second.client, it->second.wait == Wait::Check);
    }
    // libevent frees a request still attached to its connection with it; one it has detached
    // (the client went away before the reply) is left for us to free.
    if (evhttp_request_get_connection(it->second.req) == nullptr) {
      evhttp_request_free(it->second.req);
    }
    it->second.gone->store(true);
    it = self->pending_.erase(it);
  }
}

void Admin::sendSegment(evhttp_request* req, int dir_fd, const std::string& rel) {
  // openat2 with RESOLVE_BENEATH and RESOLVE_NO_SYMLINKS: no '..', absolute or symlinked path
  // can leave the archive dir.
  open_how how{};
  how.flags = O_RDONLY | O_CLOEXEC | O_NOFOLLOW;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  int fd = static_cast<int>(::syscall(SYS_openat2, dir_fd, rel.c_str(), &how, sizeof how));
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
  addServerHeader(req);
  if (tls_) {
    // sendfile cannot encrypt: the file goes through user space a chunk at a time, each read
    // once the previous one has been handed to TLS. Content-Length is set, so evhttp sends the
    // chunks as they are (no chunked encoding).
    evhttp_connection* conn = evhttp_request_get_connection(req);
    evhttp_send_reply_start(req, code, reason);
    if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD || length == 0 || conn == nullptr) {
      return evhttp_send_reply_end(req);
    }
    Pending p;
    p.wait = Wait::Download;
    p.req = req;
    p.conn = conn;
    p.download = Download{std::move(file), start, length};
    const uint64_t id = addPending(std::move(p));
    Pending& q = pending_.at(id);
    q.ticket = std::make_unique<Ticket>(Ticket{this, id});
    return sendChunk(id);
  }
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

void Admin::onChunkSent(evhttp_connection*, void* arg) {
  auto* t = static_cast<Ticket*>(arg);
  t->admin->sendChunk(t->id);
}

void Admin::sendChunk(uint64_t id) {
  auto it = pending_.find(id);
  if (it == pending_.end()) return;
  Pending& p = it->second;
  Download& d = p.download;
  evhttp_request* req = p.req;
  if (d.remaining == 0) {
    pending_.erase(it);
    return evhttp_send_reply_end(req);
  }
  const size_t want = static_cast<size_t>(std::min<uint64_t>(d.remaining, kTlsChunk));
  evbuffer* buf = evbuffer_new();
  evbuffer_iovec vec{};
  ssize_t got = -1;
  if (buf != nullptr && evbuffer_reserve_space(buf, static_cast<ev_ssize_t>(want), &vec, 1) == 1) {
    do {
      got = ::pread(d.file.get(), vec.iov_base, want, static_cast<off_t>(d.offset));
    } while (got < 0 && errno == EINTR);
  }
  if (got <= 0) {
    // The headers are out: the only way to tell the client is to close the connection short.
    const int err = got < 0 ? errno : 0;
    spdlog::warn("error=storage admin download stopped at offset {}: {}", d.offset,
                 err ? std::strerror(err) : "the file is shorter than when it was opened");
    if (buf != nullptr) evbuffer_free(buf);
    // Not freed here (this may run inside the connection's own write callback): the socket is
    // shut down, libevent sees the error and closes the connection, and the close callback
    // forgets the request.
    ::shutdown(bufferevent_getfd(evhttp_connection_get_bufferevent(p.conn)), SHUT_RDWR);
    return;
  }
  vec.iov_len = static_cast<size_t>(got);
  evbuffer_commit_space(buf, &vec, 1);
  d.offset += static_cast<uint64_t>(got);
  d.remaining -= static_cast<uint64_t>(got);
  counters_.tls_copy_bytes += static_cast<uint64_t>(got);
  evhttp_send_reply_chunk_with_cb(req, buf, &Admin::onChunkSent, p.ticket.get());
  evbuffer_free(buf);
}

}  // namespace spliced
