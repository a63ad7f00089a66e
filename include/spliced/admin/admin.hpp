#pragma once
// The admin endpoint on the server's event loop (libevent's evhttp): GET /metrics (Prometheus),
// GET /healthz, GET /archive/<route>/ (closed segments as JSON) and GET /archive/<route>/<path>
// (one closed segment by sendfile, with Range). HEAD is answered like GET, without a body. This
// file is the HTTP dispatch; the pages come from the metrics catalogue, the AdminSource and the
// archive's file rules.
#include <event2/http.h>

#include <memory>
#include <string>

#include "spliced/admin/admin_config.hpp"
#include "spliced/admin/admin_status.hpp"
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
  void archive(evhttp_request* req, const std::string& raw_path);
  void listSegments(evhttp_request* req, int dir_fd);
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
};

}  // namespace spliced
