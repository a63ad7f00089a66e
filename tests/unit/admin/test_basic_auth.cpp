// The admin endpoint's Basic authentication: the Authorization header, htpasswd files (hashes
// made by htpasswd -B / -5 and openssl passwd -6), the password check and the throttle.
#include <catch2/catch.hpp>

#include "spliced/admin/auth_throttle.hpp"
#include "spliced/admin/basic_auth.hpp"

using namespace spliced;
using namespace std::chrono_literals;

namespace {

// htpasswd -nbB -C 4 alice 's3cret:x'
const std::string kAliceBcrypt = "$2y$04$LZ0p4KrbuhmqK5yM0eh9B.4iu8/8TJupUWFR.N1g7p6yN1M2Mj/Ce";
// htpasswd -nb5 bob hunter2
const std::string kBobSha512 =
    "$6$V4sTH5dDpQGmiXU3$5u9poO6F/8BBhSWItDNeo69IdhP61jtObo/"
    "dx6o9ixfDnmCNrVgEX.Z1200v2amuMwBYcn8rbAK"
    "cHfifxO4Hu/";
// openssl passwd -6 -salt saltsalt pw
const std::string kPwSha512 =
    "$6$saltsalt$pauPrmdmG4BTE9h2HPmywiw152IFch6BJCEsaY6D.PLTfpV8sqvXwWdyfsgVgozkYH9B80bAip/08R2BPH"
    "2xk/";

}  // namespace

TEST_CASE("basic auth: the Authorization header", "[auth]") {
  auto c = parseBasicAuthorization("Basic YWxpY2U6czNjcmV0Ong=");  // alice:s3cret:x
  REQUIRE(c);
  CHECK(c->user == "alice");
  CHECK(c->password == "s3cret:x");  // split at the first ':'
  CHECK(parseBasicAuthorization("basic   YWxpY2U6czNjcmV0Ong=  "));
  CHECK(parseBasicAuthorization("BASIC YTo=")->password.empty());  // "a:"
  // Not Basic, not base64, no ':', empty user, NUL or control characters, too long.
  CHECK_FALSE(parseBasicAuthorization("Bearer YWxpY2U6czNjcmV0Ong="));
  CHECK_FALSE(parseBasicAuthorization("Basic"));
  CHECK_FALSE(parseBasicAuthorization("Basic "));
  CHECK_FALSE(parseBasicAuthorization("BasicYTo="));
  CHECK_FALSE(parseBasicAuthorization("Basic YTo"));       // unpadded
  CHECK_FALSE(parseBasicAuthorization("Basic YT=o"));      // '=' inside
  CHECK_FALSE(parseBasicAuthorization("Basic YW=="));      // leftover bits
  CHECK_FALSE(parseBasicAuthorization("Basic YWxpY2U="));  // "alice": no ':'
  CHECK_FALSE(parseBasicAuthorization("Basic OnB3"));      // ":pw": empty user
  CHECK_FALSE(parseBasicAuthorization("Basic YQBiOmM="));  // "a\0b:c"
  CHECK_FALSE(parseBasicAuthorization("Basic YTpiCmM="));  // "a:b\nc"
  CHECK_FALSE(parseBasicAuthorization("Basic " + std::string(kMaxAuthorizationLength, 'A')));
  CHECK(decodeBase64("") == "");
  CHECK(decodeBase64("Zm9vYmFy") == "foobar");
  CHECK(decodeBase64("Zm9vYg==") == "foob");
  CHECK_FALSE(decodeBase64("Zm9v YmFy"));
}

TEST_CASE("basic auth: htpasswd files", "[auth]") {
  std::string text = "# admins\n\nalice:" + kAliceBcrypt + "\r\nbob:" + kBobSha512 + "  \n";
  Htpasswd::Load ok = Htpasswd::parse(text, "users");
  REQUIRE(ok.errors.empty());
  CHECK(ok.users.size() == 2);
  CHECK(ok.users.find("alice").known);
  CHECK(ok.users.find("alice").hash == kAliceBcrypt);
  Htpasswd::Lookup nobody = ok.users.find("mallory");
  CHECK_FALSE(nobody.known);
  CHECK(nobody.hash == kAliceBcrypt);  // a real hash: the check takes as long

  auto errors = [](const std::string& t) { return Htpasswd::parse(t, "f").errors; };
  CHECK(errors("") == std::vector<std::string>{"f: no users (expected user:hash lines)"});
  CHECK(errors("alice\n") == std::vector<std::string>{"f:1: expected user:hash"});
  CHECK(errors(":" + kAliceBcrypt) == std::vector<std::string>{"f:1: empty user name"});
  CHECK(errors("a:" + kAliceBcrypt + "\na:" + kBobSha512) ==
        std::vector<std::string>{"f:2: user a is already defined on line 1"});
  auto one = [&](const std::string& t) {
    auto e = errors(t);
    return e.size() == 1 ? e[0] : std::string("(") + std::to_string(e.size()) + " errors)";
  };
  CHECK_THAT(one("u:$apr1$piXYS5Hh$Rt2q/3CUQSO0jMt.HFmYi0"),
             Catch::StartsWith("f:1: user u: Apache MD5 ($apr1$, htpasswd's default) is not "
                               "supported: make the entry with `htpasswd -B`"));
  CHECK_THAT(one("u:{SHA}GpHWL3ymc5liWkNopqtdSjuqYHM="), Catch::Contains("unsalted SHA-1"));
  CHECK_THAT(one("u:plain"), Catch::Contains("plain-text password"));
  CHECK_THAT(one("u:"), Catch::Contains("empty password hash"));
  CHECK_THAT(one("u:$1$abc$def"), Catch::Contains("MD5-crypt"));
  CHECK_THAT(one("u:$2y$04$short"), Catch::Contains("malformed bcrypt"));
  CHECK_THAT(one("u:$2y$99$" + kAliceBcrypt.substr(7)), Catch::Contains("malformed bcrypt"));
  CHECK_THAT(one("u:$6$salt$short"), Catch::Contains("malformed sha512-crypt"));
  CHECK_THAT(one("u:$6$rounds=x$" + kPwSha512.substr(3)), Catch::Contains("malformed sha512"));
  CHECK_THAT(one("u:a\x01"
                 "b"),
             Catch::Contains("f:1: control character"));
  // Good lines around a bad one are all read; the error has its line.
  Htpasswd::Load mixed = Htpasswd::parse("a:" + kAliceBcrypt + "\nb:nope\nc:" + kPwSha512, "f");
  CHECK(mixed.users.size() == 2);
  REQUIRE(mixed.errors.size() == 1);
  CHECK_THAT(mixed.errors[0], Catch::StartsWith("f:2: user b:"));
  CHECK_THAT(Htpasswd::read("/nonexistent/users").errors.at(0),
             Catch::Equals("/nonexistent/users: cannot read: No such file or directory"));
}

