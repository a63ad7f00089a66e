// libFuzzer target: spliced::loadConfigString() on arbitrary bytes. The loader must never crash
// or throw (an exception escaping it is reported as a crash); it returns errors instead, and
// returns a config exactly when it found none. It only checks archive dirs (checkDirUsable), it
// never creates them, and host names do not reach DNS (offline_resolver.cpp).
#include <cstddef>
#include <cstdint>
#include <string>

#include "fuzz_check.hpp"
#include "spliced/config/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const spliced::ConfigResult r = spliced::loadConfigString(text, "fuzz.yaml");

  FUZZ_CHECK((r.config != nullptr) == r.errors.empty(), "a config is returned iff no errors");
  for (const auto& e : r.errors) {
    FUZZ_CHECK(e.file == "fuzz.yaml", "every error names the source");
    FUZZ_CHECK(e.line >= 0 && e.column >= 0, "error positions are not negative");
    FUZZ_CHECK(!e.message.empty(), "every error has a message");
    FUZZ_CHECK(!e.format().empty(), "an error formats");
  }
  if (r.config) {
    // What validation promises to the server.
    FUZZ_CHECK(!r.config->routes.empty(), "a valid config has at least one route");
    for (const auto& route : r.config->routes) {
      FUZZ_CHECK(!route.name.empty() && route.name.size() <= 64, "route names are 1-64 chars");
      FUZZ_CHECK(route.archive.has_value() != route.forward.has_value(),
                 "a route is either collect (archive) or proxy (forward)");
      FUZZ_CHECK(!route.listen.text.empty(), "a route has a listen address");
      if (route.forward) {
        FUZZ_CHECK(!route.forward->upstreams.empty(), "a proxy route has upstreams");
      }
      if (route.archive) {
        FUZZ_CHECK(!route.archive->dir.empty(), "a collect route has a dir");
        FUZZ_CHECK(!route.archive->name.text().empty(), "a collect route has a name template");
      }
    }
  }
  return 0;
}
