// Keeps fuzz_config and fuzz_address offline and fast. They are linked with
// -Wl,--wrap=getaddrinfo, so spliced_core's calls to getaddrinfo() (parseSocketAddress resolves
// host names) land here: "localhost" and numeric hosts resolve as usual (/etc/hosts, no network),
// any other name fails as it would with AI_NUMERICHOST instead of waiting for DNS.
#include <netdb.h>

#include <cstring>

extern "C" int __real_getaddrinfo(const char* node, const char* service, const addrinfo* hints,
                                  addrinfo** res);

extern "C" int __wrap_getaddrinfo(const char* node, const char* service, const addrinfo* hints,
                                  addrinfo** res) {
  if (node == nullptr || std::strcmp(node, "localhost") == 0) {
    return __real_getaddrinfo(node, service, hints, res);
  }
  addrinfo numeric{};
  if (hints != nullptr) numeric = *hints;
  numeric.ai_flags |= AI_NUMERICHOST;
  return __real_getaddrinfo(node, service, &numeric, res);
}
