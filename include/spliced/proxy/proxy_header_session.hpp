#pragma once
// accept_proxy: a new connection's first bytes must be a PROXY v1/v2 header from a front load
// balancer. This session reads exactly the header (peeking first, so no stream byte is taken),
// within accept_proxy_timeout, checks the original client against the route's allow list, and
// hands the connection forward to the session its route kind makes of it. A malformed, oversized
// or missing header closes the connection, counted.
#include <sys/socket.h>

#include <chrono>
#include <string>
#include <vector>

#include "spliced/core/address.hpp"
#include "spliced/core/event.hpp"
#include "spliced/core/fd.hpp"
#include "spliced/core/session.hpp"

namespace spliced {

// Owns the connection until the header is read. The RouteContext, the route kind that makes
// the next session and the allow list (part of the config snapshot) are borrowed.
class ProxyHeaderSession : public Session {
 public:
  ProxyHeaderSession(RouteContext& ctx, RouteKind& next, const std::vector<Cidr>& allow,
                     std::chrono::milliseconds timeout, UniqueFd fd, const sockaddr_storage& peer,
                     socklen_t len);
  void start() override;
  void shutdownSweep() override;
  // Binary upgrade: moves as its socket alone (its header is only peeked, never taken); the new
  // process reads the header again, within a full accept_proxy_timeout.
  bool freeze(HandoffRecord& out) override;
  void thaw() override;

 private:
  static void onReadable(evutil_socket_t, short, void* arg);
  static void onDeadline(evutil_socket_t, short, void* arg);
  void tryParse();
  void handOn(const ProxyAddresses& origin);
  void fail(const std::string& why);

  RouteContext& ctx_;
  RouteKind& next_;
  const std::vector<Cidr>& allow_;
  std::chrono::milliseconds timeout_;
  UniqueFd fd_;
  sockaddr_storage peer_{};
  socklen_t len_ = 0;
  EventPtr read_ev_;
  EventPtr retry_ev_;
  EventPtr deadline_ev_;
};

}  // namespace spliced
