// Binary upgrade (SIGUSR2): the running process starts the new binary and moves its listeners and
// live sessions to it, descriptors and all. The steps, what moves and what fails how are in
// docs/DESIGN.md, "Binary upgrade".
#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <thread>

#include "spliced/core/log.hpp"
#include "spliced/server/server.hpp"
#include "spliced/version.hpp"

extern char** environ;

namespace spliced {
namespace {

// The new binary starts and reads its config; then it starts its routes and takes the sessions.
constexpr std::chrono::seconds kHelloTimeout{30};
constexpr std::chrono::seconds kReadyTimeout{30};
// One record, either way.
constexpr int kRecordTimeoutSeconds = 10;
// The descriptor the new binary finds its channel on.
constexpr int kChannelFd = 3;

void setRecordTimeouts(int fd) {
  timeval tv{kRecordTimeoutSeconds, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

std::string describeWait(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) {
    return fmt::format("was killed by signal {} ({})", WTERMSIG(status),
                       ::strsignal(WTERMSIG(status)));
  }
  return "ended";
}

bool startsWith(const char* s, const char* prefix) {
  return std::strncmp(s, prefix, std::strlen(prefix)) == 0;
}

}  // namespace

void Server::setCommandLine(std::string exe, std::vector<std::string> argv) {
  exe_ = std::move(exe);
  argv_ = std::move(argv);
}

// ---- the running process ----

void Server::startUpgrade() {
  if (upgrade_) {
    spdlog::warn("SIGUSR2 while the upgrade to pid {} is in progress: ignored", upgrade_->pid);
    return;
  }
  if (shutting_down_) {
    spdlog::warn("SIGUSR2 while shutting down: no upgrade");
    return;
  }
  if (reload_reading_) {
    spdlog::warn(
        "SIGUSR2 while the config file is being read for a reload: no upgrade; send it again "
        "once the reload is done");
    return;
  }
  auto refuse = [](const std::string& why) {
    spdlog::error(
        "error=config binary upgrade refused: {}; nothing changed, this process keeps "
        "running",
        why);
  };
  if (draining_count_.load() > 0 || !draining_.empty()) {
    return refuse(
        fmt::format("{} route(s) removed by a reload are still draining; upgrade once "
                    "they are done (at most drain_timeout)",
                    draining_.size()));
  }
  for (const auto& r : routes_) {
    if (r->collect() != nullptr) {
      return refuse(
          fmt::format("route {} collects into an archive: moving archive routes (their "
                      "sessions, chains and dir lock) is not in this version; restart "
                      "to change the binary",
                      r->config().name));
    }
  }
  if (exe_.empty()) return refuse("the path of this binary is unknown");
  if (::access(exe_.c_str(), X_OK) != 0) {
    const int err = errno;
    spdlog::error(
        "error=environment binary upgrade: {} cannot be run ({}); nothing changed, "
        "this process keeps running",
        exe_, std::strerror(err));
    return;
  }
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    spdlog::error("error=environment binary upgrade: cannot make its channel: {}",
                  std::strerror(errno));
    return;
  }
  UniqueFd mine(sv[0]);
  UniqueFd theirs(sv[1]);
  // Everything the child needs is made before fork: between fork and exec it only calls what
  // is safe in a child of a threaded process (dup2, fcntl, execve, _exit).
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    // Not for the new process: the channel of an earlier upgrade, the watchdog pid (this
    // process's), socket activation (these sockets come over the channel).
    if (startsWith(*e, "SPLICED_UPGRADE_FD=") || startsWith(*e, "WATCHDOG_PID=") ||
        startsWith(*e, "LISTEN_FDS=") || startsWith(*e, "LISTEN_PID=") ||
        startsWith(*e, "LISTEN_FDNAMES=")) {
      continue;
    }
    env.emplace_back(*e);
  }
  env.push_back(fmt::format("{}={}", kUpgradeFdEnv, kChannelFd));
  std::vector<char*> envp;
  envp.reserve(env.size() + 1);
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> args = argv_;
  if (args.empty()) args.push_back(exe_);
  std::vector<char*> argvp;
  argvp.reserve(args.size() + 1);
  for (auto& a : args) argvp.push_back(a.data());
  argvp.push_back(nullptr);
  const int child_end = theirs.get();
  const char* path = exe_.c_str();
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (child_end == kChannelFd) {
      ::fcntl(kChannelFd, F_SETFD, 0);
    } else if (::dup2(child_end, kChannelFd) < 0) {
      ::_exit(127);
    }
    ::execve(path, argvp.data(), envp.data());
    ::_exit(127);
  }
  if (pid < 0) {
    spdlog::error("error=environment binary upgrade: cannot start {}: {}", exe_,
                  std::strerror(errno));
    return;
  }
  theirs.reset();
  spdlog::info("SIGUSR2: binary upgrade: started {} as pid {}", exe_, pid);
  upgradeOver(std::move(mine), pid);
}

