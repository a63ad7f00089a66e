// End-to-end: securing the admin endpoint. Users made by Debian's htpasswd (-B bcrypt, -5
// sha512-crypt) and `openssl passwd -6`; 401 without or with wrong credentials on every archive
// path (and nothing about the archive in it), the open paths for scrapers, byte-exact downloads
// with the right ones; the failure counter and its rate-limited log line; a client that fails
// 1,000 times is slowed while another address is not; HTTPS with a certificate made by the
// commands of docs/OPERATIONS.md, checked by curl --cacert, byte-exact over TLS (whole file of
// several MiB and a Range), and plain HTTP on the TLS port refused; -t errors for bad files.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <atomic>
#include <cstdio>
#include <mutex>
#include <thread>

#include "harness.hpp"

using namespace e2e;
using namespace std::chrono_literals;

namespace {

const fs::path kSource = SPLICED_SOURCE_DIR;

std::string base64(std::string_view in) {
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

std::vector<std::pair<std::string, std::string>> basic(const std::string& user,
                                                       const std::string& password) {
  return {{"Authorization", "Basic " + base64(user + ":" + password)}};
}

uint16_t portOf(const std::string& addr) {
  return static_cast<uint16_t>(std::atoi(addr.c_str() + addr.rfind(':') + 1));
}

// GET `target` from the admin at 127.0.0.1:`port`, the connection made from `source`
// (another loopback address is another client to the throttle).
HttpResponse getFrom(const std::string& source, uint16_t port, const std::string& target,
                     const std::vector<std::pair<std::string, std::string>>& headers) {
  HttpResponse r;
  Conn c(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  ::inet_pton(AF_INET, source.c_str(), &sa.sin_addr);
  if (!c.valid() || ::bind(c.fd(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    r.error = "cannot bind " + source;
    return r;
  }
  sa.sin_port = htons(port);
  ::inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
  if (::connect(c.fd(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) {
    r.error = "cannot connect";
    return r;
  }
  std::string req = "GET " + target + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n";
  for (const auto& [k, v] : headers) req += k + ": " + v + "\r\n";
  req += "\r\n";
  return httpExchange(c, req, Millis(30000));
}

// Sends `payload` on one connection to `port` and waits for its closed segment below `dir`;
// returns the segment's path relative to `dir`.
std::string archiveOne(uint16_t port, const fs::path& dir, const std::string& payload) {
  Conn c = connectTcp(port);
  REQUIRE(c.valid());
  REQUIRE(c.sendAll(payload) == 0);
  c.shutdownWrite();
  REQUIRE(c.waitClosed(Millis(10000)) == 0);
  REQUIRE(waitUntil([&] { return closedSegments(dir).size() == 1; }, Millis(10000)));
  return fs::relative(closedSegments(dir)[0], dir).string();
}

double failures(const std::string& admin_addr) {
  MetricValues m = scrapeMetrics(admin_addr);
  auto it = m.find("spliced_admin_auth_failures_total");
  return it == m.end() ? -1 : it->second;
}

// The first ``` block after the line `marker` in docs/OPERATIONS.md.
std::string docBlock(const std::string& marker) {
  const std::string doc = readFile(kSource / "docs/OPERATIONS.md");
  auto at = doc.find(marker + "\n");
  if (at == std::string::npos) return "";
  auto open = doc.find("```", at);
  auto body = doc.find('\n', open);
  auto close = doc.find("\n```", body);
  if (open == std::string::npos || close == std::string::npos) return "";
  return doc.substr(body + 1, close - body);
}

std::string replaceAll(std::string s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) {
    s.replace(at, from.size(), to);
  }
  return s;
}

}  // namespace

TEST_CASE("admin auth: 401 without or with wrong credentials, 200 and exact bytes with right ones",
          "[e2e][admin][auth]") {
  TempDir dir;
  // Three users, three ways to make a hash.
  Shell made = sh(dir,
                  "set -e\n"
                  "htpasswd -c -b -B -C 5 users alice 'open sesame'\n"
                  "htpasswd -b -5 users bob hunter2\n"
                  "echo \"carol:$(openssl passwd -6 'c4rol pw')\" >> users\n");
  INFO(made.out);
  REQUIRE(made.exit_code == 0);
  const std::string cfg = withDir(
      "admin: { listen: 127.0.0.1:0, auth: { basic_file: @DIR@/users } }\n"
      "routes:\n  - name: app\n    listen: 127.0.0.1:0\n    archive:\n      dir: @DIR@/a\n"
      "      name: \"{route}-{conn}-{seq}.log\"\n",
      dir);
  Daemon d(dir, cfg);
  const std::string admin = d.waitAdmin();
  const std::string payload = randomPayload(41, 300 * kKiB + 7);
  const std::string rel = archiveOne(d.port("app"), dir / "a", payload);

  // No credentials: 401 on every protected path, existing or not, and nothing about the archive.
  const std::vector<std::string> targets{"/archive/app/",
                                         "/archive/app/" + rel,
                                         "/archive/nosuch/",
                                         "/archive/app/nosuch.log",
                                         "/",
                                         "/status.json",
                                         "/nosuch"};
  for (const std::string& target : targets) {
    INFO(target);
    HttpResponse r = httpGet(admin, target);
    CHECK(r.status == 401);
    CHECK(r.header("WWW-Authenticate") == "Basic realm=\"spliced\"");
    CHECK(r.header("Server") == "spliced");
    CHECK(r.body == "authentication required\n");
  }
  HttpResponse head = httpRequest(admin, "HEAD", "/archive/app/" + rel);
  CHECK(head.status == 401);
  CHECK(head.header("Content-Length") == "24");
  // The open paths answer scrapers and probes.
  CHECK(httpGet(admin, "/metrics").status == 200);
  CHECK(httpGet(admin, "/healthz").status == 200);
  // Open paths name the server without its version too.
  CHECK(httpGet(admin, "/healthz").header("Server") == "spliced");

  // Wrong password, unknown user, malformed header: 401, counted.
  const double before = failures(admin);
  REQUIRE(before == 0);
  CHECK(httpGet(admin, "/archive/app/", basic("alice", "open sesamE")).status == 401);
  CHECK(httpGet(admin, "/archive/app/" + rel, basic("mallory", "open sesame")).status == 401);
  CHECK(httpGet(admin, "/archive/app/", {{"Authorization", "Basic !!!"}}).status == 401);
  HttpResponse wrong = httpGet(admin, "/archive/app/" + rel, basic("bob", "hunter3"));
  CHECK(wrong.status == 401);
  CHECK(wrong.body.find("app") == std::string::npos);
  CHECK(failures(admin) == before + 4);
  // One log line per client address per minute, whatever the number of failures.
  CHECK(logLines(d.log(), {"admin authentication failed from 127.0.0.1"}).size() == 1);

  // Right passwords: bcrypt (htpasswd -B), sha512-crypt (htpasswd -5, openssl passwd -6).
  HttpResponse list = httpGet(admin, "/archive/app/", basic("alice", "open sesame"));
  CHECK(list.status == 200);
  CHECK(list.body.find("\"" + rel + "\"") != std::string::npos);
  HttpResponse whole = httpGet(admin, "/archive/app/" + rel, basic("alice", "open sesame"));
  CHECK(whole.status == 200);
  CHECK(firstDifference(whole.body, payload).empty());
  auto range = basic("bob", "hunter2");
  range.emplace_back("Range", "bytes=1000-1999");
  HttpResponse part = httpGet(admin, "/archive/app/" + rel, range);
  CHECK(part.status == 206);
  CHECK(part.body == payload.substr(1000, 1000));
  HttpResponse carol = httpGet(admin, "/archive/app/" + rel, basic("carol", "c4rol pw"));
  CHECK(carol.status == 200);
  CHECK(firstDifference(carol.body, payload).empty());
  CHECK(failures(admin) == before + 4);
}

TEST_CASE("admin auth: 1,000 wrong attempts from one address are slowed, another address is not",
          "[e2e][admin][auth]") {
  TempDir dir;
  Shell made = sh(dir, "htpasswd -c -b -B -C 5 users alice right\n");
  INFO(made.out);
  REQUIRE(made.exit_code == 0);
  Daemon d(dir, withDir("admin: { listen: 127.0.0.1:0, auth: { basic_file: @DIR@/users } }\n"
                        "routes:\n  - name: app\n    listen: 127.0.0.1:0\n    archive:\n"
                        "      dir: @DIR@/a\n",
                        dir));
  const std::string admin = d.waitAdmin();
  const uint16_t port = portOf(admin);
  // 64 clients in parallel from 127.0.0.1, each trying passwords one after the other: fewer
  // than the attempts the throttle lets wait, so each one waits its turn.
  constexpr int kAttempts = 1000;
  constexpr int kThreads = 64;
  std::atomic<int> next{0}, unauthorized{0}, too_many{0}, other{0};
  std::mutex mu;
  std::string odd;
  const auto start = Clock::now();
  {
    std::vector<std::jthread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&] {
        for (int i; (i = next++) < kAttempts;) {
          HttpResponse r =
              getFrom("127.0.0.1", port, "/archive/app/", basic("alice", std::to_string(i)));
          if (r.status == 401) {
            ++unauthorized;
          } else if (r.status == 429) {
            ++too_many;
          } else {
            ++other;
            std::lock_guard lock(mu);
            odd = std::to_string(r.status) + " " + r.error;
          }
        }
      });
    }
    // Meanwhile another client (another address) is not slowed down: it is answered within
    // the throttle's first steps, far below its 2 s cap, while 127.0.0.1 waits the cap.
    std::this_thread::sleep_for(4s);
    const auto t0 = Clock::now();
    HttpResponse ok = getFrom("127.0.0.2", port, "/archive/app/", basic("alice", "right"));
    const auto took = std::chrono::duration_cast<Millis>(Clock::now() - t0);
    CHECK(ok.status == 200);
    INFO("the other client's request took " << took.count() << " ms");
    CHECK(took < 1500ms);
    CHECK(next.load() < kAttempts);  // it ran while the attack was still going on
  }
  const auto total = std::chrono::duration_cast<Millis>(Clock::now() - start);
  WARN("1,000 wrong attempts from one address took "
       << total.count() << " ms (" << unauthorized.load() << " checked, " << too_many.load()
       << " refused unchecked)");
  INFO(odd);
  CHECK(other.load() == 0);
  CHECK(unauthorized + too_many == kAttempts);
  // At line rate 1,000 attempts take well under a second; slowed, several seconds at least.
  CHECK(total >= 5s);
  CHECK(failures(admin) == kAttempts);
  CHECK(logLines(d.log(), {"admin authentication failed from 127.0.0.1"}).size() == 1);
  CHECK(logLines(d.log(), {"admin authentication failed from 127.0.0.2"}).empty());
}

TEST_CASE("admin tls: HTTPS with the certificate from the docs, byte-exact downloads over TLS",
          "[e2e][admin][tls]") {
  TempDir dir;
  // The commands of docs/OPERATIONS.md, as written, in this dir instead of /etc/spliced.
  const std::string commands = docBlock("<!-- admin: secure commands -->");
  REQUIRE_FALSE(commands.empty());
  Shell made = sh(dir, "set -e\nexport ADMIN_PASSWORD='pa55 word'\n" +
                           replaceAll(commands, "/etc/spliced", dir.path().string()));
  INFO(made.out);
  REQUIRE(made.exit_code == 0);
  // The config of docs/OPERATIONS.md, with this dir's paths and ports 0.
  std::string yaml = docBlock("<!-- admin: secure config -->");
  REQUIRE_FALSE(yaml.empty());
  yaml = replaceAll(yaml, "/etc/spliced", dir.path().string());
  yaml = replaceAll(yaml, "/var/lib/spliced", dir.path().string());
  yaml = replaceAll(yaml, "127.0.0.1:9180", "127.0.0.1:0");
  yaml = replaceAll(yaml, "127.0.0.1:5140", "127.0.0.1:0");
  Daemon d(dir, yaml);
  const std::string admin = d.waitAdmin();
  const std::string url = "https://localhost:" + std::to_string(portOf(admin));
  const std::string payload = randomPayload(42, 6 * kMiB + 123);
  const fs::path archive = dir / "archive/app";
  const std::string rel = archiveOne(d.port("app"), archive, payload);
  const std::string curl = "curl -sS --cacert " + (dir / "admin.crt").string();

  // No credentials: 401 over TLS too; the open /metrics answers.
  Shell r = sh(dir, curl + " -o /dev/null -w '%{http_code}' " + url + "/archive/app/");
  CHECK(r.out == "401");
  r = sh(dir, curl + " -o /dev/null -w '%{http_code}' " + url + "/metrics");
  CHECK(r.out == "200");
  // The whole segment, then a Range of it, byte for byte.
  const std::string auth = " -u 'alice:pa55 word' ";
  r = sh(dir, curl + auth + "-o whole -w '%{http_code}' " + url + "/archive/app/" + rel);
  INFO(r.out);
  CHECK(r.out == "200");
  CHECK(firstDifference(readFile(dir / "whole"), payload).empty());
  r = sh(dir, curl + auth + "-r 1000000-2999999 -o part -w '%{http_code}' " + url +
                  "/archive/app/" + rel);
  CHECK(r.out == "206");
  CHECK(readFile(dir / "part") == payload.substr(1000000, 2000000));
  // The TLS copy is counted (no sendfile under TLS).
  r = sh(dir, curl + " " + url + "/metrics");
  CHECK(r.out.find("\nspliced_admin_tls_copy_bytes_total " +
                   std::to_string(payload.size() + 2000000) + "\n") != std::string::npos);
  // A client that goes away in the middle of a download: the daemon forgets it and goes on.
  const size_t fds = d.fdCount();
  r = sh(dir, curl + auth + "--limit-rate 1M --max-time 1 -o /dev/null " + url + "/archive/app/" +
                  rel + "; echo \" exit=$?\"");
  CHECK(r.out.find(" exit=28") != std::string::npos);  // curl's own time limit
  CHECK(waitUntil([&] { return d.fdCount() <= fds; }, Millis(5000)));
  r = sh(dir, curl + auth + "-o again -w '%{http_code}' " + url + "/archive/app/" + rel);
  CHECK(r.out == "200");
  CHECK(firstDifference(readFile(dir / "again"), payload).empty());
  // Plain HTTP on the TLS port gets no HTTP answer: the handshake fails.
  HttpResponse plain = httpGet(admin, "/metrics");
  CHECK(plain.status == 0);
  r = sh(dir, "curl -sS -o /dev/null http://127.0.0.1:" + std::to_string(portOf(admin)) +
                  "/metrics; echo \" exit=$?\"");
  CHECK(r.out.find(" exit=0") == std::string::npos);
  CHECK(d.running());
}

TEST_CASE("admin tls and auth: spliced -t names the bad file", "[e2e][admin][tls]") {
  TempDir dir;
  Shell made = sh(dir,
                  "set -e\n"
                  "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
                  "-keyout k.pem -out c.pem 2>/dev/null\n"
                  "openssl genpkey -algorithm RSA -out other.pem 2>/dev/null\n"
                  "htpasswd -c -b -B -C 4 users alice pw\n"
                  "htpasswd -b -m users bob pw\n");
  INFO(made.out);
  REQUIRE(made.exit_code == 0);
  auto check = [&](const std::string& admin_block) {
    writeFile(dir / "t.yaml", withDir("admin:\n  listen: 127.0.0.1:0\n" + admin_block +
                                          "routes:\n  - name: app\n    listen: 127.0.0.1:0\n"
                                          "    archive: { dir: @DIR@/a }\n",
                                      dir));
    return runSpliced(dir, {"-t", "-c", (dir / "t.yaml").string()});
  };
  CommandResult r = check("  tls: { cert: @DIR@/c.pem, key: @DIR@/other.pem }\n");
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.out + r.err,
             Catch::Contains("t.yaml:3:8: admin.tls: the TLS key " + (dir / "other.pem").string()));
  CHECK_THAT(r.out + r.err, Catch::Contains("does not match the certificate"));
  r = check("  tls: { cert: @DIR@/c.pem, key: @DIR@/missing.pem }\n");
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.out + r.err,
             Catch::Contains("cannot read the TLS key " + (dir / "missing.pem").string() +
                             ": No such file or directory"));
  r = check("  auth: { basic_file: @DIR@/users }\n");
  CHECK(r.exit_code == 1);
  // htpasswd -m writes Apache MD5, which is refused with its line.
  CHECK_THAT(r.out + r.err,
             Catch::Contains((dir / "users").string() + ":2: user bob: Apache MD5 ($apr1$"));
  r = check("  auth: { basic_file: @DIR@/none }\n");
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.out + r.err,
             Catch::Contains((dir / "none").string() + ": cannot read: No such file or directory"));
  // The daemon refuses to start on the same errors.
  writeFile(dir / "spliced.yaml", readFile(dir / "t.yaml"));
  CommandResult run = runSpliced(dir, {"-c", (dir / "t.yaml").string()});
  CHECK(run.exit_code != 0);
}

