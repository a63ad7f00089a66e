#include "spliced/cli/segment_index.hpp"

#include <fcntl.h>
#include <sys/stat.h>

#include <fmt/format.h>
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <ctime>
#include <map>

#include "spliced/archive/segment_files.hpp"

namespace spliced::cli {
namespace {

enum class Field {
  None,
  Year,
  Year2,
  Century,
  Month,
  Day,
  Hour,
  Hour12,
  AmPm,
  Minute,
  Second,
  YDay,
  Epoch,
  Route,
  Peer,
  PeerPort,
  Conn,
  Seq,
  Pid,
};

enum class CharClass { Digit, DigitOrSpace, Alpha, RouteChar, PeerChar, ZoneChar, SignedDigit };

bool inClass(CharClass cls, char c, size_t index) {
  const auto u = static_cast<unsigned char>(c);
  switch (cls) {
    case CharClass::Digit:
      return std::isdigit(u) != 0;
    case CharClass::DigitOrSpace:
      return std::isdigit(u) != 0 || (c == ' ' && index == 0);
    case CharClass::Alpha:
      return std::isalpha(u) != 0;
    case CharClass::RouteChar:
      return std::isalnum(u) != 0 || c == '_' || c == '-';
    case CharClass::PeerChar:
      return std::isalnum(u) != 0 || c == '.' || c == '_';
    case CharClass::ZoneChar:
      return std::isalnum(u) != 0 || c == '+' || c == '-';
    case CharClass::SignedDigit:
      return std::isdigit(u) != 0 || ((c == '-' || c == '+') && index == 0);
  }
  return false;
}

}  // namespace

struct NameParser::Impl {
  struct Token {
    bool literal = false;
    char c = 0;
    Field field = Field::None;
    CharClass cls = CharClass::Digit;
    size_t min = 1;
    size_t max = 1;
  };
  std::vector<Token> tokens;
  bool localtime = false;

  void lit(char c) { tokens.push_back({true, c, Field::None, CharClass::Digit, 1, 1}); }
  void var(Field f, CharClass cls, size_t min, size_t max) {
    tokens.push_back({false, 0, f, cls, min, max});
  }
  void code(char c) {
    switch (c) {
      case 'Y':
        return var(Field::Year, CharClass::Digit, 4, 4);
      case 'G':
        return var(Field::None, CharClass::Digit, 4, 4);
      case 'y':
        return var(Field::Year2, CharClass::Digit, 2, 2);
      case 'C':
        return var(Field::Century, CharClass::Digit, 2, 2);
      case 'm':
        return var(Field::Month, CharClass::Digit, 2, 2);
      case 'd':
        return var(Field::Day, CharClass::Digit, 2, 2);
      case 'e':
        return var(Field::Day, CharClass::DigitOrSpace, 2, 2);
      case 'H':
        return var(Field::Hour, CharClass::Digit, 2, 2);
      case 'I':
        return var(Field::Hour12, CharClass::Digit, 2, 2);
      case 'M':
        return var(Field::Minute, CharClass::Digit, 2, 2);
      case 'S':
        return var(Field::Second, CharClass::Digit, 2, 2);
      case 'j':
        return var(Field::YDay, CharClass::Digit, 3, 3);
      case 's':
        return var(Field::Epoch, CharClass::SignedDigit, 1, 20);
      case 'p':
        return var(Field::AmPm, CharClass::Alpha, 2, 2);
      case 'a':
      case 'b':
      case 'h':
        return var(Field::None, CharClass::Alpha, 3, 3);
      case 'A':
      case 'B':
        return var(Field::None, CharClass::Alpha, 3, 9);
      case 'u':
      case 'w':
        return var(Field::None, CharClass::Digit, 1, 1);
      case 'z':
        return var(Field::None, CharClass::SignedDigit, 5, 5);
      case 'Z':
        return var(Field::None, CharClass::ZoneChar, 1, 16);
      case 'F':
        code('Y'), lit('-'), code('m'), lit('-'), code('d');
        return;
      case 'T':
        code('H'), lit(':'), code('M'), lit(':'), code('S');
        return;
      case 'D':
        code('m'), lit('/'), code('d'), lit('/'), code('y');
        return;
      case '%':
        return lit('%');
      default:  // g U V W: two digits
        return var(Field::None, CharClass::Digit, 2, 2);
    }
  }

