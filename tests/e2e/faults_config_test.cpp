// The faults group (config): scenarios of the fault campaign, each against the real binary. Each
// test failed before its fix.
#include <sys/resource.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <string>

#include "harness.hpp"

using namespace e2e;
using namespace std::chrono_literals;

namespace {

// CPU time (user + system) of the children this process has reaped so far.
double childCpuSeconds() {
  rusage ru{};
  ::getrusage(RUSAGE_CHILDREN, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

// `n` collect routes, each on its own port (127.0.0.1:10000+i) with its own archive dir below
// `dir`/archive (none of them exists: -t only checks they could be created).
std::string manyRoutes(const TempDir& dir, size_t n) {
  std::string text = "routes:\n";
  text.reserve(n * 110);
  const std::string base = (dir / "archive").string();
  for (size_t i = 0; i < n; ++i) {
    text += "  - name: r" + std::to_string(i) +
            "\n    listen: 127.0.0.1:" + std::to_string(10000 + i) +
            "\n    archive:\n      dir: " + base + "/r" + std::to_string(i) + "\n";
  }
  return text;
}

// Runs `spliced -t` on `n` routes; returns the child's CPU seconds (REQUIREs a valid config).
double checkManyRoutes(const TempDir& dir, size_t n) {
  const fs::path path = dir / ("many-" + std::to_string(n) + ".yaml");
  writeFile(path, manyRoutes(dir, n));
  const double cpu0 = childCpuSeconds();
  const auto t0 = Clock::now();
  CommandResult r = runSpliced(dir, {"-t", "-c", path.string()}, Millis(100000));
  const auto wall = std::chrono::duration_cast<Millis>(Clock::now() - t0);
  const double cpu = childCpuSeconds() - cpu0;
  INFO("routes: " << n << ", wall " << wall.count() << " ms, cpu " << cpu << " s; stdout: " << r.out
                  << "\nstderr: " << r.err.substr(0, 2000));
  REQUIRE(r.exit_code == 0);
  REQUIRE(r.out.find("configuration is valid") != std::string::npos);
  WARN("spliced -t on " << n << " routes: wall " << wall.count() << " ms, cpu " << cpu << " s");
  return cpu;
}

}  // namespace

// Issue 12, item 13: the duplicate checks of -t compared every route with every earlier one.
// Measured on the 2-core test machine (CPU seconds of `spliced -t`):
//   before the fix: 10,000 routes 1.2 s, 40,000 routes 12.1 s (x10 for x4 routes: quadratic);
//   after it:       10,000 routes 0.8 s, 40,000 routes 3.2 s (x4; most of it is YAML parsing).
// Absolute times depend on the machine, so the test asserts how the cost grows: four times the
// routes may cost at most 6.5 times the CPU (linear gives about 4, quadratic about 10). CPU time,
// unlike wall time, is not stretched by other load on the machine.
TEST_CASE("faults config: -t on 40,000 routes is linear, not quadratic", "[e2e][faults]") {
  TempDir dir;
  const double small = checkManyRoutes(dir, 10000);
  const double large = checkManyRoutes(dir, 40000);
  INFO("cpu 10,000 routes " << small << " s, 40,000 routes " << large << " s, ratio "
                            << large / small);
  CHECK(large / small < 6.5);
  CHECK(large < 60.0);  // a sanity bound only
}

// Issue 12, item 5: configs that cannot run were accepted by -t (exit 0): a name part longer than
// NAME_MAX, a control character in a name, a name without {seq} while rotation is on (suffix
// probing is O(n) and gives up at 10,000 segments), a unix socket in a missing directory, and an
// archive dir whose parent is a pseudo filesystem (/proc). Each is now refused at its position.
TEST_CASE("faults config: -t refuses configs that cannot run, each at FILE:LINE:COL",
          "[e2e][faults]") {
  TempDir dir;
  const fs::path path = dir / "cannot-run.yaml";
  const std::string long_part(250, 'x');
  // Line and column (1-based) of each mistake are noted on the right.
  writeFile(path, withDir(R"(admin:
  listen: unix:@DIR@/missing/admin.sock
routes:
  - name: toolong
    listen: 127.0.0.1:0
    archive:
      dir: @DIR@/a1
      name: "{route}-)" + long_part +
                              R"(-{seq}.log"
  - name: control
    listen: 127.0.0.1:0
    archive:
      dir: @DIR@/a2
      name: "a\tb-{seq}.log"
  - name: noseq
    listen: 127.0.0.1:0
    archive:
      dir: @DIR@/a3
      name: "{route}-{conn}.log"
  - name: sharednoseq
    listen: 127.0.0.1:0
    archive:
      dir: @DIR@/a4
      layout: shared
      name: "{route}.log"
      rotate: { max_bytes: 0, interval: 1h }
  - name: sock
    listen: unix:@DIR@/nodir/x.sock
    archive:
      dir: @DIR@/a5
  - name: proc
    listen: 127.0.0.1:0
    archive:
      dir: /proc/nope
)",
                          dir));
  // admin.listen                 -> 2:11
  // routes[0].archive.name       -> 8:13  (a part of 250 + 64 + 20 + ... bytes)
  // routes[1].archive.name       -> 13:13 (a tab)
  // routes[2].archive.name       -> 18:13 (no {seq}, rotate.max_bytes 256MiB by default)
  // routes[3].archive.name       -> 24:13 (no {seq}, rotate.interval 1h)
  // routes[4].listen             -> 27:13 (missing directory)
  // routes[5].archive.dir        -> 33:12 (/proc)
  CommandResult r = runSpliced(dir, {"-t", "-c", path.string()});
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  CHECK(r.exit_code == 1);
  const std::string p = path.string();
  const std::string d = dir.path().string();
  CHECK(r.err.find(p + ":2:11: admin.listen: directory " + d + "/missing does not exist") !=
        std::string::npos);
  CHECK(r.err.find(p + ":8:13: routes[0].archive.name: ") != std::string::npos);
  CHECK(r.err.find("NAME_MAX") != std::string::npos);
  CHECK(r.err.find(p + ":13:13: routes[1].archive.name: name contains a control character") !=
        std::string::npos);
  CHECK(r.err.find(p + ":18:13: routes[2].archive.name: ") != std::string::npos);
  CHECK(r.err.find(p + ":24:13: routes[3].archive.name: ") != std::string::npos);
  CHECK(r.err.find(p + ":27:13: routes[4].listen: directory " + d + "/nodir does not exist") !=
        std::string::npos);
  CHECK(r.err.find(p + ":33:12: routes[5].archive.dir: ") != std::string::npos);
  CHECK(logLines(r.err, {p + ":"}).size() == 8);  // seven errors + "configuration is invalid"
}
