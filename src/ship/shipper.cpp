#include "spliced/ship/shipper.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fmt/format.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <tuple>

#include "spliced/archive/retention.hpp"
#include "spliced/archive/segment_files.hpp"
#include "spliced/core/units.hpp"

namespace spliced {
namespace {

constexpr uint64_t kChunk = 4u << 20;     // bytes per sendfile call
constexpr uint64_t kPerTurn = 16u << 20;  // then the loop serves others first
constexpr std::chrono::milliseconds kTick{100};
constexpr std::chrono::milliseconds kFirstRetry{100};
constexpr std::chrono::milliseconds kMaxRetry{5000};
constexpr int64_t kArrivalGranularityMs = 100;

int64_t nowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

bool before(uint64_t id_a, uint64_t off_a, uint64_t id_b, uint64_t off_b) {
  return std::tie(id_a, off_a) < std::tie(id_b, off_b);
}

// NAME.unsynced is the segment NAME whose data sync failed.
std::string baseName(const std::string& rel) {
  constexpr std::string_view kUnsynced = ".unsynced";
  if (rel.size() > kUnsynced.size() && rel.ends_with(kUnsynced)) {
    return rel.substr(0, rel.size() - kUnsynced.size());
  }
  return rel;
}

// Opens a segment to ship by its final name: as published, published .unsynced, or still open.
int openSegment(int dir_fd, const std::string& rel) {
  for (const std::string& name : {rel, rel + ".unsynced", rel + std::string(kOpenSuffix)}) {
    int fd = ::openat(dir_fd, name.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd >= 0 || errno != ENOENT) return fd;
  }
  return -1;
}

}  // namespace

Shipper::Shipper(event_base* base, SysCalls& sys, std::string route, std::string chain,
                 const ForwardConfig& cfg, bool lines, UpstreamPool& pool, ArchiveDir& dir,
                 std::function<void(std::function<void()>)> post,
                 std::function<void(const std::string& rel)> on_shipped, bool per_connection,
                 std::function<void()> on_finished)
    : base_(base),
      sys_(sys),
      route_(std::move(route)),
      chain_(std::move(chain)),
      cfg_(cfg),
      lines_(lines),
      pool_(pool),
      dir_(dir),
      post_(std::move(post)),
      on_shipped_(std::move(on_shipped)),
      per_connection_(per_connection),
      on_finished_(std::move(on_finished)) {
  for (size_t i = 0; i < pool_.upstreams().size(); ++i) {
    metrics_.reconnects.push_back(std::make_unique<std::atomic<uint64_t>>(0));
  }
}

Shipper::~Shipper() { *alive_ = false; }

// ---- what the chain tells (any thread) ----

void Shipper::segmentOpened(const std::string& rel, int fd) {
  // The chain's descriptor is write-only: a new, read-only open of the same file (by its
  // descriptor, so a rename in between changes nothing).
  const std::string self = "/proc/self/fd/" + std::to_string(fd);
  UniqueFd own(::open(self.c_str(), O_RDONLY | O_CLOEXEC));
  if (!own.valid()) {
    // It is opened by name when its turn comes (openSegment).
    spdlog::warn("route={} ship: cannot keep a descriptor of {}: {}; it is reopened by name",
                 route_, rel, std::strerror(errno));
  }
  {
    std::lock_guard lock(mu_);
    Seg s;
    s.id = next_id_++;
    s.rel = rel;
    s.fd = std::move(own);
    names_.insert(rel);
    queue_.push_back(std::move(s));
    journal_names_.push_back(rel);
    if (journal_.valid()) {
      if (int err = appendJournal(journal_.get(), rel)) {
        ++metrics_.cursor_errors;
        spdlog::error(
            "error=storage route={} ship: cannot append {} to the segment journal: {}; a crash "
            "before the next cursor save would leave it unshipped",
            route_, rel, std::strerror(err));
      }
    }
  }
  wake();
}

void Shipper::segmentAppended(uint64_t size) { grew(size, false); }

void Shipper::segmentDone(uint64_t size) { grew(size, true); }

void Shipper::grew(uint64_t size, bool done) {
  {
    std::lock_guard lock(mu_);
    if (queue_.empty() || queue_.back().done) return;
    queue_.back().size = size;
    queue_.back().done = done;
  }
  wake();
}

void Shipper::chainEnded() {
  ended_ = true;
  wake();
}

void Shipper::wake() {
  if (wake_pending_.exchange(true)) return;
  post_([this, alive = alive_] {
    if (!*alive) return;
    wake_pending_ = false;
    onWake();
  });
}

bool Shipper::unshipped(const std::string& rel) const {
  std::lock_guard lock(mu_);
  return names_.count(baseName(rel)) != 0;
}

void Shipper::dropped(const std::string& rel) {
  post_([this, alive = alive_, rel = baseName(rel)] {
    if (!*alive) return;
    uint64_t lost = 0;
    uint64_t id = 0;
    {
      std::lock_guard lock(mu_);
      for (Seg& s : queue_) {
        if (s.rel != rel) continue;
        id = s.id;
        const uint64_t kept = s.id == ack_id_ ? std::min(ack_off_, s.size) : 0;
        lost = s.size - kept;
        s.size = kept;
        s.done = true;
        s.fd.reset();
        break;
      }
    }
    if (id == 0) return;
    metrics_.dropped += lost;
    spdlog::warn(
        "route={} ship: retention deleted {} before the upstream had it whole: {} byte(s) will "
        "never be shipped (retain.unshipped: drop)",
        route_, rel, lost);
    // Bytes of it already on the wire: the connection is cut so that the upstream's stream ends
    // there instead of running on into the next segment mid-record.
    if (state_ == State::Connected && send_id_ == id && send_off_ > 0) {
      broken("a segment being sent was deleted by retention", false);
    }
    settle();
    pump();
  });
}

// ---- start and stop ----

void Shipper::start() {
  load();
  arm();
}

void Shipper::arm() {
  retry_ev_.reset(evtimer_new(base_, &Shipper::onRetry, this));
  tick_ev_.reset(evtimer_new(base_, &Shipper::onTick, this));
  addEvent(tick_ev_.get(), kTick);
  updateLag();
  pump();
  settle();
}

void Shipper::startFresh() {
  const int dfd = dir_.fd();
  {
    std::lock_guard lock(mu_);
    if (int err = makeShipDir(sys_, dfd)) {
      spdlog::error("error=storage route={} ship: cannot create {}: {}", route_, kShipDir,
                    std::strerror(err));
    } else {
      journal_.reset(openJournal(dfd, chain_));
    }
  }
  // The first cursor (nothing shipped yet), so that a restart finds this chain.
  ShipCursor c;
  if (int err = saveCursor(sys_, dfd, chain_, c, false)) {
    ++metrics_.cursor_errors;
    spdlog::error("error=storage route={} ship: cannot save the cursor of {}: {}", route_, chain_,
                  std::strerror(err));
  }
  saved_ = c;
  saved_once_ = true;
  post_([this, alive = alive_] {
    if (*alive) arm();
  });
}

void Shipper::finishChain() {
  if (finished_) return;
  finished_ = true;
  // Only a connection the pool counted (connected()) is released; one still connecting is not.
  if (state_ == State::Connected && upstream_ != nullptr) {
    pool_.release(upstream_, UpstreamPool::PeerState::Ok);
  }
  connect_ev_.reset();
  write_ev_.reset();
  read_ev_.reset();
  retry_ev_.reset();
  tick_ev_.reset();
  sock_.reset();
  upstream_ = nullptr;
  state_ = State::Idle;
  {
    std::lock_guard lock(mu_);
    journal_.reset();
  }
  removeCursor(dir_.fd(), chain_);
  *alive_ = false;
  if (on_finished_) on_finished_();
}

void Shipper::load() {
  const int dfd = dir_.fd();
  CursorLoad cl = loadCursor(dfd, chain_);
  std::vector<std::string> names;
  uint64_t start_off = 0;
  bool have_start = false;
  struct stat st;
  const bool ship_dir_existed = ::fstatat(dfd, kShipDir, &st, 0) == 0;
  if (cl.cursor && per_connection_) {
    // The journal lists the whole chain; the cursor says how far into it.
    const auto& j = cl.journal;
    const std::string& seg = cl.cursor->segment;
    auto it = seg.empty() ? j.begin() : std::find(j.begin(), j.end(), seg);
    if (it == j.end()) {
      spdlog::error(
          "error=storage route={} ship: the cursor of {} names {}, which its journal does not "
          "list; shipping the whole chain again",
          route_, chain_, seg);
      it = j.begin();
    } else if (!seg.empty() && cl.cursor->offset == kEndOfSegment) {
      ++it;  // that segment was shipped whole
    } else if (!seg.empty()) {
      start_off = cl.cursor->offset;
      have_start = true;
    }
    names.assign(it, j.end());
    saved_ = *cl.cursor;
    saved_once_ = true;
  } else if (cl.cursor) {
    if (!cl.cursor->segment.empty()) {
      names.push_back(cl.cursor->segment);
      start_off = cl.cursor->offset;
      have_start = true;
    }
    names.insert(names.end(), cl.cursor->pending.begin(), cl.cursor->pending.end());
    saved_ = *cl.cursor;
    saved_once_ = true;
  } else if (per_connection_) {
    // Its journal lists every segment of the chain: shipped again from the first.
    spdlog::error(
        "error=storage route={} ship: {}; shipping every segment of chain {} again from its "
        "journal: the upstream may receive bytes it has",
        route_, cl.problem.empty() ? std::string("its cursor is missing") : cl.problem, chain_);
  } else if (!cl.problem.empty() || ship_dir_existed) {
    // Never skip data: without a cursor, every plain segment is shipped again, oldest first
    // (compressed ones were shipped: compression waits for shipping).
    std::vector<SegmentFile> segs = scanSegments(dfd);
    std::erase_if(segs, [](const SegmentFile& f) { return isCompressedName(f.path); });
    std::sort(segs.begin(), segs.end(), [](const SegmentFile& a, const SegmentFile& b) {
      return std::tie(a.mtime, a.path) < std::tie(b.mtime, b.path);
    });
    uint64_t bytes = 0;
    for (const auto& f : segs) {
      names.push_back(baseName(f.path));
      bytes += f.size;
    }
    spdlog::error(
        "error=storage route={} ship: {}; shipping every uncompressed segment of the archive dir "
        "again, oldest first ({} segment(s), {} bytes): the upstream may receive bytes it has",
        route_,
        cl.problem.empty() ? fmt::format("the cursor {}/{}.cursor is missing", kShipDir, chain_)
                           : cl.problem,
        names.size(), bytes);
  }
  // Segments opened after the last cursor save.
  // (A per-connection chain with a cursor took its names from the journal already.)
  if (!(per_connection_ && cl.cursor)) {
    std::unordered_set<std::string> seen(names.begin(), names.end());
    for (const auto& j : cl.journal) {
      if (seen.insert(j).second) names.push_back(j);
    }
  }
  uint64_t backlog = 0;
  int64_t oldest = 0;
  {
    std::lock_guard lock(mu_);
    for (size_t i = 0; i < names.size(); ++i) {
      const std::string& rel = names[i];
      UniqueFd fd(openSegment(dfd, rel));
      if (!fd.valid()) {
        int err = errno;
        ++metrics_.segment_errors;  // its size is unknown: no dropped bytes can be counted
        spdlog::error(
            "error=storage route={} ship: segment {} is gone ({}) before it was shipped whole; "
            "what of it was unshipped is lost; shipping goes on with the next segment",
            route_, rel, std::strerror(err));
        if (i == 0) have_start = false;
        continue;
      }
      struct stat fs;
      uint64_t size = ::fstat(fd.get(), &fs) == 0 ? static_cast<uint64_t>(fs.st_size) : 0;
      if (oldest == 0 && ::fstat(fd.get(), &fs) == 0) {
        oldest = static_cast<int64_t>(fs.st_mtim.tv_sec) * 1000 + fs.st_mtim.tv_nsec / 1000000;
      }
      Seg s;
      s.id = next_id_++;
      s.rel = rel;
      s.fd = std::move(fd);
      s.size = size;
      s.done = true;
      if (i == 0 && have_start) {
        if (start_off > size) {
          spdlog::error(
              "error=storage route={} ship: segment {} holds {} bytes, fewer than the cursor's "
              "{}: it was truncated; shipping resumes with the next segment",
              route_, rel, size, start_off);
          start_off = size;
        }
        ack_id_ = s.id;
        ack_off_ = start_off;
      }
      backlog += size - (i == 0 && have_start ? start_off : 0);
      names_.insert(rel);
      queue_.push_back(std::move(s));
    }
    if (queue_.empty() || !have_start) {
      ack_id_ = queue_.empty() ? next_id_ : queue_.front().id;
      ack_off_ = 0;
    }
    if (int err = makeShipDir(sys_, dfd)) {
      spdlog::error("error=storage route={} ship: cannot create {}: {}", route_, kShipDir,
                    std::strerror(err));
    } else {
      journal_.reset(openJournal(dfd, chain_));
      if (!journal_.valid()) {
        spdlog::error("error=storage route={} ship: cannot open the segment journal: {}", route_,
                      std::strerror(errno));
      }
    }
    // The journal's names are in the queue: the next save takes them into the cursor.
    journal_names_ = cl.journal;
  }
  send_id_ = ack_id_;
  send_off_ = ack_off_;
  high_id_ = ack_id_;
  high_off_ = ack_off_;
  if (lines_ && send_off_ > 0) {
    View v = view(send_id_);
    if (v.exists && v.fd >= 0) send_off_ = lineStart(v.fd, send_off_);
  }
  if (backlog > 0) {
    arrivals_.emplace_back(next_id_ - 1, oldest > 0 ? oldest : nowMs());
    spdlog::info("route={} ship: {} bytes in {} segment(s) wait to be shipped", route_, backlog,
                 names_.size());
  }
  // Saved now, whatever was found: a crash before the first periodic save then finds a cursor and
  // the journal, not a missing cursor (which would ship everything again), and a problem is not
  // reported twice.
  saved_once_ = false;
  checkpoint();
}

void Shipper::stop() {
  if (!*alive_) return;
  if (state_ == State::Connected) {
    sampleAck();
    settle();
    if (finished_) return;
  }
  checkpoint();
  // Only a connection the pool counted (connected()) is released; one still connecting is not.
  if (state_ == State::Connected && upstream_ != nullptr) {
    pool_.release(upstream_, UpstreamPool::PeerState::Ok);
  }
  connect_ev_.reset();
  write_ev_.reset();
  read_ev_.reset();
  retry_ev_.reset();
  tick_ev_.reset();
  sock_.reset();
  upstream_ = nullptr;
  state_ = State::Idle;
  *alive_ = false;
  uint64_t lag = metrics_.lag_bytes.load();
  if (lag > 0) {
    spdlog::info("route={} ship: {} byte(s) not acknowledged yet; they ship after the next start",
                 route_, lag);
  }
}

// ---- the home loop ----

void Shipper::onWake() {
  struct LagAfter {
    Shipper* s;
    ~LagAfter() { s->updateLag(); }
  } lag_after{this};
  if (ended_ && per_connection_) settle();
  if (finished_) return;
  if (tick_ev_ && !evtimer_pending(tick_ev_.get(), nullptr)) addEvent(tick_ev_.get(), kTick);
  // Arrival times for the lag in seconds: how far the chain was known at about this moment.
  {
    uint64_t last_id = 0;
    {
      std::lock_guard lock(mu_);
      if (!queue_.empty()) last_id = queue_.back().id;
    }
    const int64_t now = nowMs();
    if (last_id != 0) {
      if (arrivals_.empty() || now - arrivals_.back().second >= kArrivalGranularityMs) {
        arrivals_.emplace_back(last_id, now);
      } else {
        arrivals_.back().first = last_id;
      }
    }
  }
  pump();
}

Shipper::View Shipper::view(uint64_t id) {
  View v;
  std::lock_guard lock(mu_);
  if (queue_.empty() || id < queue_.front().id || id > queue_.back().id) return v;
  Seg& s = queue_[id - queue_.front().id];
  if (!s.fd.valid() && s.size > 0) s.fd.reset(openSegment(dir_.fd(), s.rel));
  v.exists = true;
  v.fd = s.fd.get();
  v.size = s.size;
  v.done = s.done;
  v.has_next = id < queue_.back().id;
  v.rel = s.rel;
  return v;
}

void Shipper::pump() {
  if (finished_) return;
  if (state_ == State::Idle) {
    View v = view(send_id_);
    if (v.exists && (send_off_ < v.size || v.has_next || v.done)) connect();
    return;
  }
  if (state_ != State::Connected) return;
  uint64_t budget = kPerTurn;
  while (budget > 0) {
    View v = view(send_id_);
    if (!v.exists) break;  // the next segment is not opened yet
    if (send_off_ < v.size) {
      if (v.fd < 0) {
        truncated(send_id_, send_off_, -1);
        if (state_ != State::Connected) return;
        continue;
      }
      const size_t n = static_cast<size_t>(std::min({v.size - send_off_, kChunk, budget}));
      off_t off = static_cast<off_t>(send_off_);
      ssize_t w = sys_.sendfile(sock_.get(), v.fd, &off, n);
      if (w > 0) {
        const auto sent = static_cast<uint64_t>(w);
        // Bytes start to wait for an acknowledgement now (forward.ack_timeout).
        if (stream_sent_ == stream_acked_) ack_progress_ = std::chrono::steady_clock::now();
        if (!spans_.empty() && spans_.back().id == send_id_ &&
            spans_.back().off + spans_.back().len == send_off_ &&
            spans_.back().stream + spans_.back().len == stream_sent_) {
          spans_.back().len += sent;
        } else {
          spans_.push_back({send_id_, send_off_, stream_sent_, sent});
        }
        if (before(send_id_, send_off_, high_id_, high_off_)) {
          metrics_.resent += send_id_ < high_id_ ? sent : std::min(sent, high_off_ - send_off_);
        }
        send_off_ += sent;
        stream_sent_ += sent;
        metrics_.sent += sent;
        if (before(high_id_, high_off_, send_id_, send_off_)) {
          high_id_ = send_id_;
          high_off_ = send_off_;
        }
        budget -= std::min(budget, sent);
        continue;
      }
      if (w == 0) {
        struct stat st;
        uint64_t real = ::fstat(v.fd, &st) == 0 ? static_cast<uint64_t>(st.st_size) : send_off_;
        truncated(send_id_, std::min(real, send_off_), v.fd);
        if (state_ != State::Connected) return;
        continue;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        addEvent(write_ev_.get(), std::chrono::milliseconds(0));
        sampleAck();
        return;
      }
      return broken(std::strerror(errno));
    }
    if (v.done) {
      checkRemoved(send_id_);
      ++send_id_;
      send_off_ = 0;
      continue;
    }
    break;  // waiting for the chain to append
  }
  sampleAck();
  if (finished_) return;  // the last of an ended chain was acknowledged
  updateLag();
  if (budget == 0) event_active(write_ev_.get(), EV_WRITE, 0);  // more, after the others' turn
}

void Shipper::truncated(uint64_t id, uint64_t real, int fd) {
  // With framing: lines, what is shipped of it ends with a whole line.
  const uint64_t end = lines_ && fd >= 0 && real > 0 ? lineStart(fd, real) : real;
  uint64_t lost = 0, archived = 0;
  std::string rel;
  {
    std::lock_guard lock(mu_);
    if (queue_.empty() || id < queue_.front().id || id > queue_.back().id) return;
    Seg& s = queue_[id - queue_.front().id];
    archived = s.size;
    lost = s.size > end ? s.size - end : 0;
    s.size = std::min(s.size, end);
    s.done = true;
    rel = s.rel;
  }
  metrics_.dropped += lost;
  ++metrics_.segment_errors;
  std::string how = fd >= 0 ? fmt::format("was truncated to {} bytes", real)
                            : fmt::format("cannot be read past byte {}", real);
  how += fmt::format(" under the shipper ({} archived in it)", archived);
  if (end != real) how += fmt::format("; shipping of it ends at its last whole line, byte {}", end);
  spdlog::error(
      "error=storage route={} ship: segment {} {}: {} byte(s) of it will never be shipped; "
      "shipping goes on with the next segment",
      route_, rel, how, lost);
  // Bytes past the end went out on this connection (with lines, maybe a torn line): it is cut,
  // so that nothing follows them on it. The next connection starts on a line.
  if (lines_ && state_ == State::Connected && send_id_ == id && send_off_ > end) {
    broken(fmt::format("cut after the end of {}, which was cut short", rel), false);
  }
}

void Shipper::checkRemoved(uint64_t id) {
  std::string rel;
  {
    std::lock_guard lock(mu_);
    if (queue_.empty() || id < queue_.front().id || id > queue_.back().id) return;
    Seg& s = queue_[id - queue_.front().id];
    struct stat st;
    if (s.removed || !s.fd.valid() || ::fstat(s.fd.get(), &st) != 0 || st.st_nlink > 0) return;
    s.removed = true;
    rel = s.rel;
  }
  ++metrics_.segment_errors;
  spdlog::warn(
      "route={} ship: segment {} was removed from the archive dir before the upstream "
      "acknowledged it; it was shipped whole from the descriptor spliced holds (its space is "
      "freed once the upstream acknowledges it)",
      route_, rel);
}

uint64_t Shipper::lineStart(int fd, uint64_t off) {
  char buf[65536];
  uint64_t end = off;
  while (end > 0) {
    const uint64_t start = end > sizeof buf ? end - sizeof buf : 0;
    ssize_t n = ::pread(fd, buf, static_cast<size_t>(end - start), static_cast<off_t>(start));
    if (n <= 0) return 0;
    const void* nl = memrchr(buf, '\n', static_cast<size_t>(n));
    if (nl != nullptr) return start + static_cast<uint64_t>(static_cast<const char*>(nl) - buf) + 1;
    end = start;
  }
  return 0;
}

void Shipper::connect() {
  if (state_ != State::Idle) return;
  for (;;) {
    if (tried_.size() > cfg_.retries) break;
    Upstream* u = pool_.pick(nullptr, tried_);
    if (u == nullptr) break;
    tried_.push_back(u);
    int err = 0;
    UniqueFd fd = connectNonBlocking(u->addr, err);
    if (!fd.valid()) {
      pool_.connectFailed(u, err);
      last_error_ = fmt::format("{}: {}", u->addr.text, std::strerror(err));
      continue;
    }
    sock_ = std::move(fd);
    upstream_ = u;
    state_ = State::Connecting;
    connect_ev_.reset(event_new(base_, sock_.get(), EV_WRITE, &Shipper::onConnect, this));
    addEvent(connect_ev_.get(), cfg_.connect_timeout);
    return;
  }
  tried_.clear();
  scheduleRetry();
}

void Shipper::onConnect(evutil_socket_t fd, short what, void* arg) {
  auto* self = static_cast<Shipper*>(arg);
  int err = connectResult(fd, what);
  self->connect_ev_.reset();
  if (err != 0) {
    self->pool_.connectFailed(self->upstream_, err);
    self->last_error_ = fmt::format("{}: {}", self->upstream_->addr.text, std::strerror(err));
    spdlog::debug("route={} ship: connect to {} failed: {}", self->route_,
                  self->upstream_->addr.text, std::strerror(err));
    self->sock_.reset();
    self->upstream_ = nullptr;
    self->state_ = State::Idle;
    return self->connect();
  }
  self->connected();
}

void Shipper::connected() {
  state_ = State::Connected;
  pool_.connected(upstream_);
  tried_.clear();
  const auto& ups = pool_.upstreams();
  for (size_t i = 0; i < ups.size(); ++i) {
    if (ups[i].get() == upstream_ && ever_connected_) ++*metrics_.reconnects[i];
  }
  ever_connected_ = true;
  stream_sent_ = 0;
  stream_acked_ = 0;
  ack_base_ = 0;
  ack_progress_ = std::chrono::steady_clock::now();
  if (!upstream_->addr.isUnix()) {
    // What the handshake acknowledged (the SYN, counted as 1) is not a byte of the stream. When
    // TCP_INFO cannot be read now, that 1 is what it would say: a base of 0 would count the SYN
    // as a byte and put the cursor a byte ahead of what the upstream has.
    uint64_t acked = 1;
    if (sys_.tcpBytesAcked(sock_.get(), &acked) != 0) acked = 1;
    ack_base_ = acked;
  }
  spans_.clear();
  {
    std::lock_guard lock(mu_);
    upstream_text_ = upstream_->addr.text;
  }
  View v = view(send_id_);
  if (auto quiet = down_log_.end()) {
    spdlog::info("route={} ship: connected to {} again; resuming at {} offset {}", route_,
                 upstream_->addr.text, v.exists ? v.rel : std::string("the next segment"),
                 send_off_);
  } else {
    spdlog::info("route={} ship: connected to {}; shipping from {} offset {}", route_,
                 upstream_->addr.text, v.exists ? v.rel : std::string("the next segment"),
                 send_off_);
  }
  write_ev_.reset(event_new(base_, sock_.get(), EV_WRITE, &Shipper::onWritable, this));
  read_ev_.reset(event_new(base_, sock_.get(), EV_READ | EV_PERSIST, &Shipper::onReadable, this));
  event_add(read_ev_.get(), nullptr);
  pump();
}

void Shipper::onWritable(evutil_socket_t, short, void* arg) { static_cast<Shipper*>(arg)->pump(); }

void Shipper::onReadable(evutil_socket_t fd, short, void* arg) {
  auto* self = static_cast<Shipper*>(arg);
  char buf[4096];
  for (;;) {
    ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) continue;  // an upstream has nothing to say to a shipper: discarded
    if (n == 0) return self->broken("the upstream closed the connection");
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return;
    return self->broken(std::strerror(errno));
  }
}

