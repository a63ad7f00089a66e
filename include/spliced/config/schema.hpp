#pragma once
// The config file's schema: which keys exist in each block, what each fills and what it may hold.
// Defaults are those of the feature config structs.
#include <yaml-cpp/yaml.h>

#include <string>
#include <vector>

#include "spliced/config/config.hpp"
#include "spliced/config/yaml_reader.hpp"

namespace spliced {

// Fills `cfg` from the document `root` (a mapping), recording every problem in `reader`.
// `route_paths` gets the YAML path of each route kept in cfg.routes ("routes[2]"), for validate().
void readConfig(YamlReader& reader, const YAML::Node& root, Config& cfg,
                std::vector<std::string>& route_paths);

}  // namespace spliced
