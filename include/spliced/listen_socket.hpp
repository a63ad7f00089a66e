#pragma once
// Creating a bound, listening, non-blocking socket for a config address.
#include "spliced/address.hpp"
#include "spliced/fd.hpp"

namespace spliced {

// Binds and listens on `addr`. A unix socket file left by a dead process is removed first (one
// in use is an error); the socket file gets mode 0660. `[::]` is IPv6-only. On failure the fd is
// invalid and `error` says why.
UniqueFd openListenSocket(const SocketAddress& addr, std::string& error);

}  // namespace spliced
