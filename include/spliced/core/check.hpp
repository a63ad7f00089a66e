#pragma once
// Invariants that only a bug can break (Envoy's ASSERT): SPLICED_ASSERT(cond, "what must hold")
// aborts with the file, line and message in debug and sanitizer builds, and compiles to nothing
// in release builds (NDEBUG without SPLICED_CHECKS). What the world can do (a reset, a full
// disk, a bad config) is handled, never asserted.
#if !defined(NDEBUG) || defined(SPLICED_CHECKS)
#define SPLICED_ASSERT(cond, msg) \
  ((cond) ? static_cast<void>(0) : ::spliced::assertionFailed(#cond, msg, __FILE__, __LINE__))
#else
#define SPLICED_ASSERT(cond, msg) static_cast<void>(sizeof((cond) ? 1 : 0))
#endif

namespace spliced {

[[noreturn]] void assertionFailed(const char* cond, const char* msg, const char* file, int line);

}  // namespace spliced
