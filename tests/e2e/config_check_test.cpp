// End-to-end: `spliced -t -c FILE` validates a config without running it.
#include <catch2/catch.hpp>

#include "harness.hpp"

using namespace e2e;

TEST_CASE("check mode (spliced -t) accepts a valid config with exit 0", "[e2e][config]") {
  TempDir dir;
  const fs::path path = dir / "good.yaml";
  writeFile(path, withDir(R"(log: { level: info, format: text }
pipes: { size: 64KiB, max: 16 }
drain_timeout: 2s
routes:
  - name: app
    listen: 127.0.0.1:0
    max_connections: 100
    idle_timeout: 5m
    allow: [127.0.0.0/8, "::1/128"]
    archive:
      dir: @DIR@/archive
      layout: per_connection
      name: "%Y/{route}-{peer}-{conn}-{seq}.log"
      rotate: { max_bytes: 256MiB, interval: 1h }
)",
                          dir));
  CommandResult r = runSpliced(dir, {"-t", "-c", path.string()});
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  CHECK(r.exit_code == 0);
  CHECK(r.err.empty());
  CHECK(r.out.find("valid") != std::string::npos);
  // Checking does not start anything: no archive dir appears.
  CHECK_FALSE(fs::exists(dir / "archive"));
}

TEST_CASE("check mode (spliced -t) reports every error as FILE:LINE:COL: key: and exits 1",
          "[e2e][config]") {
  TempDir dir;
  const fs::path path = dir / "bad.yaml";
  // Line and column (1-based) of each mistake are noted on the right.
  writeFile(path, withDir(R"(drain_timeout: 10q
routes:
  - name: app
    listen: 127.0.0.1:0
    bogus_key: 1
    archive:
      dir: @DIR@/archive
      rotate:
        max_bytes: 12XB
)",
                          dir));
  // drain_timeout: 10q         -> 1:16  (a bad duration)
  // bogus_key: 1               -> 5:5   (an unknown key)
  // max_bytes: 12XB            -> 9:20  (a bad size)
  CommandResult r = runSpliced(dir, {"-t", "-c", path.string()});
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  CHECK(r.exit_code == 1);
  const std::string p = path.string();
  CHECK(r.err.find(p + ":1:16: drain_timeout: ") != std::string::npos);
  CHECK(r.err.find(p + ":5:5: routes[0].bogus_key: ") != std::string::npos);
  CHECK(r.err.find(p + ":9:20: routes[0].archive.rotate.max_bytes: ") != std::string::npos);
  // Exactly those three errors, one line each.
  CHECK(logLines(r.err, {p + ":"}).size() == 4);  // three errors + "configuration is invalid"
  CHECK(logLines(r.err, {"configuration is invalid"}).size() == 1);
}
