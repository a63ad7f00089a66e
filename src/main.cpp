// spliced: a zero-copy log collector and TCP proxy built on splice(2). This file wires the
// command line to the config loader and the server.
#include <getopt.h>
#include <spdlog/spdlog.h>

#include <fmt/format.h>

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "spliced/cli/cat.hpp"
#include "spliced/cli/verify.hpp"
#include "spliced/config/config.hpp"
#include "spliced/core/handoff.hpp"
#include "spliced/core/log.hpp"
#include "spliced/server/server.hpp"
#include "spliced/version.hpp"

namespace {

void usage(FILE* out) {
  std::fprintf(
      out,
      "spliced %s: a zero-copy log collector and TCP proxy built on splice(2)\n"
      "Usage: spliced [-t] -c FILE\n"
      "       spliced cat [--follow] [--since T] [--until T] [--peer IP] [--conn N] DIR | -c FILE "
      "ROUTE\n"
      "       spliced verify DIR | -c FILE ROUTE\n"
      "       spliced -v | --version | -h | --help\n"
      "Options:\n"
      "  -c, --config FILE   the configuration file (YAML; see spliced.yaml(5))\n"
      "  -t, --test          check the configuration and exit: 0 valid, 1 invalid\n"
      "  -v, -V, --version   print the version and exit\n"
      "  -h, --help          print this help and exit\n"
      "Subcommands:\n"
      "  cat                 print archived bytes of a route, in order (filters: time, peer, "
      "connection)\n"
      "  verify              check an archive's segments against its manifest\n"
      "Signals:\n"
      "  SIGHUP              reload the configuration (an invalid one is refused, the old stays)\n"
      "  SIGUSR1             rotate: close every open archive segment now\n"
      "  SIGUSR2             binary upgrade: start this binary again and hand it every listener\n"
      "                      and connection (proxy routes; see spliced(8))\n"
      "  SIGTERM, SIGINT     stop accepting, drain open streams (drain_timeout), exit\n"
      "Exit status: 0 success, 1 invalid configuration or runtime failure, 2 usage error.\n",
      spliced::kVersion);
}

// A usage error: one line naming the problem, a pointer to --help, exit status 2.
int usageError(const std::string& what) {
  std::fprintf(stderr, "spliced: %s (see spliced --help)\n", what.c_str());
  return 2;
}

// The option getopt refused, as the user typed it: "-x", or the long option "--xyz".
std::string optionName(char** argv, int opt) {
  if (opt != 0) return std::string("-") + static_cast<char>(opt);
  const char* arg = argv[optind - 1];
  std::string name = arg;
  if (size_t eq = name.find('='); eq != std::string::npos) name.resize(eq);
  return name;
}

// The path of this binary, for a binary upgrade to start again: read now, as a package upgrade
// replaces the file (and /proc/self/exe then names the old one, deleted).
std::string selfExe() {
  char buf[4096];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return {};
  return std::string(buf, static_cast<size_t>(n));
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
  // getopt's own messages ("invalid option") are replaced by one clear line and the exit status 2.
  opterr = 0;
  int opt;
  while ((opt = getopt_long(argc, argv, ":c:tvVh", kOptions, nullptr)) != -1) {
    switch (opt) {
      case 'c':
        config_path = optarg;
        break;
      case 't':
        test_only = true;
        break;
      case 'v':
      case 'V':
        std::printf("spliced %s\n", spliced::kVersion);
        return 0;
      case 'h':
        usage(stdout);
        return 0;
      case ':':
        return usageError(fmt::format("option {} needs an argument", optionName(argv, optopt)));
      default:
        return usageError(fmt::format("unknown option {}", optionName(argv, optopt)));
    }
  }
  if (optind != argc) return usageError(fmt::format("unexpected argument '{}'", argv[optind]));
  if (config_path.empty()) return usageError("no configuration file: give -c FILE");
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
  // Started by a running spliced for a binary upgrade (SIGUSR2): the channel to it.
  spliced::UniqueFd upgrade_channel;
  if (const char* fd = std::getenv(spliced::kUpgradeFdEnv); fd != nullptr) {
    upgrade_channel.reset(std::atoi(fd));
    ::unsetenv(spliced::kUpgradeFdEnv);
    ::fcntl(upgrade_channel.get(), F_SETFD, FD_CLOEXEC);
  }
  // From here on everything is a log line, in the format the file asks for (as far as its log
  // section could be read): a refused config too.
  spliced::setupLogging(loaded.log);
  if (!loaded.errors.empty()) {
    for (const auto& e : loaded.errors) spdlog::error("error=config {}", e.format());
    const std::string why = fmt::format("{}: configuration is invalid ({} error(s))", config_path,
                                        loaded.errors.size());
    spdlog::error("error=config cannot start: {}", why);
    if (upgrade_channel.valid()) {
      spliced::HandoffRecord no("refuse");
      no.set("reason", why + ": " + loaded.errors.front().format());
      (void)spliced::sendRecord(upgrade_channel.get(), no);
    }
    return 1;
  }
  spliced::Server server(loaded.config);
  server.setCommandLine(selfExe(), std::vector<std::string>(argv, argv + argc));
  const bool upgrading = upgrade_channel.valid();
  if (upgrading) {
    if (spliced::Status s = server.takeOver(std::move(upgrade_channel)); !s) {
      spdlog::error("error={} binary upgrade: cannot take over: {}",
                    spliced::toString(s.error().source()), s.error().message());
      return 1;
    }
  }
  if (spliced::Status s = server.start(); !s) {
    spdlog::error("error={} cannot start: {}", spliced::toString(s.error().source()),
                  s.error().message());
    if (upgrading) {
      // The running process keeps everything: nothing of this one may touch the sockets on its
      // way out (no Unix socket file is removed), so it ends here.
      server.refuseTakeOver("cannot start: " + s.error().message());
      spdlog::shutdown();
      std::_Exit(1);
    }
    return 1;
  }
  if (upgrading) (void)server.finishTakeOver();
  spdlog::info("spliced {} started (pid {}), config {}", spliced::kVersion, ::getpid(),
               config_path);
  int rc = server.run();
  if (server.successor() != 0) {
    spdlog::info("spliced handed over to pid {}", server.successor());
  } else {
    spdlog::info("spliced stopped");
  }
  return rc;
}
