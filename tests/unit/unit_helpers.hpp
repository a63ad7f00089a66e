#pragma once
// Helpers shared by the unit tests: a temporary directory and a scoped time zone.
#include <stdlib.h>
#include <time.h>

#include <fcntl.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

#include <optional>
#include <stdexcept>
#include <string>
#include "spliced/core/fd.hpp"

namespace spliced::test {

// A directory made with mkdtemp() under $TMPDIR (or /tmp); removed with its contents on
// destruction.
class TempDir {
 public:
  TempDir() {
    std::string base = std::filesystem::temp_directory_path().string() + "/spliced-unit-XXXXXX";
    if (::mkdtemp(base.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
    path_ = base;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::string str() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

// Sets TZ for the lifetime of the object (then restores the previous value) and calls tzset().
class ScopedTz {
 public:
  explicit ScopedTz(const char* tz) {
    if (const char* old = ::getenv("TZ")) old_ = old;
    ::setenv("TZ", tz, 1);
    ::tzset();
  }
  ~ScopedTz() {
    if (old_) {
      ::setenv("TZ", old_->c_str(), 1);
    } else {
      ::unsetenv("TZ");
    }
    ::tzset();
  }
  ScopedTz(const ScopedTz&) = delete;
  ScopedTz& operator=(const ScopedTz&) = delete;

 private:
  std::optional<std::string> old_;
};

// True when the system has compiled time zone data for `name` (e.g. "Asia/Kolkata").
inline bool haveZoneInfo(const std::string& name) {
  std::error_code ec;
  return std::filesystem::is_regular_file("/usr/share/zoneinfo/" + name, ec);
}

// Writes `content` to dir/rel, creating parent directories.
inline void writeFile(const TempDir& dir, const std::string& rel, const std::string& content) {
  std::filesystem::path p = dir.path() / rel;
  std::filesystem::create_directories(p.parent_path());
  std::ofstream f(p, std::ios::binary);
  f << content;
}

inline std::string readFile(const TempDir& dir, const std::string& rel) {
  std::ifstream f(dir.path() / rel, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// The dir opened O_RDONLY|O_DIRECTORY, as the archive code takes it.
inline UniqueFd openDir(const TempDir& dir) {
  UniqueFd fd(::open(dir.str().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  REQUIRE(fd.valid());
  return fd;
}

// Every entry below `dir` (files, dirs, symlinks), relative, sorted.
inline std::vector<std::string> listAll(const TempDir& dir) {
  std::vector<std::string> out;
  for (auto& e : std::filesystem::recursive_directory_iterator(dir.path())) {
    out.push_back(e.path().lexically_relative(dir.path()).string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace spliced::test
