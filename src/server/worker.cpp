#include "spliced/server/worker.hpp"

#include <pthread.h>
#include <spdlog/spdlog.h>

#include <fmt/format.h>
#include <cstdlib>
#include <exception>
#include <string>

#include "spliced/core/check.hpp"

namespace spliced {

Worker::Worker(size_t index, event_base* base, SysCalls& sys, const PipesConfig& pipes,
               size_t max_pipes)
    : index_(index),
      own_base_(base == nullptr ? event_base_new() : nullptr),
      base_(base == nullptr ? own_base_.get() : base),
      pipes_(sys, pipes.size, max_pipes) {
  pipes_.useBudget(fds_);
  queue_ = std::make_unique<LoopQueue>(base_);
  cleanup_ev_.reset(event_new(base_, -1, 0, &Worker::onCleanupEvent, this));
}

Worker::~Worker() {
  stopThread();
  graveyard_.clear();
  cleanup_ev_.reset();
  queue_.reset();
}

void Worker::startThread() {
  if (own_base_ == nullptr || thread_.joinable()) return;
  thread_ = std::thread([this] {
    const std::string name = fmt::format("spliced-w{}", index_);
    ::pthread_setname_np(::pthread_self(), name.c_str());
    event_base_loop(base_, EVLOOP_NO_EXIT_ON_EMPTY);
  });
}

void Worker::stopThread() {
  if (!thread_.joinable()) return;
  event_base* base = base_;
  post([base] { event_base_loopexit(base, nullptr); });
  thread_.join();
}

void Worker::retire(SessionPtr s) {
  SPLICED_ASSERT(s != nullptr, "a retired session exists");
  graveyard_.push_back(std::move(s));
  event_active(cleanup_ev_.get(), EV_TIMEOUT, 0);
}

void Worker::onCleanupEvent(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Worker*>(arg);
  self->graveyard_.clear();
  if (self->after_cleanup_) self->after_cleanup_();
}

void installFatalHandler() {
  std::set_terminate([] {
    char thread[16] = "?";
    ::pthread_getname_np(::pthread_self(), thread, sizeof thread);
    std::string what = "unknown error";
    if (std::exception_ptr e = std::current_exception()) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& x) {
        what = x.what();
      } catch (...) {
        what = "an exception of unknown type";
      }
    }
    spdlog::error(
        "error=internal thread {}: {}: aborting the process; the connections of every worker end "
        "now, and bytes they held in pipes (read, not yet archived or forwarded) are lost",
        thread, what);
    spdlog::shutdown();  // flushes
    std::abort();
  });
}

}  // namespace spliced