TEST_CASE("admin auth: a reload (SIGHUP) reads the users file again", "[e2e][admin][auth]") {
  TempDir dir;
  REQUIRE(sh(dir, "htpasswd -c -b -B -C 5 users alice first\n").exit_code == 0);
  Daemon d(dir, withDir("admin: { listen: 127.0.0.1:0, auth: { basic_file: @DIR@/users } }\n"
                        "routes:\n  - name: app\n    listen: 127.0.0.1:0\n    archive:\n"
                        "      dir: @DIR@/a\n",
                        dir));
  const std::string admin = d.waitAdmin();
  CHECK(httpGet(admin, "/archive/app/", basic("alice", "first")).status == 200);
  // The password changes in the file: the old one works until the reload, the new one after.
  REQUIRE(sh(dir, "htpasswd -b -B -C 5 users alice second\n").exit_code == 0);
  d.signal(SIGHUP);
  REQUIRE(d.waitLog("reload applied", 10s));
  REQUIRE(waitUntil(
      [&] {
        return d.log().find("admin authentication: 1 user(s)") !=
               d.log().rfind("admin authentication: 1 user(s)");
      },
      5s));
  CHECK(httpGet(admin, "/archive/app/", basic("alice", "second")).status == 200);
  CHECK(httpGet(admin, "/archive/app/", basic("alice", "first")).status == 401);
}
