// Listening sockets: what accepted connections get from them.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>

#include "fixtures.hpp"
#include "spliced/core/address.hpp"
#include "spliced/core/listen_socket.hpp"

using namespace spliced;

TEST_CASE("an accepted TCP connection has TCP_NODELAY from its listener, without a setsockopt",
          "[listen_socket]") {
  auto addr = parseSocketAddress("127.0.0.1:0");
  REQUIRE(addr.ok());
  Result<UniqueFd> lfd = openListenSocket(addr.value());
  REQUIRE(lfd);
  sockaddr_storage bound{};
  socklen_t len = sizeof bound;
  REQUIRE(::getsockname(lfd.value().get(), reinterpret_cast<sockaddr*>(&bound), &len) == 0);
  UniqueFd client(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(::connect(client.get(), reinterpret_cast<sockaddr*>(&bound), len) == 0);
  UniqueFd accepted(::accept4(lfd.value().get(), nullptr, nullptr, SOCK_CLOEXEC));
  REQUIRE(accepted.valid());
  int nodelay = 0;
  socklen_t optlen = sizeof nodelay;
  REQUIRE(::getsockopt(accepted.get(), IPPROTO_TCP, TCP_NODELAY, &nodelay, &optlen) == 0);
  CHECK(nodelay != 0);
}
