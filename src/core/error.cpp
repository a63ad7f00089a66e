#include "spliced/core/error.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace spliced {

std::string_view toString(ErrorSource s) {
  switch (s) {
    case ErrorSource::Downstream:
      return "downstream";
    case ErrorSource::Upstream:
      return "upstream";
    case ErrorSource::Storage:
      return "storage";
    case ErrorSource::Config:
      return "config";
    case ErrorSource::Environment:
      return "environment";
    case ErrorSource::Internal:
      return "internal";
  }
  return "internal";
}

std::string Error::message() const {
  if (code_ == 0) return context_;
  return context_ + ": " + std::strerror(code_);
}

Error&& Error::withContext(std::string_view outer) && {
  context_.insert(0, std::string(outer) + ": ");
  return std::move(*this);
}

ErrorSource sourceOfSetupErrno(int err) {
  switch (err) {
    case EACCES:
    case EPERM:
    case EADDRINUSE:
    case EADDRNOTAVAIL:
    case EMFILE:
    case ENFILE:
    case ENOMEM:
    case ENOBUFS:
    case ENOENT:
    case ENOTDIR:
    case EEXIST:
    case EISDIR:
    case ELOOP:
    case ENAMETOOLONG:
    case EBUSY:
    case EROFS:
    case ENOSPC:
    case EDQUOT:
      return ErrorSource::Environment;
    default:
      return ErrorSource::Internal;
  }
}

void assertionFailed(const char* cond, const char* msg, const char* file, int line) {
  std::fprintf(stderr, "spliced: assertion failed at %s:%d: %s (%s)\n", file, line, msg, cond);
  std::abort();
}

}  // namespace spliced
