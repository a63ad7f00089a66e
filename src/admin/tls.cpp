#include "spliced/admin/tls.hpp"

#include <fcntl.h>
#include <openssl/err.h>
#include <unistd.h>

#include <fmt/format.h>
#include <cerrno>
#include <cstring>
#include <string>

namespace spliced {
namespace {

// OpenSSL's first reason queued (the root cause; the later ones only say where it surfaced),
// and the queue cleared.
std::string opensslError() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

// "" when `path` can be opened for reading, else why not.
std::string unreadable(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::strerror(errno);
  ::close(fd);
  return "";
}

}  // namespace

Result<SslCtxPtr> makeTlsContext(const AdminTlsConfig& tls) {
  ERR_clear_error();
  for (const auto& [what, path] : {std::pair{"certificate", &tls.cert}, {"key", &tls.key}}) {
    if (std::string why = unreadable(*path); !why.empty()) {
      return Error(ErrorSource::Config,
                   fmt::format("cannot read the TLS {} {}: {}", what, *path, why));
    }
  }
  SslCtxPtr ctx(SSL_CTX_new(TLS_server_method()));
  if (!ctx) return Error(ErrorSource::Internal, "cannot create a TLS context: " + opensslError());
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  SSL_CTX_set_options(ctx.get(), SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  if (SSL_CTX_use_certificate_chain_file(ctx.get(), tls.cert.c_str()) != 1) {
    return Error(ErrorSource::Config, fmt::format("the TLS certificate {} is not a usable PEM "
                                                  "certificate: {}",
                                                  tls.cert, opensslError()));
  }
  if (SSL_CTX_use_PrivateKey_file(ctx.get(), tls.key.c_str(), SSL_FILETYPE_PEM) != 1) {
    return Error(ErrorSource::Config,
                 fmt::format("the TLS key {} is not a usable PEM private key (or does not match "
                             "the certificate {}): {}",
                             tls.key, tls.cert, opensslError()));
  }
  if (SSL_CTX_check_private_key(ctx.get()) != 1) {
    return Error(ErrorSource::Config,
                 fmt::format("the TLS key {} does not match the certificate {}: {}", tls.key,
                             tls.cert, opensslError()));
  }
  return ctx;
}

}  // namespace spliced
