#pragma once
// The server: the main event loop (signals, the admin endpoint, the routes' timers), its workers
// (worker 0 runs on the main loop, the others on their own threads), its routes, the archive
// lifecycle thread, and shutdown.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <sys/types.h>

#include "spliced/admin/admin.hpp"
#include "spliced/admin/admin_status.hpp"
#include "spliced/archive/lifecycle.hpp"
#include "spliced/archive/loop_worker.hpp"
#include "spliced/config/config.hpp"
#include "spliced/core/error.hpp"
#include "spliced/core/event.hpp"
#include "spliced/core/fd_budget.hpp"
#include "spliced/core/handoff.hpp"
#include "spliced/core/pipe_pool.hpp"
#include "spliced/core/syscalls.hpp"
#include "spliced/server/route.hpp"
#include "spliced/server/systemd.hpp"
#include "spliced/server/worker.hpp"

namespace spliced {

// A listening socket a binary upgrade handed over: one of a route's per-worker sockets (its
// worker's index) or the one its workers share.
struct HandedListener {
  size_t index = 0;
  bool shared = false;
  std::string unix_path;  // a Unix socket's file (removed when this process stops listening)
  UniqueFd fd;
};

// A Server owns its event_base, workers, routes, lifecycle thread and admin endpoint, and holds
// the config snapshot they borrow. Its methods run on the main thread, except post() and
// nextConnectionId(), which any thread may call.
class Server final : public AdminSource {
 public:
  explicit Server(ConfigPtr config, SysCalls& sys = SysCalls::kernel());
  ~Server();

  // Binds every listener, prepares archive dirs and starts the workers' threads.
  Status start();
  // Runs the loop until a shutdown has finished. Returns the process exit code.
  int run();

  void beginShutdown();
  void rotateAll();

  event_base* base() { return base_.get(); }
  // Worker 0's pipes and budget (with one worker, the process's).
  PipePool& pipes() { return workers_.front()->pipes(); }
  FdBudget& fdBudget() { return workers_.front()->fdBudget(); }
  const std::vector<std::unique_ptr<Worker>>& workers() const { return workers_; }
  SysCalls& sys() { return sys_; }
  ArchiveLifecycle& lifecycle() { return *lifecycle_; }
  const Config& config() const { return *config_; }
  bool shuttingDown() const { return shutting_down_; }
  uint64_t nextConnectionId() { return ++last_conn_id_; }
  // Runs `fn` on the main loop (from any thread).
  void post(std::function<void()> fn) { workers_.front()->post(std::move(fn)); }
  // Runs `fn` on `w`'s loop: now when that is the main loop (this thread) or no thread runs it,
  // else posted.
  void onWorker(Worker& w, std::function<void()> fn);
  // The same, and waits until it has run (main thread; a worker's loop never waits for main).
  void onWorkerWait(Worker& w, const std::function<void()>& fn);
  // SIGHUP: reads and checks the config file again off the loop (the reload thread), then applies
  // it on the loop, or keeps the running one. A SIGHUP while a file is being read makes one more
  // reload once this one is applied.
  void reload();
  // The file read by reload(): applied, or refused with the reason (main loop).
  void applyReload(const ConfigResult& next);
  // A route may have become quiet (its last connection or listener gone): a removed route is
  // retired, a shutdown may finish.
  void routeQuiet();

  // The address each route listens on (the real port when the config said 0), by route name.
  std::string boundAddress(const std::string& route) const;
  std::string adminAddress() const;
  // A route's counters on worker 0 (with one worker, the route's), or nullptr for an unknown
  // route.
  const RouteMetrics* metrics(const std::string& route) const;

  // The socket systemd handed over for `route` (LISTEN_FDNAMES), or an invalid fd.
  UniqueFd takeActivatedSocket(const std::string& route);

  // Binary upgrade (SIGUSR2; upgrade.cpp, docs/DESIGN.md "Binary upgrade").
  // The command line to run again: the binary's path and the arguments it was started with.
  void setCommandLine(std::string exe, std::vector<std::string> argv);
  // The new process, before start(): over `channel` (SPLICED_UPGRADE_FD) says hello, receives
  // the running process's listeners and frozen sessions, and checks that it can take them.
  Status takeOver(UniqueFd channel);
  // The new process, after start(): makes the frozen sessions again and tells the running
  // process it has everything (which then exits).
  Status finishTakeOver();
  // The new process could not take over (refused with `why`): the running process keeps going.
  void refuseTakeOver(const std::string& why);
  // The listening sockets handed over for `route` (empty when none).
  std::vector<HandedListener> takeHandedListeners(const std::string& route);
  // The running process's side of a handoff over `channel` to the process `pid` (startUpgrade
  // after its fork; a test with another Server in this process passes 0: nothing to reap).
  void upgradeOver(UniqueFd channel, pid_t pid);
  // The process this one handed everything to, once it has (0 until then).
  pid_t successor() const { return upgrade_done_pid_; }
  // Everything went to the new process (this one is exiting).
  bool handedOff() const { return handed_off_; }

