#pragma once
// Creating a bound, listening, non-blocking socket for a config address.
#include <vector>

#include "spliced/core/address.hpp"
#include "spliced/core/error.hpp"
#include "spliced/core/fd.hpp"

namespace spliced {

// Binds and listens on `addr`. A unix socket file left by a dead process is removed first (one
// in use is an error); the socket file gets mode 0660. `[::]` is IPv6-only. A port in use or a
// missing permission is an environment error.
Result<UniqueFd> openListenSocket(const SocketAddress& addr);

// `n` listening sockets for one TCP address, each with SO_REUSEPORT (one per worker: the kernel
// spreads new connections between them), all on the same port (the one the kernel chose for the
// first when `addr` says port 0). The address is first bound alone, without SO_REUSEPORT, so
// that an address in use (another spliced with its own group) fails as it does with one socket
// and is never joined. A Unix address, or n <= 1, gives one socket as openListenSocket.
Result<std::vector<UniqueFd>> openListenGroup(const SocketAddress& addr, size_t n);

}  // namespace spliced
