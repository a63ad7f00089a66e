// spliced/archive/compressor.hpp: closed segments compressed to NAME.zst / NAME.gz through a .tmp
// file, byte-exact, never overwriting anything, and the decompressor used to verify them.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "spliced/archive/compressor.hpp"
#include "spliced/config/config.hpp"
#include "spliced/core/fd.hpp"
#include "unit_helpers.hpp"

using spliced::Compress;
using spliced::CompressResult;
using spliced::compressSegment;
using spliced::decompressFile;
using spliced::kMiB;
using spliced::UniqueFd;
using spliced::test::listAll;
using spliced::test::openDir;
using spliced::test::readFile;
using spliced::test::TempDir;
using spliced::test::writeFile;
using Paths = std::vector<std::string>;
namespace fs = std::filesystem;

namespace {

constexpr uint64_t kNoLimit = ~uint64_t{0};

// Log-like text: compressible, but not trivially (numbers change), and spanning several chunks.
std::string textPayload(size_t bytes) {
  std::string s;
  s.reserve(bytes + 100);
  for (uint64_t i = 0; s.size() < bytes; ++i) {
    s += "2026-11-26T12:00:00Z host=web-" + std::to_string(i % 17) + " seq=" + std::to_string(i) +
         " msg=\"request served\" bytes=" + std::to_string(i * 7919 % 100000) + "\n";
  }
  s.resize(bytes);
  return s;
}

std::string randomPayload(size_t bytes, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(bytes, '\0');
  for (size_t i = 0; i < bytes; i += 8) {
    uint64_t v = rng();
    std::memcpy(&s[i], &v, std::min<size_t>(8, bytes - i));
  }
  return s;
}

// Decompresses a gzip file with zlib's own gzip reader: independent of decompressFile.
std::string gunzip(const fs::path& path) {
  gzFile gz = gzopen(path.c_str(), "rb");
  REQUIRE(gz != nullptr);
  std::string out;
  std::vector<char> buf(65536);
  int n;
  while ((n = gzread(gz, buf.data(), static_cast<unsigned>(buf.size()))) > 0) {
    out.append(buf.data(), static_cast<size_t>(n));
  }
  int errnum = Z_OK;
  gzerror(gz, &errnum);
  gzclose(gz);
  REQUIRE(n == 0);
  REQUIRE(errnum == Z_OK);
  return out;
}

const char* ext(Compress algo) { return algo == Compress::Gzip ? ".gz" : ".zst"; }

// Compresses `rel` holding `content` and checks everything a successful compression promises.
void compressAndCheck(const TempDir& dir, int dfd, const std::string& rel,
                      const std::string& content, Compress algo, int level, bool fsync) {
  CompressResult r = compressSegment(dfd, rel, algo, level, fsync);
  INFO(r.message);
  REQUIRE(r.err == 0);
  const std::string out = rel + ext(algo);
  CHECK(r.out_path == out);
  CHECK(r.in_bytes == content.size());
  CHECK(r.out_bytes == fs::file_size(dir.path() / out));
  CHECK_FALSE(fs::exists(dir.path() / rel));
  CHECK_FALSE(fs::exists(dir.path() / (out + ".tmp")));
  std::string back;
  REQUIRE(decompressFile(dfd, out, back, kNoLimit));
  CHECK(back.size() == content.size());
  CHECK(back == content);
  if (algo == Compress::Gzip) CHECK(gunzip(dir.path() / out) == content);
}

}  // namespace

TEST_CASE("compressSegment: zstd and gzip round-trip byte-exact, at several levels",
          "[compressor]") {
  const Compress algo = GENERATE(Compress::Zstd, Compress::Gzip);
  const int level = GENERATE(0, 1, 9);
  const bool fsync = GENERATE(false, true);
  INFO("algo=" << ext(algo) << " level=" << level << " fsync=" << fsync);
  TempDir dir;
  UniqueFd fd = openDir(dir);
  const std::string content = textPayload(static_cast<size_t>(kMiB) + 12345);  // 5 chunks
  writeFile(dir, "2026/11/26/app-1-000000.log", content);
  writeFile(dir, "2026/11/26/other.log", "untouched");
  compressAndCheck(dir, fd.get(), "2026/11/26/app-1-000000.log", content, algo, level, fsync);
  CHECK(fs::file_size(dir.path() / ("2026/11/26/app-1-000000.log" + std::string(ext(algo)))) <
        content.size() / 4);
  CHECK(listAll(dir) == Paths{"2026", "2026/11", "2026/11/26",
                              "2026/11/26/app-1-000000.log" + std::string(ext(algo)),
                              "2026/11/26/other.log"});
  CHECK(readFile(dir, "2026/11/26/other.log") == "untouched");
}