void Shipper::broken(const std::string& why, bool upstream_fault) {
  // A TCP connection's acknowledged count survives a reset; a Unix socket's send queue does not
  // tell (it is freed with the peer), so what was unread is sent again.
  if (upstream_ != nullptr && !upstream_->addr.isUnix()) sampleAck();
  const uint64_t unacked = stream_sent_ - stream_acked_;
  const uint64_t acked_here = stream_acked_;
  pool_.release(upstream_,
                upstream_fault ? UpstreamPool::PeerState::Failed : UpstreamPool::PeerState::Ok);
  const std::string who = upstream_ != nullptr ? upstream_->addr.text : std::string("?");
  write_ev_.reset();
  read_ev_.reset();
  sock_.reset();
  upstream_ = nullptr;
  {
    std::lock_guard lock(mu_);
    upstream_text_.clear();
  }
  spans_.clear();
  settle();
  if (finished_) return;
  send_id_ = ack_id_;
  send_off_ = ack_off_;
  View v = view(send_id_);
  if (lines_ && send_off_ > 0 && v.exists && v.fd >= 0) send_off_ = lineStart(v.fd, send_off_);
  spdlog::warn(
      "route={} ship: connection to {} lost ({}); {} byte(s) sent on it were not acknowledged "
      "and are sent again from {} offset {}",
      route_, who, why, unacked, v.exists ? v.rel : std::string("the next segment"), send_off_);
  last_error_ = fmt::format("{}: {}", who, why);
  state_ = State::Idle;
  // An upstream that takes bytes before it fails is retried at once; one that acknowledged
  // nothing is retried after a growing pause.
  if (acked_here > 0 || !upstream_fault) {
    backoff_ = std::chrono::milliseconds(0);
    connect();
  } else {
    scheduleRetry();
  }
}

