#pragma once
// FUZZ_CHECK(cond, what): a property every input must keep. A violation prints what was expected
// and aborts; libFuzzer reports that as a crash and saves the input that caused it.
#include <cstdio>
#include <cstdlib>

#define FUZZ_CHECK(cond, what)                                                                   \
  do {                                                                                           \
    if (!(cond)) {                                                                               \
      std::fprintf(stderr, "fuzz property violated: %s\n  check: %s\n  at %s:%d\n", what, #cond, \
                   __FILE__, __LINE__);                                                          \
      std::abort();                                                                              \
    }                                                                                            \
  } while (0)
