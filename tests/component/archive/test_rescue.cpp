// Segments whose configured name cannot be opened (issue 5, run time): the bytes go to a rescue
// segment (rescue/ROUTE-CONN-STAMP-SEQ.log) instead of being held until they are lost at exit.
// A whole collect route in-process, faults through the syscall seam, contents compared whole.
#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>

#include "fixtures.hpp"
#include "server_fixtures.hpp"
#include "spliced/admin/metrics_catalogue.hpp"
#include "spliced/archive/retention.hpp"
#include "spliced/server/server.hpp"

using namespace spliced;
using namespace spliced::testing;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

ConfigPtr rescueConfig(const fs::path& dir) {
  std::string text =
      "workers: 1\ndrain_timeout: 2s\nroutes:\n  - name: t\n    listen: 127.0.0.1:0\n" +
      std::string("    archive:\n      dir: ") + dir.string() +
      "\n      name: \"{route}-{conn}-{seq}.log\"\n";
  auto loaded = loadConfigString(text, "test.yaml");
  for (auto& e : loaded.errors) FAIL(e.format());
  return loaded.config;
}

bool isRescue(const std::string& rel) { return rel.rfind("rescue/t-", 0) == 0; }

// Fails openat of the configured names (not of rescue/...) with `err` while `failing`.
void refuseConfiguredNames(FaultySysCalls& sys, std::atomic<bool>& failing, int err) {
  sys.path_fault = [&failing, err](Call c, const char* path) {
    if (c != Call::Openat || !failing || std::strncmp(path, "rescue/", 7) == 0) return 0;
    if (std::strncmp(path, "t-", 2) != 0) return 0;
    errno = err;
    return -1;
  };
}

std::string rescuedMetric(const Server& server) {
  std::string text = renderMetrics(server.status());
  std::string key = "spliced_archive_rescued_segments_total{route=\"t\"} ";
  auto at = text.find(key);
  if (at == std::string::npos) return "missing";
  return text.substr(at + key.size(), text.find('\n', at) - at - key.size());
}

}  // namespace

TEST_CASE("a configured name refused with ENAMETOOLONG: the bytes land in a rescue segment",
          "[archive][faults]") {
  TempDir tmp;
  FaultySysCalls sys;
  std::atomic<bool> failing{true};
  refuseConfiguredNames(sys, failing, ENAMETOOLONG);
  Server server(rescueConfig(tmp.path), sys);
  REQUIRE(server.start().ok());
  const RouteMetrics& m = *server.metrics("t");
  const std::string data = payload(3 << 20, 61);
  UniqueFd client = connectTo(server.boundAddress("t"));
  ThreadGuard t(std::thread([&] {
    sendAll(client.get(), data);
    ::shutdown(client.get(), SHUT_WR);
  }));
  // Not held until exit: the session ends with its stream.
  REQUIRE(loopUntil(
      server, [&] { return m.connections_total == 1 && m.connections_active == 0; }, 5s));
  t.join();
  auto files = filesIn(tmp.path);
  INFO("files: " << namesIn(tmp.path));
  REQUIRE(files.size() == 1);
  const std::string rel = files.begin()->first;
  CHECK(isRescue(rel));
  CHECK(rel.size() > 4);
  CHECK(rel.substr(rel.size() - 4) == ".log");
  CHECK(difference(files.begin()->second, data) == "");
  CHECK(m.archive_bytes == data.size());
  CHECK(m.archive_segments == 1);
  CHECK(m.archive_rescued_segments == 1);
  CHECK(rescuedMetric(server) == "1");
  CHECK(server.status().routes.at(0).stalled == 0);
  // A rescue segment is a closed segment like any other (listing, retention, compression).
  UniqueFd dir(::open(tmp.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  auto listed = scanSegments(dir.get());
  REQUIRE(listed.size() == 1);
  CHECK(listed.at(0).path == rel);

  // The next segment tries the configured name again.
  failing = false;
  UniqueFd second = connectTo(server.boundAddress("t"));
  const std::string more = payload(100000, 62);
  sendAll(second.get(), more);
  ::shutdown(second.get(), SHUT_WR);
  REQUIRE(loopUntil(
      server, [&] { return m.connections_total == 2 && m.connections_active == 0; }, 5s));
  files = filesIn(tmp.path);
  CHECK(files.size() == 2);
  CHECK(difference(files["t-2-000000.log"], more) == "");
  CHECK(m.archive_rescued_segments == 1);
  stopServer(server);
}

TEST_CASE("at exit, bytes held because the configured name keeps failing go to a rescue segment",
          "[archive][faults]") {
  TempDir tmp;
  FaultySysCalls sys;
  std::atomic<bool> failing{true};
  // ENOSPC: an error waiting may cure, so the session holds its bytes and retries meanwhile.
  refuseConfiguredNames(sys, failing, ENOSPC);
  Server server(rescueConfig(tmp.path), sys);
  REQUIRE(server.start().ok());
  const RouteMetrics& m = *server.metrics("t");
  // Less than a pipe holds: the session reads all of it, then holds it.
  const std::string data = payload(40000, 63);
  UniqueFd client = connectTo(server.boundAddress("t"));
  sendAll(client.get(), data);
  REQUIRE(loopUntil(
      server, [&] { return m.bytes_in == data.size() && sys.calls(Call::Openat) >= 2; }, 3s));
  CHECK(m.archive_bytes == 0);
  CHECK(server.status().routes.at(0).stalled == 1);
  CHECK(namesIn(tmp.path) == "");
  // Stop now (a second stop skips drain_timeout): the held bytes must not be lost.
  server.beginShutdown();
  server.beginShutdown();
  runFor(server, 100ms);
  CHECK(m.connections_active == 0);
  auto files = filesIn(tmp.path);
  INFO("files: " << namesIn(tmp.path));
  REQUIRE(files.size() == 1);
  CHECK(isRescue(files.begin()->first));
  CHECK(difference(files.begin()->second, data) == "");
  CHECK(m.archive_bytes == data.size());
  CHECK(m.archive_rescued_segments == 1);
}
