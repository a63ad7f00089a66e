// Prometheus exposition text and HTTP Range parsing for the admin endpoint.
#include <catch2/catch.hpp>
#include <stdexcept>

#include "spliced/admin/byte_range.hpp"
#include "spliced/admin/exposition.hpp"

using namespace spliced;

TEST_CASE("exposition: one HELP and TYPE per family, then its samples", "[exposition]") {
  Exposition x;
  x.family("spliced_bytes_in_total", Exposition::Type::Counter, "Bytes received from clients.");
  x.sample({{"route", "a"}}, uint64_t{10});
  x.sample({{"route", "b"}}, uint64_t{18446744073709551615ull});
  x.family("spliced_pipes_in_use", Exposition::Type::Gauge, "Pipes lent.");
  x.sample({}, uint64_t{0});
  x.family("process_cpu_seconds_total", Exposition::Type::Counter, "CPU.");
  x.sample({}, 1.5);
  CHECK(x.text() ==
        "# HELP spliced_bytes_in_total Bytes received from clients.\n"
        "# TYPE spliced_bytes_in_total counter\n"
        "spliced_bytes_in_total{route=\"a\"} 10\n"
        "spliced_bytes_in_total{route=\"b\"} 18446744073709551615\n"
        "# HELP spliced_pipes_in_use Pipes lent.\n"
        "# TYPE spliced_pipes_in_use gauge\n"
        "spliced_pipes_in_use 0\n"
        "# HELP process_cpu_seconds_total CPU.\n"
        "# TYPE process_cpu_seconds_total counter\n"
        "process_cpu_seconds_total 1.5\n");
}

TEST_CASE("exposition: label values and help text are escaped", "[exposition]") {
  CHECK(escapeLabelValue("plain") == "plain");
  CHECK(escapeLabelValue("a\"b") == "a\\\"b");
  CHECK(escapeLabelValue("a\\b") == "a\\\\b");
  CHECK(escapeLabelValue("a\nb") == "a\\nb");
  Exposition x;
  x.family("m", Exposition::Type::Gauge, "line one\nback\\slash \"quoted\"");
  x.sample({{"upstream", "[::1]:80"}, {"odd", "x\"y\\z\n"}}, uint64_t{1});
  CHECK(x.text() ==
        "# HELP m line one\\nback\\\\slash \"quoted\"\n"
        "# TYPE m gauge\n"
        "m{upstream=\"[::1]:80\",odd=\"x\\\"y\\\\z\\n\"} 1\n");
}

TEST_CASE("exposition: a family declared twice is a programming error", "[exposition]") {
  Exposition x;
  x.family("m", Exposition::Type::Gauge, "h");
  CHECK_THROWS_AS(x.family("m", Exposition::Type::Gauge, "h"), std::logic_error);
}

TEST_CASE("exposition: a family may have no samples", "[exposition]") {
  Exposition x;
  x.family("spliced_upstream_errors_total", Exposition::Type::Counter, "Errors.");
  CHECK(x.text() ==
        "# HELP spliced_upstream_errors_total Errors.\n"
        "# TYPE spliced_upstream_errors_total counter\n");
}

TEST_CASE("parseRange: the forms of a single byte range", "[admin][range]") {
  using K = ByteRange::Kind;
  auto r = parseRange("bytes=100-199", 1000);
  CHECK(r.kind == K::Satisfiable);
  CHECK(r.start == 100);
  CHECK(r.length == 100);
  r = parseRange("bytes=900-", 1000);
  CHECK((r.kind == K::Satisfiable && r.start == 900 && r.length == 100));
  r = parseRange("bytes=-10", 1000);
  CHECK((r.kind == K::Satisfiable && r.start == 990 && r.length == 10));
  r = parseRange("bytes=-5000", 1000);  // more than the file: all of it
  CHECK((r.kind == K::Satisfiable && r.start == 0 && r.length == 1000));
  r = parseRange("bytes=990-5000", 1000);  // the end is clipped
  CHECK((r.kind == K::Satisfiable && r.start == 990 && r.length == 10));
  r = parseRange("bytes=0-0", 1000);
  CHECK((r.kind == K::Satisfiable && r.start == 0 && r.length == 1));
}

TEST_CASE("parseRange: unsatisfiable and ignored ranges", "[admin][range]") {
  using K = ByteRange::Kind;
  CHECK(parseRange(nullptr, 1000).kind == K::None);
  CHECK(parseRange("bytes=1000-", 1000).kind == K::Unsatisfiable);
  CHECK(parseRange("bytes=2000-3000", 1000).kind == K::Unsatisfiable);
  CHECK(parseRange("bytes=-0", 1000).kind == K::Unsatisfiable);
  CHECK(parseRange("bytes=0-", 0).kind == K::Unsatisfiable);
  // Malformed or several ranges: the whole file is sent.
  CHECK(parseRange("bytes=5-1", 1000).kind == K::None);
  CHECK(parseRange("bytes=a-b", 1000).kind == K::None);
  CHECK(parseRange("items=0-1", 1000).kind == K::None);
  CHECK(parseRange("bytes=0-1,5-6", 1000).kind == K::None);
  CHECK(parseRange("bytes=", 1000).kind == K::None);
  CHECK(parseRange("bytes=99999999999999999999-", 1000).kind == K::None);
}
