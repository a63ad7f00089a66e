// libFuzzer target: the admin endpoint's outside input for authentication — the Authorization
// header (parseBasicAuthorization, decodeBase64) and the htpasswd file (Htpasswd::parse).
// The whole input is tried as a header value and as a file. Properties: accepted credentials
// have a non-empty user without ':' or control characters, and encoding them again gives the
// same credentials; decoded base64 encodes back to the same text (one canonical form); every
// htpasswd error names the file; every user read can be found with the hash it was read with.
// Passwords are never checked here (a bcrypt cost of 31 takes hours by design).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "spliced/admin/basic_auth.hpp"

namespace {

std::string encode(std::string_view in) {
  static const char* k = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  for (size_t i = 0; i < in.size(); i += 3) {
    uint32_t n = static_cast<uint32_t>(static_cast<unsigned char>(in[i])) << 16;
    if (i + 1 < in.size()) n |= static_cast<uint32_t>(static_cast<unsigned char>(in[i + 1])) << 8;
    if (i + 2 < in.size()) n |= static_cast<unsigned char>(in[i + 2]);
    out += k[(n >> 18) & 63];
    out += k[(n >> 12) & 63];
    out += i + 1 < in.size() ? k[(n >> 6) & 63] : '=';
    out += i + 2 < in.size() ? k[n & 63] : '=';
  }
  return out;
}

bool hasControl(std::string_view s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return true;
  }
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);

  if (auto decoded = spliced::decodeBase64(input)) {
    FUZZ_CHECK(encode(*decoded) == input, "base64 has one canonical form");
  }
  if (auto c = spliced::parseBasicAuthorization(input)) {
    FUZZ_CHECK(!c->user.empty(), "the user is not empty");
    FUZZ_CHECK(c->user.find(':') == std::string::npos, "the user holds no ':'");
    FUZZ_CHECK(!hasControl(c->user) && !hasControl(c->password), "no control characters");
    auto again = spliced::parseBasicAuthorization("Basic " + encode(c->user + ":" + c->password));
    FUZZ_CHECK(again && again->user == c->user && again->password == c->password,
               "credentials encoded again parse to the same");
  }

  spliced::Htpasswd::Load load = spliced::Htpasswd::parse(input, "users");
  for (const auto& e : load.errors) {
    FUZZ_CHECK(e.rfind("users:", 0) == 0, "every error names the file");
  }
  if (load.errors.empty()) FUZZ_CHECK(load.users.size() > 0, "a usable file has users");
  // Each line that parsed is found again, with a hash the parser accepts.
  size_t start = 0;
  while (start < input.size()) {
    size_t nl = input.find('\n', start);
    std::string_view line = input.substr(start, nl == std::string_view::npos ? nl : nl - start);
    start = nl == std::string_view::npos ? input.size() : nl + 1;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) continue;
    spliced::Htpasswd::Lookup who = load.users.find(line.substr(0, colon));
    if (!who.known) continue;
    FUZZ_CHECK(spliced::supportedHash(who.hash, nullptr).has_value(), "a stored hash is supported");
  }
  return 0;
}
