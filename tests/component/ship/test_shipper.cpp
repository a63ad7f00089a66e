// The Shipper in-process: a real event_base, upstreams on loopback port 0 (or a Unix socket) that
// this test accepts from and reads, segment files this test writes and announces as the chain
// would (ChainObserver), and sendfile and the acknowledgement figures (tcpBytesAcked, sendQueue)
// going through a seam that cuts, fails or caps them at an exact call. Each test checks what
// every upstream connection received against the segments, byte for byte, and the counters.
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstring>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "fixtures.hpp"
#include "spliced/archive/archive_dir.hpp"
#include "spliced/core/event.hpp"
#include "spliced/proxy/upstream_pool.hpp"
#include "spliced/ship/cursor.hpp"
#include "spliced/ship/shipper.hpp"

using namespace spliced;
using namespace spliced::testing;
using namespace std::chrono_literals;
namespace fs = std::filesystem;

namespace {

// "" when `got` is `want`, else where they first differ.
std::string firstDifference(const std::string& got, const std::string& want) {
  if (got == want) return "";
  size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  return "sizes " + std::to_string(got.size()) + " and " + std::to_string(want.size()) +
         ", first difference at byte " + std::to_string(i);
}

// sendfile and the acknowledgement figures, breakable per call; everything else is the kernel's.
class ShipSysCalls : public SysCalls {
 public:
  size_t cap = 0;  // at most this many bytes per sendfile (0: no cap)
  // Asked before each sendfile with its 1-based number, the socket and the file offset: an errno
  // fails the call with it, 0 passes it on.
  std::function<int(int nth, int sock, off_t off)> sendfile_fault;
  int sendfile_calls = 0;
  int sendfile_failed = 0;
  uint64_t written = 0;  // bytes sendfile moved, over every connection

  // tcpBytesAcked: the kernel's figure, at most `ack_limit` (the SYN's 1 included) when set;
  // `ack_fails` (1-based call number) makes a call fail with EOPNOTSUPP.
  std::optional<uint64_t> ack_limit;
  std::function<bool(int nth)> ack_fails;
  int ack_calls = 0;
  // sendQueue: this figure instead of the kernel's when set.
  std::optional<int> queue;

