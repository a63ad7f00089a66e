#pragma once
// The server: one event loop, its pipe pool, its routes, the archive lifecycle thread, the admin
// endpoint, signals and shutdown.
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "spliced/admin/admin.hpp"
#include "spliced/admin/admin_status.hpp"
#include "spliced/archive/lifecycle.hpp"
#include "spliced/config/config.hpp"
#include "spliced/core/error.hpp"
#include "spliced/core/event.hpp"
#include "spliced/core/fd_budget.hpp"
#include "spliced/core/pipe_pool.hpp"
#include "spliced/core/syscalls.hpp"
#include "spliced/server/route.hpp"

namespace spliced {

// A Server owns its event_base, pipe pool, routes, lifecycle thread and admin endpoint, and holds
// the config snapshot they borrow.
class Server final : public AdminSource {
 public:
  explicit Server(ConfigPtr config, SysCalls& sys = SysCalls::kernel());
  ~Server();

  // Binds every listener and prepares archive dirs.
  Status start();
  // Runs the loop until a shutdown has finished. Returns the process exit code.
  int run();

  void beginShutdown();
  void rotateAll();

  event_base* base() { return base_.get(); }
  PipePool& pipes() { return pipes_; }
  FdBudget& fdBudget() { return fds_; }
  SysCalls& sys() { return sys_; }
  ArchiveLifecycle& lifecycle() { return *lifecycle_; }
  const Config& config() const { return *config_; }
  bool shuttingDown() const { return shutting_down_; }
  uint64_t nextConnectionId() { return ++last_conn_id_; }

  // The address each route listens on (the real port when the config said 0), by route name.
  std::string boundAddress(const std::string& route) const;
  std::string adminAddress() const;
  // A route's counters, or nullptr for an unknown route.
  const RouteMetrics* metrics(const std::string& route) const;

  // Frees `s` after the current callback has returned (never inside its own callback).
  void retire(SessionPtr s);

  // AdminSource.
  ServerStatus status() const override;
  std::vector<std::string> problems() const override;
  int archiveDir(std::string_view route) const override;

 private:
  static void onSignal(evutil_socket_t sig, short, void* arg);
  static void onCleanup(evutil_socket_t, short, void* arg);
  static void onDrainTimeout(evutil_socket_t, short, void* arg);
  void maybeFinishShutdown();
  void budgetDescriptors();
  size_t sessionCount() const;
  const Route* route(std::string_view name) const;

  ConfigPtr config_;
  SysCalls& sys_;
  EventBasePtr base_;
  FdBudget fds_;  // before pipes_ and routes_: they give back to it as they go
  PipePool pipes_;
  std::vector<std::unique_ptr<Route>> routes_;
  std::unique_ptr<Admin> admin_;  // after routes_: destroyed first, it reads them
  // After routes_: destroyed (joined) first, its jobs point into routes.
  std::unique_ptr<ArchiveLifecycle> lifecycle_;
  std::vector<EventPtr> signal_evs_;
  EventPtr cleanup_ev_;
  EventPtr drain_ev_;
  std::vector<SessionPtr> graveyard_;
  uint64_t last_conn_id_ = 0;
  bool shutting_down_ = false;
  bool finished_ = false;
  std::chrono::system_clock::time_point start_time_ = std::chrono::system_clock::now();
};

}  // namespace spliced
