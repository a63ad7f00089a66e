#include "spliced/archive/publish_runner.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <algorithm>
#include <cerrno>
#include <cstring>

#include "spliced/core/fd.hpp"

extern char** environ;

namespace spliced {
namespace {

constexpr size_t kStderrTail = 2048;
constexpr std::chrono::milliseconds kFirstRetry{1000};
constexpr std::chrono::milliseconds kMaxRetry{300000};

std::string replaceAll(std::string s, std::string_view from, const std::string& to) {
  for (size_t pos = 0; (pos = s.find(from, pos)) != std::string::npos; pos += to.size()) {
    s.replace(pos, from.size(), to);
  }
  return s;
}

// The tail as one log-friendly line.
std::string oneLine(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  for (char& c : s) {
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  }
  return s;
}

}  // namespace

const char* toString(PublishRun::Result r) {
  switch (r) {
    case PublishRun::Result::Success:
      return "success";
    case PublishRun::Result::Failure:
      return "failure";
    case PublishRun::Result::Timeout:
      return "timeout";
  }
  return "?";
}

std::vector<std::string> expandArgv(const std::vector<std::string>& argv, const std::string& path,
                                    const std::string& name, const std::string& route) {
  std::vector<std::string> out;
  out.reserve(argv.size());
  for (const auto& a : argv) {
    out.push_back(
        replaceAll(replaceAll(replaceAll(a, "{path}", path), "{name}", name), "{route}", route));
  }
  return out;
}

PublishRun runCommand(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                      const std::atomic<bool>* cancel) {
  PublishRun run;
  const auto start = std::chrono::steady_clock::now();
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    run.error = fmt::format("pipe: {}", std::strerror(errno));
    return run;
  }
  UniqueFd rd(fds[0]), wr(fds[1]);
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attr;
  posix_spawn_file_actions_init(&actions);
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_adddup2(&actions, wr.get(), 2);
  // Its own process group: a timeout kills what it started too. Signals back to default.
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setpgroup(&attr, 0);
  posix_spawnattr_setflags(&attr,
                           POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  std::vector<char*> args;
  args.reserve(argv.size() + 1);
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  int err = ::posix_spawnp(&pid, args[0], &actions, &attr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  wr.reset();
  if (err != 0) {
    run.error = fmt::format("cannot run {}: {}", argv[0], std::strerror(err));
    run.duration = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - start);
    return run;
  }
  const auto deadline = start + timeout;
  bool killed = false, timed_out = false, eof = false;
  int wstatus = 0;
  while (true) {
    if (!eof) {
      pollfd p{rd.get(), POLLIN, 0};
      int r = ::poll(&p, 1, 100);
      if (r > 0) {
        char buf[4096];
        ssize_t n = ::read(rd.get(), buf, sizeof buf);
        if (n > 0) {
          run.stderr_tail.append(buf, static_cast<size_t>(n));
          if (run.stderr_tail.size() > kStderrTail) {
            run.stderr_tail.erase(0, run.stderr_tail.size() - kStderrTail);
          }
        } else if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
          eof = true;
        }
      }
    } else {
      ::usleep(20000);
    }
    pid_t w = ::waitpid(pid, &wstatus, WNOHANG);
    if (w == pid) break;
    const auto now = std::chrono::steady_clock::now();
    bool cancelled = cancel != nullptr && cancel->load();
    if (!killed && (now >= deadline || cancelled)) {
      timed_out = !cancelled;
      killed = true;
      ::kill(-pid, SIGKILL);
      ::kill(pid, SIGKILL);
    }
  }
  // Its group may still hold the pipe open (a background child): what is there is enough.
  if (killed) ::kill(-pid, SIGKILL);
  run.duration = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::steady_clock::now() - start);
  if (timed_out) {
    run.result = PublishRun::Result::Timeout;
    run.signaled = true;
    run.status = SIGKILL;
  } else if (WIFEXITED(wstatus)) {
    run.status = WEXITSTATUS(wstatus);
    run.result = run.status == 0 ? PublishRun::Result::Success : PublishRun::Result::Failure;
  } else if (WIFSIGNALED(wstatus)) {
    run.signaled = true;
    run.status = WTERMSIG(wstatus);
  }
  return run;
}

