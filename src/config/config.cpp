#include "spliced/config/config.hpp"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <fmt/format.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>

#include "spliced/config/schema.hpp"
#include "spliced/config/validate.hpp"
#include "spliced/config/yaml_reader.hpp"

namespace spliced {
namespace {

// Records where each document starts, without building it.
struct DocumentStarts : YAML::EventHandler {
  std::vector<YAML::Mark> marks;
  void OnDocumentStart(const YAML::Mark& m) override { marks.push_back(m); }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
};

}  // namespace

std::string ConfigError::format() const {
  if (line == 0) return fmt::format("{}: {}", file, message);
  if (key.empty()) return fmt::format("{}:{}:{}: {}", file, line, column, message);
  return fmt::format("{}:{}:{}: {}: {}", file, line, column, key, message);
}

ConfigResult loadConfigFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    ConfigResult r;
    r.errors.push_back(
        {path, 0, 0, "", fmt::format("cannot read config: {}", std::strerror(errno))});
    return r;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return loadConfigString(ss.str(), path);
}

ConfigResult loadConfigString(const std::string& text, const std::string& source) {
  ConfigResult result;
  auto cfg = std::make_shared<Config>();
  cfg->source = source;
  YamlReader reader(source);
  std::vector<std::string> route_paths;
  YAML::Node root;
  try {
    root = YAML::Load(text);
    // A second document ('---') would be ignored silently: refuse it. The parser is asked for
    // at most two documents: yaml-cpp 0.7's LoadAll() never ends on some inputs (a leading
    // ',' yields empty documents forever).
    std::istringstream in(text);
    YAML::Parser parser(in);
    DocumentStarts starts;
    for (int i = 0; i < 2 && parser.HandleNextDocument(starts); ++i) {
    }
    if (starts.marks.size() > 1 && starts.marks[1].pos > starts.marks[0].pos) {
      result.errors.push_back({source, starts.marks[1].line + 1, starts.marks[1].column + 1, "",
                               "only one YAML document is allowed (found a second after '---')"});
      return result;
    }
  } catch (const YAML::ParserException& e) {
    result.errors.push_back({source, e.mark.line + 1, e.mark.column + 1, "yaml", e.msg});
    return result;
  }
  if (!root.IsDefined() || root.IsNull()) {
    reader.add(root, "routes", "config is empty: at least one route is needed");
  } else if (!root.IsMap()) {
    reader.add(root, "", "the top level must be a mapping of keys (log, pipes, routes, ...)");
  } else {
    try {
      readConfig(reader, root, *cfg, route_paths);
      validate(*cfg, route_paths, reader);
    } catch (const YAML::Exception& e) {  // a shape the checks above did not foresee
      reader.addError({source, e.mark.line + 1, e.mark.column + 1, "", e.msg});
    }
  }
  // In the order the schema reads the file, then the cross-key rules.
  result.errors = reader.takeErrors();
  result.log = cfg->log;
  if (result.errors.empty()) result.config = std::move(cfg);
  return result;
}

}  // namespace spliced
