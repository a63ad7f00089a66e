// The faults group (runtime): scenarios of the fault campaign, each against the real binary. Each
// test failed before its fix.
#include <catch2/catch.hpp>

#include "harness.hpp"

using namespace e2e;
