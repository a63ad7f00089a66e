#pragma once
// The admin endpoint's settings (the `admin:` block).
#include <optional>
#include <vector>

#include "spliced/core/address.hpp"

namespace spliced {

struct AdminConfig {
  std::optional<SocketAddress> listen;  // off when absent
  std::vector<Cidr> allow;              // empty = loopback only
};

}  // namespace spliced
