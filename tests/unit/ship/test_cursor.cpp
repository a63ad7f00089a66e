// The shipping cursor's file format and its checks (ship/cursor).
#include <fcntl.h>
#include <unistd.h>
#include <catch2/catch.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include "spliced/core/fd.hpp"
#include "spliced/ship/cursor.hpp"
#include "unit_helpers.hpp"

using namespace spliced;
using spliced::test::TempDir;

TEST_CASE("ship cursor: formats and parses back, with pending segments", "[unit][ship]") {
  ShipCursor c;
  c.segment = "2026/12/02/app-000003.log";
  c.offset = 1048576;
  c.acked = 52428800;
  c.pending = {"2026/12/02/app-000004.log", "2026/12/02/app 5.log"};
  const std::string text = formatCursor(c);
  CHECK(
      text.starts_with("spliced-ship-cursor 1\nsegment 2026/12/02/app-000003.log\n"
                       "offset 1048576\nacked 52428800\npending 2026/12/02/app-000004.log\n"
                       "pending 2026/12/02/app 5.log\ncheck "));
  std::string why;
  auto back = parseCursor(text, why);
  INFO(why);
  REQUIRE(back.has_value());
  CHECK(*back == c);
  ShipCursor empty;
  auto e = parseCursor(formatCursor(empty), why);
  REQUIRE(e.has_value());
  CHECK(e->segment.empty());
}

TEST_CASE("ship cursor: a changed, cut or foreign file is refused with the reason",
          "[unit][ship]") {
  ShipCursor c;
  c.segment = "a.log";
  c.offset = 7;
  const std::string text = formatCursor(c);
  std::string why;

  std::string changed = text;
  changed[changed.find("offset 7") + 7] = '8';
  CHECK_FALSE(parseCursor(changed, why).has_value());
  CHECK(why.find("check mismatch") != std::string::npos);

  CHECK_FALSE(parseCursor(text.substr(0, text.size() - 5), why).has_value());
  CHECK(why.find("cut short") != std::string::npos);

  CHECK_FALSE(parseCursor(text.substr(0, text.find("check")), why).has_value());
  CHECK(why == "no check line");

  CHECK_FALSE(parseCursor("", why).has_value());
  CHECK(why == "empty file");

  CHECK_FALSE(parseCursor("spliced-ship-cursor 2\n", why).has_value());
  CHECK(why.find("not a cursor of this version") != std::string::npos);

  CHECK_FALSE(parseCursor(text + "x\n", why).has_value());
  CHECK(why.find("after the check line") != std::string::npos);
}

TEST_CASE("ship cursor: saved atomically, loaded with the journal's names", "[unit][ship]") {
  TempDir dir;
  UniqueFd dfd = spliced::test::openDir(dir);
  CursorLoad none = loadCursor(dfd.get(), "shared");
  CHECK(none.missing);
  CHECK(none.problem.empty());
  CHECK_FALSE(none.cursor.has_value());

  ShipCursor c;
  c.segment = "x-1.log";
  c.offset = 3;
  c.acked = 3;
  REQUIRE(saveCursor(SysCalls::kernel(), dfd.get(), "shared", c) == 0);
  UniqueFd j(openJournal(dfd.get(), "shared"));
  REQUIRE(j.valid());
  REQUIRE(appendJournal(j.get(), "x-2.log") == 0);
  REQUIRE(appendJournal(j.get(), "x-3.log") == 0);
  // A cut last line (a crash in the middle of an append) is dropped.
  REQUIRE(::write(j.get(), "x-4", 3) == 3);
  CursorLoad got = loadCursor(dfd.get(), "shared");
  REQUIRE(got.cursor.has_value());
  CHECK(*got.cursor == c);
  CHECK(got.journal == std::vector<std::string>{"x-2.log", "x-3.log"});
  CHECK_FALSE(std::filesystem::exists(dir.path() / ".spliced/ship/shared.cursor.tmp"));

  REQUIRE(truncateJournal(j.get()) == 0);
  CHECK(loadCursor(dfd.get(), "shared").journal.empty());

  spliced::test::writeFile(dir, ".spliced/ship/shared.cursor", "garbage\n");
  CursorLoad bad = loadCursor(dfd.get(), "shared");
  CHECK_FALSE(bad.cursor.has_value());
  CHECK_FALSE(bad.missing);
  CHECK(bad.problem.find(".spliced/ship/shared.cursor is unusable: line 1") != std::string::npos);
}