void Shipper::scheduleRetry() {
  backoff_ = backoff_.count() == 0 ? kFirstRetry : std::min(backoff_ * 2, kMaxRetry);
  state_ = State::Backoff;
  if (down_log_.hit()) {
    spdlog::error(
        "error=upstream route={} ship: no upstream takes the archive ({}); {} byte(s) wait, kept "
        "in the archive; retrying",
        route_, last_error_.empty() ? std::string("none is up") : last_error_,
        metrics_.lag_bytes.load());
  }
  if (retry_ev_) addEvent(retry_ev_.get(), backoff_);
}

void Shipper::onRetry(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Shipper*>(arg);
  self->state_ = State::Idle;
  self->connect();
}

void Shipper::onTick(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<Shipper*>(arg);
  if (self->state_ == State::Connected) {
    self->sampleAck();
    if (self->finished_) return;
    const uint64_t waiting = self->stream_sent_ - self->stream_acked_;
    if (waiting > 0 &&
        std::chrono::steady_clock::now() - self->ack_progress_ >= self->cfg_.ack_timeout) {
      // A stuck or black-holed upstream: what it acknowledged stays shipped, the rest goes to
      // the next upstream.
      self->broken(
          fmt::format("none of {} byte(s) waiting was acknowledged for {} "
                      "(forward.ack_timeout): the upstream is stuck; giving it up",
                      waiting, formatDuration(self->cfg_.ack_timeout)));
      if (self->finished_) return;
      addEvent(self->tick_ev_.get(), kTick);
      return;
    }
    // A wake lost to nothing: keep going if there is something to send.
    if (!event_pending(self->write_ev_.get(), EV_WRITE, nullptr)) self->pump();
  } else if (self->state_ == State::Idle) {
    self->pump();
  }
  if (self->finished_) return;
  self->updateLag();
  const auto now = std::chrono::steady_clock::now();
  if (now - self->last_save_ >= self->cfg_.checkpoint_interval) self->checkpoint();
  // A chain with nothing waiting and its cursor saved needs no timer until its next bytes (a
  // wake-up arms it again): idle connections cost nothing.
  const bool idle = self->metrics_.lag_bytes.load() == 0 &&
                    self->stream_sent_ == self->stream_acked_ && self->saved_once_ && !self->dirty_;
  if (!idle) addEvent(self->tick_ev_.get(), kTick);
}

