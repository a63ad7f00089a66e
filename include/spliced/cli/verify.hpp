#pragma once
// `spliced verify DIR | -c FILE ROUTE`: checks an archive dir against its manifest
// (.spliced/manifest.jsonl, see archive/manifest.hpp): the hash chain of the manifest's lines, then
// every segment the manifest holds (size and hash, each file read once, on up to two threads) and
// every segment file it does not hold. Exit 0 = all good, 1 = problems found, 2 = usage (or the
// directory cannot be verified at all).
#include <cstdint>
#include <string>
#include <vector>

namespace spliced {

struct VerifyProblem {
  std::string kind;  // missing, extra, truncated, modified, appended, out-of-chain, broken-link,
                     // cut-line, bad-line, bad-record, unreadable, no-manifest
  std::string name;  // the file (or the manifest line) it is about
  std::string detail;
};

struct VerifyReport {
  std::string fatal;  // the directory cannot be verified (exit 2)
  std::vector<VerifyProblem> problems;
  uint64_t lines = 0;     // manifest lines read
  uint64_t segments = 0;  // segment files checked against the manifest
  uint64_t bytes = 0;     // bytes read to check them
  uint64_t active = 0;    // NAME.open files (being written: not checked)
};

// Verifies the archive dir `dir` with `threads` readers.
VerifyReport verifyArchive(const std::string& dir, unsigned threads);

// The `verify` command: argv[0] is "verify". Returns the exit status.
int runVerify(int argc, char** argv);

}  // namespace spliced