void Server::upgradeOver(UniqueFd channel, pid_t pid) {
  upgrade_ = std::make_unique<UpgradeChild>();
  upgrade_->pid = pid;
  upgrade_->channel = std::move(channel);
  setRecordTimeouts(upgrade_->channel.get());
  upgrade_->read_ev.reset(event_new(base_.get(), upgrade_->channel.get(), EV_READ | EV_PERSIST,
                                    &Server::onUpgradeChannel, this));
  event_add(upgrade_->read_ev.get(), nullptr);
  upgrade_->timeout_ev.reset(evtimer_new(base_.get(), &Server::onUpgradeTimeout, this));
  addEvent(upgrade_->timeout_ev.get(), kHelloTimeout);
}

void Server::onUpgradeChannel(evutil_socket_t, short, void* arg) {
  static_cast<Server*>(arg)->upgradeMessage();
}

void Server::onUpgradeTimeout(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Server*>(arg);
  if (!self->upgrade_) return;
  self->upgradeFailed(
      self->upgrade_->frozen
          ? fmt::format("the new process did not take over within {} s", kReadyTimeout.count())
          : fmt::format("the new process did not answer within {} s", kHelloTimeout.count()),
      false);
}

void Server::upgradeMessage() {
  Result<HandoffRecord> got = recvRecord(upgrade_->channel.get());
  if (!got) {
    return upgradeFailed(
        fmt::format("the channel to the new process failed: {}", got.error().message()));
  }
  HandoffRecord& r = got.value();
  if (r.kind == "refuse") {
    return upgradeFailed("the new process refused: " +
                         (r.has("reason") ? r.fields["reason"] : std::string("no reason")));
  }
  if (r.kind == "hello" && !upgrade_->frozen) {
    Result<uint64_t> version = r.num("version");
    if (!version || version.value() != kHandoffVersion) {
      const std::string why =
          fmt::format("the new binary ({}) speaks handoff version {}, this one {}",
                      r.has("binary") ? r.fields["binary"] : "?",
                      version ? std::to_string(version.value()) : "?", kHandoffVersion);
      HandoffRecord no("refuse");
      no.set("reason", why);
      (void)sendRecord(upgrade_->channel.get(), no);
      return upgradeFailed(why);
    }
    if (!sendState()) return;
    addEvent(upgrade_->timeout_ev.get(), kReadyTimeout);
    return;
  }
  if (r.kind == "ready" && upgrade_->frozen) return upgradeDone();
  upgradeFailed(fmt::format("the new process sent '{}' out of turn", r.kind));
}

bool Server::sendState() {
  std::vector<HandoffRecord> records;
  upgrade_->frozen = true;  // from here on a failure thaws what froze
  upgrade_->frozen_at = std::chrono::steady_clock::now();
  for (auto& r : routes_) {
    if (Status s = r->freeze(records); !s) {
      upgradeFailed(s.error().message());
      return false;
    }
  }
  if (admin_) {
    admin_->pauseAccepting();
    HandoffRecord a("admin");
    a.set("listen", first_config_->admin.listen->text);
    a.fds.push_back(admin_->listenFd());
    records.push_back(std::move(a));
  }
  size_t sessions = 0;
  for (const auto& r : records) sessions += r.kind == "session" ? 1 : 0;
  HandoffRecord state("state");
  state.setNum("version", kHandoffVersion);
  state.set("binary", kVersion);
  state.setNum("pid", static_cast<uint64_t>(::getpid()));
  state.setNum("last_conn_id", last_conn_id_.load());
  state.setNum("records", records.size());
  const int fd = upgrade_->channel.get();
  Status sent = sendRecord(fd, state);
  for (size_t i = 0; sent && i < records.size(); ++i) sent = sendRecord(fd, records[i]);
  if (sent) sent = sendRecord(fd, HandoffRecord("end"));
  if (!sent) {
    upgradeFailed(sent.error().message());
    return false;
  }
  spdlog::info(
      "binary upgrade: {} listening socket(s) and {} connection(s) frozen and sent to "
      "pid {}",
      records.size() - sessions, sessions, upgrade_->pid);
  return true;
}

