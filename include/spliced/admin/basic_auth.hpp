#pragma once
// HTTP Basic authentication for the admin endpoint: the `Authorization: Basic ...` header, an
// htpasswd file (as written by Apache's `htpasswd -B` or `-5`) and the password check.
//
// Only slow, salted hashes are accepted: bcrypt ($2y$, $2b$, $2a$) and sha512-crypt ($6$).
// htpasswd's default Apache MD5 ($apr1$), {SHA}, crypt(3) DES and plain text are refused when
// the file is read, with the file and line. The check itself (checkPassword) is libcrypt's
// crypt_r, which takes 50-250 ms for bcrypt at cost 10 or more: it never runs on the event loop.
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace spliced {

// The user and password of a Basic Authorization header.
struct BasicCredentials {
  std::string user;
  std::string password;
};

// The longest Authorization header value accepted (longer: malformed).
inline constexpr size_t kMaxAuthorizationLength = 4096;

// Parses an Authorization header value: "Basic" (any case), one or more spaces, standard base64
// (RFC 4648, padded) of "user:password", optional trailing spaces. The user is split at the
// first ':' and may not be empty; neither part may hold a NUL or another control character.
// nullopt for anything else (another scheme, bad base64, no ':', too long).
std::optional<BasicCredentials> parseBasicAuthorization(std::string_view value);

// Strict standard base64 (with padding) to bytes; nullopt when malformed.
std::optional<std::string> decodeBase64(std::string_view text);

// The users of an htpasswd file: name -> crypt(3) hash. Immutable once read; reading the file
// again (SIGHUP) makes a new one.
class Htpasswd {
 public:
  // One `user:hash` per line; empty lines and lines starting with '#' are skipped; a trailing
  // '\r' or trailing blanks are ignored. Every problem is reported as "FILE:LINE: message"
  // (FILE: message for the file as a whole): a line without ':', an empty or duplicate user, a
  // hash that is not well-formed bcrypt or sha512-crypt (unsupported kinds are named), or a
  // file with no users.
  struct Load;
  static Load parse(std::string_view text, const std::string& file);
  // Reads and parses `path` (at most 1 MiB).
  static Load read(const std::string& path);

  // The hash to check `user`'s password against. For an unknown user: the first user's hash
  // and known=false, so that a failed check takes as long whether the user exists or not.
  struct Lookup {
    std::string hash;
    bool known = false;
  };
  Lookup find(std::string_view user) const;
  size_t size() const { return users_.size(); }

 private:
  std::map<std::string, std::string, std::less<>> users_;
  std::string first_hash_;
};

struct Htpasswd::Load {
  Htpasswd users;
  std::vector<std::string> errors;  // empty when the file is usable
};

// Which kind of hash `hash` is: "bcrypt", "sha512-crypt", or nullopt with `why` saying what it
// is and why it is refused.
std::optional<std::string> supportedHash(std::string_view hash, std::string* why);

// True when `password` hashes to `hash` (crypt_r; the results compared in constant time).
// Slow for bcrypt by design: call it off the event loop.
bool checkPassword(const std::string& hash, std::string_view password);

}  // namespace spliced
