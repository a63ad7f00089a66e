#pragma once
// The admin endpoint on the server's event loop (libevent's evhttp): GET /metrics (Prometheus),
// GET /healthz, GET /archive/<route>/ (closed segments as JSON) and GET /archive/<route>/<path>
// (one closed segment by sendfile, with Range). HEAD is answered like GET, without a body.
#include <event2/http.h>

#include <memory>
#include <string>

#include "spliced/config.hpp"
#include "spliced/fd.hpp"

namespace spliced {

class Server;
class Route;

struct EvhttpDeleter {
  void operator()(evhttp* h) const { evhttp_free(h); }
};

// The Admin owns its evhttp (which owns the listening socket); the Server is borrowed.
class Admin {
 public:
  Admin(Server& server, const AdminConfig& cfg);
  ~Admin();

  // Binds the admin address. Empty on success, else the reason.
  std::string start();
  std::string boundAddress() const;

 private:
  static void onRequest(evhttp_request* req, void* arg);
  void handle(evhttp_request* req);
  void metrics(evhttp_request* req);
  void health(evhttp_request* req);
  void archive(evhttp_request* req, const std::string& raw_path);
  void listSegments(evhttp_request* req, Route& route);
  void sendSegment(evhttp_request* req, Route& route, const std::string& rel);

  Server& server_;
  const AdminConfig& cfg_;
  std::unique_ptr<evhttp, EvhttpDeleter> http_;
  int fd_ = -1;  // owned by http_ (closed by evhttp_free)
  std::string unix_path_;
};

// A parsed single "Range: bytes=..." header against a file of `size` bytes.
struct ByteRange {
  enum class Kind { None, Satisfiable, Unsatisfiable } kind = Kind::None;
  uint64_t start = 0;
  uint64_t length = 0;
};
// Kind::None when the header is absent, malformed or asks for several ranges (the whole file is
// sent then, as RFC 9110 allows).
ByteRange parseRange(const char* header, uint64_t size);

}  // namespace spliced
