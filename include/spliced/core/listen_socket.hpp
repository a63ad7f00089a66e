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

// `n` non-blocking UDP sockets bound to `addr` (udp:HOST:PORT), each with SO_REUSEPORT when n > 1
// (one per worker: the kernel spreads datagrams by a hash of their addresses), all on one port,
// the address first bound alone as openListenGroup does. Each asks for a receive buffer of
// `rcvbuf` bytes (SO_RCVBUFFORCE, which root may use past net.core.rmem_max, else SO_RCVBUF) and
// reports kernel drops in a control message (SO_RXQ_OVFL). `*granted` gets the buffer the kernel
// gave (what it reports, halved: it doubles the value for its bookkeeping).
Result<std::vector<UniqueFd>> openUdpGroup(const SocketAddress& addr, size_t n, uint64_t rcvbuf,
                                           uint64_t* granted);

}  // namespace spliced