  ssize_t sendfile(int out_fd, int in_fd, off_t* offset, size_t count) override {
    const int nth = ++sendfile_calls;
    if (sendfile_fault) {
      if (int err = sendfile_fault(nth, out_fd, *offset)) {
        ++sendfile_failed;
        errno = err;
        return -1;
      }
    }
    if (cap > 0) count = std::min(count, cap);
    ssize_t n = SysCalls::sendfile(out_fd, in_fd, offset, count);
    if (n > 0) written += static_cast<uint64_t>(n);
    return n;
  }
  int tcpBytesAcked(int fd, uint64_t* bytes) override {
    const int nth = ++ack_calls;
    if (ack_fails && ack_fails(nth)) {
      errno = EOPNOTSUPP;
      return -1;
    }
    int r = SysCalls::tcpBytesAcked(fd, bytes);
    if (r == 0 && ack_limit) *bytes = std::min(*bytes, *ack_limit);
    return r;
  }
  // The kernel's figure, whatever the limit.
  uint64_t kernelAcked(int fd) {
    uint64_t n = 0;
    return SysCalls::tcpBytesAcked(fd, &n) == 0 ? n : 0;
  }
  int sendQueue(int fd, int* bytes) override {
    if (queue) {
      *bytes = *queue;
      return 0;
    }
    return SysCalls::sendQueue(fd, bytes);
  }
};

// A listener this test serves by polling: each accepted connection's bytes, in accept order.
// With `reading` false it accepts nothing and reads nothing (a black hole: its kernel takes what
// fits in the queued connection's receive buffer, then the window closes).
class Peer {
 public:
  // TCP on 127.0.0.1:0, or a Unix socket at `unix_path`.
  explicit Peer(const std::string& unix_path = "") {
    if (unix_path.empty()) {
      fd_.reset(::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
      const int small = 16384;  // inherited by accepted connections: the window closes soon
      ::setsockopt(fd_.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
      sockaddr_in sa{};
      sa.sin_family = AF_INET;
      sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      REQUIRE(::bind(fd_.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
      socklen_t len = sizeof sa;
      REQUIRE(::getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&sa), &len) == 0);
      address_ = "127.0.0.1:" + std::to_string(ntohs(sa.sin_port));
    } else {
      fd_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
      sockaddr_un sa{};
      sa.sun_family = AF_UNIX;
      std::snprintf(sa.sun_path, sizeof sa.sun_path, "%s", unix_path.c_str());
      REQUIRE(::bind(fd_.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
      address_ = "unix:" + unix_path;
    }
    REQUIRE(::listen(fd_.get(), 16) == 0);
  }
  const std::string& address() const { return address_; }
  bool reading = true;

  // Accepts what waits and reads what each connection has.
  void poll() {
    if (!reading) return;
    for (;;) {
      int c = ::accept4(fd_.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (c < 0) break;
      conns_.emplace_back(c);
      streams_.emplace_back();
    }
    char buf[65536];
    for (size_t i = 0; i < conns_.size(); ++i) {
      if (!conns_[i].valid()) continue;
      for (;;) {
        ssize_t n = ::recv(conns_[i].get(), buf, sizeof buf, 0);
        if (n > 0) {
          streams_[i].append(buf, static_cast<size_t>(n));
          continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EINTR)) conns_[i].reset();  // closed
        break;
      }
    }
  }
  // Reads on until nothing arrives for 200 ms (a black hole's backlog drains into it).
  void drain() {
    reading = true;
    auto quiet = std::chrono::steady_clock::now();
    size_t last = total();
    while (std::chrono::steady_clock::now() - quiet < 200ms) {
      poll();
      if (total() != last) {
        last = total();
        quiet = std::chrono::steady_clock::now();
      }
      std::this_thread::sleep_for(2ms);
    }
  }
  const std::vector<std::string>& streams() const { return streams_; }
  size_t total() const {
    size_t n = 0;
    for (const auto& s : streams_) n += s.size();
    return n;
  }
  std::string joined() const {
    std::string out;
    for (const auto& s : streams_) out += s;
    return out;
  }

 private:
  UniqueFd fd_;
  std::string address_;
  std::vector<UniqueFd> conns_;
  std::vector<std::string> streams_;
};

// Lines of 20 to 140 bytes, numbered, `n` bytes in all (the last one may be cut).
std::string lineBytes(size_t n, uint64_t seed) {
  std::string out;
  uint64_t x = seed;
  for (uint64_t i = 0; out.size() < n; ++i) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    std::string line = "seed " + std::to_string(seed) + " line " + std::to_string(i) + " ";
    line.append(static_cast<size_t>(10 + (x >> 33) % 120), static_cast<char>('a' + i % 26));
    line += '\n';
    out += line;
  }
  out.resize(n);
  return out;
}

// The start of the line that holds byte `off` of `s`.
size_t lineStartOf(const std::string& s, size_t off) {
  if (off == 0) return 0;
  size_t nl = s.rfind('\n', off - 1);
  return nl == std::string::npos ? 0 : nl + 1;
}

// One Shipper on its own loop, over an archive dir in a temp dir, shipping to `upstreams`.
struct Rig {
  TempDir tmp;
  ShipSysCalls sys;
  EventBasePtr base{event_base_new()};
  ForwardConfig cfg;
  std::unique_ptr<UpstreamPool> pool;
  ArchiveDir dir;
  std::mutex mu;
  std::deque<std::function<void()>> posted;
  std::vector<std::string> shipped;  // segments acknowledged whole, in order
  std::unique_ptr<Shipper> shipper;
  std::vector<UniqueFd> seg_fds;  // the chain's descriptors
  std::vector<Peer*> peers;

  Rig(const std::vector<std::string>& upstreams, bool lines) {
    for (const auto& u : upstreams) {
      auto a = parseSocketAddress(u);
      REQUIRE(a.ok());
      cfg.upstreams.push_back(a.value());
    }
    cfg.connect_timeout = 500ms;
    cfg.checkpoint_interval = 50ms;
    cfg.retries = upstreams.size();
    pool = std::make_unique<UpstreamPool>(base.get(), cfg, "r");
    dir.reset(UniqueFd(::open(tmp.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)));
    shipper = std::make_unique<Shipper>(
        base.get(), sys, "r", "shared", cfg, lines, *pool, dir,
        [this](std::function<void()> f) {
          std::lock_guard lock(mu);
          posted.push_back(std::move(f));
        },
        [this](const std::string& rel) { shipped.push_back(rel); });
  }
  ~Rig() {
    if (shipper) shipper->stop();
    shipper.reset();
  }

  // A segment named `rel` holding `data`, announced as the chain does (opened, appended, and
  // with `done` completed).
  void segment(const std::string& rel, const std::string& data, bool done = true) {
    UniqueFd fd(::open((tmp.path / rel).c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640));
    REQUIRE(fd.valid());
    REQUIRE(::pwrite(fd.get(), data.data(), data.size(), 0) == static_cast<ssize_t>(data.size()));
    shipper->segmentOpened(rel, fd.get());
    if (done) {
      shipper->segmentDone(data.size());
    } else {
      shipper->segmentAppended(data.size());
    }
    seg_fds.push_back(std::move(fd));
  }

  void turn() {
    // One pass (a socket kept writable would keep EVLOOP_NONBLOCK alone looping).
    timeval now{0, 0};
    event_base_loopexit(base.get(), &now);
    event_base_loop(base.get(), EVLOOP_NONBLOCK);
    std::deque<std::function<void()>> run;
    {
      std::lock_guard lock(mu);
      run.swap(posted);
    }
    for (auto& f : run) f();
    for (Peer* p : peers) p->poll();
  }
  // Turns the loop until `done` holds (true) or `limit` passes (false).
  bool runUntil(const std::function<bool()>& done, std::chrono::milliseconds limit = 5s) {
    const auto end = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < end) {
      turn();
      if (done()) return true;
      std::this_thread::sleep_for(1ms);
    }
    return false;
  }
  void runFor(std::chrono::milliseconds d) {
    runUntil([] { return false; }, d);
  }
  // `total` bytes acknowledged (resent ones included) and nothing waits.
  bool allAcked(uint64_t total) {
    return runUntil([&] {
      const ShipTotals t = shipper->totals();
      return t.acked >= total && t.lag_bytes == 0;
    });
  }
  ShipCursor cursorFile() {
    CursorLoad cl = loadCursor(dir.fd(), "shared");
    REQUIRE(cl.cursor);
    return *cl.cursor;
  }
};

}  // namespace

TEST_CASE("shipper: short sendfiles and EAGAIN: the upstream gets the segments byte for byte",
          "[ship][shipper]") {
  Peer peer;
  Rig rig({peer.address()}, true);
  rig.peers = {&peer};
  rig.sys.cap = 777;
  // Every third call finds the socket full.
  rig.sys.sendfile_fault = [](int nth, int, off_t) { return nth % 3 == 0 ? EAGAIN : 0; };
  const std::string a = lineBytes(300000, 1), b = lineBytes(200000, 2);
  rig.shipper->start();
  rig.segment("a.log", a);
  rig.segment("b.log", b);
  REQUIRE(rig.allAcked(a.size() + b.size()));
  REQUIRE(peer.streams().size() == 1);
  CHECK(firstDifference(peer.streams()[0], a + b) == "");
  const ShipTotals t = rig.shipper->totals();
  CHECK(t.sent == a.size() + b.size());
  CHECK(t.acked == a.size() + b.size());
  CHECK(t.resent == 0);
  CHECK(t.dropped == 0);
  CHECK(rig.sys.sendfile_failed > 100);
  CHECK(rig.shipped == std::vector<std::string>{"a.log", "b.log"});
}

TEST_CASE(
    "shipper: acknowledged bytes come from the kernel's figure only, never from what sendfile "
    "returned",
    "[ship][shipper]") {
  Peer peer;
  Rig rig({peer.address()}, false);
  rig.peers = {&peer};
  const std::string a = lineBytes(200000, 3);
  rig.sys.ack_limit = 1 + 5000;  // the SYN, then 5000 bytes
  rig.shipper->start();
  rig.segment("a.log", a);
  // Every byte sent and read by the peer; 5000 acknowledged.
  REQUIRE(rig.runUntil([&] { return peer.total() == a.size(); }));
  rig.runFor(200ms);  // ticks sample the figure again
  ShipTotals t = rig.shipper->totals();
  CHECK(t.sent == a.size());
  CHECK(t.acked == 5000);
  CHECK(t.lag_bytes == a.size() - 5000);
  // The cursor saved says so too.
  REQUIRE(rig.runUntil([&] { return rig.cursorFile().offset == 5000; }, 2s));
  CHECK(rig.cursorFile().segment == "a.log");
  CHECK(rig.shipped.empty());
  rig.sys.ack_limit.reset();
  REQUIRE(rig.allAcked(a.size()));
  CHECK(rig.shipper->totals().acked == a.size());
  CHECK(rig.shipped == std::vector<std::string>{"a.log"});
}

TEST_CASE(
    "shipper: TCP_INFO unreadable right after connect: the SYN is not counted as a byte, the "
    "cursor is not a byte ahead",
    "[ship][shipper]") {
  Peer peer;
  Rig rig({peer.address()}, false);
  rig.peers = {&peer};
  const std::string a = lineBytes(100000, 4);
  rig.sys.ack_fails = [](int nth) { return nth == 1; };  // the baseline read
  rig.sys.ack_limit = 1 + 5000;
  rig.shipper->start();
  rig.segment("a.log", a);
  REQUIRE(rig.runUntil([&] { return peer.total() == a.size(); }));
  rig.runFor(200ms);
  CHECK(rig.sys.ack_calls > 1);
  CHECK(rig.shipper->totals().acked == 5000);
  REQUIRE(rig.runUntil([&] { return rig.cursorFile().offset != 0; }, 2s));
  CHECK(rig.cursorFile().offset == 5000);
}

TEST_CASE(
    "shipper: a reset or EPIPE mid-stream rewinds to the cursor (lines: to the start of its "
    "line), and what goes out again is counted as resent",
    "[ship][shipper]") {
  for (const bool lines : {true, false}) {
    for (const int err : {ECONNRESET, EPIPE}) {
      DYNAMIC_SECTION((lines ? "lines, " : "raw, ") << std::strerror(err)) {
        Peer peer;
        Rig rig({peer.address()}, lines);
        rig.peers = {&peer};
        rig.sys.cap = 16384;
        const std::string a = lineBytes(400000, 5);
        const size_t acked = 50003;  // the upstream's kernel acknowledged up to here (mid-line)
        REQUIRE(a[acked - 1] != '\n');
        rig.sys.ack_limit = 1 + acked;
        uint64_t written_at_fault = 0;
        // Once 100000 bytes went out and the kernel's figure passed the limit (the peer has
        // read that far), the connection breaks.
        rig.sys.sendfile_fault = [&](int, int sock, off_t) {
          if (written_at_fault != 0 || rig.sys.written < 100000) return 0;
          if (rig.sys.kernelAcked(sock) < 1 + acked) return EAGAIN;
          written_at_fault = rig.sys.written;
          return err;
        };
        rig.shipper->start();
        rig.segment("a.log", a);
        // A second connection, then the figure is the kernel's again.
        REQUIRE(rig.runUntil([&] { return peer.streams().size() == 2; }));
        rig.sys.ack_limit.reset();
        const size_t resume = lines ? lineStartOf(a, acked) : acked;
        REQUIRE(rig.allAcked(acked + a.size() - resume));
        REQUIRE(written_at_fault > 0);
        REQUIRE(peer.streams().size() == 2);
        CHECK(firstDifference(peer.streams()[0], a.substr(0, written_at_fault)) == "");
        CHECK(firstDifference(peer.streams()[1], a.substr(resume)) == "");
        const ShipTotals t = rig.shipper->totals();
        CHECK(t.resent == written_at_fault - resume);
        CHECK(t.sent == written_at_fault + a.size() - resume);
        CHECK(t.reconnects == std::vector<uint64_t>{1});
        CHECK(rig.pool->view()[0].errors == 1);
      }
    }
  }
}

TEST_CASE(
    "shipper: a refusing upstream is skipped for the next, and with none up the bytes wait and "
    "nothing "
    "is sent",
    "[ship][shipper]") {
  const std::string a = lineBytes(100000, 6);
  SECTION("failover") {
    Peer peer;
    const std::string refusing = "127.0.0.1:" + std::to_string([] {
                                   Peer gone;
                                   return std::stoi(gone.address().substr(10));
                                 }());
    Rig rig({refusing, peer.address()}, true);
    rig.peers = {&peer};
    rig.shipper->start();
    rig.segment("a.log", a);
    REQUIRE(rig.allAcked(a.size()));
    REQUIRE(peer.streams().size() == 1);
    CHECK(peer.streams()[0] == a);
    CHECK(rig.pool->view()[0].errors >= 1);
    CHECK(rig.shipper->upstream() == peer.address());
  }
  SECTION("none up") {
    Peer gone;
    const std::string refusing = gone.address();
    Rig rig({refusing}, true);
    {
      Peer moved(std::move(gone));  // closes with this scope: refused from now on
    }
    rig.shipper->start();
    rig.segment("a.log", a);
    rig.runFor(400ms);
    CHECK(rig.sys.sendfile_calls == 0);
    CHECK(rig.shipper->totals().lag_bytes == a.size());
    CHECK(rig.pool->view()[0].errors >= 2);  // retried after a pause, and again
  }
}

TEST_CASE("shipper: on a Unix socket, acknowledged is sent minus the send queue",
          "[ship][shipper]") {
  TempDir d;
  Peer peer((d.path / "up.sock").string());
  Rig rig({peer.address()}, true);
  rig.peers = {&peer};
  const std::string a = lineBytes(100000, 7);
  rig.sys.queue = 3000;
  rig.shipper->start();
  rig.segment("a.log", a);
  REQUIRE(rig.runUntil([&] { return peer.total() == a.size(); }));
  rig.runFor(200ms);
  CHECK(rig.shipper->totals().acked == a.size() - 3000);
  CHECK(rig.shipper->totals().lag_bytes == 3000);
  rig.sys.queue.reset();
  REQUIRE(rig.allAcked(a.size()));
  CHECK(peer.joined() == a);
}

TEST_CASE(
    "shipper: a segment truncated under it (lines) ships up to its last whole line, the "
    "connection is cut after the torn line, and the next segment goes on a new one",
    "[ship][shipper]") {
  Peer peer;
  Rig rig({peer.address()}, true);
  rig.peers = {&peer};
  rig.sys.cap = 8192;
  const std::string a = lineBytes(100000, 8), b = lineBytes(50000, 9);
  const size_t cut = 60007;  // mid-line
  REQUIRE(a[cut - 1] != '\n');
  const size_t end = lineStartOf(a, cut);
  const size_t acked = 30011;
  rig.sys.ack_limit = 1 + acked;
  bool truncated = false;
  int truncate_result = -1;
  rig.sys.sendfile_fault = [&](int, int sock, off_t off) {
    if (!truncated && off >= 40000) {
      // The cursor first reaches the limit: the peer has read that far.
      if (rig.sys.kernelAcked(sock) < 1 + acked) return EAGAIN;
      truncated = true;
      truncate_result = ::ftruncate(rig.seg_fds[0].get(), static_cast<off_t>(cut));
    }
    return 0;
  };
  rig.shipper->start();
  rig.segment("a.log", a);
  rig.segment("b.log", b);
  REQUIRE(rig.runUntil([&] { return peer.streams().size() == 2; }));
  REQUIRE(truncate_result == 0);
  rig.sys.ack_limit.reset();
  REQUIRE(rig.allAcked(acked + (end - lineStartOf(a, acked)) + b.size()));
  REQUIRE(peer.streams().size() == 2);
  // The first connection ends with the torn line, nothing after it.
  CHECK(firstDifference(peer.streams()[0], a.substr(0, cut)) == "");
  // The second starts on the line that holds the cursor, ends a at its last whole line, then b.
  CHECK(firstDifference(peer.streams()[1],
                        a.substr(lineStartOf(a, acked), end - lineStartOf(a, acked)) + b) == "");
  const ShipTotals t = rig.shipper->totals();
  CHECK(t.dropped == a.size() - end);
  CHECK(t.segment_errors == 1);
  CHECK(t.resent == end - lineStartOf(a, acked));
  CHECK(rig.pool->view()[0].errors == 0);  // the cut was the shipper's own
  CHECK(rig.shipped == std::vector<std::string>{"a.log", "b.log"});
}

TEST_CASE(
    "shipper: a segment removed under it is shipped whole from its descriptor, said and "
    "counted",
    "[ship][shipper]") {
  Peer peer;
  Rig rig({peer.address()}, true);
  rig.peers = {&peer};
  const std::string a = lineBytes(100000, 10), b = lineBytes(70000, 11), c = lineBytes(5000, 12);
  rig.shipper->start();
  rig.segment("a.log", a);
  rig.segment("b.log", b);
  rig.segment("c.log", c);
  REQUIRE(::unlink((rig.tmp.path / "b.log").c_str()) == 0);  // before the loop turns
  REQUIRE(rig.allAcked(a.size() + b.size() + c.size()));
  CHECK(peer.joined() == a + b + c);
  const ShipTotals t = rig.shipper->totals();
  CHECK(t.segment_errors == 1);
  CHECK(t.dropped == 0);
}

TEST_CASE("shipper: a cursor file removed while nothing moves is saved again", "[ship][shipper]") {
  const std::string a = lineBytes(50000, 13);
  SECTION("the upstream is down: at the next checkpoint") {
    Peer gone;
    const std::string refusing = gone.address();
    Rig rig({refusing}, true);
    { Peer moved(std::move(gone)); }
    rig.shipper->start();
    rig.segment("a.log", a);
    const fs::path cursor = rig.tmp.path / cursorPath("shared");
    REQUIRE(rig.runUntil([&] { return fs::exists(cursor); }));
    rig.runFor(200ms);
    REQUIRE(::unlink(cursor.c_str()) == 0);
    REQUIRE(rig.runUntil([&] { return fs::exists(cursor); }, 2s));
    CHECK(rig.cursorFile().segment == "a.log");
    CHECK(rig.shipper->totals().cursor_errors == 1);
  }
  SECTION("everything shipped, idle: at shutdown") {
    Peer peer;
    Rig rig({peer.address()}, true);
    rig.peers = {&peer};
    rig.shipper->start();
    rig.segment("a.log", a, false);
    REQUIRE(rig.allAcked(a.size()));
    const fs::path cursor = rig.tmp.path / cursorPath("shared");
    REQUIRE(rig.runUntil([&] { return rig.cursorFile().offset == a.size(); }));
    REQUIRE(::unlink(cursor.c_str()) == 0);
    rig.runFor(200ms);
    rig.shipper->stop();
    REQUIRE(fs::exists(cursor));
    CHECK(rig.cursorFile().offset == a.size());
    CHECK(rig.shipper->totals().cursor_errors == 1);
  }
}

TEST_CASE(
    "shipper: an upstream that stops acknowledging is given up after ack_timeout, what it "
    "acknowledged stays shipped, the rest goes to the next upstream",
    "[ship][shipper]") {
  Peer hole, good;
  hole.reading = false;  // never accepts, never reads
  Rig rig({hole.address(), good.address()}, true);
  rig.cfg.ack_timeout = 300ms;
  rig.peers = {&hole, &good};
  const std::string a = lineBytes(8u << 20, 14);
  rig.shipper->start();
  rig.segment("a.log", a);
  REQUIRE(rig.allAcked(a.size()));
  CHECK(rig.pool->view()[0].errors == 1);
  // What the black hole's kernel took, read now: a prefix of the segment; the good upstream got
  // the rest from the start of the line that held the cursor when it was given up.
  hole.drain();
  REQUIRE(hole.streams().size() == 1);
  REQUIRE(good.streams().size() == 1);
  const std::string& first = hole.streams()[0];
  const std::string& second = good.streams()[0];
  CHECK(first.size() < a.size());
  CHECK(firstDifference(first, a.substr(0, first.size())) == "");
  const size_t resume = a.size() - second.size();
  CHECK(resume <= first.size());
  CHECK(lineStartOf(a, resume) == resume);
  CHECK(firstDifference(second, a.substr(resume)) == "");
  CHECK(rig.shipper->totals().reconnects == std::vector<uint64_t>{0, 1});
}

TEST_CASE("shipper: stopped while a connect is in progress, it gives the pool back nothing",
          "[ship][shipper]") {
  // A listener whose accept queue is full: the kernel drops further SYNs, a connect to it stays
  // in progress.
  UniqueFd lfd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(lfd.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
  socklen_t len = sizeof sa;
  REQUIRE(::getsockname(lfd.get(), reinterpret_cast<sockaddr*>(&sa), &len) == 0);
  REQUIRE(::listen(lfd.get(), 0) == 0);
  UniqueFd filler(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(::connect(filler.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
  Rig rig({"127.0.0.1:" + std::to_string(ntohs(sa.sin_port))}, true);
  rig.cfg.connect_timeout = 5s;
  rig.shipper->start();
  rig.segment("a.log", lineBytes(1000, 15));
  rig.runFor(100ms);
  REQUIRE(rig.shipper->upstream().empty());  // not connected
  rig.shipper->stop();
  CHECK(rig.pool->view()[0].active == 0);
}