TEST_CASE("compressSegment: levels change the output, 0 means the codec's default",
          "[compressor]") {
  const std::string content = textPayload(600000);
  auto sizeAt = [&](Compress algo, int level) {
    TempDir dir;
    UniqueFd fd = openDir(dir);
    writeFile(dir, "s.log", content);
    CompressResult r = compressSegment(fd.get(), "s.log", algo, level, false);
    REQUIRE(r.err == 0);
    return readFile(dir, r.out_path);
  };
  CHECK(sizeAt(Compress::Zstd, 0) == sizeAt(Compress::Zstd, 3));
  CHECK(sizeAt(Compress::Zstd, 19).size() < sizeAt(Compress::Zstd, 1).size());
  CHECK(sizeAt(Compress::Gzip, 0) == sizeAt(Compress::Gzip, 6));
  CHECK(sizeAt(Compress::Gzip, 9).size() < sizeAt(Compress::Gzip, 1).size());
}

TEST_CASE("compressSegment: an empty segment", "[compressor]") {
  const Compress algo = GENERATE(Compress::Zstd, Compress::Gzip);
  TempDir dir;
  UniqueFd fd = openDir(dir);
  writeFile(dir, "empty.log", "");
  compressAndCheck(dir, fd.get(), "empty.log", "", algo, 0, false);
  CHECK(fs::file_size(dir.path() / ("empty.log" + std::string(ext(algo)))) > 0);
}

TEST_CASE("compressSegment: a 20 MiB incompressible segment", "[compressor]") {
  const Compress algo = GENERATE(Compress::Zstd, Compress::Gzip);
  TempDir dir;
  UniqueFd fd = openDir(dir);
  const std::string content = randomPayload(20 * kMiB, 42);
  writeFile(dir, "d/big.bin", content);
  compressAndCheck(dir, fd.get(), "d/big.bin", content, algo, 0, false);
  // Incompressible: the output is about as large as the input, not more than 1% larger.
  auto out = fs::file_size(dir.path() / ("d/big.bin" + std::string(ext(algo))));
  CHECK(out >= content.size());
  CHECK(out < content.size() + content.size() / 100);
}

TEST_CASE("compressSegment: a stale .tmp from an earlier run is replaced", "[compressor]") {
  const Compress algo = GENERATE(Compress::Zstd, Compress::Gzip);
  TempDir dir;
  UniqueFd fd = openDir(dir);
  const std::string content = textPayload(300000);
  writeFile(dir, "d/s.log", content);
  writeFile(dir, std::string("d/s.log") + ext(algo) + ".tmp", randomPayload(500000, 7));
  compressAndCheck(dir, fd.get(), "d/s.log", content, algo, 0, false);
  CHECK(listAll(dir) == Paths{"d", "d/s.log" + std::string(ext(algo))});
}

TEST_CASE("compressSegment: a taken name with other content -> numeric suffix", "[compressor]") {
  const Compress algo = GENERATE(Compress::Zstd, Compress::Gzip);
  const std::string e = ext(algo);
  TempDir dir;
  UniqueFd fd = openDir(dir);
  // d/s.log.EXT: another segment's compressed content; d/s.1.log.EXT: garbage (e.g. cut short).
  writeFile(dir, "d/s.log", "the other content\n");
  REQUIRE(compressSegment(fd.get(), "d/s.log", algo, 0, false).err == 0);
  const std::string taken = readFile(dir, "d/s.log" + e);
  const std::string garbage = randomPayload(1000, 3);
  writeFile(dir, "d/s.1.log" + e, garbage);

  const std::string content = textPayload(400000);
  writeFile(dir, "d/s.log", content);
  CompressResult r = compressSegment(fd.get(), "d/s.log", algo, 0, true);
  INFO(r.message);
  REQUIRE(r.err == 0);
  CHECK(r.out_path == "d/s.2.log" + e);
  CHECK(r.in_bytes == content.size());
  CHECK(listAll(dir) == Paths{"d", "d/s.1.log" + e, "d/s.2.log" + e, "d/s.log" + e});
  CHECK(readFile(dir, "d/s.log" + e) == taken);
  CHECK(readFile(dir, "d/s.1.log" + e) == garbage);
  std::string back;
  REQUIRE(decompressFile(fd.get(), "d/s.2.log" + e, back, kNoLimit));
  CHECK(back == content);
}

