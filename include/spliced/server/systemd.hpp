#pragma once
// systemd integration through libsystemd: sd_notify (READY, RELOADING, STOPPING, STATUS,
// WATCHDOG) and socket activation (LISTEN_FDS / LISTEN_FDNAMES matched to route names). Without
// NOTIFY_SOCKET the notifications cost nothing and send nothing; without LISTEN_FDS every route
// binds its own address.
#include <chrono>
#include <cstdint>
#include <map>
#include <string>

#include <sys/types.h>

#include "spliced/core/fd.hpp"

namespace spliced {

// The sockets systemd handed over, by name (LISTEN_FDNAMES; "unknown" when unnamed). Taken once,
// at start: the environment variables are unset so that children do not see them.
std::map<std::string, UniqueFd> takeActivatedSockets();

// sd_notify, as the process's main pid.
class SystemdNotifier {
 public:
  SystemdNotifier();

  // True when systemd listens (NOTIFY_SOCKET is set).
  bool enabled() const { return enabled_; }
  // The watchdog interval systemd asks for (WatchdogSec=), 0 when none.
  std::chrono::microseconds watchdogInterval() const { return watchdog_; }

  void ready(const std::string& status);
  // RELOADING=1 with MONOTONIC_USEC (the time the reload began), as systemd 253 expects.
  void reloading();
  void stopping(const std::string& status);
  void status(const std::string& status);
  void watchdog();
  // MAINPID=: a binary upgrade handed the service to `pid`.
  void mainPid(pid_t pid);

 private:
  void send(const std::string& state);

  bool enabled_ = false;
  std::chrono::microseconds watchdog_{0};
};

}  // namespace spliced
