#pragma once
// A listening socket on the event loop. Accepts without blocking, a bounded number per wake-up,
// and pauses (instead of spinning) when the process runs out of file descriptors.
#include <sys/socket.h>

#include <functional>
#include <string>

#include "spliced/core/address.hpp"
#include "spliced/core/error.hpp"
#include "spliced/core/event.hpp"
#include "spliced/core/fd.hpp"
#include "spliced/core/fd_budget.hpp"
#include "spliced/core/log_limit.hpp"
#include "spliced/core/syscalls.hpp"

namespace spliced {

// A Listener owns its socket and events; a unix socket's file is removed when it is destroyed.
//
// With a budget, each accept first takes what the connection will hold (`cost` descriptors):
// the charge goes to the callback with the connection. When the budget is short the listener
// stops accepting (clients wait in the kernel's backlog) until descriptors come back.
class Listener final : private FdBudget::Waiter {
 public:
  using AcceptFn =
      std::function<void(UniqueFd fd, const sockaddr_storage& peer, socklen_t len, FdCharge)>;

  Listener(event_base* base, SysCalls& sys, std::string route, AcceptFn on_accept,
           FdBudget* budget = nullptr, size_t cost = 0);
  ~Listener();

  // Binds and listens.
  Status open(const SocketAddress& addr);
  // Accepts from `fd`, a listening socket it now owns (one of a route's SO_REUSEPORT group, or
  // one handed over by a binary upgrade; a Unix socket's `unix_path` is removed at close).
  void adopt(UniqueFd fd, std::string unix_path = "");
  // Accepts from `fd`, a listening socket shared with other workers' listeners and owned by the
  // route, which closes it (and removes a Unix socket's file) once every listener has let go.
  void share(int fd, const SocketAddress& addr);
  // Stops accepting and closes the socket (graceful shutdown); a shared socket is let go.
  void close();
  bool isOpen() const { return sock_ >= 0; }
  // Binary upgrade: stops accepting for a while (the socket stays open; connections wait in its
  // backlog), and accepts again.
  void pause();
  void resume();
  // The socket accepted from (-1 when closed).
  int fd() const { return sock_; }
  // The new process took the socket over: closes this process's descriptor, and a Unix socket's
  // file stays where it is.
  void disown() {
    unix_path_.clear();
    close();
  }
  // The bound address (the real port when the config said port 0).
  std::string boundAddress() const;

 private:
  static void onReadable(evutil_socket_t fd, short what, void* arg);
  static void onResume(evutil_socket_t fd, short what, void* arg);
  void acceptSome();
  void endPause();  // accept works again: ends the episode with its count
  void fdsAvailable() override;
  void waitForBudget();
  void watch();

  event_base* base_;
  SysCalls& sys_;
  std::string route_;
  AcceptFn on_accept_;
  UniqueFd fd_;    // an owned socket
  int sock_ = -1;  // the socket accepted from: fd_'s, or a shared one
  EventPtr read_ev_;
  EventPtr resume_ev_;
  std::string unix_path_;         // an owned Unix socket's file, removed at close
  std::string shared_unix_path_;  // a shared Unix socket's file (the route removes it)
  bool paused_ = false;
  LogLimiter accept_log_{"route accept"};  // one line per episode of failing accepts
  FdBudget* budget_;
  size_t cost_;
  bool waiting_budget_ = false;  // the budget is short: waiting for descriptors to come back
  LogLimiter budget_log_{"route fd budget"};  // one line per episode of a short budget
};

}  // namespace spliced