TEST_CASE("basic auth: password checks with libcrypt", "[auth]") {
  CHECK(checkPassword(kAliceBcrypt, "s3cret:x"));
  CHECK_FALSE(checkPassword(kAliceBcrypt, "s3cret:y"));
  CHECK_FALSE(checkPassword(kAliceBcrypt, ""));
  CHECK(checkPassword(kBobSha512, "hunter2"));
  CHECK_FALSE(checkPassword(kBobSha512, "hunter3"));
  CHECK(checkPassword(kPwSha512, "pw"));
  CHECK_FALSE(checkPassword(kPwSha512, std::string("pw\0", 3)));
  CHECK_FALSE(checkPassword("garbage", "pw"));
}

TEST_CASE("auth throttle: delays double per failure, up to the cap", "[auth]") {
  AuthThrottle t;
  CHECK(t.delayAfter(0) == 0ms);
  CHECK(t.delayAfter(1) == 100ms);
  CHECK(t.delayAfter(2) == 200ms);
  CHECK(t.delayAfter(5) == 1600ms);
  CHECK(t.delayAfter(6) == 2s);
  CHECK(t.delayAfter(4000000000u) == 2s);
  using K = AuthThrottle::Admission::Kind;
  auto now = AuthThrottle::Clock::time_point{} + 1h;
  auto a = t.admit("10.0.0.1", now);
  CHECK(a.kind == K::Check);
  CHECK(a.delay == 0ms);
  auto r = t.failed("10.0.0.1", now);
  CHECK(r.log);
  CHECK(r.failures == 1);
  CHECK(t.admit("10.0.0.1", now).delay == 100ms);
  r = t.failed("10.0.0.1", now);
  CHECK_FALSE(r.log);  // once per address per minute
  CHECK(t.admit("10.0.0.1", now).delay == 200ms);
  // Another address is not affected.
  CHECK(t.admit("10.0.0.2", now).delay == 0ms);
  t.succeeded("10.0.0.2");
  // A success forgets the address.
  t.succeeded("10.0.0.1");
  CHECK(t.admit("10.0.0.1", now).delay == 0ms);
  r = t.failed("10.0.0.1", now + 61s);
  CHECK(r.log);
  CHECK(r.failures == 1);
  CHECK(r.suppressed == 0);  // forgotten with the address
  // A quiet minute forgets it too.
  CHECK(t.admit("10.0.0.1", now + 122s).delay == 0ms);
}

TEST_CASE("auth throttle: attempts in parallel are bounded per address", "[auth]") {
  AuthThrottle::Limits limits;
  limits.max_in_flight = 2;
  limits.max_held = 1;
  limits.max_addresses = 3;
  AuthThrottle t(limits);
  using K = AuthThrottle::Admission::Kind;
  auto now = AuthThrottle::Clock::time_point{} + 1h;
  t.failed("a", now);
  CHECK(t.admit("a", now).kind == K::Check);
  CHECK(t.admit("a", now).kind == K::Check);
  auto third = t.admit("a", now);
  CHECK(third.kind == K::Refuse);
  CHECK(third.delay == 100ms);  // refused after the same wait
  CHECK(t.admit("a", now).kind == K::RefuseNow);
  t.refused("a");
  t.abandoned("a", true);
  CHECK(t.admit("a", now).kind == K::Check);
  // The table is bounded: the entry whose last failure is oldest goes first (not "a": busy).
  t.failed("b", now + 1s);
  t.failed("c", now + 2s);
  CHECK(t.size() == 3);
  CHECK(t.admit("d", now + 3s).kind == K::Check);
  CHECK(t.size() == 3);
  CHECK(t.admit("b", now + 3s).delay == 0ms);  // b was dropped
}
