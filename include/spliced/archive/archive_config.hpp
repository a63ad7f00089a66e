#pragma once
// The archive's settings (a route's `archive:` block).
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "spliced/archive/naming.hpp"
#include "spliced/core/units.hpp"

namespace spliced {

// per_connection: a chain per TCP/Unix connection; shared: one chain for the route; per_peer (UDP
// routes only): a chain per sender IP.
enum class Layout { PerConnection, Shared, PerPeer };
enum class Framing { Raw, Lines, OctetCounted, Auto };
// How octet-counted records are written: as they came ("LEN SP MSG"), or each MSG plus '\n'.
enum class RecordOutput { AsReceived, Lines };
// An octet-counted record longer than max_line: cut into marked pieces, or close the connection.
enum class Oversize { Split, Close };
enum class Compress { None, Gzip, Zstd };
enum class FsyncPolicy { Never, OnClose };
// How the manifest hashes segments (and links its lines): see archive/manifest.hpp.
enum class ManifestHash { Sha256, Xxh3, None };

struct RotateConfig {
  uint64_t max_bytes = 256 * kMiB;  // 0 = no size limit
  milliseconds interval{0};         // 0 = no time rotation; else aligned to the wall clock
};

struct RetainConfig {
  uint64_t max_files = 0;  // 0 = unlimited
  milliseconds max_age{0};
  uint64_t max_bytes = 0;
  bool require_published = false;  // keep a segment until its on_publish command succeeded
  // A shipping route: a segment the upstream has not acknowledged whole is kept (false) or
  // deleted by the policy like any other, its unshipped bytes counted as dropped (true).
  bool drop_unshipped = false;
};

struct ManifestConfig {
  ManifestHash hash = ManifestHash::Xxh3;
};

// archive.on_publish: a command run for each published segment, off the event loop.
struct OnPublishConfig {
  std::vector<std::string> exec;  // argv; {path} {name} {route} are replaced; empty = off
  milliseconds timeout{60000};
  uint64_t concurrency = 1;
  bool enabled() const { return !exec.empty(); }
  bool operator==(const OnPublishConfig&) const = default;
};

struct ArchiveConfig {
  std::filesystem::path dir;
  Layout layout = Layout::PerConnection;
  Framing framing = Framing::Raw;
  NameTemplate name;
  bool localtime = false;
  RotateConfig rotate;
  RetainConfig retain;
  Compress compress = Compress::None;
  int compress_level = 0;  // 0 = the codec's default (zstd 3, gzip 6)
  FsyncPolicy fsync = FsyncPolicy::Never;
  // The longest record written (lines: '\n' included; octet counted: as written, header or '\n'
  // included); a longer one is split with the continuation marker (and counted) or, for octet
  // counted records with oversize: close, ends its connection.
  uint64_t max_line = kMiB;
  RecordOutput output = RecordOutput::AsReceived;  // octet_counted / auto only
  Oversize oversize = Oversize::Split;             // octet_counted / auto only
  ManifestConfig manifest;
  OnPublishConfig on_publish;
};

}  // namespace spliced