void Shipper::sampleAck() {
  if (state_ != State::Connected || !sock_.valid()) return;
  uint64_t acked = 0;
  if (!upstream_->addr.isUnix()) {
    uint64_t total = 0;
    if (sys_.tcpBytesAcked(sock_.get(), &total) != 0) return;
    acked = total > ack_base_ ? total - ack_base_ : 0;
  } else {
    // A Unix socket's send queue is what the peer has not read (counted with the kernel's
    // overhead, so it errs on the safe side). A peer that closed frees it: the count is taken
    // only while the peer is still there.
    int queued = 0;
    if (sys_.sendQueue(sock_.get(), &queued) != 0 || queued < 0) return;
    char probe = 0;
    if (::recv(sock_.get(), &probe, 1, MSG_PEEK | MSG_DONTWAIT) >= 0 || errno != EAGAIN) return;
    acked = stream_sent_ - std::min<uint64_t>(stream_sent_, static_cast<uint64_t>(queued));
  }
  acked = std::min(acked, stream_sent_);
  if (acked > stream_acked_) advanceCursor(acked);
}

void Shipper::advanceCursor(uint64_t stream_acked) {
  metrics_.acked += stream_acked - stream_acked_;
  ack_progress_ = std::chrono::steady_clock::now();
  stream_acked_ = stream_acked;
  uint64_t id = ack_id_, off = ack_off_;
  bool moved = false;
  while (!spans_.empty()) {
    Span& s = spans_.front();
    if (s.stream + s.len <= stream_acked) {
      id = s.id;
      off = s.off + s.len;
      moved = true;
      spans_.pop_front();
      continue;
    }
    if (s.stream < stream_acked) {
      const uint64_t part = stream_acked - s.stream;
      id = s.id;
      off = s.off + part;
      moved = true;
      s.off += part;
      s.stream += part;
      s.len -= part;
    }
    break;
  }
  // Resent bytes lie behind the cursor: it only moves forward.
  if (moved && before(ack_id_, ack_off_, id, off)) {
    ack_id_ = id;
    ack_off_ = off;
    dirty_ = true;
    settle();
  }
}

