#pragma once
// The admin endpoint's settings (the `admin:` block).
#include <optional>
#include <string>
#include <vector>

#include "spliced/core/address.hpp"

namespace spliced {

// `admin.auth`: HTTP Basic authentication against an htpasswd file.
struct AdminAuthConfig {
  std::string basic_file;                                 // htpasswd (bcrypt or sha512-crypt)
  std::vector<std::string> open{"/metrics", "/healthz"};  // paths answered without credentials
};

// `admin.tls`: HTTPS only, with this certificate (chain) and key, both PEM.
struct AdminTlsConfig {
  std::string cert;
  std::string key;
};

struct AdminConfig {
  std::optional<SocketAddress> listen;  // off when absent
  std::vector<Cidr> allow;              // empty = loopback only
  std::optional<AdminAuthConfig> auth;  // off when absent: everyone in `allow` may read everything
  std::optional<AdminTlsConfig> tls;    // off when absent: plain HTTP
};

}  // namespace spliced
