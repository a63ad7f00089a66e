// End-to-end: the documentation says what the built binary does.
//  - every ```yaml block of README.md and docs/*.md is a config that `spliced -t` accepts (run in
//    an empty temp dir, so that relative archive dirs are checked there). A block that is not a
//    spliced config says so on the line before it: <!-- spliced -t: skip (WHY) -->;
//  - the segment names the README shows for /archive have the shape of the names spliced writes
//    with conf/spliced.yaml;
//  - every error= value spliced can log is listed in the README;
//  - the file the README's "a whole file" example sends exists on this machine.
#include <signal.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <regex>
#include <set>
#include <sstream>

#include "harness.hpp"

using namespace e2e;

namespace {

const fs::path kSource = SPLICED_SOURCE_DIR;

struct YamlBlock {
  std::string file;  // relative to the source dir
  size_t line = 0;   // of the opening fence, 1-based
  std::string text;
  bool skipped = false;
};

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

// The ```yaml blocks of one Markdown file.
std::vector<YamlBlock> yamlBlocks(const fs::path& md) {
  std::vector<YamlBlock> out;
  const std::vector<std::string> ls = lines(readFile(md));
  const std::string rel = fs::relative(md, kSource).string();
  for (size_t i = 0; i < ls.size(); ++i) {
    if (ls[i].rfind("```", 0) != 0) continue;
    const bool yaml = ls[i] == "```yaml";
    size_t end = i + 1;
    while (end < ls.size() && ls[end].rfind("```", 0) != 0) ++end;
    if (yaml) {
      YamlBlock b;
      b.file = rel;
      b.line = i + 1;
      for (size_t j = i + 1; j < end; ++j) b.text += ls[j] + "\n";
      size_t prev = i;
      while (prev > 0 && ls[prev - 1].empty()) --prev;
      b.skipped = prev > 0 && ls[prev - 1].rfind("<!-- spliced -t: skip", 0) == 0;
      out.push_back(std::move(b));
    }
    i = end;  // past the closing fence
  }
  return out;
}

std::vector<fs::path> markdownFiles() {
  std::vector<fs::path> out{kSource / "README.md"};
  for (const auto& e : fs::directory_iterator(kSource / "docs")) {
    if (e.path().extension() == ".md") out.push_back(e.path());
  }
  std::sort(out.begin() + 1, out.end());
  return out;
}

// Every run of digits replaced by '#': "2026/11/26/app-127.0.0.1-1-203238-000000.log" and any
// other name from the same template give the same shape.
std::string shape(const std::string& name) {
  return std::regex_replace(name, std::regex("[0-9]+"), "#");
}

}  // namespace

TEST_CASE("docs: every yaml example in README.md and docs/ passes spliced -t", "[e2e][docs]") {
  size_t checked = 0;
  size_t skipped = 0;
  for (const fs::path& md : markdownFiles()) {
    for (const YamlBlock& b : yamlBlocks(md)) {
      if (b.skipped) {
        ++skipped;
        WARN("skipped (marked as not a spliced config): " << b.file << ":" << b.line);
        continue;
      }
      TempDir dir;
      writeFile(dir / "example.yaml", b.text);
      CommandResult r = runSpliced(dir, {"-t", "-c", (dir / "example.yaml").string()});
      INFO(b.file << ":" << b.line << "\n"
                  << b.text << "stdout: " << r.out << "\nstderr: " << r.err);
      CHECK(r.exit_code == 0);
      ++checked;
    }
  }
  WARN("yaml examples checked with spliced -t: " << checked << ", skipped: " << skipped);
  CHECK(checked >= 2);
  // Skipped: the Prometheus scrape config, and the secured admin config (it needs the files its
  // commands make: e2e/admin_auth_test.cpp runs it).
  CHECK(skipped <= 2);
}

TEST_CASE("docs: the /archive names in the README are those spliced writes with the default config",
          "[e2e][docs]") {
  TempDir dir;
  // conf/spliced.yaml as shipped, on free ports.
  std::string conf = readFile(kSource / "conf/spliced.yaml");
  conf = std::regex_replace(conf, std::regex("127\\.0\\.0\\.1:(5140|9180)"), "127.0.0.1:0");
  Daemon d(dir, conf);
  const uint16_t port = d.port("app");
  const std::string admin = d.waitAdmin();
  {
    Conn c = connectTcp(port);
    REQUIRE(c.valid());
    REQUIRE(c.sendAll("hello\n") == 0);
    c.shutdownWrite();
    REQUIRE(c.waitClosed(Millis(5000)) == 0);
  }
  std::vector<fs::path> segs;
  REQUIRE(waitUntil(
      [&] {
        segs = closedSegments(dir / "var/archive/app");
        return !segs.empty();
      },
      Millis(5000)));
  HttpResponse listing = httpGet(admin, "/archive/app/");
  REQUIRE(listing.status == 200);
  std::smatch m;
  REQUIRE(std::regex_search(listing.body, m, std::regex("\"name\": ?\"([^\"]+)\"")));
  const std::string real = m[1];
  INFO("the name spliced wrote: " << real << "\nlisting: " << listing.body);

  const std::string readme = readFile(kSource / "README.md");
  std::vector<std::string> shown;  // the JSON example and the curl example
  for (const std::regex& re :
       {std::regex("\"name\": \"([^\"]+)\""), std::regex("/archive/app/([0-9][^\\s`|]+)")}) {
    for (std::sregex_iterator it(readme.begin(), readme.end(), re), end; it != end; ++it) {
      shown.push_back((*it)[1]);
    }
  }
  REQUIRE(shown.size() >= 2);
  for (const std::string& name : shown) {
    INFO("the README shows: " << name);
    CHECK(shape(name) == shape(real));
  }
  d.signal(SIGTERM);
  CHECK(d.waitExit(Millis(10000)) == 0);
}

TEST_CASE("docs: every error= value spliced logs is listed in the README", "[e2e][docs]") {
  std::set<std::string> values;
  // Literal tags in log lines ...
  const std::regex literal("error=([a-z]+)");
  for (const auto& e : fs::recursive_directory_iterator(kSource / "src")) {
    if (!e.is_regular_file()) continue;
    const std::string text = readFile(e.path());
    for (std::sregex_iterator it(text.begin(), text.end(), literal), end; it != end; ++it) {
      values.insert((*it)[1]);
    }
  }
  // ... and every ErrorSource, which "error={} cannot start" prints.
  const std::string error_cpp = readFile(kSource / "src/core/error.cpp");
  const std::regex source("return \"([a-z]+)\";");
  for (std::sregex_iterator it(error_cpp.begin(), error_cpp.end(), source), end; it != end; ++it) {
    values.insert((*it)[1]);
  }
  REQUIRE(values.size() >= 6);
  const std::string readme = readFile(kSource / "README.md");
  for (const std::string& v : values) {
    INFO("error=" << v);
    CHECK(readme.find("`error=" + v + "`") != std::string::npos);
  }
}

TEST_CASE("docs: the README's whole-file example sends a file every Debian machine has",
          "[e2e][docs]") {
  const std::string readme = readFile(kSource / "README.md");
  std::smatch m;
  REQUIRE(std::regex_search(readme, m, std::regex("nc -q1 127\\.0\\.0\\.1 5140 < (\\S+)")));
  const fs::path file = m[1].str();
  INFO("the README sends " << file);
  CHECK(fs::is_regular_file(file));
  CHECK(readFile(file).size() > 0);
}
