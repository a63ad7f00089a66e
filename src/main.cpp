// spliced: a zero-copy log collector and TCP proxy built on splice(2). This file wires the
// command line to the config loader and the server.
#include <getopt.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <string>

#include "spliced/cli/cat.hpp"
#include "spliced/cli/verify.hpp"
#include "spliced/config/config.hpp"
#include "spliced/core/log.hpp"
#include "spliced/server/server.hpp"
#include "spliced/version.hpp"

namespace {

void usage(FILE* out) {
  std::fprintf(out,
               "usage: spliced -c FILE        run in the foreground\n"
               "       spliced -t -c FILE     check the config and exit (0 valid, 1 invalid)\n"
               "       spliced verify DIR | -c FILE ROUTE   check an archive against its manifest\n"
               "       spliced cat ...        read an archive back (spliced cat --help)\n"
               "       spliced --version\n"
               "signals: TERM/INT drain and exit, HUP reload the config, USR1 rotate archive "
               "segments now\n");
}

}  // namespace

int main(int argc, char** argv) {
  // Subcommands come first and take the rest of the command line.
  if (argc >= 2 && std::string(argv[1]) == "cat") return spliced::cli::runCat(argc - 1, argv + 1);
  if (argc >= 2 && std::string(argv[1]) == "verify") return spliced::runVerify(argc - 1, argv + 1);
  std::string config_path;
  bool test_only = false;
  static const option kOptions[] = {{"config", required_argument, nullptr, 'c'},
                                    {"test", no_argument, nullptr, 't'},
                                    {"version", no_argument, nullptr, 'V'},
                                    {"help", no_argument, nullptr, 'h'},
                                    {nullptr, 0, nullptr, 0}};
  int opt;
  while ((opt = getopt_long(argc, argv, "c:tVh", kOptions, nullptr)) != -1) {
    switch (opt) {
      case 'c':
        config_path = optarg;
        break;
      case 't':
        test_only = true;
        break;
      case 'V':
        std::printf("spliced %s\n", spliced::kVersion);
        return 0;
      case 'h':
        usage(stdout);
        return 0;
      default:
        usage(stderr);
        return 2;
    }
  }
  if (config_path.empty() || optind != argc) {
    usage(stderr);
    return 2;
  }
  spliced::ConfigResult loaded = spliced::loadConfigFile(config_path);
  if (test_only) {
    for (const auto& e : loaded.errors) std::fprintf(stderr, "%s\n", e.format().c_str());
    if (!loaded.errors.empty()) {
      std::fprintf(stderr, "%s: configuration is invalid\n", config_path.c_str());
      return 1;
    }
    std::printf("%s: configuration is valid\n", config_path.c_str());
    return 0;
  }
  // From here on everything is a log line, in the format the file asks for (as far as its log
  // section could be read): a refused config too.
  spliced::setupLogging(loaded.log);
  if (!loaded.errors.empty()) {
    for (const auto& e : loaded.errors) spdlog::error("error=config {}", e.format());
    spdlog::error("error=config cannot start: {}: configuration is invalid ({} error(s))",
                  config_path, loaded.errors.size());
    return 1;
  }
  spliced::Server server(loaded.config);
  if (spliced::Status s = server.start(); !s) {
    spdlog::error("error={} cannot start: {}", spliced::toString(s.error().source()),
                  s.error().message());
    return 1;
  }
  spdlog::info("spliced {} started (pid {}), config {}", spliced::kVersion, ::getpid(),
               config_path);
  int rc = server.run();
  spdlog::info("spliced stopped");
  return rc;
}