TEST_CASE("compressSegment: a taken name with the same content is used, the plain file goes",
          "[compressor]") {
  const Compress algo = GENERATE(Compress::Zstd, Compress::Gzip);
  const std::string e = ext(algo);
  TempDir dir;
  UniqueFd fd = openDir(dir);
  const std::string content = textPayload(700000);
  writeFile(dir, "d/s.log", content);
  REQUIRE(compressSegment(fd.get(), "d/s.log", algo, 1, false).err == 0);
  const std::string first = readFile(dir, "d/s.log" + e);
  // A crash between the rename and the unlink leaves both; a second run settles it. A different
  // level shows that the file already there is kept, not replaced.
  writeFile(dir, "d/s.log", content);
  const bool fsync = GENERATE(false, true);
  CompressResult r = compressSegment(fd.get(), "d/s.log", algo, 9, fsync);
  INFO(r.message);
  REQUIRE(r.err == 0);
  CHECK(r.out_path == "d/s.log" + e);
  CHECK(r.out_bytes == first.size());
  CHECK(listAll(dir) == Paths{"d", "d/s.log" + e});
  CHECK(readFile(dir, "d/s.log" + e) == first);

  // Same content but one byte longer: not the same.
  writeFile(dir, "d/s.log", content + "x");
  r = compressSegment(fd.get(), "d/s.log", algo, 1, false);
  REQUIRE(r.err == 0);
  CHECK(r.out_path == "d/s.1.log" + e);
  // One byte shorter: not the same either.
  writeFile(dir, "d/s.log", content.substr(0, content.size() - 1));
  r = compressSegment(fd.get(), "d/s.log", algo, 1, false);
  REQUIRE(r.err == 0);
  CHECK(r.out_path == "d/s.2.log" + e);
  CHECK(listAll(dir) == Paths{"d", "d/s.1.log" + e, "d/s.2.log" + e, "d/s.log" + e});
}

TEST_CASE("compressSegment: a missing source is an error and creates nothing", "[compressor]") {
  const Compress algo = GENERATE(Compress::Zstd, Compress::Gzip);
  TempDir dir;
  UniqueFd fd = openDir(dir);
  writeFile(dir, "d/other.log", "x");
  CompressResult r = compressSegment(fd.get(), "d/missing.log", algo, 0, false);
  CHECK(r.err == ENOENT);
  CHECK_FALSE(r.message.empty());
  CHECK(r.out_path.empty());
  r = compressSegment(fd.get(), "nodir/missing.log", algo, 0, false);
  CHECK(r.err == ENOENT);
  CHECK(listAll(dir) == Paths{"d", "d/other.log"});
}

TEST_CASE("compressSegment: refuses .open, .tmp, hidden names, symlinks and non-files",
          "[compressor]") {
  TempDir dir;
  UniqueFd fd = openDir(dir);
  writeFile(dir, "d/a.log.open", "active");
  writeFile(dir, "d/a.log.zst.tmp", "tmp");
  writeFile(dir, "d/.hidden", "hidden");
  writeFile(dir, ".h/seg.log", "hidden dir");
  writeFile(dir, "real/target.log", "target");
  fs::create_symlink(dir.path() / "real/target.log", dir.path() / "d/link.log");
  fs::create_directory_symlink(dir.path() / "real", dir.path() / "linkdir");
  fs::create_directories(dir.path() / "d/sub.log");
  const Paths before = listAll(dir);
  CHECK(compressSegment(fd.get(), "d/a.log.open", Compress::Zstd, 0, false).err == EINVAL);
  CHECK(compressSegment(fd.get(), "d/a.log.zst.tmp", Compress::Zstd, 0, false).err == EINVAL);
  CHECK(compressSegment(fd.get(), "d/.hidden", Compress::Zstd, 0, false).err == EINVAL);
  CHECK(compressSegment(fd.get(), ".h/seg.log", Compress::Zstd, 0, false).err == EINVAL);
  CHECK(compressSegment(fd.get(), "d/../real/target.log", Compress::Zstd, 0, false).err == EINVAL);
  CHECK(compressSegment(fd.get(), "/etc/passwd", Compress::Zstd, 0, false).err == EINVAL);
  CHECK(compressSegment(fd.get(), "real/target.log", Compress::None, 0, false).err == EINVAL);
  CHECK(compressSegment(fd.get(), "d/link.log", Compress::Zstd, 0, false).err == ELOOP);
  CHECK(compressSegment(fd.get(), "linkdir/target.log", Compress::Zstd, 0, false).err != 0);
  CHECK(compressSegment(fd.get(), "d/sub.log", Compress::Gzip, 0, false).err != 0);
  CHECK(listAll(dir) == before);
  CHECK(readFile(dir, "real/target.log") == "target");
}

