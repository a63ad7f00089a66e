#include "spliced/server/systemd.hpp"

#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include <fmt/format.h>
#include <cstdlib>
#include <cstring>

namespace spliced {

std::map<std::string, UniqueFd> takeActivatedSockets() {
  std::map<std::string, UniqueFd> out;
  char** names = nullptr;
  const int n = ::sd_listen_fds_with_names(1, &names);
  if (n < 0) {
    spdlog::warn("error=environment socket activation: cannot read LISTEN_FDS: {}",
                 std::strerror(-n));
    return out;
  }
  for (int i = 0; i < n; ++i) {
    const std::string name = names != nullptr && names[i] != nullptr ? names[i] : "unknown";
    UniqueFd fd(SD_LISTEN_FDS_START + i);
    if (out.count(name) != 0) {
      spdlog::warn("socket activation: a second socket named {}: closed (one per route)", name);
      continue;
    }
    out.emplace(name, std::move(fd));
  }
  if (names != nullptr) {
    for (int i = 0; i < n; ++i) std::free(names[i]);
    std::free(names);
  }
  return out;
}

SystemdNotifier::SystemdNotifier() {
  const char* sock = std::getenv("NOTIFY_SOCKET");
  enabled_ = sock != nullptr && *sock != '\0';
  uint64_t usec = 0;
  if (enabled_ && ::sd_watchdog_enabled(0, &usec) > 0) watchdog_ = std::chrono::microseconds(usec);
}

void SystemdNotifier::mainPid(pid_t pid) { send(fmt::format("MAINPID={}", pid)); }

void SystemdNotifier::send(const std::string& state) {
  if (!enabled_) return;
  const int r = ::sd_notify(0, state.c_str());
  if (r < 0) {
    spdlog::warn("error=environment sd_notify: {}", std::strerror(-r));
  }
}

void SystemdNotifier::ready(const std::string& status) {
  send(fmt::format("READY=1\nSTATUS={}\nMAINPID={}", status, ::getpid()));
}

void SystemdNotifier::reloading() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  const uint64_t usec =
      static_cast<uint64_t>(ts.tv_sec) * 1000000u + static_cast<uint64_t>(ts.tv_nsec) / 1000u;
  send(fmt::format("RELOADING=1\nMONOTONIC_USEC={}", usec));
}

void SystemdNotifier::stopping(const std::string& status) {
  send(fmt::format("STOPPING=1\nSTATUS={}", status));
}

void SystemdNotifier::status(const std::string& status) { send("STATUS=" + status); }

void SystemdNotifier::watchdog() { send("WATCHDOG=1"); }

}  // namespace spliced