void Shipper::settle() {
  std::vector<std::string> shipped;
  {
    std::lock_guard lock(mu_);
    while (!queue_.empty()) {
      Seg& f = queue_.front();
      const bool passed = f.id < ack_id_ || (f.id == ack_id_ && f.done && ack_off_ >= f.size);
      if (!passed) break;
      if (f.id == ack_id_) {
        ++ack_id_;
        ack_off_ = 0;
      }
      names_.erase(f.rel);
      last_popped_ = f.rel;
      shipped.push_back(std::move(f.rel));
      queue_.pop_front();
    }
  }
  // Sending may lag the cursor inside its segment (a rewind to the start of a line); it never
  // stays on a segment that left the queue (dropped by retention).
  if (send_id_ < ack_id_) {
    send_id_ = ack_id_;
    send_off_ = ack_off_;
  }
  while (!arrivals_.empty() && arrivals_.front().first < ack_id_) arrivals_.pop_front();
  for (const auto& rel : shipped) {
    spdlog::debug("route={} ship: {} acknowledged whole", route_, rel);
    on_shipped_(rel);
  }
  if (per_connection_ && ended_ && !finished_) {
    bool empty;
    {
      std::lock_guard lock(mu_);
      empty = queue_.empty();
    }
    if (empty) finishChain();
  }
}