TEST_CASE("decompressFile: bounded, strict about truncation and trailing bytes", "[compressor]") {
  const Compress algo = GENERATE(Compress::Zstd, Compress::Gzip);
  const std::string e = ext(algo);
  TempDir dir;
  UniqueFd fd = openDir(dir);
  const std::string content = textPayload(500000);
  writeFile(dir, "s.log", content);
  REQUIRE(compressSegment(fd.get(), "s.log", algo, 0, false).err == 0);
  const std::string comp = readFile(dir, "s.log" + e);
  std::string out;

  CHECK(decompressFile(fd.get(), "s.log" + e, out, content.size()));
  CHECK(out == content);
  CHECK_FALSE(decompressFile(fd.get(), "s.log" + e, out, content.size() - 1));
  CHECK(out.empty());

  writeFile(dir, "cut" + e, comp.substr(0, comp.size() - 1));
  CHECK_FALSE(decompressFile(fd.get(), "cut" + e, out, kNoLimit));
  writeFile(dir, "half" + e, comp.substr(0, comp.size() / 2));
  CHECK_FALSE(decompressFile(fd.get(), "half" + e, out, kNoLimit));
  writeFile(dir, "trailing" + e, comp + "junk");
  CHECK_FALSE(decompressFile(fd.get(), "trailing" + e, out, kNoLimit));
  std::string flipped = comp;
  flipped[flipped.size() / 2] = static_cast<char>(flipped[flipped.size() / 2] ^ 0x55);
  writeFile(dir, "flipped" + e, flipped);
  CHECK_FALSE(decompressFile(fd.get(), "flipped" + e, out, kNoLimit));
  writeFile(dir, "empty" + e, "");
  CHECK_FALSE(decompressFile(fd.get(), "empty" + e, out, kNoLimit));
  CHECK_FALSE(decompressFile(fd.get(), "missing" + e, out, kNoLimit));
  CHECK_FALSE(decompressFile(fd.get(), "s.log", out, kNoLimit));  // not .zst/.gz

  // Two frames / members back to back are one stream (what `cat a.zst b.zst` gives).
  writeFile(dir, "twice" + e, comp + comp);
  REQUIRE(decompressFile(fd.get(), "twice" + e, out, kNoLimit));
  CHECK(out == content + content);
}

TEST_CASE("compressSegment: the compressed segment keeps the plain one's mtime", "[compressor]") {
  // Retention orders segments by mtime: compressing must not make an old segment look new.
  for (Compress algo : {Compress::Zstd, Compress::Gzip}) {
    TempDir dir;
    writeFile(dir, "old.log", std::string(5000, 'a'));
    const timespec times[2] = {{1700000000, 123456789}, {1700000100, 987654321}};
    REQUIRE(::utimensat(AT_FDCWD, (dir.path() / "old.log").c_str(), times, 0) == 0);
    UniqueFd fd = openDir(dir);
    CompressResult r = compressSegment(fd.get(), "old.log", algo, 0, false);
    REQUIRE(r.err == 0);
    struct stat st;
    REQUIRE(::stat((dir.path() / r.out_path).c_str(), &st) == 0);
    CHECK(st.st_mtim.tv_sec == 1700000100);
    CHECK(st.st_mtim.tv_nsec == 987654321);
  }
}
