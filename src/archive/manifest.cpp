#include "spliced/archive/manifest.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <fmt/format.h>
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <memory>

#include "spliced/archive/segment_files.hpp"

namespace spliced {

const char* toString(ManifestEvent e) {
  switch (e) {
    case ManifestEvent::Closed:
      return "closed";
    case ManifestEvent::Compressed:
      return "compressed";
    case ManifestEvent::Deleted:
      return "deleted";
    case ManifestEvent::Published:
      return "published";
  }
  return "?";
}

namespace {

void appendJsonString(std::string& out, std::string_view s) {
  out += '"';
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20) {
      out += fmt::format("\\u{:04x}", u);
    } else {
      out += c;
    }
  }
  out += '"';
}

void member(std::string& out, std::string_view key, std::string_view value) {
  out += ',';
  appendJsonString(out, key);
  out += ':';
  appendJsonString(out, value);
}

void member(std::string& out, std::string_view key, uint64_t value) {
  out += fmt::format(",\"{}\":{}", key, value);
}

// A flat JSON object of string and unsigned integer members: what the manifest writes.
class FlatObject {
 public:
  explicit FlatObject(std::string_view in) : in_(in) {}

  bool parse(std::string& error) {
    skipSpace();
    if (!eat('{')) return fail(error, "expected '{'");
    skipSpace();
    if (eat('}')) return atEnd(error);
    while (true) {
      skipSpace();
      std::string key;
      if (!string(key)) return fail(error, "expected a member name");
      skipSpace();
      if (!eat(':')) return fail(error, "expected ':' after \"" + key + "\"");
      skipSpace();
      Value v;
      if (pos_ < in_.size() && in_[pos_] == '"') {
        if (!string(v.text)) return fail(error, "bad string for \"" + key + "\"");
        v.is_string = true;
      } else if (!number(v.number)) {
        return fail(error, "expected a string or an unsigned integer for \"" + key + "\"");
      }
      if (!values_.emplace(key, std::move(v)).second) {
        return fail(error, "member \"" + key + "\" appears twice");
      }
      skipSpace();
      if (eat(',')) continue;
      if (eat('}')) return atEnd(error);
      return fail(error, "expected ',' or '}'");
    }
  }

  struct Value {
    bool is_string = false;
    std::string text;
    uint64_t number = 0;
  };
  const Value* get(const std::string& key) const {
    auto it = values_.find(key);
    return it == values_.end() ? nullptr : &it->second;
  }
  const std::map<std::string, Value>& values() const { return values_; }

 private:
  bool atEnd(std::string& error) {
    skipSpace();
    if (pos_ != in_.size()) return fail(error, "trailing bytes after the object");
    return true;
  }
  bool fail(std::string& error, const std::string& what) {
    error = fmt::format("{} at byte {}", what, pos_ + 1);
    return false;
  }
  void skipSpace() {
    while (pos_ < in_.size() && (in_[pos_] == ' ' || in_[pos_] == '\t')) ++pos_;
  }
  bool eat(char c) {
    if (pos_ < in_.size() && in_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  static int hexValue(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  bool string(std::string& out) {
    if (!eat('"')) return false;
    while (pos_ < in_.size()) {
      char c = in_[pos_++];
      if (c == '"') return true;
      if (static_cast<unsigned char>(c) < 0x20) return false;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= in_.size()) return false;
      char e = in_[pos_++];
      switch (e) {
        case '"':
        case '\\':
        case '/':
          out += e;
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          if (pos_ + 4 > in_.size()) return false;
          unsigned cp = 0;
          for (int i = 0; i < 4; ++i) {
            int h = hexValue(in_[pos_++]);
            if (h < 0) return false;
            cp = cp * 16 + static_cast<unsigned>(h);
          }
          // The writer escapes only control characters; other code points are kept as UTF-8.
          if (cp < 0x80) {
            out += static_cast<char>(cp);
          } else if (cp < 0x800) {
            out += static_cast<char>(0xc0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3f));
          } else {
            out += static_cast<char>(0xe0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
            out += static_cast<char>(0x80 | (cp & 0x3f));
          }
          break;
        }
        default:
          return false;
      }
    }
    return false;
  }
  bool number(uint64_t& out) {
    size_t start = pos_;
    out = 0;
    while (pos_ < in_.size() && in_[pos_] >= '0' && in_[pos_] <= '9') {
      uint64_t d = static_cast<uint64_t>(in_[pos_] - '0');
      if (out > (UINT64_MAX - d) / 10) return false;
      out = out * 10 + d;
      ++pos_;
    }
    return pos_ > start;
  }

  std::string_view in_;
  size_t pos_ = 0;
  std::map<std::string, Value> values_;
};

std::string toHex(const unsigned char* p, size_t n) {
  static const char* kDigits = "0123456789abcdef";
  std::string out;
  out.reserve(n * 2);
  for (size_t i = 0; i < n; ++i) {
    out += kDigits[p[i] >> 4];
    out += kDigits[p[i] & 15];
  }
  return out;
}

}  // namespace

