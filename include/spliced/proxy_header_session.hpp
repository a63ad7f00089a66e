#pragma once
// accept_proxy: a new connection's first bytes must be a PROXY v1/v2 header from a front load
// balancer. This session reads exactly the header (peeking first, so no stream byte is taken),
// within accept_proxy_timeout, then hands the connection to its real session with the original
// client's addresses. A malformed, oversized or missing header closes the connection, counted.
#include <sys/socket.h>

#include <string>

#include "spliced/event.hpp"
#include "spliced/fd.hpp"
#include "spliced/session.hpp"

namespace spliced {

class Route;

// Owns the connection until the header is read; the route is borrowed.
class ProxyHeaderSession : public Session {
 public:
  ProxyHeaderSession(Route& route, UniqueFd fd, const sockaddr_storage& peer, socklen_t len);
  void start() override;
  void shutdownSweep() override;

 private:
  static void onReadable(evutil_socket_t, short, void* arg);
  static void onDeadline(evutil_socket_t, short, void* arg);
  void tryParse();
  void fail(const std::string& why);

  Route& route_;
  UniqueFd fd_;
  sockaddr_storage peer_{};
  socklen_t len_ = 0;
  EventPtr read_ev_;
  EventPtr retry_ev_;
  EventPtr deadline_ev_;
};

}  // namespace spliced
