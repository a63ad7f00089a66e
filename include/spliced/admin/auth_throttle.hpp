#pragma once
// Slows down password guessing on the admin endpoint, per client address.
//
// Each failed attempt from an address doubles the delay that every later request with
// credentials from that address waits before it is looked at: none before the first failure,
// then 100 ms, 200 ms, ... up to `cap` (2 s). A success forgets the address; so does a quiet
// period (`forget`, 60 s without a failure). At most `max_in_flight` attempts of one address are
// checked at a time (waiting or on the checking thread); further ones wait the same delay and are
// then refused (429) without a check, so opening many connections does not multiply the guessing
// rate (at most max_in_flight per cap: 2 per second by default) and one address cannot fill the
// checking thread's queue. Beyond `max_held` waiting refusals of one address, a request is refused
// at once. The table holds at most `max_addresses` entries: when it is full, quiet entries are
// dropped first, then the one whose last failure is oldest.
//
// A client address is an IPv4 address or an IPv6 /64 (one host usually owns a whole /64).
// Pure logic with the time passed in; the admin endpoint keeps one on its loop thread.
#include <chrono>
#include <cstdint>
#include <string>
#include <unordered_map>

namespace spliced {

class AuthThrottle {
 public:
  using Clock = std::chrono::steady_clock;
  struct Limits {
    Clock::duration base = std::chrono::milliseconds(100);
    Clock::duration cap = std::chrono::seconds(2);
    Clock::duration forget = std::chrono::seconds(60);
    Clock::duration log_every = std::chrono::seconds(60);
    uint32_t max_in_flight = 4;
    uint32_t max_held = 64;
    size_t max_addresses = 4096;
  };

  AuthThrottle() = default;
  explicit AuthThrottle(Limits limits) : limits_(limits) {}

  // What to do with a new attempt from `addr`: Check it after `delay` (zero: now), or Refuse it
  // after `delay` (too many of its attempts are being checked), or RefuseNow (too many are
  // waiting already). A Check ends with exactly one of succeeded(), failed() or abandoned(true);
  // a Refuse with refused() or abandoned(false).
  struct Admission {
    enum class Kind { Check, Refuse, RefuseNow } kind = Kind::Check;
    Clock::duration delay{};
  };
  Admission admit(const std::string& addr, Clock::time_point now);
  void succeeded(const std::string& addr);
  // What to log about a failure: log=true for the first failure of the address in `log_every`,
  // with the failures of that address not logged since.
  struct Report {
    bool log = false;
    uint64_t suppressed = 0;
    uint32_t failures = 0;  // consecutive failures of the address, this one included
  };
  Report failed(const std::string& addr, Clock::time_point now);
  void refused(const std::string& addr);
  // The client went away before its attempt was answered (`check`: it was admitted to a check).
  void abandoned(const std::string& addr, bool check);

  // The delay after `failures` consecutive failures.
  Clock::duration delayAfter(uint32_t failures) const;
  size_t size() const { return table_.size(); }
  const Limits& limits() const { return limits_; }

 private:
  struct Entry {
    uint32_t failures = 0;
    uint32_t in_flight = 0;
    uint32_t held = 0;
    Clock::time_point last_failure{};
    Clock::time_point last_logged{};
    bool logged = false;
    uint64_t suppressed = 0;
  };
  // Makes room for one more entry; false when every entry has attempts in flight.
  bool makeRoom(Clock::time_point now);
  bool quiet(const Entry& e, Clock::time_point now) const;
  void dropIfIdle(const std::string& addr);

  Limits limits_;
  std::unordered_map<std::string, Entry> table_;
};

}  // namespace spliced
