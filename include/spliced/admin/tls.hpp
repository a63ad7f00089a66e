#pragma once
// TLS for the admin endpoint: an OpenSSL server context made from `admin.tls` (a PEM certificate
// chain and its key). libevent's OpenSSL bufferevents carry each connection.
#include <openssl/ssl.h>

#include <memory>

#include "spliced/admin/admin_config.hpp"
#include "spliced/core/error.hpp"

namespace spliced {

struct SslCtxDeleter {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxDeleter>;

// A server context (TLS 1.2 or later) with the certificate chain and key of `tls`, checked to
// match. The error names the file and says what is wrong with it (missing, unreadable, not PEM,
// key not matching the certificate). Used by `spliced -t` and at start.
Result<SslCtxPtr> makeTlsContext(const AdminTlsConfig& tls);

}  // namespace spliced