  // Backtracking match of tokens[ti..] against s[si..]; caps[ti] is set on the way down, so on
  // success it holds the path that matched. `steps` bounds the work on pathological templates.
  bool match(std::string_view s, size_t ti, size_t si, std::vector<std::string_view>& caps,
             size_t& steps) const {
    if (++steps > 100000) return false;
    if (ti == tokens.size()) return si == s.size();
    const Token& t = tokens[ti];
    if (t.literal) return si < s.size() && s[si] == t.c && match(s, ti + 1, si + 1, caps, steps);
    size_t run = 0;
    while (run < t.max && si + run < s.size() && inClass(t.cls, s[si + run], run)) ++run;
    for (size_t len = run; len >= t.min && len > 0; --len) {
      caps[ti] = s.substr(si, len);
      if (match(s, ti + 1, si + len, caps, steps)) return true;
    }
    return false;
  }
};

NameParser::NameParser(std::string_view text, bool localtime)
    : text_(text), impl_(std::make_unique<Impl>()) {
  impl_->localtime = localtime;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '%' && i + 1 < text.size()) {
      char code = text[++i];
      if ((code == 'E' || code == 'O') && i + 1 < text.size()) code = text[++i];
      impl_->code(code);
    } else if (c == '{') {
      size_t close = text.find('}', i);
      if (close == std::string_view::npos) close = text.size();
      std::string_view ph = text.substr(i + 1, close - i - 1);
      if (ph == "route") {
        impl_->var(Field::Route, CharClass::RouteChar, 1, 64);
      } else if (ph == "peer") {
        impl_->var(Field::Peer, CharClass::PeerChar, 1, 39);
      } else if (ph == "peer_port") {
        impl_->var(Field::PeerPort, CharClass::Digit, 1, 5);
      } else if (ph == "conn") {
        impl_->var(Field::Conn, CharClass::Digit, 1, 20);
      } else if (ph == "seq") {
        impl_->var(Field::Seq, CharClass::Digit, 1, 20);
      } else {
        impl_->var(Field::Pid, CharClass::Digit, 1, 10);
      }
      i = close;
    } else {
      impl_->lit(c);
    }
  }
}

NameParser::~NameParser() = default;
NameParser::NameParser(NameParser&&) noexcept = default;
NameParser& NameParser::operator=(NameParser&&) noexcept = default;