std::string formatRecord(const ManifestRecord& r) {
  std::string out = fmt::format("{{\"seq\":{}", r.seq);
  member(out, "event", toString(r.event));
  member(out, "name", r.name);
  switch (r.event) {
    case ManifestEvent::Closed:
      member(out, "size", r.size);
      if (!r.hash.empty()) member(out, "hash", r.hash);
      member(out, "opened", r.opened);
      member(out, "closed", r.closed);
      if (!r.peer.empty()) {
        member(out, "peer", r.peer);
        member(out, "conn", r.conn);
      }
      if (r.lines) member(out, "lines", *r.lines);
      if (!r.origin.empty()) member(out, "origin", r.origin);
      break;
    case ManifestEvent::Compressed:
      member(out, "to", r.to);
      member(out, "size", r.size);
      if (!r.hash.empty()) member(out, "hash", r.hash);
      member(out, "time", r.time);
      break;
    case ManifestEvent::Deleted:
      member(out, "reason", r.reason);
      member(out, "time", r.time);
      break;
    case ManifestEvent::Published:
      member(out, "time", r.time);
      member(out, "duration_ms", r.duration_ms);
      break;
  }
  member(out, "prev", r.prev);
  out += '}';
  return out;
}

std::optional<ManifestRecord> parseRecord(std::string_view line, std::string& error) {
  FlatObject obj(line);
  if (!obj.parse(error)) return std::nullopt;
  ManifestRecord r;
  auto str = [&](const char* key, std::string& out, bool required) {
    const FlatObject::Value* v = obj.get(key);
    if (v == nullptr) {
      if (required) error = fmt::format("member \"{}\" is missing", key);
      return !required;
    }
    if (!v->is_string) {
      error = fmt::format("member \"{}\" must be a string", key);
      return false;
    }
    out = v->text;
    return true;
  };
  auto num = [&](const char* key, uint64_t& out, bool required) {
    const FlatObject::Value* v = obj.get(key);
    if (v == nullptr) {
      if (required) error = fmt::format("member \"{}\" is missing", key);
      return !required;
    }
    if (v->is_string) {
      error = fmt::format("member \"{}\" must be an unsigned integer", key);
      return false;
    }
    out = v->number;
    return true;
  };
  std::string event;
  if (!num("seq", r.seq, true) || !str("event", event, true) || !str("name", r.name, true) ||
      !str("prev", r.prev, true)) {
    return std::nullopt;
  }
  if (r.name.empty()) {
    error = "member \"name\" is empty";
    return std::nullopt;
  }
  if (event == "closed") {
    r.event = ManifestEvent::Closed;
    uint64_t lines = 0;
    bool has_lines = obj.get("lines") != nullptr;
    if (!num("size", r.size, true) || !str("hash", r.hash, false) ||
        !str("opened", r.opened, true) || !str("closed", r.closed, true) ||
        !str("peer", r.peer, false) || !num("conn", r.conn, false) || !num("lines", lines, false) ||
        !str("origin", r.origin, false)) {
      return std::nullopt;
    }
    if (has_lines) r.lines = lines;
  } else if (event == "compressed") {
    r.event = ManifestEvent::Compressed;
    if (!str("to", r.to, true) || !num("size", r.size, true) || !str("hash", r.hash, false) ||
        !str("time", r.time, true)) {
      return std::nullopt;
    }
  } else if (event == "deleted") {
    r.event = ManifestEvent::Deleted;
    if (!str("reason", r.reason, true) || !str("time", r.time, true)) return std::nullopt;
  } else if (event == "published") {
    r.event = ManifestEvent::Published;
    if (!str("time", r.time, true) || !num("duration_ms", r.duration_ms, false)) {
      return std::nullopt;
    }
  } else {
    error = fmt::format("unknown event \"{}\"", event);
    return std::nullopt;
  }
  if (!r.hash.empty() && hashAlgOf(r.hash) == ManifestHash::None) {
    error = fmt::format("unknown hash \"{}\"", r.hash);
    return std::nullopt;
  }
  return r;
}

