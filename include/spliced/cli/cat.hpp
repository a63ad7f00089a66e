#pragma once
// `spliced cat`: reads a route's archive back in order (see docs/OPERATIONS.md, "Reading the
// archive"). Called by main() when argv[1] is "cat".
namespace spliced::cli {

// argv[0] is "cat". Returns the exit status: 0 all good, 1 problems found, 2 usage.
int runCat(int argc, char** argv);

}  // namespace spliced::cli
