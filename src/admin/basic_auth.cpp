#include "spliced/admin/basic_auth.hpp"

#include <crypt.h>

#include <fmt/format.h>
#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>

namespace spliced {
namespace {

constexpr size_t kMaxFileSize = 1024 * 1024;

int base64Value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

// crypt(3)'s alphabet for salts and hashes.
bool isCryptChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '/';
}

bool allCryptChars(std::string_view s) {
  for (char c : s) {
    if (!isCryptChar(c)) return false;
  }
  return true;
}

bool allDigits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

bool hasControl(std::string_view s) {
  for (unsigned char c : s) {
    if (c < 0x20 || c == 0x7f) return true;
  }
  return false;
}

// "$2y$10$" + 22 characters of salt + 31 of hash, cost 04 to 31.
bool wellFormedBcrypt(std::string_view h) {
  if (h.size() != 60 || h[3] != '$' || h[6] != '$') return false;
  std::string_view cost = h.substr(4, 2);
  if (!allDigits(cost)) return false;
  int n = (cost[0] - '0') * 10 + (cost[1] - '0');
  return n >= 4 && n <= 31 && allCryptChars(h.substr(7));
}

// "$6$" [ "rounds=N$" ] salt (1-16) "$" + 86 characters of hash.
bool wellFormedSha512(std::string_view h) {
  std::string_view rest = h.substr(3);
  if (rest.starts_with("rounds=")) {
    size_t end = rest.find('$');
    if (end == std::string_view::npos || !allDigits(rest.substr(7, end - 7)) || end - 7 > 9) {
      return false;
    }
    rest = rest.substr(end + 1);
  }
  size_t end = rest.find('$');
  if (end == std::string_view::npos || end == 0 || end > 16) return false;
  std::string_view salt = rest.substr(0, end), sum = rest.substr(end + 1);
  return allCryptChars(salt) && sum.size() == 86 && allCryptChars(sum);
}

}  // namespace

std::optional<std::string> decodeBase64(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  std::string out;
  out.reserve(text.size() / 4 * 3);
  for (size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    std::array<int, 4> v{};
    int pad = 0;
    for (size_t k = 0; k < 4; ++k) {
      char c = text[i + k];
      if (c == '=' && last && k >= 2) {
        ++pad;
        v[k] = 0;
        continue;
      }
      if (pad > 0) return std::nullopt;  // data after '='
      v[k] = base64Value(c);
      if (v[k] < 0) return std::nullopt;
    }
    uint32_t n = (static_cast<uint32_t>(v[0]) << 18) | (static_cast<uint32_t>(v[1]) << 12) |
                 (static_cast<uint32_t>(v[2]) << 6) | static_cast<uint32_t>(v[3]);
    out += static_cast<char>((n >> 16) & 0xff);
    if (pad < 2) out += static_cast<char>((n >> 8) & 0xff);
    if (pad < 1) out += static_cast<char>(n & 0xff);
    // Canonical encoding only: the bits that padding leaves over must be zero.
    if ((pad == 1 && (v[2] & 0x3) != 0) || (pad == 2 && (v[1] & 0xf) != 0)) return std::nullopt;
  }
  return out;
}