int64_t nowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string manifestTime(int64_t unix_ms) {
  time_t secs = static_cast<time_t>(unix_ms / 1000);
  tm utc{};
  ::gmtime_r(&secs, &utc);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &utc);
  return fmt::format("{}.{:03}Z", stamp, unix_ms % 1000);
}

Hasher::Hasher(ManifestHash alg) : alg_(alg) {
  if (alg_ == ManifestHash::Sha256) {
    EVP_MD_CTX* ctx = EVP_MD_CTX_new();
    EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
    state_ = ctx;
  } else if (alg_ == ManifestHash::Xxh3) {
    XXH3_state_t* st = XXH3_createState();
    XXH3_128bits_reset(st);
    state_ = st;
  }
}

Hasher::~Hasher() {
  if (alg_ == ManifestHash::Sha256) {
    EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(state_));
  } else if (alg_ == ManifestHash::Xxh3) {
    XXH3_freeState(static_cast<XXH3_state_t*>(state_));
  }
}

void Hasher::update(const void* data, size_t n) {
  if (alg_ == ManifestHash::Sha256) {
    EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(state_), data, n);
  } else if (alg_ == ManifestHash::Xxh3) {
    XXH3_128bits_update(static_cast<XXH3_state_t*>(state_), data, n);
  }
}

std::string Hasher::finish() {
  if (alg_ == ManifestHash::Sha256) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(state_), md, &len);
    return "sha256:" + toHex(md, len);
  }
  if (alg_ == ManifestHash::Xxh3) {
    XXH128_hash_t h = XXH3_128bits_digest(static_cast<XXH3_state_t*>(state_));
    XXH128_canonical_t c;
    XXH128_canonicalFromHash(&c, h);
    return "xxh3:" + toHex(c.digest, sizeof c.digest);
  }
  return {};
}

ManifestHash hashAlgOf(std::string_view tagged) {
  if (tagged.rfind("sha256:", 0) == 0) return ManifestHash::Sha256;
  if (tagged.rfind("xxh3:", 0) == 0) return ManifestHash::Xxh3;
  return ManifestHash::None;
}

std::string linkHash(ManifestHash alg, std::string_view line) {
  Hasher h(alg == ManifestHash::None ? ManifestHash::Xxh3 : alg);
  h.update(line.data(), line.size());
  return h.finish();
}

