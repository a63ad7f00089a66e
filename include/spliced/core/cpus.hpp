#pragma once
// The CPUs this process may run on.
#include <cstddef>

namespace spliced {

// The CPUs in this process's affinity mask (what `workers: auto` uses); at least 1.
size_t affinityCpus();

}  // namespace spliced