std::optional<BasicCredentials> parseBasicAuthorization(std::string_view value) {
  if (value.size() > kMaxAuthorizationLength || value.size() < 6) return std::nullopt;
  std::string scheme(value.substr(0, 5));
  for (char& c : scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (scheme != "basic" || value[5] != ' ') return std::nullopt;
  std::string_view rest = value.substr(6);
  while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
  while (!rest.empty() && (rest.back() == ' ' || rest.back() == '\t')) rest.remove_suffix(1);
  if (rest.empty()) return std::nullopt;
  std::optional<std::string> decoded = decodeBase64(rest);
  if (!decoded) return std::nullopt;
  size_t colon = decoded->find(':');
  if (colon == std::string::npos || colon == 0) return std::nullopt;
  BasicCredentials c{decoded->substr(0, colon), decoded->substr(colon + 1)};
  if (hasControl(c.user) || hasControl(c.password)) return std::nullopt;
  return c;
}

std::optional<std::string> supportedHash(std::string_view hash, std::string* why) {
  auto refuse = [&](std::string_view kind) -> std::optional<std::string> {
    if (why != nullptr) {
      *why = fmt::format(
          "{} is not supported: make the entry with `htpasswd -B` (bcrypt) or `htpasswd -5` "
          "(sha512-crypt)",
          kind);
    }
    return std::nullopt;
  };
  if (hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$")) {
    if (!wellFormedBcrypt(hash)) {
      if (why != nullptr) *why = "malformed bcrypt hash (expected $2y$NN$ and 53 characters)";
      return std::nullopt;
    }
    return "bcrypt";
  }
  if (hash.starts_with("$6$")) {
    if (!wellFormedSha512(hash)) {
      if (why != nullptr) {
        *why = "malformed sha512-crypt hash (expected $6$[rounds=N$]SALT$ and 86 characters)";
      }
      return std::nullopt;
    }
    return "sha512-crypt";
  }
  if (hash.starts_with("$apr1$")) return refuse("Apache MD5 ($apr1$, htpasswd's default)");
  if (hash.starts_with("{SHA}")) return refuse("unsalted SHA-1 ({SHA})");
  if (hash.starts_with("$1$")) return refuse("MD5-crypt ($1$)");
  if (hash.starts_with("$5$")) return refuse("sha256-crypt ($5$)");
  if (hash.starts_with("$")) return refuse("this hash kind");
  if (hash.empty()) {
    if (why != nullptr) *why = "empty password hash";
    return std::nullopt;
  }
  return refuse("a plain-text password or crypt(3) DES hash");
}

Htpasswd::Load Htpasswd::parse(std::string_view text, const std::string& file) {
  Load out;
  std::map<std::string, size_t, std::less<>> lines;  // user -> line where it is defined
  size_t line_no = 0;
  while (!text.empty()) {
    ++line_no;
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view{} : text.substr(nl + 1);
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ' || line.back() == '\t')) {
      line.remove_suffix(1);
    }
    if (line.empty() || line.front() == '#') continue;
    auto error = [&](const std::string& message) {
      out.errors.push_back(fmt::format("{}:{}: {}", file, line_no, message));
    };
    if (line.find('\0') != std::string_view::npos || hasControl(line)) {
      error("control character in the line");
      continue;
    }
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) {
      error("expected user:hash");
      continue;
    }
    std::string user(line.substr(0, colon));
    std::string hash(line.substr(colon + 1));
    if (user.empty()) {
      error("empty user name");
      continue;
    }
    std::string why;
    if (!supportedHash(hash, &why)) {
      error(fmt::format("user {}: {}", user, why));
      continue;
    }
    if (auto it = lines.find(user); it != lines.end()) {
      error(fmt::format("user {} is already defined on line {}", user, it->second));
      continue;
    }
    lines.emplace(user, line_no);
    if (out.users.users_.empty()) out.users.first_hash_ = hash;
    out.users.users_.emplace(std::move(user), std::move(hash));
  }
  if (out.users.users_.empty() && out.errors.empty()) {
    out.errors.push_back(fmt::format("{}: no users (expected user:hash lines)", file));
  }
  return out;
}

Htpasswd::Load Htpasswd::read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    Load out;
    out.errors.push_back(fmt::format("{}: cannot read: {}", path, std::strerror(errno)));
    return out;
  }
  std::string text;
  text.resize(kMaxFileSize + 1);
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (in.bad()) {
    Load out;
    out.errors.push_back(fmt::format("{}: cannot read: {}", path, std::strerror(errno)));
    return out;
  }
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > kMaxFileSize) {
    Load out;
    out.errors.push_back(fmt::format("{}: larger than 1 MiB", path));
    return out;
  }
  return parse(text, path);
}

Htpasswd::Lookup Htpasswd::find(std::string_view user) const {
  auto it = users_.find(user);
  if (it == users_.end()) return {first_hash_, false};
  return {it->second, true};
}

bool checkPassword(const std::string& hash, std::string_view password) {
  if (password.find('\0') != std::string_view::npos) return false;
  auto data = std::make_unique<crypt_data>();  // about 32 KiB: not on the stack
  std::memset(data.get(), 0, sizeof(crypt_data));
  std::string phrase(password);
  const char* got = ::crypt_r(phrase.c_str(), hash.c_str(), data.get());
  std::fill(phrase.begin(), phrase.end(), '\0');
  if (got == nullptr || got[0] == '*') return false;
  const size_t n = std::strlen(got);
  if (n != hash.size()) return false;
  // Constant time in the bytes compared: no early exit at the first difference.
  unsigned char diff = 0;
  for (size_t i = 0; i < n; ++i) {
    diff |= static_cast<unsigned char>(got[i]) ^ static_cast<unsigned char>(hash[i]);
  }
  std::memset(data.get(), 0, sizeof(crypt_data));
  return diff == 0;
}

}  // namespace spliced