PublishRunner::PublishRunner(std::string route, std::string dir_path, const OnPublishConfig& cfg,
                             Manifest& manifest, PublishMetrics& metrics)
    : route_(std::move(route)),
      dir_path_(std::move(dir_path)),
      cfg_(cfg),
      manifest_(manifest),
      metrics_(metrics) {
  const uint64_t n = std::max<uint64_t>(1, cfg_.concurrency);
  for (uint64_t i = 0; i < n; ++i) threads_.emplace_back([this] { work(); });
}

PublishRunner::~PublishRunner() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cancel_.store(true);
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void PublishRunner::enqueue(const std::string& name) {
  {
    std::lock_guard lock(mu_);
    if (stop_ || !pending_.insert(name).second) return;
    queue_.push_back({name, 0, std::chrono::steady_clock::now()});
    metrics_.queued.store(pending_.size(), std::memory_order_relaxed);
  }
  cv_.notify_one();
}

void PublishRunner::work() {
  std::unique_lock lock(mu_);
  while (!stop_) {
    if (queue_.empty()) {
      cv_.wait(lock);
      continue;
    }
    // The job due first (retries wait their back-off; new segments are due at once).
    auto it = std::min_element(queue_.begin(), queue_.end(),
                               [](const Job& a, const Job& b) { return a.due < b.due; });
    if (it->due > std::chrono::steady_clock::now()) {
      cv_.wait_until(lock, it->due);
      continue;
    }
    Job job = std::move(*it);
    queue_.erase(it);
    lock.unlock();
    runOne(std::move(job));
    lock.lock();
  }
}

void PublishRunner::runOne(Job job) {
  // Compressed (its compressed file is queued instead) or deleted meanwhile: nothing to publish.
  if (!manifest_.unpublished(job.name)) {
    std::lock_guard lock(mu_);
    pending_.erase(job.name);
    metrics_.queued.store(pending_.size(), std::memory_order_relaxed);
    return;
  }
  const std::string path = dir_path_ + "/" + job.name;
  PublishRun run =
      runCommand(expandArgv(cfg_.exec, path, job.name, route_), cfg_.timeout, &cancel_);
  if (cancel_.load()) return;  // stopping: it runs again at the next start
  ++job.attempt;
  const std::string tail = oneLine(run.stderr_tail);
  if (run.result == PublishRun::Result::Success) {
    ManifestRecord rec;
    rec.event = ManifestEvent::Published;
    rec.name = job.name;
    rec.time = manifestTime(nowUnixMs());
    rec.duration_ms = static_cast<uint64_t>(run.duration.count());
    if (int err = manifest_.append(rec)) {
      spdlog::error(
          "error=storage route={} on_publish: {} succeeded but the manifest append failed: {}",
          route_, job.name, std::strerror(err));
    }
    metrics_.success.fetch_add(1, std::memory_order_relaxed);
    spdlog::info("route={} on_publish {} result=success duration_ms={} attempt={}{}{}", route_,
                 job.name, run.duration.count(), job.attempt, tail.empty() ? "" : " stderr=", tail);
    std::lock_guard lock(mu_);
    pending_.erase(job.name);
    metrics_.queued.store(pending_.size(), std::memory_order_relaxed);
    return;
  }
  if (run.result == PublishRun::Result::Timeout) {
    metrics_.timeout.fetch_add(1, std::memory_order_relaxed);
  } else {
    metrics_.failure.fetch_add(1, std::memory_order_relaxed);
  }
  auto backoff = kFirstRetry * (1 << std::min(job.attempt - 1, 10));
  backoff = std::min(std::chrono::duration_cast<std::chrono::milliseconds>(backoff), kMaxRetry);
  std::string status = !run.error.empty() ? run.error
                       : run.result == PublishRun::Result::Timeout
                           ? fmt::format("killed after the timeout of {} ms", cfg_.timeout.count())
                       : run.signaled ? fmt::format("killed by signal {}", run.status)
                                      : fmt::format("exit status {}", run.status);
  spdlog::warn(
      "error=environment route={} on_publish {} result={} ({}) duration_ms={} attempt={}; "
      "retrying in {} ms{}{}",
      route_, job.name, toString(run.result), status, run.duration.count(), job.attempt,
      backoff.count(), tail.empty() ? "" : "; stderr: ", tail);
  job.due = std::chrono::steady_clock::now() + backoff;
  {
    std::lock_guard lock(mu_);
    queue_.push_back(std::move(job));
  }
  cv_.notify_one();
}

}  // namespace spliced
