// spliced/archive/manifest.hpp: the manifest's line format, its hashes, its hash chain, replay
// and the repair of a line cut by a crash.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "spliced/archive/manifest.hpp"
#include "unit_helpers.hpp"

using namespace spliced;
using spliced::test::openDir;
using spliced::test::readFile;
using spliced::test::TempDir;
using spliced::test::writeFile;

namespace {

ManifestRecord closedRecord(const std::string& name, uint64_t size, const std::string& hash) {
  ManifestRecord r;
  r.event = ManifestEvent::Closed;
  r.name = name;
  r.size = size;
  r.hash = hash;
  r.opened = "2026-12-02T14:00:00.000Z";
  r.closed = "2026-12-02T14:00:01.500Z";
  r.peer = "127.0.0.1";
  r.conn = 7;
  return r;
}

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    if (nl == std::string::npos) nl = text.size();
    out.push_back(text.substr(pos, nl - pos));
    pos = nl + 1;
  }
  return out;
}

}  // namespace

TEST_CASE("manifest: a closed record is one JSON line with its members in a fixed order",
          "[manifest]") {
  ManifestRecord r = closedRecord("2026/12/02/app-1.log", 42, "xxh3:00ff");
  r.seq = 3;
  r.lines = 5;
  r.prev = "xxh3:abcd";
  CHECK(formatRecord(r) ==
        R"({"seq":3,"event":"closed","name":"2026/12/02/app-1.log","size":42,"hash":"xxh3:00ff",)"
        R"("opened":"2026-12-02T14:00:00.000Z","closed":"2026-12-02T14:00:01.500Z",)"
        R"("peer":"127.0.0.1","conn":7,"lines":5,"prev":"xxh3:abcd"})");
}

TEST_CASE("manifest: every event survives format and parse", "[manifest]") {
  std::vector<ManifestRecord> records;
  records.push_back(closedRecord("a \"quoted\"\\name\t.log", 1, "sha256:01"));
  ManifestRecord c;
  c.event = ManifestEvent::Compressed;
  c.name = "a.log";
  c.to = "a.log.zst";
  c.size = 9;
  c.hash = "xxh3:02";
  c.time = "2026-12-02T14:00:02.000Z";
  records.push_back(c);
  ManifestRecord d;
  d.event = ManifestEvent::Deleted;
  d.name = "a.log.zst";
  d.reason = "max_files";
  d.time = "2026-12-02T14:00:03.000Z";
  records.push_back(d);
  ManifestRecord p;
  p.event = ManifestEvent::Published;
  p.name = "b.log";
  p.time = "2026-12-02T14:00:04.000Z";
  p.duration_ms = 250;
  records.push_back(p);
  uint64_t seq = 0;
  for (auto& r : records) {
    r.seq = ++seq;
    r.prev = "xxh3:ff";
    std::string error;
    auto back = parseRecord(formatRecord(r), error);
    INFO(formatRecord(r) << " -> " << error);
    REQUIRE(back);
    CHECK(formatRecord(*back) == formatRecord(r));
    CHECK(back->name == r.name);
  }
}

TEST_CASE("manifest: the parser refuses what is not a record, saying why", "[manifest]") {
  std::string error;
  CHECK_FALSE(parseRecord("", error));
  CHECK_FALSE(parseRecord(R"({"seq":1,"event":"closed","name":"a")", error));  // cut
  CHECK_FALSE(parseRecord(R"({"seq":1,"event":"eaten","name":"a","prev":""})", error));
  CHECK(error == "unknown event \"eaten\"");
  CHECK_FALSE(parseRecord(R"({"seq":1,"event":"deleted","name":"a","prev":""})", error));
  CHECK(error == "member \"reason\" is missing");
  CHECK_FALSE(parseRecord(R"({"seq":"1","event":"deleted","name":"a","prev":""})", error));
  CHECK(error == "member \"seq\" must be an unsigned integer");
  CHECK_FALSE(parseRecord(R"({"seq":1,"seq":2})", error));
  CHECK(error.find("appears twice") != std::string::npos);
  CHECK_FALSE(parseRecord(R"({"seq":99999999999999999999})", error));
  CHECK_FALSE(parseRecord(R"({"seq":1} x)", error));
  CHECK(error.find("trailing bytes") != std::string::npos);
}

