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

namespace spliced {

struct EvhttpDeleter {
  void operator()(evhttp* h) const { evhttp_free(h); }
};

// The Admin owns its evhttp (which owns the listening socket); the event loop, the AdminSource
// and the config are borrowed.
class Admin {
 public:
  Admin(event_base* base, const AdminSource& source, const AdminConfig& cfg);
  ~Admin();

  // Binds the admin address.
  Status start();
  std::string boundAddress() const;

 private:
  static void onRequest(evhttp_request* req, void* arg);
  void handle(evhttp_request* req);
  void health(evhttp_request* req);
  void archive(evhttp_request* req, const std::string& raw_path);
  void listSegments(evhttp_request* req, int dir_fd);
  void sendSegment(evhttp_request* req, int dir_fd, const std::string& rel);

  event_base* base_;
  const AdminSource& source_;
  const AdminConfig& cfg_;
  std::unique_ptr<evhttp, EvhttpDeleter> http_;
  int fd_ = -1;  // owned by http_ (closed by evhttp_free)
  std::string unix_path_;
};

}  // namespace spliced
