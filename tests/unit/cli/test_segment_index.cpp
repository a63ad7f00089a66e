// Segment names read backwards with their template, chains put in order, and the time arguments
// of `spliced cat`.
#include <catch2/catch.hpp>

#include "spliced/archive/naming.hpp"
#include "spliced/cli/segment_index.hpp"

using namespace spliced;
using namespace spliced::cli;

TEST_CASE("a name template reads back what it wrote", "[cli]") {
  const char* kText = "%Y/%m/%d/{route}-{peer}-{conn}-%H%M%S-{seq}.log";
  auto t = NameTemplate::compile(kText);
  REQUIRE(t.ok());
  NameParser p(kText, false);
  for (const char* peer : {"127.0.0.1", "__1", "2001_db8__42", "unix"}) {
    NameVars v{"my-app_2", peer, 0, 4711, 12, 99};
    const auto when = std::chrono::system_clock::from_time_t(1796214896);  // 12:34:56Z
    auto name = t.value().expand(v, when, false);
    REQUIRE(name.ok());
    auto n = p.parse(name.value());
    REQUIRE(n);
    CHECK(n->route == "my-app_2");
    CHECK(n->peer == peer);
    CHECK(n->conn == 4711u);
    CHECK(n->seq == 12u);
    CHECK(n->opened == 1796214896);
    CHECK(n->suffix == 0);
    // The name used when it was taken.
    auto taken = p.parse(name.value().substr(0, name.value().size() - 4) + ".3.log");
    REQUIRE(taken);
    CHECK(taken->seq == 12u);
    CHECK(taken->suffix == 3);
  }
  CHECK_FALSE(p.parse("2026/12/02/app-1.2.3.4-x-123456-000001.log"));
  CHECK_FALSE(p.parse("notes.txt"));
}

TEST_CASE("other strftime codes and placeholders are read back", "[cli]") {
  NameParser epoch("{route}/%s-{pid}-{peer_port}-{seq}", false);
  auto n = epoch.parse("web/1796214896-321-5140-000007");
  REQUIRE(n);
  CHECK(n->opened == 1796214896);
  CHECK(n->pid == 321);
  CHECK(n->peer_port == 5140);
  CHECK(n->seq == 7u);
  NameParser iso("%F/%T-{seq}", false);
  auto m = iso.parse("2026-12-02/12:34:56-000001");
  REQUIRE(m);
  CHECK(m->opened == 1796214896);
  NameParser yday("%Y-%j", false);
  auto d = yday.parse("2026-336");  // 2 December
  REQUIRE(d);
  CHECK(d->opened == 1796169600);
}

TEST_CASE("segment forms are told apart by their suffix", "[cli]") {
  std::string stem;
  SegmentForm form{};
  REQUIRE(splitSegmentName("a/b.log.open", stem, form));
  CHECK((stem == "a/b.log" && form == SegmentForm::Open));
  REQUIRE(splitSegmentName("a/b.log.zst", stem, form));
  CHECK((stem == "a/b.log" && form == SegmentForm::Zstd));
  REQUIRE(splitSegmentName("b.log.unsynced", stem, form));
  CHECK((stem == "b.log" && form == SegmentForm::Unsynced));
  CHECK_FALSE(splitSegmentName("a/b.log.zst.tmp", stem, form));
  CHECK_FALSE(splitSegmentName(".spliced.lock", stem, form));
}

TEST_CASE("chains: by seq, runs of the daemon apart, chains by open time then conn", "[cli]") {
  ArchiveNames names({"{route}-{conn}-%H%M%S-{seq}.log"}, false);
  auto file = [&](const std::string& rel, int64_t mtime) {
    SegmentFile f;
    REQUIRE(splitSegmentName(rel, f.stem, f.form));
    f.rel = rel;
    f.name = names.parse(f.stem);
    f.mtime_ns = mtime;
    return f;
  };
  // conn 1 twice (two runs: ids restart), conn 2 opened first.
  std::vector<SegmentFile> files{
      file("a-1-120000-000001.log", 20), file("a-1-120000-000000.log", 10),
      file("a-1-130000-000000.log.zst", 30), file("a-2-110000-000000.log", 5),
      file("a-1-120000-000001.log.zst", 20)};
  auto chains = buildChains(files);
  REQUIRE(chains.size() == 3);
  CHECK(chains[0].conn == 2u);
  REQUIRE(chains[1].segments.size() == 2);
  CHECK(chains[1].segments[0].stem == "a-1-120000-000000.log");
  CHECK(chains[1].segments[1].form == SegmentForm::Plain);  // plain kept over its .zst
  CHECK(chains[2].segments[0].stem == "a-1-130000-000000.log");
}

TEST_CASE("time arguments: RFC 3339, a date, unix seconds", "[cli]") {
  constexpr int64_t kNs = 1000000000;
  CHECK(parseTimeArg("2026-12-02T12:34:56Z").value() == 1796214896 * kNs);
  CHECK(parseTimeArg("2026-12-02t13:34:56.5+01:00").value() == 1796214896 * kNs + kNs / 2);
  CHECK(parseTimeArg("2026-12-02 12:34:56z").value() == 1796214896 * kNs);
  CHECK(parseTimeArg("2026-12-02").value() == 1796169600 * kNs);
  CHECK(parseTimeArg("1796214896").value() == 1796214896 * kNs);
  CHECK(parseTimeArg("1796214896.25").value() == 1796214896 * kNs + kNs / 4);
  for (const char* bad :
       {"", "yesterday", "2026-13-01", "2026-12-02T12:34:56", "12:00", "2026-12-02T12:34:56+0100",
        "17962x", "9999-12-31", "1000-01-01", "9223372039", "99999999999"}) {
    INFO(bad);
    CHECK_FALSE(parseTimeArg(bad).ok());
  }
  CHECK(fileSafePeer("2001:DB8::1") == "2001_db8__1");
}