FileDigest hashFile(int dir_fd, const std::string& rel, ManifestHash alg, uint64_t limit,
                    bool count_lines) {
  FileDigest out;
  UniqueFd fd(::openat(dir_fd, rel.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.valid()) {
    out.err = errno;
    return out;
  }
  if (alg == ManifestHash::None && !count_lines) {
    // Nothing to hash: the size is all there is to record or compare.
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) {
      out.err = errno;
      return out;
    }
    const auto size = static_cast<uint64_t>(st.st_size);
    out.size = std::min(size, limit);
    out.longer = size > limit;
    return out;
  }
  ::posix_fadvise(fd.get(), 0, 0, POSIX_FADV_SEQUENTIAL);
  Hasher h(alg);
  constexpr size_t kChunk = 1 << 20;
  std::unique_ptr<char[]> buf(new char[kChunk]);
  while (true) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(kChunk, limit - out.size));
    if (want == 0) {
      char probe;
      ssize_t more = ::pread(fd.get(), &probe, 1, static_cast<off_t>(out.size));
      out.longer = more > 0;
      break;
    }
    ssize_t n = ::read(fd.get(), buf.get(), want);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      out.err = errno;
      return out;
    }
    if (n == 0) break;
    h.update(buf.get(), static_cast<size_t>(n));
    if (count_lines) {
      const char* p = buf.get();
      const char* end = p + n;
      while ((p = static_cast<const char*>(std::memchr(p, '\n', static_cast<size_t>(end - p))))) {
        ++out.lines;
        ++p;
      }
    }
    out.size += static_cast<uint64_t>(n);
  }
  out.hash = h.finish();
  return out;
}

std::string ManifestState::apply(const ManifestRecord& r, uint64_t line) {
  switch (r.event) {
    case ManifestEvent::Closed: {
      bool twice = live_.count(r.name) > 0;
      live_[r.name] = ManifestEntry{r.size, r.hash, line, false};
      gone_.erase(r.name);
      if (twice) return fmt::format("{} is recorded as closed a second time", r.name);
      return {};
    }
    case ManifestEvent::Compressed: {
      auto it = live_.find(r.name);
      std::string problem;
      if (it == live_.end()) {
        problem = fmt::format("compressed record for {}, which the manifest does not hold", r.name);
      }
      bool published = it != live_.end() && it->second.published;
      if (it != live_.end()) live_.erase(it);
      gone_[r.name] = line;
      live_[r.to] = ManifestEntry{r.size, r.hash, line, published};
      gone_.erase(r.to);
      return problem;
    }
    case ManifestEvent::Deleted:
      // Retention may delete a file the manifest never held (a foreign one): recorded all the same.
      live_.erase(r.name);
      gone_[r.name] = line;
      return {};
    case ManifestEvent::Published: {
      auto it = live_.find(r.name);
      if (it == live_.end()) {
        return fmt::format("published record for {}, which the manifest does not hold", r.name);
      }
      it->second.published = true;
      return {};
    }
  }
  return {};
}

Manifest::Manifest(std::string route, ManifestHash alg, bool fsync, bool track_published)
    : route_(std::move(route)), alg_(alg), fsync_(fsync), track_published_(track_published) {}

bool Manifest::isOpen() const {
  std::lock_guard lock(mu_);
  return fd_.valid();
}

void Manifest::track(const ManifestRecord& r, uint64_t line) {
  if (!track_published_) return;
  switch (r.event) {
    case ManifestEvent::Closed:
      unpublished_[r.name] = line;
      break;
    case ManifestEvent::Compressed: {
      auto it = unpublished_.find(r.name);
      if (it == unpublished_.end()) break;  // published already: so is what it became
      unpublished_.erase(it);
      unpublished_[r.to] = line;
      break;
    }
    case ManifestEvent::Deleted:
    case ManifestEvent::Published:
      unpublished_.erase(r.name);
      break;
  }
}

