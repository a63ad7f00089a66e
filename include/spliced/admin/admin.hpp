#pragma once
// The admin endpoint on the server's event loop (libevent's evhttp): GET /metrics (Prometheus),
// GET /healthz, GET / (the status page, HTML) and GET /status.json (its data), GET
// /archive/<route>/ (closed segments as JSON, a page at a time: ?limit=N&after=NAME, with a Link:
// rel="next" header while more remain) and GET /archive/<route>/<path> (one closed segment by
// sendfile, with Range). HEAD is answered like GET, without a body. This file is the HTTP dispatch;
// the pages come from the metrics catalogue, the AdminSource and the archive's file rules.
//
// A listing walks a whole archive dir (100,000 files take about a second): it runs on the admin's
// listing thread (a LoopWorker), never on the loop, and its reply is sent from the loop when the
// walk is done. At most kMaxListings listings are queued or running; more get 503 with
// Retry-After. A client that goes away meanwhile is noticed by the connection's close callback:
// its request is forgotten (freed, if libevent handed it to us) and the finished walk is dropped.
//
// With `admin.auth`, every path but the open ones (/metrics, /healthz) needs HTTP Basic
// credentials from the htpasswd file. A password check (bcrypt: 50-250 ms) runs on the admin's
// checking thread (another LoopWorker) and the request is answered from the loop when it is done;
// the AuthThrottle makes a failing client address wait (a timer per waiting request) before its
// next attempt is checked. With `admin.tls`, connections are TLS (libevent's OpenSSL
// bufferevents); archive downloads are then read into user space a chunk at a time
// (kTlsChunk), since sendfile cannot encrypt.
#include <event2/http.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "spliced/admin/admin_config.hpp"
#include "spliced/admin/admin_status.hpp"
#include "spliced/admin/auth_throttle.hpp"
#include "spliced/admin/basic_auth.hpp"
#include "spliced/admin/status_page.hpp"
#include "spliced/admin/tls.hpp"
#include "spliced/archive/loop_worker.hpp"
#include "spliced/core/error.hpp"
#include "spliced/core/event.hpp"
#include "spliced/core/fd.hpp"
#include "spliced/core/log_limit.hpp"

struct bufferevent;
struct evconnlistener;

namespace spliced {

struct EvhttpDeleter {
  void operator()(evhttp* h) const { evhttp_free(h); }
};

// The Admin owns its evhttp (which owns the listening socket and its evconnlistener), its TLS
// context, the users read from the htpasswd file and its requests in progress; the event loop,
// the AdminSource and the config are borrowed. When accept fails (out of descriptors), the
// listener pauses for 100 ms instead of retrying in a busy loop, as the route listeners do, and
// logs one line per episode.
class Admin {
 public:
  // Listings queued or running at most (one thread walks them, in order).
  static constexpr size_t kMaxListings = 8;
  // Password checks queued or running at most (more: 503 with Retry-After).
  static constexpr size_t kMaxChecks = 64;
  // GET /archive/<route>/: entries per page without ?limit=, and the largest limit accepted.
  static constexpr size_t kDefaultListLimit = 1000;
  static constexpr size_t kMaxListLimit = 10000;
  // The status page's rates are over this interval (a timer samples the byte counters).
  static constexpr std::chrono::milliseconds kRateInterval{2000};
  // An archive download over TLS is read and encrypted this much at a time.
  static constexpr size_t kTlsChunk = 256 * 1024;

  Admin(event_base* base, const AdminSource& source, const AdminConfig& cfg);
  ~Admin();

  // Reads the htpasswd file and the TLS files, then binds the admin address, or listens on
  // `inherited`, the admin socket a binary upgrade handed over.
  Status start(UniqueFd inherited = UniqueFd());
  // Binary upgrade (running process): the listening socket, accepting paused and resumed, and
  // let go of once the new process has it (a Unix socket's file stays).
  int listenFd() const { return fd_; }
  void pauseAccepting();
  void resumeAccepting();
  void disown() { unix_path_.clear(); }
  std::string boundAddress() const;
  // Reads admin.auth.basic_file again; on an error the users already read stay in force. One
  // call for a reload (SIGHUP).
  Status loadUsers();
  const AdminCounters& counters() const { return counters_; }

