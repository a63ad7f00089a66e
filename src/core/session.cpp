#include "spliced/core/session.hpp"

#include <iterator>

namespace spliced {

Session* SessionList::add(SessionPtr s) {
  SPLICED_ASSERT(s && !s->listed_, "a session is in one list at a time");
  Session* raw = s.get();
  list_.push_back(std::move(s));
  raw->self_ = std::prev(list_.end());
  raw->listed_ = true;
  return raw;
}

SessionPtr SessionList::remove(Session* s) {
  SPLICED_ASSERT(s != nullptr && s->listed_, "only a listed session is removed");
  SessionPtr owned = std::move(*s->self_);
  list_.erase(s->self_);
  s->listed_ = false;
  return owned;
}

std::vector<Session*> SessionList::snapshot() const {
  std::vector<Session*> out;
  out.reserve(list_.size());
  for (const auto& s : list_) out.push_back(s.get());
  return out;
}

}  // namespace spliced