void Shipper::updateLag() {
  uint64_t lag = 0;
  {
    std::lock_guard lock(mu_);
    for (const Seg& s : queue_) lag += s.size;
    if (!queue_.empty() && queue_.front().id == ack_id_) lag -= std::min(lag, ack_off_);
  }
  metrics_.lag_bytes = lag;
  while (!arrivals_.empty() && arrivals_.front().first < ack_id_) arrivals_.pop_front();
  // The oldest arrival still ahead of the cursor tells how long the oldest waiting byte waits.
  metrics_.oldest_ms = lag == 0 || arrivals_.empty() ? 0 : arrivals_.front().second;
  if (lag == 0) arrivals_.clear();
}

std::chrono::milliseconds Shipper::lag() const {
  const int64_t oldest = metrics_.oldest_ms.load();
  if (oldest == 0) return std::chrono::milliseconds(0);
  return std::chrono::milliseconds(std::max<int64_t>(0, nowMs() - oldest));
}

std::string Shipper::problem() const {
  if (cfg_.max_lag.count() == 0) return {};
  const auto l = lag();
  if (l <= cfg_.max_lag) return {};
  return fmt::format("route {}: shipping lags {} behind (forward.max_lag {}; {} byte(s) waiting{})",
                     route_,
                     formatDuration(std::chrono::duration_cast<std::chrono::milliseconds>(l)),
                     formatDuration(cfg_.max_lag), metrics_.lag_bytes.load(),
                     last_error_.empty() ? std::string() : "; last error " + last_error_);
}

