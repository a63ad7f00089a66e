#pragma once
// Reading an archive dir back: a segment's name parsed with the route's name template (route,
// peer, conn, seq, pid, open time), the segments grouped into chains and put in reading order.
// Pure apart from listArchive(), which walks a directory. No state is kept between calls.
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "spliced/core/fd.hpp"
#include "spliced/core/units.hpp"

namespace spliced::cli {

// What a segment's name says about it; a field is empty when the template does not hold it.
struct SegmentName {
  std::optional<std::string> route;
  std::optional<std::string> peer;  // file-safe form: ':' of IPv6 written '_'
  std::optional<uint16_t> peer_port;
  std::optional<uint64_t> conn;
  std::optional<uint64_t> seq;
  std::optional<int64_t> pid;
  std::optional<int64_t> opened;  // open time, unix seconds, from the strftime codes
  int suffix = 0;                 // the numeric suffix added when the name was taken (0: none)
};

// A name template read backwards: matches a segment's relative path (its suffixes .open, .zst,
// .gz, .unsynced removed) and returns the values the template put there.
class NameParser {
 public:
  // `text` is a template NameTemplate::compile accepted. `localtime`: the strftime codes are in
  // local time (the route's `localtime: true`), else UTC.
  NameParser(std::string_view text, bool localtime);
  ~NameParser();
  NameParser(NameParser&&) noexcept;
  NameParser& operator=(NameParser&&) noexcept;
  NameParser(const NameParser&) = delete;
  NameParser& operator=(const NameParser&) = delete;

  // The values in `stem` (a relative path without spliced's suffixes), or nothing when the name
  // does not follow the template. A numeric suffix (".k" before the extension) is recognised.
  std::optional<SegmentName> parse(std::string_view stem) const;
  const std::string& text() const { return text_; }

 private:
  struct Impl;
  std::optional<SegmentName> parseExact(std::string_view stem) const;
  std::string text_;
  std::unique_ptr<Impl> impl_;
};

// How a segment is stored.
enum class SegmentForm { Open, Plain, Unsynced, Zstd, Gzip };

// `rel` without the suffix spliced adds (.open, .unsynced, .zst, .gz), and which one it was.
// Returns false for names that are not segments (a .tmp file, a dot-name).
bool splitSegmentName(std::string_view rel, std::string& stem, SegmentForm& form);

// A segment's file opened for reading, by its stem: the form asked for first, then whatever form
// it has now (.open, plain, .unsynced, .zst, .gz; it may have been renamed or compressed since
// it was listed). `fd` is invalid when no form exists; `err` is then the errno (ENOENT: gone).
struct OpenedSegment {
  UniqueFd fd;
  SegmentForm form = SegmentForm::Plain;
  std::string rel;
  int err = 0;
};
OpenedSegment openSegment(int dir_fd, const std::string& stem, SegmentForm first);
// The suffix of a form ("" for plain).
std::string_view formSuffix(SegmentForm form);

// The parsers of one archive: the route's template (or, for a bare DIR, both defaults) and the
// fixed name of rescue segments (rescue/ROUTE-CONN-STAMP-SEQ.log).
class ArchiveNames {
 public:
  // `templates`: tried in order.
  ArchiveNames(const std::vector<std::string>& templates, bool localtime);
  // The first parser that matches, or nothing.
  std::optional<SegmentName> parse(std::string_view stem) const;
  // The templates tried (for messages).
  std::string describe() const;

 private:
  std::vector<NameParser> parsers_;
};

// One file of the archive.
struct SegmentFile {
  std::string rel;   // as found (with its suffix)
  std::string stem;  // without it
  SegmentForm form = SegmentForm::Plain;
  std::optional<SegmentName> name;  // empty: the name follows no template
  int64_t mtime_ns = 0;
  uint64_t size = 0;
};

// Every segment below `dir_fd`; `problems` gets one message per directory that could not be read.
std::vector<SegmentFile> listArchive(int dir_fd, const ArchiveNames& names,
                                     std::vector<std::string>& problems);

// A chain: the segments of one connection (per_connection) or of one route (shared), in order.
struct Chain {
  std::optional<std::string> route;
  std::optional<uint64_t> conn;
  std::optional<std::string> peer;
  std::vector<SegmentFile> segments;
  int64_t start_ns = 0;  // its first segment's open time (from the name, else its mtime)
};

// Groups `files` into chains and orders them: within a chain by {seq} (when the same chain key
// appears in several runs of the daemon, by modification time and then {seq}); chains by their
// first segment's open time, then conn, then name. A file whose name follows no template is a
// chain of its own. The same stem in several forms (a race with compression) is kept once.
std::vector<Chain> buildChains(std::vector<SegmentFile> files);

// The key that puts segments of one chain together: route, conn and pid when the name has a
// conn, else route, peer, peer port and pid. Unparsed names have no key.
std::optional<std::string> chainKey(const SegmentName& n);

// A segment's open time in ns: from its name when the name carries a time, else `mtime_ns`.
int64_t segmentStartNs(const SegmentFile& f);

// The selection asked for on the command line.
struct Selection {
  std::optional<int64_t> since_ns;
  std::optional<int64_t> until_ns;
  std::optional<std::string> peer;  // file-safe form
  std::optional<uint64_t> conn;
};
// True when the chain may be shown at all (--peer, --conn).
bool chainSelected(const Chain& c, const Selection& sel);
// True when the segment's span [open time, last modification] meets [since, until]. An open
// segment's span reaches now.
bool segmentSelected(const SegmentFile& f, const Selection& sel);

// "2026-12-02T14:00:00Z", "2026-12-02T15:00:00.5+01:00", "2026-12-02" (midnight UTC) or unix
// seconds ("1764684000", "1764684000.25"): unix ns, or a message.
Parsed<int64_t> parseTimeArg(std::string_view text);
// An IP as a segment name writes it ("::1" -> "__1").
std::string fileSafePeer(std::string_view ip);

}  // namespace spliced::cli
