#pragma once
// archive.on_publish: runs an operator's command (an upload tool) for each published segment, off
// the event loop, on `concurrency` threads of its own. Each run is a posix_spawn in its own
// process group, stdin and stdout on /dev/null, stderr captured (its last 2 KiB are logged); a run
// that outlives `timeout` is killed (SIGKILL to its group). Exit 0 = success: a `published`
// record goes to the manifest. Anything else is retried with back-off (1 s doubling to 5 min);
// the queue survives a restart because the manifest says which live segments lack a `published`
// record (the lifecycle thread queues them again at start).
//
// Ownership: a PublishRunner owns its threads and its queue; the manifest, the config and the
// counters are borrowed from the route and outlive it. The destructor kills running commands (they
// run again at the next start).
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "spliced/archive/archive_config.hpp"
#include "spliced/archive/manifest.hpp"

namespace spliced {

struct PublishMetrics {
  std::atomic<uint64_t> success{0};
  std::atomic<uint64_t> failure{0};  // non-zero exit, killed by a signal, or could not start
  std::atomic<uint64_t> timeout{0};
  std::atomic<uint64_t> queued{0};  // segments waiting for (another) run
};

// What one run came to.
struct PublishRun {
  enum class Result { Success, Failure, Timeout } result = Result::Failure;
  int status = 0;  // exit status, or the signal number when killed by one
  bool signaled = false;
  std::string stderr_tail;  // the last bytes it wrote to stderr
  std::string error;        // could not start: why
  std::chrono::milliseconds duration{0};
};
const char* toString(PublishRun::Result r);

// Replaces {path}, {name} and {route} in each argument.
std::vector<std::string> expandArgv(const std::vector<std::string>& argv, const std::string& path,
                                    const std::string& name, const std::string& route);
// Runs argv to its end or its timeout (blocking the calling thread); `cancel` set meanwhile kills
// it too (reported as a failure).
PublishRun runCommand(const std::vector<std::string>& argv, std::chrono::milliseconds timeout,
                      const std::atomic<bool>* cancel = nullptr);

class PublishRunner {
 public:
  PublishRunner(std::string route, std::string dir_path, const OnPublishConfig& cfg,
                Manifest& manifest, PublishMetrics& metrics);
  ~PublishRunner();
  PublishRunner(const PublishRunner&) = delete;
  PublishRunner& operator=(const PublishRunner&) = delete;

  // Queues a run for `name` (relative to the archive dir) now; a name already queued is not
  // queued twice.
  void enqueue(const std::string& name);

 private:
  struct Job {
    std::string name;
    int attempt = 0;
    std::chrono::steady_clock::time_point due;
  };
  void work();
  void runOne(Job job);

  const std::string route_;
  const std::string dir_path_;
  const OnPublishConfig& cfg_;
  Manifest& manifest_;
  PublishMetrics& metrics_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  std::set<std::string> pending_;
  bool stop_ = false;
  std::atomic<bool> cancel_{false};
  std::vector<std::thread> threads_;  // last: started once everything they use exists
};

}  // namespace spliced
