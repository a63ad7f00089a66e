#include "spliced/core/cpus.hpp"

#include <sched.h>

namespace spliced {

size_t affinityCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) != 0) return 1;
  const int n = CPU_COUNT(&set);
  return n > 0 ? static_cast<size_t>(n) : 1;
}

}  // namespace spliced
