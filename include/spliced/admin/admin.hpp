#pragma once
// The admin endpoint on the server's event loop (libevent's evhttp): GET /metrics (Prometheus),
// GET /healthz, GET /archive/<route>/ (closed segments as JSON, a page at a time:
// ?limit=N&after=NAME, with a Link: rel="next" header while more remain) and
// GET /archive/<route>/<path> (one closed segment by sendfile, with Range). HEAD is answered like
// GET, without a body. This file is the HTTP dispatch; the pages come from the metrics catalogue,
// the AdminSource and the archive's file rules.
//
// A listing walks a whole archive dir (100,000 files take about a second): it runs on the admin's
// listing thread (a LoopWorker), never on the loop, and its reply is sent from the loop when the
// walk is done. At most kMaxListings listings are queued or running; more get 503 with
// Retry-After. A client that goes away meanwhile is noticed by the connection's close callback:
// its request is forgotten (freed, if libevent handed it to us) and the finished walk is dropped.
#include <event2/http.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "spliced/admin/admin_config.hpp"
#include "spliced/admin/admin_status.hpp"
#include "spliced/archive/loop_worker.hpp"
#include "spliced/core/error.hpp"
#include "spliced/core/event.hpp"
#include "spliced/core/log_limit.hpp"

struct evconnlistener;

namespace spliced {

struct EvhttpDeleter {
  void operator()(evhttp* h) const { evhttp_free(h); }
};

// The Admin owns its evhttp (which owns the listening socket and its evconnlistener); the event
// loop, the AdminSource and the config are borrowed. When accept fails (out of descriptors), the
// listener pauses for 100 ms instead of retrying in a busy loop, as the route listeners do, and
// logs one line per episode.
class Admin {
 public:
  // Listings queued or running at most (one thread walks them, in order).
  static constexpr size_t kMaxListings = 8;
  // GET /archive/<route>/: entries per page without ?limit=, and the largest limit accepted.
  static constexpr size_t kDefaultListLimit = 1000;
  static constexpr size_t kMaxListLimit = 10000;

  Admin(event_base* base, const AdminSource& source, const AdminConfig& cfg);
  ~Admin();

  // Binds the admin address.
  Status start();
  std::string boundAddress() const;

 private:
  static void onRequest(evhttp_request* req, void* arg);
  static void onAcceptError(evconnlistener* lev, void* http);
  static void onResume(evutil_socket_t fd, short what, void* arg);
  void acceptFailed(int err);
  void handle(evhttp_request* req);
  void health(evhttp_request* req);
  void archive(evhttp_request* req, const std::string& raw_path, const char* query);
  void listSegments(evhttp_request* req, int dir_fd, const std::string& route, const char* query);
  // On the loop, when the walk of listing `id` is done.
  void listed(uint64_t id, int code, const std::string& body, const std::string& link);
  static void onConnectionClose(evhttp_connection* conn, void* arg);
  void sendSegment(evhttp_request* req, int dir_fd, const std::string& rel);

  event_base* base_;
  const AdminSource& source_;
  const AdminConfig& cfg_;
  std::unique_ptr<evhttp, EvhttpDeleter> http_;
  int fd_ = -1;                         // owned by http_ (closed by evhttp_free)
  evconnlistener* listener_ = nullptr;  // owned by http_
  EventPtr resume_ev_;                  // re-enables the paused listener, then ends the episode
  bool paused_ = false;
  LogLimiter accept_log_{"admin accept"};
  std::string unix_path_;
  // A listing waiting for its walk: its request, and the connection it came on (for the close
  // callback). Erased when answered or when the client has gone.
  struct Listing {
    evhttp_request* req = nullptr;
    evhttp_connection* conn = nullptr;
    std::shared_ptr<std::atomic<bool>>
        gone;  // set when the client has gone: a queued walk is skipped
  };
  std::map<uint64_t, Listing> listings_;
  uint64_t last_listing_ = 0;
  std::unique_ptr<LoopWorker> lister_;  // last: destroyed (joined) first, its jobs use the above
};

}  // namespace spliced