void Server::upgradeFailed(const std::string& why, bool ending) {
  if (!upgrade_) return;
  // The new process goes first: it must not touch a socket once this process uses them again.
  // One that refused or closed the channel is on its way out: it gets a moment to end by itself,
  // so that its exit status tells what happened.
  int status = 0;
  const bool child = upgrade_->pid > 0;
  pid_t w = child ? ::waitpid(upgrade_->pid, &status, WNOHANG) : -1;
  for (int i = 0; child && ending && w == 0 && i < 100; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    w = ::waitpid(upgrade_->pid, &status, WNOHANG);
  }
  std::string end;
  if (child && w == 0) {
    ::kill(upgrade_->pid, SIGKILL);
    w = ::waitpid(upgrade_->pid, &status, 0);
    end = "; it was stopped";
  } else if (w == upgrade_->pid) {
    end = "; it " + describeWait(status);
  }
  const bool frozen = upgrade_->frozen;
  if (frozen) {
    for (auto& r : routes_) r->thaw();
    if (admin_) admin_->resumeAccepting();
  }
  spdlog::error(
      "error=environment binary upgrade to pid {} failed: {}{}; this process (pid {}) "
      "keeps every listener and connection",
      upgrade_->pid, why, end, ::getpid());
  upgrade_->read_ev.reset();
  upgrade_->timeout_ev.reset();
  upgrade_.reset();
}

void Server::upgradeDone() {
  const pid_t pid = upgrade_->pid;
  // How long every connection was frozen: from the first freeze to "ready" (the new process's
  // loops start right after it sends that).
  const auto pause = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::steady_clock::now() - upgrade_->frozen_at);
  upgrade_->read_ev.reset();
  upgrade_->timeout_ev.reset();
  upgrade_.reset();
  upgrade_done_pid_ = pid;
  handed_off_ = true;
  if (pid > 0) notifier_.mainPid(pid);
  spdlog::info(
      "binary upgrade: pid {} has taken over every listener and connection after a "
      "pause of {:.1f} ms; this process exits",
      pid, static_cast<double>(pause.count()) / 1000.0);
  shutting_down_ = true;
  finished_ = true;
  // This process's copies of the descriptors are closed without a word to any peer: the new
  // process holds the same sockets and pipes.
  for (auto& r : routes_) r->handedOff();
  if (admin_) admin_->disown();
  stopWorkers();
  for (auto& w : workers_) w->clearGraveyard();
  workers_.front()->runPosted();
  admin_.reset();
  event_base_loopexit(base_.get(), nullptr);
}

// ---- the new process ----

Status Server::takeOver(UniqueFd channel) {
  takeover_ = std::move(channel);
  const int fd = takeover_.get();
  setRecordTimeouts(fd);
  HandoffRecord hello("hello");
  hello.setNum("version", kHandoffVersion);
  hello.set("binary", kVersion);
  hello.setNum("pid", static_cast<uint64_t>(::getpid()));
  hello.setNum("workers", workers_.size());
  if (Status s = sendRecord(fd, hello); !s) return s;
  Result<HandoffRecord> got = recvRecord(fd);
  if (!got) return std::move(got).takeError();
  HandoffRecord& state = got.value();
  if (state.kind == "refuse") {
    return Error(ErrorSource::Environment,
                 "the running process refused: " +
                     (state.has("reason") ? state.fields["reason"] : std::string("no reason")));
  }
  auto refuse = [this](const std::string& why) -> Status {
    refuseTakeOver(why);
    return Error(ErrorSource::Config, why);
  };
  if (state.kind != "state") return refuse("the handoff began with '" + state.kind + "'");
  Result<uint64_t> version = state.num("version");
  if (!version || version.value() != kHandoffVersion) {
    return refuse(fmt::format("the running process sent handoff version {}, this binary speaks {}",
                              version ? std::to_string(version.value()) : "?", kHandoffVersion));
  }
  if (Result<uint64_t> id = state.num("last_conn_id")) last_conn_id_.store(id.value());
  std::map<std::string, std::string> listen_of;
  std::string admin_listen;
  while (true) {
    Result<HandoffRecord> next = recvRecord(fd);
    if (!next) return refuse(next.error().message());
    HandoffRecord& r = next.value();
    if (r.kind == "end") break;
    if (r.kind == "listener") {
      HandedListener h;
      h.index = r.num("index").ok() ? r.num("index").value() : 0;
      h.shared = r.num("shared").ok() && r.num("shared").value() != 0;
      h.unix_path = r.has("unix_path") ? r.fields["unix_path"] : "";
      h.fd = r.takeFd(0);
      if (!h.fd.valid()) return refuse("a listening socket came without its descriptor");
      const std::string route = r.has("route") ? r.fields["route"] : "";
      listen_of[route] = r.has("listen") ? r.fields["listen"] : "";
      handed_listeners_[route].push_back(std::move(h));
    } else if (r.kind == "admin") {
      handed_admin_ = r.takeFd(0);
      admin_listen = r.has("listen") ? r.fields["listen"] : "";
    } else if (r.kind == "session") {
      handed_sessions_.push_back(std::move(r));
    } else {
      return refuse("unknown handoff record '" + r.kind + "'");
    }
  }
  // The running process's routes must be this config's, as they are: a listener moves only to a
  // route of the same name and address, sessions only to a route that takes them.
  const std::string again =
      "; reload the running process first (SIGHUP) so that it runs this "
      "config, then upgrade";
  auto find = [this](const std::string& name) -> const RouteConfig* {
    for (const auto& rc : config_->routes) {
      if (rc.name == name) return &rc;
    }
    return nullptr;
  };
  for (const auto& [name, ls] : handed_listeners_) {
    const RouteConfig* rc = find(name);
    if (rc == nullptr) {
      return refuse(fmt::format("route {} runs in the running process but is not in {}{}", name,
                                config_->source, again));
    }
    if (rc->listen.text != listen_of[name]) {
      return refuse(fmt::format("route {} listens on {} in the running process, on {} in {}{}",
                                name, listen_of[name], rc->listen.text, config_->source, again));
    }
    if (rc->archive) {
      return refuse(
          fmt::format("route {} collects into an archive: not moved by this version", name));
    }
    if (!ls.front().shared && ls.size() != workers_.size()) {
      return refuse(
          fmt::format("route {}: the running process listens with {} worker(s), this "
                      "one would run {} (workers:); a restart changes the number of "
                      "workers",
                      name, ls.size(), workers_.size()));
    }
  }
  for (auto& r : handed_sessions_) {
    const std::string name = r.has("route") ? r.fields["route"] : "";
    if (handed_listeners_.count(name) == 0) {
      return refuse(fmt::format("a connection of route {} came, but not its listener", name));
    }
  }
  if (handed_admin_.valid() &&
      (!config_->admin.listen || config_->admin.listen->text != admin_listen)) {
    handed_admin_.reset();  // the admin endpoint moved: this process binds its own
  }
  return Ok{};
}