TEST_CASE("manifest: hashes are tagged, and detect a changed byte", "[manifest]") {
  for (ManifestHash alg : {ManifestHash::Sha256, ManifestHash::Xxh3}) {
    Hasher a(alg), b(alg);
    a.update("hello world", 11);
    b.update("hello vorld", 11);
    std::string ha = a.finish(), hb = b.finish();
    CHECK(ha != hb);
    CHECK(hashAlgOf(ha) == alg);
  }
  Hasher s(ManifestHash::Sha256);
  s.update("abc", 3);
  CHECK(s.finish() == "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  Hasher n(ManifestHash::None);
  n.update("abc", 3);
  CHECK(n.finish().empty());
  // Links still hash with hash: none.
  CHECK(hashAlgOf(linkHash(ManifestHash::None, "x")) == ManifestHash::Xxh3);
}

TEST_CASE("manifest: hashFile reads a prefix, says whether there is more, counts lines",
          "[manifest]") {
  TempDir dir;
  writeFile(dir, "a.log", "one\ntwo\nthree\n");
  UniqueFd fd = openDir(dir);
  FileDigest all = hashFile(fd.get(), "a.log", ManifestHash::Xxh3, UINT64_MAX, true);
  CHECK(all.err == 0);
  CHECK(all.size == 14);
  CHECK_FALSE(all.longer);
  CHECK(all.lines == 3);
  FileDigest head = hashFile(fd.get(), "a.log", ManifestHash::Xxh3, 8);
  CHECK(head.size == 8);
  CHECK(head.longer);
  Hasher h(ManifestHash::Xxh3);
  h.update("one\ntwo\n", 8);
  CHECK(head.hash == h.finish());
  CHECK(hashFile(fd.get(), "missing.log", ManifestHash::Xxh3).err == ENOENT);
}

TEST_CASE("manifest: appends form a hash chain that a reopen continues", "[manifest]") {
  TempDir dir;
  UniqueFd fd = openDir(dir);
  {
    Manifest m("app", ManifestHash::Sha256, false, true);
    bool created = false;
    std::string cut;
    REQUIRE(m.open(fd.get(), created, cut) == "");
    CHECK(created);
    REQUIRE(m.append(closedRecord("a.log", 1, "sha256:01")) == 0);
    REQUIRE(m.append(closedRecord("b.log", 2, "sha256:02")) == 0);
  }
  Manifest m("app", ManifestHash::Sha256, false, true);
  bool created = true;
  std::string cut;
  REQUIRE(m.open(fd.get(), created, cut) == "");
  CHECK_FALSE(created);
  ManifestRecord del;
  del.event = ManifestEvent::Deleted;
  del.name = "a.log";
  del.reason = "max_files";
  del.time = "2026-12-02T14:00:03.000Z";
  REQUIRE(m.append(del) == 0);
  CHECK_FALSE(m.unpublished("a.log"));
  CHECK(m.unpublished("b.log"));
  CHECK(m.unpublished() == std::vector<std::string>{"b.log"});
  ManifestRecord pub;
  pub.event = ManifestEvent::Published;
  pub.name = "b.log";
  REQUIRE(m.append(pub) == 0);
  CHECK(m.unpublished().empty());

  auto ls = lines(readFile(dir, std::string(kManifestPath)));
  REQUIRE(ls.size() == 4);
  std::string error;
  std::string prev;
  for (size_t i = 0; i < ls.size(); ++i) {
    auto r = parseRecord(ls[i], error);
    REQUIRE(r);
    CHECK(r->seq == i + 1);
    CHECK(r->prev == prev);
    prev = linkHash(ManifestHash::Sha256, ls[i]);
  }
}

TEST_CASE("manifest: a line cut by a crash is truncated away at open and handed back",
          "[manifest]") {
  TempDir dir;
  UniqueFd fd = openDir(dir);
  std::string whole;
  {
    Manifest m("app", ManifestHash::Xxh3, false);
    bool created = false;
    std::string cut;
    REQUIRE(m.open(fd.get(), created, cut) == "");
    REQUIRE(m.append(closedRecord("a.log", 1, "xxh3:01")) == 0);
    whole = readFile(dir, std::string(kManifestPath));
  }
  const std::string torn = R"({"seq":2,"event":"closed","name":"b.log","si)";
  writeFile(dir, std::string(kManifestPath), whole + torn);
  Manifest m("app", ManifestHash::Xxh3, false);
  bool created = false;
  std::string cut;
  REQUIRE(m.open(fd.get(), created, cut) == "");
  CHECK(cut == torn);
  CHECK(readFile(dir, std::string(kManifestPath)) == whole);
  // The chain goes on from the last whole line.
  REQUIRE(m.append(closedRecord("b.log", 2, "xxh3:02")) == 0);
  auto ls = lines(readFile(dir, std::string(kManifestPath)));
  REQUIRE(ls.size() == 2);
  std::string error;
  auto r = parseRecord(ls[1], error);
  REQUIRE(r);
  CHECK(r->seq == 2);
  CHECK(r->prev == linkHash(ManifestHash::Xxh3, ls[0]));
}

TEST_CASE("manifest: replay follows a segment through compression and publication", "[manifest]") {
  ManifestState st;
  CHECK(st.apply(closedRecord("a.log", 10, "xxh3:01"), 1) == "");
  ManifestRecord p;
  p.event = ManifestEvent::Published;
  p.name = "a.log";
  CHECK(st.apply(p, 2) == "");
  ManifestRecord c;
  c.event = ManifestEvent::Compressed;
  c.name = "a.log";
  c.to = "a.log.zst";
  c.size = 4;
  c.hash = "xxh3:02";
  CHECK(st.apply(c, 3) == "");
  CHECK(st.live().count("a.log") == 0);
  REQUIRE(st.live().count("a.log.zst") == 1);
  CHECK(st.live().at("a.log.zst").size == 4);
  CHECK(st.live().at("a.log.zst").published);
  CHECK(st.gone().at("a.log") == 3);
  p.name = "nothing.log";
  CHECK(st.apply(p, 4) != "");
}
