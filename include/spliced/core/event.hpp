#pragma once
// RAII owners for libevent objects.
#include <event2/event.h>

#include <chrono>
#include <memory>

namespace spliced {

struct EventBaseDeleter {
  void operator()(event_base* b) const { event_base_free(b); }
};
using EventBasePtr = std::unique_ptr<event_base, EventBaseDeleter>;

struct EventDeleter {
  void operator()(event* e) const { event_free(e); }
};
using EventPtr = std::unique_ptr<event, EventDeleter>;

inline timeval toTimeval(std::chrono::milliseconds d) {
  timeval tv;
  tv.tv_sec = static_cast<time_t>(d.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((d.count() % 1000) * 1000);
  return tv;
}

// Adds `ev` with an optional timeout (zero = none).
inline void addEvent(event* ev, std::chrono::milliseconds timeout) {
  if (timeout.count() > 0) {
    timeval tv = toTimeval(timeout);
    event_add(ev, &tv);
  } else {
    event_add(ev, nullptr);
  }
}

}  // namespace spliced
