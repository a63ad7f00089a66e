#pragma once
// Creating a bound, listening, non-blocking socket for a config address.
#include "spliced/core/address.hpp"
#include "spliced/core/error.hpp"
#include "spliced/core/fd.hpp"

namespace spliced {

// Binds and listens on `addr`. A unix socket file left by a dead process is removed first (one
// in use is an error); the socket file gets mode 0660. `[::]` is IPv6-only. A port in use or a
// missing permission is an environment error.
Result<UniqueFd> openListenSocket(const SocketAddress& addr);

}  // namespace spliced