void ShipTotals::add(const ShipTotals& o) {
  sent += o.sent;
  acked += o.acked;
  lag_bytes += o.lag_bytes;
  resent += o.resent;
  dropped += o.dropped;
  cursor_errors += o.cursor_errors;
  segment_errors += o.segment_errors;
  lag = std::max(lag, o.lag);
  if (reconnects.size() < o.reconnects.size()) reconnects.resize(o.reconnects.size());
  for (size_t i = 0; i < o.reconnects.size(); ++i) reconnects[i] += o.reconnects[i];
}

ShipTotals Shipper::totals() const {
  ShipTotals t;
  t.sent = metrics_.sent;
  t.acked = metrics_.acked;
  t.lag_bytes = finished_ ? 0 : metrics_.lag_bytes.load();
  t.resent = metrics_.resent;
  t.dropped = metrics_.dropped;
  t.cursor_errors = metrics_.cursor_errors;
  t.segment_errors = metrics_.segment_errors;
  t.lag = finished_ ? std::chrono::milliseconds(0) : lag();
  for (const auto& r : metrics_.reconnects) t.reconnects.push_back(r->load());
  return t;
}

std::string Shipper::upstream() const {
  std::lock_guard lock(mu_);
  return upstream_text_;
}

ShipCursor Shipper::snapshot(size_t& journal_seen) {
  ShipCursor c;
  c.acked = saved_.acked + (metrics_.acked.load() - acked_at_save_);
  std::lock_guard lock(mu_);
  for (const Seg& s : queue_) {
    if (s.id < ack_id_) continue;
    if (s.id == ack_id_) {
      c.segment = s.rel;
      c.offset = ack_off_;
    } else if (c.segment.empty()) {
      // The cursor sits at the start of a segment.
      c.segment = s.rel;
      c.offset = 0;
    } else {
      c.pending.push_back(s.rel);
    }
  }
  // A per-connection chain shipped up to date names its last segment, wholly shipped.
  if (per_connection_ && c.segment.empty() && !last_popped_.empty()) {
    c.segment = last_popped_;
    c.offset = kEndOfSegment;
  }
  journal_seen = journal_names_.size();
  return c;
}