namespace {

uint64_t toU64(std::string_view s) {
  uint64_t v = 0;
  for (char c : s) {
    if (c >= '0' && c <= '9') v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  return v;
}

int toInt(std::string_view s) { return static_cast<int>(toU64(s)); }

}  // namespace

std::optional<SegmentName> NameParser::parseExact(std::string_view stem) const {
  std::vector<std::string_view> caps(impl_->tokens.size());
  size_t steps = 0;
  if (!impl_->match(stem, 0, 0, caps, steps)) return std::nullopt;
  SegmentName n;
  std::optional<int> year, year2, century, month, day, hour, hour12, minute, second, yday;
  std::optional<int64_t> epoch;
  bool pm = false;
  for (size_t i = 0; i < caps.size(); ++i) {
    const auto& t = impl_->tokens[i];
    std::string_view v = caps[i];
    switch (t.field) {
      case Field::None:
        break;
      case Field::Year:
        year = toInt(v);
        break;
      case Field::Year2:
        year2 = toInt(v);
        break;
      case Field::Century:
        century = toInt(v);
        break;
      case Field::Month:
        month = toInt(v);
        break;
      case Field::Day:
        day = toInt(v);
        break;
      case Field::Hour:
        hour = toInt(v);
        break;
      case Field::Hour12:
        hour12 = toInt(v);
        break;
      case Field::AmPm:
        pm = v == "PM" || v == "pm";
        break;
      case Field::Minute:
        minute = toInt(v);
        break;
      case Field::Second:
        second = toInt(v);
        break;
      case Field::YDay:
        yday = toInt(v);
        break;
      case Field::Epoch:
        epoch = v.front() == '-' ? -static_cast<int64_t>(toU64(v.substr(1)))
                                 : static_cast<int64_t>(toU64(v));
        break;
      case Field::Route:
        n.route = std::string(v);
        break;
      case Field::Peer:
        n.peer = std::string(v);
        break;
      case Field::PeerPort:
        n.peer_port = static_cast<uint16_t>(toU64(v));
        break;
      case Field::Conn:
        n.conn = toU64(v);
        break;
      case Field::Seq:
        n.seq = toU64(v);
        break;
      case Field::Pid:
        n.pid = static_cast<int64_t>(toU64(v));
        break;
    }
  }
  if (epoch) {
    n.opened = *epoch;
  } else if (year || year2) {
    std::tm tm{};
    int y = year ? *year : (century ? *century * 100 : (*year2 < 69 ? 2000 : 1900)) + *year2;
    tm.tm_year = y - 1900;
    if (month || day || !yday) {
      tm.tm_mon = month ? *month - 1 : 0;
      tm.tm_mday = day ? *day : 1;
    } else {
      tm.tm_mon = 0;
      tm.tm_mday = *yday;  // timegm/mktime normalise day 32 of January into February 1st
    }
    tm.tm_hour = hour ? *hour : (hour12 ? (*hour12 % 12) + (pm ? 12 : 0) : 0);
    tm.tm_min = minute.value_or(0);
    tm.tm_sec = second.value_or(0);
    if (impl_->localtime) {
      tm.tm_isdst = -1;
      n.opened = static_cast<int64_t>(std::mktime(&tm));
    } else {
      n.opened = static_cast<int64_t>(::timegm(&tm));
    }
  }
  return n;
}

std::optional<SegmentName> NameParser::parse(std::string_view stem) const {
  if (auto n = parseExact(stem)) return n;
  // withNumericSuffix: "dir/name.K.ext" or "dir/name.K".
  size_t base = stem.rfind('/');
  base = base == std::string_view::npos ? 0 : base + 1;
  auto allDigits = [](std::string_view s) {
    return !s.empty() &&
           std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
  };
  size_t dot = stem.rfind('.');
  if (dot == std::string_view::npos || dot <= base) return std::nullopt;
  // "name.K" (no extension).
  if (allDigits(stem.substr(dot + 1))) {
    if (auto n = parseExact(stem.substr(0, dot))) {
      n->suffix = toInt(stem.substr(dot + 1));
      return n;
    }
  }
  size_t prev = stem.rfind('.', dot - 1);
  if (prev != std::string_view::npos && prev > base &&
      allDigits(stem.substr(prev + 1, dot - prev - 1))) {
    std::string joined(stem.substr(0, prev));
    joined += stem.substr(dot);
    if (auto n = parseExact(joined)) {
      n->suffix = toInt(stem.substr(prev + 1, dot - prev - 1));
      return n;
    }
  }
  return std::nullopt;
}

bool splitSegmentName(std::string_view rel, std::string& stem, SegmentForm& form) {
  if (!isClosedSegmentName(rel) && !isOpenName(rel)) return false;
  if (isTmpName(rel) || rel.empty() || rel.front() == '.' ||
      rel.find("/.") != std::string_view::npos) {
    return false;
  }
  auto cut = [&](std::string_view suffix, SegmentForm f) {
    if (!rel.ends_with(suffix) || rel.size() == suffix.size()) return false;
    stem = std::string(rel.substr(0, rel.size() - suffix.size()));
    form = f;
    return true;
  };
  if (cut(kOpenSuffix, SegmentForm::Open) || cut(kZstdSuffix, SegmentForm::Zstd) ||
      cut(kGzipSuffix, SegmentForm::Gzip) || cut(kUnsyncedSuffix, SegmentForm::Unsynced)) {
    return true;
  }
  stem = std::string(rel);
  form = SegmentForm::Plain;
  return true;
}

std::string_view formSuffix(SegmentForm form) {
  switch (form) {
    case SegmentForm::Open:
      return kOpenSuffix;
    case SegmentForm::Unsynced:
      return kUnsyncedSuffix;
    case SegmentForm::Zstd:
      return kZstdSuffix;
    case SegmentForm::Gzip:
      return kGzipSuffix;
    case SegmentForm::Plain:
      break;
  }
  return {};
}

OpenedSegment openSegment(int dir_fd, const std::string& stem, SegmentForm first) {
  OpenedSegment out;
  out.err = ENOENT;
  // The order a segment moves through: open, closed, compressed. Each step makes the next name
  // before it removes the last, so trying them in this order cannot miss a segment that exists.
  const SegmentForm order[] = {first,
                               SegmentForm::Open,
                               SegmentForm::Plain,
                               SegmentForm::Unsynced,
                               SegmentForm::Zstd,
                               SegmentForm::Gzip};
  for (SegmentForm f : order) {
    std::string rel = stem + std::string(formSuffix(f));
    int fd = ::openat(dir_fd, rel.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd >= 0) {
      out.fd.reset(fd);
      out.form = f;
      out.rel = std::move(rel);
      out.err = 0;
      return out;
    }
    if (errno != ENOENT) out.err = errno;
  }
  return out;
}

ArchiveNames::ArchiveNames(const std::vector<std::string>& templates, bool localtime) {
  for (const auto& t : templates) parsers_.emplace_back(t, localtime);
  // The fixed name of rescue segments (archive/segment_chain.cpp); always UTC.
  parsers_.emplace_back("rescue/{route}-{conn}-%Y%m%dT%H%M%SZ-{seq}.log", false);
}

std::optional<SegmentName> ArchiveNames::parse(std::string_view stem) const {
  for (const auto& p : parsers_) {
    if (auto n = p.parse(stem)) return n;
  }
  return std::nullopt;
}

std::string ArchiveNames::describe() const {
  std::string out;
  for (size_t i = 0; i + 1 < parsers_.size(); ++i) {
    if (!out.empty()) out += " or ";
    out += "'" + parsers_[i].text() + "'";
  }
  return out;
}

std::vector<SegmentFile> listArchive(int dir_fd, const ArchiveNames& names,
                                     std::vector<std::string>& problems) {
  std::vector<SegmentFile> files;
  auto errors = walkArchive(dir_fd, [&](const std::string& rel, const struct stat& st) {
    SegmentFile f;
    if (!splitSegmentName(rel, f.stem, f.form)) return;
    f.rel = rel;
    f.name = names.parse(f.stem);
    f.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
    f.size = static_cast<uint64_t>(st.st_size);
    files.push_back(std::move(f));
  });
  for (auto& e : errors) problems.push_back(std::move(e));
  return files;
}

std::optional<std::string> chainKey(const SegmentName& n) {
  const std::string route = n.route.value_or("");
  const std::string pid = n.pid ? std::to_string(*n.pid) : "";
  if (n.conn) return fmt::format("{}\n{}\nconn\n{}", route, pid, *n.conn);
  return fmt::format("{}\n{}\npeer\n{}\n{}", route, pid, n.peer.value_or(""),
                     n.peer_port ? std::to_string(*n.peer_port) : "");
}

int64_t segmentStartNs(const SegmentFile& f) {
  if (f.name && f.name->opened) return *f.name->opened * 1000000000;
  return f.mtime_ns;
}

namespace {

// The better of two forms of one stem: plain beats compressed (cheaper to read), open beats
// compressed too (a listing racing a rename can see both).
int formRank(SegmentForm f) {
  switch (f) {
    case SegmentForm::Plain:
    case SegmentForm::Unsynced:
      return 0;
    case SegmentForm::Open:
      return 1;
    case SegmentForm::Zstd:
    case SegmentForm::Gzip:
      return 2;
  }
  return 3;
}

Chain makeChain(std::vector<SegmentFile> segs) {
  Chain c;
  for (const auto& s : segs) {
    if (!s.name) continue;
    if (!c.route && s.name->route) c.route = s.name->route;
    if (!c.conn && s.name->conn) c.conn = s.name->conn;
    if (!c.peer && s.name->peer) c.peer = s.name->peer;
  }
  c.start_ns = segs.empty() ? 0 : segmentStartNs(segs.front());
  c.segments = std::move(segs);
  return c;
}

}  // namespace

std::vector<Chain> buildChains(std::vector<SegmentFile> files) {
  // One entry per stem.
  std::map<std::string, SegmentFile> by_stem;
  for (auto& f : files) {
    auto it = by_stem.find(f.stem);
    if (it == by_stem.end()) {
      std::string key = f.stem;
      by_stem.emplace(std::move(key), std::move(f));
    } else if (formRank(f.form) < formRank(it->second.form)) {
      it->second = std::move(f);
    }
  }
  std::map<std::string, std::vector<SegmentFile>> groups;
  std::vector<Chain> chains;
  for (auto& [stem, f] : by_stem) {
    if (!f.name) {
      std::vector<SegmentFile> one;
      one.push_back(std::move(f));
      chains.push_back(makeChain(std::move(one)));
      continue;
    }
    groups[*chainKey(*f.name)].push_back(std::move(f));
  }
  for (auto& [key, segs] : groups) {
    bool unique_seqs = true;
    {
      std::vector<uint64_t> seqs;
      for (const auto& s : segs) {
        if (!s.name->seq) {
          unique_seqs = false;
          break;
        }
        seqs.push_back(*s.name->seq);
      }
      std::sort(seqs.begin(), seqs.end());
      if (std::adjacent_find(seqs.begin(), seqs.end()) != seqs.end()) unique_seqs = false;
    }
    if (unique_seqs) {
      std::sort(segs.begin(), segs.end(), [](const SegmentFile& a, const SegmentFile& b) {
        return *a.name->seq < *b.name->seq;
      });
      chains.push_back(makeChain(std::move(segs)));
      continue;
    }
    // Several runs of the daemon (connection ids restart), or a template without {seq}: by
    // modification time, and a new chain wherever {seq} does not go up.
    std::sort(segs.begin(), segs.end(), [](const SegmentFile& a, const SegmentFile& b) {
      auto ka = std::make_tuple(a.form == SegmentForm::Open, a.mtime_ns, a.name->seq.value_or(0),
                                a.name->suffix, a.stem);
      auto kb = std::make_tuple(b.form == SegmentForm::Open, b.mtime_ns, b.name->seq.value_or(0),
                                b.name->suffix, b.stem);
      return ka < kb;
    });
    std::vector<SegmentFile> run;
    for (auto& s : segs) {
      if (!run.empty() && s.name->seq && run.back().name->seq &&
          *s.name->seq <= *run.back().name->seq) {
        chains.push_back(makeChain(std::move(run)));
        run.clear();
      }
      run.push_back(std::move(s));
    }
    if (!run.empty()) chains.push_back(makeChain(std::move(run)));
  }
  std::sort(chains.begin(), chains.end(), [](const Chain& a, const Chain& b) {
    return std::make_tuple(a.start_ns, a.conn.value_or(0), a.segments.front().stem) <
           std::make_tuple(b.start_ns, b.conn.value_or(0), b.segments.front().stem);
  });
  return chains;
}

bool chainSelected(const Chain& c, const Selection& sel) {
  if (sel.conn && c.conn != sel.conn) return false;
  if (sel.peer && c.peer != sel.peer) return false;
  return true;
}

bool segmentSelected(const SegmentFile& f, const Selection& sel) {
  const bool timed = f.name && f.name->opened;
  const int64_t start = timed ? *f.name->opened * 1000000000 : f.mtime_ns;
  const int64_t end = f.form == SegmentForm::Open ? INT64_MAX : f.mtime_ns;
  if (sel.since_ns && end < *sel.since_ns) return false;
  if (sel.until_ns && start > *sel.until_ns) return false;
  return true;
}

namespace {

// Times are kept as int64 nanoseconds: about 292 years either side of 1970.
constexpr int64_t kMaxSeconds = INT64_MAX / 1000000000 - 1;

bool digits(std::string_view s, size_t pos, size_t n, int& out) {
  if (pos + n > s.size()) return false;
  out = 0;
  for (size_t i = pos; i < pos + n; ++i) {
    if (s[i] < '0' || s[i] > '9') return false;
    out = out * 10 + (s[i] - '0');
  }
  return true;
}

// ".123" at `pos` as ns; moves pos past it.
int64_t fraction(std::string_view s, size_t& pos) {
  int64_t ns = 0;
  if (pos < s.size() && s[pos] == '.') {
    ++pos;
    int64_t scale = 100000000;
    while (pos < s.size() && s[pos] >= '0' && s[pos] <= '9') {
      ns += (s[pos] - '0') * scale;
      scale /= 10;
      ++pos;
    }
  }
  return ns;
}

}  // namespace

Parsed<int64_t> parseTimeArg(std::string_view text) {
  const std::string bad = fmt::format(
      "'{}' is not a time: give RFC 3339 (2026-12-02T14:00:00Z, 2026-12-02T15:00:00+01:00), a "
      "date (2026-12-02, midnight UTC) or unix seconds (1764684000)",
      text);
  if (text.empty()) return {Fail{bad}};
  if (std::isdigit(static_cast<unsigned char>(text.front())) != 0 &&
      text.find('-') == std::string_view::npos) {
    size_t pos = 0;
    int64_t secs = 0;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
      if (secs > INT64_MAX / 10000000000) return {Fail{bad}};
      secs = secs * 10 + (text[pos++] - '0');
    }
    int64_t ns = fraction(text, pos);
    if (pos != text.size()) return {Fail{bad}};
    if (secs > kMaxSeconds) return {Fail{fmt::format("'{}' is out of range", text)}};
    return {secs * 1000000000 + ns};
  }
  std::tm tm{};
  int y = 0, mo = 0, d = 0;
  if (!digits(text, 0, 4, y) || text.size() < 10 || text[4] != '-' || !digits(text, 5, 2, mo) ||
      text[7] != '-' || !digits(text, 8, 2, d) || mo < 1 || mo > 12 || d < 1 || d > 31) {
    return {Fail{bad}};
  }
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = d;
  int64_t ns = 0;
  int64_t offset = 0;
  if (text.size() > 10) {
    int h = 0, mi = 0, s = 0;
    char sep = text[10];
    if ((sep != 'T' && sep != 't' && sep != ' ') || !digits(text, 11, 2, h) || text.size() < 19 ||
        text[13] != ':' || !digits(text, 14, 2, mi) || text[16] != ':' || !digits(text, 17, 2, s) ||
        h > 23 || mi > 59 || s > 60) {
      return {Fail{bad}};
    }
    tm.tm_hour = h;
    tm.tm_min = mi;
    tm.tm_sec = s;
    size_t pos = 19;
    ns = fraction(text, pos);
    if (pos == text.size()) {
      return {Fail{
          fmt::format("'{}' has no time zone: end it with Z or an offset such as +01:00", text)}};
    }
    if (text[pos] == 'Z' || text[pos] == 'z') {
      ++pos;
    } else if (text[pos] == '+' || text[pos] == '-') {
      int oh = 0, om = 0;
      if (!digits(text, pos + 1, 2, oh) || pos + 6 > text.size() || text[pos + 3] != ':' ||
          !digits(text, pos + 4, 2, om)) {
        return {Fail{bad}};
      }
      offset = (oh * 3600 + om * 60) * (text[pos] == '+' ? 1 : -1);
      pos += 6;
    }
    if (pos != text.size()) return {Fail{bad}};
  }
  const int64_t secs = static_cast<int64_t>(::timegm(&tm)) - offset;
  if (secs > kMaxSeconds || secs < -kMaxSeconds) {
    return {Fail{fmt::format("'{}' is out of range (years 1678 to 2262)", text)}};
  }
  return {secs * 1000000000 + ns};
}

std::string fileSafePeer(std::string_view ip) {
  std::string out;
  out.reserve(ip.size());
  for (char c : ip) {
    out += c == ':' ? '_' : static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

}  // namespace spliced::cli