  // AdminSource.
  ServerStatus status() const override;
  std::vector<std::string> problems() const override;
  std::vector<std::string> notes() const override;
  int archiveDir(std::string_view route) const override;

 private:
  static void onSignal(evutil_socket_t sig, short, void* arg);
  // Binary upgrade, in the running process: the new binary started, until it has taken over or
  // the upgrade has failed.
  struct UpgradeChild {
    pid_t pid = -1;
    UniqueFd channel;
    EventPtr read_ev;
    EventPtr timeout_ev;
    bool frozen = false;  // every route frozen, the state sent: waiting for "ready"
    std::chrono::steady_clock::time_point frozen_at{};  // when the first route froze
  };
  void startUpgrade();
  static void onUpgradeChannel(evutil_socket_t, short, void* arg);
  static void onUpgradeTimeout(evutil_socket_t, short, void* arg);
  void upgradeMessage();
  // Freezes every route and sends the state; false (everything thawed) when it cannot.
  bool sendState();
  // `ending`: the new process closed the channel or refused, and is exiting by itself.
  void upgradeFailed(const std::string& why, bool ending = true);
  void upgradeDone();
  static void onDrainTimeout(evutil_socket_t, short, void* arg);
  static void onReload(evutil_socket_t, short, void* arg);
  static void onRouteDrainTimeout(evutil_socket_t, short, void* arg);
  void reloadFailed(const std::string& why);
  // Frees the removed routes whose last connection has closed.
  void retireQuietRoutes();
  void maybeFinishShutdown();
  void budgetDescriptors();
  // Connections open now over every route and worker.
  size_t sessionCount() const;
  void stopWorkers();
  // user:/group: gives the archive dirs to the user and drops root for good.
  Status dropPrivileges();
  static void onWatchdog(evutil_socket_t, short, void* arg);
  static void onStatus(evutil_socket_t, short, void* arg);
  std::string statusLine() const;
  Route* route(std::string_view name) const;

  ConfigPtr config_;
  SysCalls& sys_;
  EventBasePtr base_;
  // Before routes_: their sessions and listeners live on the workers' loops and budgets.
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::unique_ptr<Route>> routes_;
  // Removed by a reload: not accepting, their connections finishing (drain_timeout).
  std::vector<std::unique_ptr<Route>> draining_;
  std::atomic<size_t> draining_count_{0};
  std::vector<std::unique_ptr<Route>> retired_;  // drained and finished; freed at exit
  ConfigPtr first_config_;        // the admin endpoint's config is the one it started with
  std::unique_ptr<Admin> admin_;  // after routes_: destroyed first, it reads them
  // After routes_: destroyed (joined) first, its jobs point into routes.
  std::unique_ptr<ArchiveLifecycle> lifecycle_;
  std::vector<EventPtr> signal_evs_;
  EventPtr drain_ev_;
  SystemdNotifier notifier_;
  std::map<std::string, UniqueFd> activated_;  // socket activation: taken by routes at start
  EventPtr reload_ev_;  // SIGHUP activates it: repeated signals coalesce into one reload
  // Reads and checks the file of a reload, so that a data path on the main loop (worker 0) does
  // not wait for the YAML parser.
  std::unique_ptr<LoopWorker> reload_worker_;
  bool reload_reading_ = false;  // a file is being read on reload_worker_
  bool reload_again_ = false;    // a SIGHUP came meanwhile
  EventPtr route_drain_ev_;      // drain_timeout of the routes a reload removed
  uint64_t generation_ = 1;
  uint64_t reloads_ok_ = 0;
  uint64_t reloads_failed_ = 0;
  std::string last_reload_error_;
  EventPtr watchdog_ev_;
  EventPtr status_ev_;
  bool watchdog_withheld_ = false;  // a worker did not answer: WATCHDOG=1 is not sent (logged once)
  std::atomic<uint64_t> last_conn_id_{0};
  std::atomic<bool> shutting_down_{false};
  bool finished_ = false;
  std::chrono::system_clock::time_point start_time_ = std::chrono::system_clock::now();
  // Binary upgrade.
  std::string exe_;
  std::vector<std::string> argv_;
  std::unique_ptr<UpgradeChild> upgrade_;  // a new binary started and not done yet
  pid_t upgrade_done_pid_ = 0;
  bool handed_off_ = false;
  UniqueFd takeover_;  // the new process: its channel to the running one, until it has taken over
  std::map<std::string, std::vector<HandedListener>> handed_listeners_;
  UniqueFd handed_admin_;
  std::vector<HandoffRecord> handed_sessions_;
};

}  // namespace spliced