void Server::refuseTakeOver(const std::string& why) {
  if (!takeover_.valid()) return;
  // Nothing received is kept: the running process holds on to every socket, and a copy kept
  // here would keep a connection open after the running process has closed it.
  handed_sessions_.clear();
  handed_listeners_.clear();
  handed_admin_.reset();
  HandoffRecord no("refuse");
  no.set("reason", why);
  (void)sendRecord(takeover_.get(), no);
  takeover_.reset();
}

Status Server::finishTakeOver() {
  // The worker threads have not started (start() leaves them to this): every session is made
  // and started on its worker's loop from here, and no byte moves before "ready" is sent, the
  // point after which this process owns everything.
  size_t restored = 0;
  size_t lost = 0;
  for (auto& r : handed_sessions_) {
    const std::string name = r.fields["route"];
    Route* rt = route(name);
    const size_t worker = r.num("worker").ok() ? r.num("worker").value() : 0;
    Status s = rt != nullptr ? rt->restore(r, worker)
                             : Status(Error(ErrorSource::Internal, "no route " + name));
    if (!s) {
      // Its descriptors close with the record: the old process closes its copies when it exits.
      spdlog::error(
          "error=internal binary upgrade: a connection of route {} cannot be taken "
          "over: {}; it is closed",
          name, s.error().message());
      ++lost;
      continue;
    }
    ++restored;
  }
  handed_sessions_.clear();
  HandoffRecord ready("ready");
  ready.setNum("pid", static_cast<uint64_t>(::getpid()));
  ready.setNum("sessions", restored);
  Status sent = sendRecord(takeover_.get(), ready);
  takeover_.reset();
  for (auto& w : workers_) w->startThread();
  if (!sent) {
    // The running process is gone (it would have stopped this one before using the sockets
    // again): this process goes on with everything.
    spdlog::warn(
        "binary upgrade: the process before this one did not hear that it has taken "
        "over: {}",
        sent.error().message());
  }
  spdlog::info("binary upgrade: took over {} connection(s){}", restored,
               lost > 0 ? fmt::format(" ({} could not be)", lost) : std::string());
  return Ok{};
}

std::vector<HandedListener> Server::takeHandedListeners(const std::string& route) {
  auto it = handed_listeners_.find(route);
  if (it == handed_listeners_.end()) return {};
  std::vector<HandedListener> out = std::move(it->second);
  handed_listeners_.erase(it);
  return out;
}

}  // namespace spliced
