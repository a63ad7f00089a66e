#pragma once
// Logging set-up: spdlog to stderr (a service manager collects it), as text or one JSON object
// per line. Error lines carry error=downstream|upstream|storage|internal.
#include "spliced/config.hpp"

namespace spliced {

void setupLogging(const LogConfig& cfg);

}  // namespace spliced
