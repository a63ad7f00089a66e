#include "spliced/admin/auth_throttle.hpp"

#include <algorithm>

namespace spliced {

AuthThrottle::Clock::duration AuthThrottle::delayAfter(uint32_t failures) const {
  if (failures == 0) return Clock::duration::zero();
  Clock::duration d = limits_.base;
  for (uint32_t i = 1; i < failures && d < limits_.cap; ++i) d *= 2;
  return std::min(d, limits_.cap);
}

bool AuthThrottle::quiet(const Entry& e, Clock::time_point now) const {
  return e.in_flight == 0 && e.held == 0 && now - e.last_failure >= limits_.forget;
}

bool AuthThrottle::makeRoom(Clock::time_point now) {
  if (table_.size() < limits_.max_addresses) return true;
  std::erase_if(table_, [&](const auto& kv) { return quiet(kv.second, now); });
  if (table_.size() < limits_.max_addresses) return true;
  auto oldest = table_.end();
  for (auto it = table_.begin(); it != table_.end(); ++it) {
    if (it->second.in_flight > 0 || it->second.held > 0) continue;
    if (oldest == table_.end() || it->second.last_failure < oldest->second.last_failure) {
      oldest = it;
    }
  }
  if (oldest == table_.end()) return false;
  table_.erase(oldest);
  return true;
}

AuthThrottle::Admission AuthThrottle::admit(const std::string& addr, Clock::time_point now) {
  using Kind = Admission::Kind;
  auto it = table_.find(addr);
  if (it == table_.end()) {
    if (!makeRoom(now)) return {Kind::RefuseNow, {}};
    it = table_.emplace(addr, Entry{}).first;
  } else if (quiet(it->second, now)) {
    it->second = Entry{};
  }
  Entry& e = it->second;
  const Clock::duration delay = delayAfter(e.failures);
  if (e.in_flight < limits_.max_in_flight) {
    ++e.in_flight;
    return {Kind::Check, delay};
  }
  if (e.held < limits_.max_held) {
    ++e.held;
    return {Kind::Refuse, delay};
  }
  return {Kind::RefuseNow, {}};
}

void AuthThrottle::dropIfIdle(const std::string& addr) {
  auto it = table_.find(addr);
  if (it != table_.end() && it->second.failures == 0 && it->second.in_flight == 0 &&
      it->second.held == 0) {
    table_.erase(it);
  }
}

void AuthThrottle::succeeded(const std::string& addr) {
  auto it = table_.find(addr);
  if (it == table_.end()) return;
  Entry& e = it->second;
  if (e.in_flight > 0) --e.in_flight;
  // The address is forgiven; attempts still in flight from it are not counted against it.
  e.failures = 0;
  dropIfIdle(addr);
}

AuthThrottle::Report AuthThrottle::failed(const std::string& addr, Clock::time_point now) {
  auto it = table_.find(addr);
  if (it == table_.end()) {
    if (!makeRoom(now)) return {true, 0, 1};
    it = table_.emplace(addr, Entry{}).first;
  } else if (it->second.in_flight > 0) {
    --it->second.in_flight;
  }
  Entry& e = it->second;
  if (e.failures < UINT32_MAX) ++e.failures;
  e.last_failure = now;
  Report r;
  r.failures = e.failures;
  if (!e.logged || now - e.last_logged >= limits_.log_every) {
    r.log = true;
    r.suppressed = e.suppressed;
    e.logged = true;
    e.last_logged = now;
    e.suppressed = 0;
  } else {
    ++e.suppressed;
  }
  return r;
}

void AuthThrottle::refused(const std::string& addr) {
  auto it = table_.find(addr);
  if (it == table_.end()) return;
  if (it->second.held > 0) --it->second.held;
  dropIfIdle(addr);
}

void AuthThrottle::abandoned(const std::string& addr, bool check) {
  auto it = table_.find(addr);
  if (it == table_.end()) return;
  Entry& e = it->second;
  if (check && e.in_flight > 0) --e.in_flight;
  if (!check && e.held > 0) --e.held;
  dropIfIdle(addr);
}

}  // namespace spliced
