#pragma once
// What a route needs of a client session, whatever the route does with its bytes.
#include <list>
#include <memory>

namespace spliced {

// A Session is owned by its Route (in a list) and freed after the callback that closed it.
class Session {
 public:
  virtual ~Session() = default;
  virtual void start() = 0;
  // Closes active archive segments (SIGUSR1, interval); nothing for sessions without any.
  virtual void rotate() {}
  // drain_timeout is over: write what is already received where it can go, and close.
  virtual void shutdownSweep() = 0;

  std::list<std::unique_ptr<Session>>::iterator self;  // position in the route's list
};
using SessionPtr = std::unique_ptr<Session>;

}  // namespace spliced
