// End-to-end: the command line. `spliced --help` names every option, subcommand and signal;
// anything it does not know is one clear line on stderr and exit status 2.
#include <catch2/catch.hpp>

#include "harness.hpp"

using namespace e2e;

TEST_CASE("--help lists every option, subcommand and signal, on stdout, exit 0", "[e2e][cli]") {
  TempDir dir;
  for (const char* flag : {"--help", "-h"}) {
    CommandResult r = runSpliced(dir, {flag});
    INFO(flag << " stdout: " << r.out << "\nstderr: " << r.err);
    CHECK(r.exit_code == 0);
    CHECK(r.err.empty());
    for (const char* needle :
         {"-c, --config FILE", "-t, --test", "--version", "--help",
          "spliced cat [--follow] [--since T] [--until T] [--peer IP] [--conn N] DIR | -c FILE "
          "ROUTE",
          "spliced verify DIR | -c FILE ROUTE", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGTERM", "SIGINT",
          "reload", "rotate", "binary upgrade", "drain"}) {
      INFO("looking for: " << needle);
      CHECK(r.out.find(needle) != std::string::npos);
    }
  }
}

TEST_CASE("cli: --version and -v print the version", "[e2e][cli]") {
  TempDir dir;
  for (const char* flag : {"--version", "-v", "-V"}) {
    CommandResult r = runSpliced(dir, {flag});
    CHECK(r.exit_code == 0);
    CHECK(r.out.rfind("spliced ", 0) == 0);
  }
}

TEST_CASE("unknown options and bad usage: one line naming the problem, exit 2", "[e2e][cli]") {
  TempDir dir;
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"-x"}, "spliced: unknown option -x (see spliced --help)\n"},
      {{"--bogus"}, "spliced: unknown option --bogus (see spliced --help)\n"},
      {{"--bogus=1", "-c", "x"}, "spliced: unknown option --bogus (see spliced --help)\n"},
      {{"-c"}, "spliced: option -c needs an argument (see spliced --help)\n"},
      {{}, "spliced: no configuration file: give -c FILE (see spliced --help)\n"},
      {{"-t"}, "spliced: no configuration file: give -c FILE (see spliced --help)\n"},
      {{"-c", "a.yaml", "extra"}, "spliced: unexpected argument 'extra' (see spliced --help)\n"},
  };
  for (const Case& c : cases) {
    CommandResult r = runSpliced(dir, c.args);
    INFO("args: " << (c.args.empty() ? std::string("(none)") : c.args[0]));
    CHECK(r.exit_code == 2);
    CHECK(r.out.empty());
    CHECK(r.err == c.message);
  }
}