void Shipper::checkpoint() {
  last_save_ = std::chrono::steady_clock::now();
  size_t seen = 0;
  ShipCursor c = snapshot(seen);
  if (saved_once_ && c.segment == saved_.segment && c.offset == saved_.offset &&
      c.pending == saved_.pending && seen == 0) {
    // Unchanged; but a cursor removed by someone (a restart would then ship everything again)
    // is written again.
    struct stat st;
    if (::fstatat(dir_.fd(), cursorPath(chain_).c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 ||
        errno != ENOENT) {
      dirty_ = false;
      return;
    }
    ++metrics_.cursor_errors;
    if (save_log_.hit()) {
      spdlog::error(
          "error=storage route={} ship: the cursor {} was removed; saving it again (a restart "
          "without it would ship every uncompressed segment again)",
          route_, cursorPath(chain_));
    }
  }
  if (int err = saveCursor(sys_, dir_.fd(), chain_, c)) {
    ++metrics_.cursor_errors;
    if (save_log_.hit()) {
      spdlog::error(
          "error=storage route={} ship: cannot save the cursor: {}; shipping goes on, and a "
          "restart now would send again what was acknowledged since the last save",
          route_, std::strerror(err));
    }
    return;
  }
  if (auto n = save_log_.end()) {
    spdlog::info("route={} ship: the cursor is saved again", route_);
  }
  acked_at_save_ = metrics_.acked.load();
  saved_ = std::move(c);
  saved_once_ = true;
  dirty_ = false;
  // The names the cursor now holds leave the journal; later ones stay in it.
  std::lock_guard lock(mu_);
  // A per-connection chain keeps its whole journal: it is short, and a damaged cursor then
  // still knows every segment of the chain.
  if (!journal_.valid() || seen == 0 || per_connection_) return;
  journal_names_.erase(journal_names_.begin(),
                       journal_names_.begin() + static_cast<std::ptrdiff_t>(seen));
  if (truncateJournal(journal_.get()) != 0) return;
  for (const auto& rel : journal_names_) appendJournal(journal_.get(), rel);
}

}  // namespace spliced
