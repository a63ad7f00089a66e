#pragma once
// One error convention for the control path (start-up, config, route and listener set-up,
// archive recovery): a Result carries a value or an Error, and the Error says where the fault
// lies (its source), the errno that caused it, if any, and what was being done. The source picks
// the log tag (`error=storage`) and, once several exist, the metric; it follows Pingora's
// ErrorSource. The data path does not use this: it returns {bytes, status} and never allocates.
#include <cerrno>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include "spliced/core/check.hpp"

namespace spliced {

// Where a fault lies. downstream: the client; upstream: the server a proxy route forwards to;
// storage: the archive's filesystem; config: what the operator wrote; environment: the machine
// (a port in use, a missing permission, a descriptor limit); internal: spliced itself.
enum class ErrorSource { Downstream, Upstream, Storage, Config, Environment, Internal };
std::string_view toString(ErrorSource s);

class Error {
 public:
  Error(ErrorSource source, std::string context, int code = 0)
      : source_(source), code_(code), context_(std::move(context)) {}

  ErrorSource source() const { return source_; }
  // The errno behind it, or 0.
  int code() const { return code_; }
  // "cannot bind 127.0.0.1:80: Permission denied": the context, then the errno's text.
  std::string message() const;
  // Prefixes what the caller was doing: "route app: " + message.
  Error&& withContext(std::string_view outer) &&;

 private:
  ErrorSource source_;
  int code_;
  std::string context_;
};

// The source an errno from the operating system points at when setting something up: a missing
// permission, a port in use, a path that is missing, read-only or runs through a regular file, or
// an exhausted limit is the machine's; anything else is ours.
ErrorSource sourceOfSetupErrno(int err);

// A value, or the Error that prevented it.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}      // NOLINT(google-explicit-constructor)
  Result(Error error) : v_(std::move(error)) {}  // NOLINT(google-explicit-constructor)
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() {
    SPLICED_ASSERT(ok(), "value() of a failed Result");
    return std::get<0>(v_);
  }
  const T& value() const {
    SPLICED_ASSERT(ok(), "value() of a failed Result");
    return std::get<0>(v_);
  }
  const Error& error() const {
    SPLICED_ASSERT(!ok(), "error() of a successful Result");
    return std::get<1>(v_);
  }
  Error takeError() && { return std::move(std::get<1>(v_)); }

 private:
  std::variant<T, Error> v_;
};

// Success with nothing to return, or an Error.
struct Ok {};
using Status = Result<Ok>;

}  // namespace spliced