 private:
  // What a request waiting in `pending_` waits for.
  enum class Wait { Listing, Check, Refusal, Download };
  // The callback argument of a timer or of a chunk written: which pending request it is for.
  struct Ticket {
    Admin* admin;
    uint64_t id;
  };
  // An archive download over TLS: the rest of the file still to send.
  struct Download {
    UniqueFd file;
    uint64_t offset = 0;
    uint64_t remaining = 0;
  };
  // A request answered later: after a listing walk, a password check, a throttling delay, or
  // while its file is sent a chunk at a time. Erased when answered or when the client has gone.
  struct Pending {
    Wait wait = Wait::Listing;
    evhttp_request* req = nullptr;
    evhttp_connection* conn = nullptr;
    // Set when the client has gone: a queued job is skipped.
    std::shared_ptr<std::atomic<bool>> gone = std::make_shared<std::atomic<bool>>(false);
    std::unique_ptr<Ticket> ticket;               // the timer's and the chunk callback's argument
    EventPtr timer;                               // a throttled attempt waiting for its turn
    std::string client;                           // the throttle's key (Check, Refusal)
    std::optional<BasicCredentials> credentials;  // nullopt: a malformed Authorization header
    Download download;
  };

  static void onRequest(evhttp_request* req, void* arg);
  static void onAcceptError(evconnlistener* lev, void* http);
  static void onResume(evutil_socket_t fd, short what, void* arg);
  static bufferevent* makeTlsBufferevent(event_base* base, void* arg);
  static void onAttemptTimer(evutil_socket_t fd, short what, void* arg);
  static void onChunkSent(evhttp_connection* conn, void* arg);
  void acceptFailed(int err);
  void handle(evhttp_request* req);
  void dispatch(evhttp_request* req);
  // Auth: a request for a protected path.
  void authenticate(evhttp_request* req);
  void attempt(uint64_t id);
  void checked(uint64_t id, bool ok);
  void authFailed(evhttp_request* req, const std::string& client, const std::string& user);
  uint64_t addPending(Pending p);
  void health(evhttp_request* req);
  void metrics(evhttp_request* req);
  // GET / and GET /status.json.
  void statusPage(evhttp_request* req, bool json);
  static void onRateTimer(evutil_socket_t fd, short what, void* arg);
  void archive(evhttp_request* req, const std::string& raw_path, const char* query);
  void listSegments(evhttp_request* req, int dir_fd, const std::string& route, const char* query);
  // On the loop, when the walk of listing `id` is done.
  void listed(uint64_t id, int code, const std::string& body, const std::string& link);
  static void onConnectionClose(evhttp_connection* conn, void* arg);
  void sendSegment(evhttp_request* req, int dir_fd, const std::string& rel);
  void sendChunk(uint64_t id);

  event_base* base_;
  const AdminSource& source_;
  const AdminConfig& cfg_;
  SslCtxPtr tls_;                          // set with admin.tls
  std::shared_ptr<const Htpasswd> users_;  // set with admin.auth; jobs hold their own reference
  AuthThrottle throttle_;
  AdminCounters counters_;
  std::unique_ptr<evhttp, EvhttpDeleter> http_;
  int fd_ = -1;                         // owned by http_ (closed by evhttp_free)
  evconnlistener* listener_ = nullptr;  // owned by http_
  EventPtr resume_ev_;                  // re-enables the paused listener, then ends the episode
  EventPtr rate_ev_;                    // samples the byte counters for the status page's rates
  RateSampler rates_;
  bool paused_ = false;
  LogLimiter accept_log_{"admin accept"};
  std::string unix_path_;
  std::map<uint64_t, Pending> pending_;
  uint64_t last_pending_ = 0;
  std::unique_ptr<LoopWorker> checker_;  // password checks; joined before the above go
  std::unique_ptr<LoopWorker> lister_;   // last: destroyed (joined) first, its jobs use the above
};

}  // namespace spliced
