#pragma once
// The manifest of an archive dir: <dir>/.spliced/manifest.jsonl, one JSON object per line, one
// line per event in a segment's life (closed, compressed, deleted, published), each line linked to
// the one before by its hash, so that the file is a hash chain (docs/DESIGN.md, "Manifest").
//
// Appends are single write(2) calls of a whole line by one writer (the archive lifecycle thread, or
// an on_publish runner under the same mutex); a crash can only cut the last line. Manifest::open()
// finds such a cut tail, logs it and truncates the file to its last whole line.
//
// Ownership: a Manifest owns the manifest file's descriptor; the archive dir descriptor is
// borrowed for the call that opens it. All of a Manifest's methods are thread-safe.
// ManifestState is the full replay (every live segment with its size and hash): `spliced verify`
// uses it; the daemon does not (see Manifest).
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "spliced/archive/archive_config.hpp"
#include "spliced/core/fd.hpp"

namespace spliced {

inline constexpr std::string_view kStateDirName = ".spliced";
inline constexpr std::string_view kManifestPath = ".spliced/manifest.jsonl";

enum class ManifestEvent { Closed, Compressed, Deleted, Published };
const char* toString(ManifestEvent e);

// One line of the manifest. Which members a line has depends on its event:
//   closed:     name size [hash] opened closed [peer conn] [lines] [origin]
//   compressed: name to size [hash] time            (size and hash: of `to`)
//   deleted:    name reason time
//   published:  name time duration_ms
// and every line: seq (1, 2, ... in file order) and prev (the link hash of the line before; "" on
// the first line).
struct ManifestRecord {
  uint64_t seq = 0;
  ManifestEvent event = ManifestEvent::Closed;
  std::string name;  // segment path relative to the archive dir
  uint64_t size = 0;
  std::string hash;    // "xxh3:HEX", "sha256:HEX"; "" with hash: none
  std::string opened;  // closed: UTC times, 2026-12-02T14:00:00.123Z
  std::string closed;
  std::string time;  // compressed, deleted, published
  std::string peer;  // closed, per-connection chains
  uint64_t conn = 0;
  std::optional<uint64_t> lines;  // closed, line-framed chains
  std::string origin;             // closed: "recovered" (an .open file at start), "adopted"
  std::string to;                 // compressed: the compressed file
  std::string reason;             // deleted: max_age | max_files | max_bytes
  uint64_t duration_ms = 0;       // published
  std::string prev;
};

// The line for `r` (no newline). Names are JSON-escaped.
std::string formatRecord(const ManifestRecord& r);
// Parses one line (without its newline). On failure returns nullopt and says why in `error`.
std::optional<ManifestRecord> parseRecord(std::string_view line, std::string& error);

// A UTC timestamp with milliseconds, as the manifest writes them.
std::string manifestTime(int64_t unix_ms);
int64_t nowUnixMs();

// Incremental hashing with one of the manifest's algorithms; finish() gives "ALG:HEX", or "" for
// ManifestHash::None.
class Hasher {
 public:
  explicit Hasher(ManifestHash alg);
  ~Hasher();
  Hasher(const Hasher&) = delete;
  Hasher& operator=(const Hasher&) = delete;
  void update(const void* data, size_t n);
  std::string finish();

 private:
  ManifestHash alg_;
  void* state_ = nullptr;  // EVP_MD_CTX* or XXH3_state_t*
};

// The algorithm a tagged hash ("xxh3:..." / "sha256:...") was made with; None for "" or unknown.
ManifestHash hashAlgOf(std::string_view tagged);
// The link hash of a manifest line: its algorithm is the manifest's, xxh3 with hash: none (the
// chain must still show a removed line).
std::string linkHash(ManifestHash alg, std::string_view line);

struct FileDigest {
  int err = 0;          // errno of open/read
  uint64_t size = 0;    // bytes read (at most `limit`)
  bool longer = false;  // the file has more than `limit` bytes
  std::string hash;
  uint64_t lines = 0;  // '\n' seen, when asked for
};
// Reads `rel` below dir_fd once, sequentially (through the page cache), hashing at most `limit`
// bytes and finding out whether there are more; counts newlines when `count_lines`. With
// ManifestHash::None (and no lines to count) it only looks at the file's size.
FileDigest hashFile(int dir_fd, const std::string& rel, ManifestHash alg,
                    uint64_t limit = UINT64_MAX, bool count_lines = false);

// What a manifest says exists now, replayed line by line (the writer at start and `verify`).
struct ManifestEntry {
  uint64_t size = 0;
  std::string hash;
  uint64_t line = 0;  // the line that recorded it
  bool published = false;
};
class ManifestState {
 public:
  // Applies one record. Returns "" or a problem (a record about a file the manifest does not hold).
  std::string apply(const ManifestRecord& r, uint64_t line);
  const std::map<std::string, ManifestEntry>& live() const { return live_; }
  // Names recorded once and no longer live (deleted, or replaced by compression): the line saying
  // so.
  const std::map<std::string, uint64_t>& gone() const { return gone_; }

 private:
  std::map<std::string, ManifestEntry> live_;
  std::map<std::string, uint64_t> gone_;
};

// The daemon's side: appends, and the little it must remember between them. Its memory does not
// grow with the archive: it keeps the segments not yet published (only with on_publish, for its
// queue and retain.require_published) and, for the start that creates the manifest, the names
// it adopted.
class Manifest {
 public:
  // `track_published`: remember which live segments lack a `published` record.
  Manifest(std::string route, ManifestHash alg, bool fsync, bool track_published = false);
  Manifest(const Manifest&) = delete;
  Manifest& operator=(const Manifest&) = delete;

  // Opens (creating .spliced/ and the file when missing) below dir_fd and replays it. A line cut by
  // a crash at the end is logged and truncated away (its bytes go to `cut`, for the caller to redo
  // its event); returns "" or what failed. `created` tells whether the manifest did not exist.
  std::string open(int dir_fd, bool& created, std::string& cut);
  bool isOpen() const;
  // Appends `r` (seq and prev filled in here). Returns 0 or an errno (logged by the caller).
  int append(ManifestRecord r);
  // With track_published: `name` is live and has no `published` record yet.
  bool unpublished(const std::string& name) const;
  // With track_published: the live segments without a published record, in manifest order.
  std::vector<std::string> unpublished() const;
  // Adoption (a manifest created where segments already were): remembered until the next open, so
  // that a segment closed meanwhile is not recorded twice.
  void noteAdopted(const std::string& name);
  bool adopted(const std::string& name) const;

 private:
  // Replay and append: what the unpublished set learns from one record.
  void track(const ManifestRecord& r, uint64_t line);

  const std::string route_;
  const ManifestHash alg_;
  const bool fsync_;
  const bool track_published_;
  mutable std::mutex mu_;
  UniqueFd fd_;
  uint64_t seq_ = 0;
  std::string last_link_;
  std::map<std::string, uint64_t> unpublished_;  // name -> the line that made it live
  std::set<std::string> adopted_;
};

}  // namespace spliced