std::string Manifest::open(int dir_fd, bool& created, std::string& cut) {
  std::lock_guard lock(mu_);
  created = false;
  cut.clear();
  fd_.reset();
  seq_ = 0;
  last_link_.clear();
  unpublished_.clear();
  adopted_.clear();
  const std::string state_dir(kStateDirName);
  if (::mkdirat(dir_fd, state_dir.c_str(), 0750) != 0 && errno != EEXIST) {
    return fmt::format("cannot create {}: {}", state_dir, std::strerror(errno));
  }
  const std::string path(kManifestPath);
  UniqueFd fd(::openat(dir_fd, path.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.valid() && errno == ENOENT) {
    fd.reset(
        ::openat(dir_fd, path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0640));
    created = fd.valid();
  }
  if (!fd.valid()) return fmt::format("cannot open {}: {}", path, std::strerror(errno));
  // Replay, in chunks: only the last line's link, the line count and (with on_publish) the
  // unpublished segments are kept.
  std::string pending;  // the bytes after the last '\n' read so far
  uint64_t offset = 0;
  uint64_t line_no = 0;
  char buf[65536];
  while (true) {
    ssize_t n = ::pread(fd.get(), buf, sizeof buf, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fmt::format("cannot read {}: {}", path, std::strerror(errno));
    if (n == 0) break;
    offset += static_cast<uint64_t>(n);
    pending.append(buf, static_cast<size_t>(n));
    size_t pos = 0;
    for (size_t nl; (nl = pending.find('\n', pos)) != std::string::npos; pos = nl + 1) {
      std::string_view line(pending.data() + pos, nl - pos);
      ++line_no;
      std::string error;
      if (auto r = parseRecord(line, error)) {
        track(*r, line_no);
      } else {
        spdlog::error("route={} manifest {} line {}: {} (kept; `spliced verify` reports it)",
                      route_, path, line_no, error);
      }
      last_link_ = linkHash(alg_, line);
    }
    pending.erase(0, pos);
  }
  seq_ = line_no;
  if (!pending.empty()) {
    // A crash cut the last append: the line is incomplete, so its event is not recorded. The
    // caller redoes it from what the cut bytes say.
    const uint64_t whole = offset - pending.size();
    spdlog::warn(
        "route={} manifest {}: removing a line cut by a crash ({} bytes at offset {}: {:.80})",
        route_, path, pending.size(), whole, pending);
    if (::ftruncate(fd.get(), static_cast<off_t>(whole)) != 0) {
      return fmt::format("cannot truncate the cut line of {}: {}", path, std::strerror(errno));
    }
    cut = std::move(pending);
  }
  if (::lseek(fd.get(), 0, SEEK_END) < 0) {
    return fmt::format("cannot seek {}: {}", path, std::strerror(errno));
  }
  fd_ = std::move(fd);
  return {};
}

int Manifest::append(ManifestRecord r) {
  std::lock_guard lock(mu_);
  if (!fd_.valid()) return EBADF;
  r.seq = seq_ + 1;
  r.prev = last_link_;
  std::string line = formatRecord(r);
  std::string data = line + '\n';
  // One write of the whole line at the end: a crash cuts at most this line (open() removes it).
  off_t end = ::lseek(fd_.get(), 0, SEEK_END);
  if (end < 0) return errno;
  size_t done = 0;
  while (done < data.size()) {
    ssize_t w = ::write(fd_.get(), data.data() + done, data.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      int err = w < 0 ? errno : EIO;
      // Never leave half a line behind: the next append would glue onto it.
      if (::ftruncate(fd_.get(), end) != 0) {
        spdlog::error("route={} manifest: cannot remove a partial append: {}", route_,
                      std::strerror(errno));
      }
      return err;
    }
    done += static_cast<size_t>(w);
  }
  if (fsync_ && ::fdatasync(fd_.get()) != 0) return errno;
  ++seq_;
  last_link_ = linkHash(alg_, line);
  track(r, seq_);
  return 0;
}

bool Manifest::unpublished(const std::string& name) const {
  std::lock_guard lock(mu_);
  return unpublished_.count(name) > 0;
}

std::vector<std::string> Manifest::unpublished() const {
  std::lock_guard lock(mu_);
  std::vector<std::pair<uint64_t, std::string>> order;
  for (const auto& [name, line] : unpublished_) order.emplace_back(line, name);
  std::sort(order.begin(), order.end());
  std::vector<std::string> out;
  out.reserve(order.size());
  for (auto& [line, name] : order) out.push_back(std::move(name));
  return out;
}

void Manifest::noteAdopted(const std::string& name) {
  std::lock_guard lock(mu_);
  adopted_.insert(name);
}

bool Manifest::adopted(const std::string& name) const {
  std::lock_guard lock(mu_);
  return adopted_.count(name) > 0;
}

}  // namespace spliced
