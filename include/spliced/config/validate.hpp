#pragma once
// The one validation pass after the schema: the rules that span several keys or look at the
// machine. Routes need unique names; two routes (or a route and the admin endpoint) may not
// listen on one address; two routes may not share an archive dir (retention and recovery own a
// whole dir); and every archive dir must be a writable directory or creatable.
#include <filesystem>
#include <string>
#include <vector>

#include "spliced/config/config.hpp"
#include "spliced/config/yaml_reader.hpp"

namespace spliced {

// Records each problem in `reader`, at the value it concerns. `route_paths[i]` is the YAML path
// of cfg.routes[i].
void validate(const Config& cfg, const std::vector<std::string>& route_paths, YamlReader& reader);

// Checks that `dir` exists as a writable directory or could be created (its nearest existing
// ancestor is a writable directory). Returns an empty string when fine, else the reason.
std::string checkDirUsable(const std::filesystem::path& dir);

}  // namespace spliced
