// spliced-loadgen: the benchmark's load generator, sink and verifier.
//
//   spliced-loadgen send --to HOST:PORT|unix:PATH --clients N --bytes B [--seed S] [--chunk C]
//                        [--lines L [--octet]]
//       N concurrent clients each send B bytes of client i's stream (seed S+i), then close.
//       --octet: each line goes as a syslog octet-counted record (RFC 6587) "L-1 SP" and the
//       line without its '\n' (what framing: octet_counted with output: lines, or rsyslog's
//       imtcp with "%rawmsg%\n", turns back into the line); B counts the lines' bytes.
//       Prints one JSON line: clients, bytes, seconds (first connect to last close).
//   spliced-loadgen streams --to HOST:PORT --clients N --seconds T [--seed S] [--chunk C]
//       N long streams (client i's stream, seed S+i) sent as fast as they go for T seconds, then
//       half-closed, each waiting for the peer's close. Prints one JSON line: clients, bytes,
//       seconds, resets (streams that saw ECONNRESET or EPIPE), failed and the first error.
//   spliced-loadgen sink --listen PORT_FILE [--epoll] [--reply R] [--check]
//       Listens on 127.0.0.1:0, writes the port to PORT_FILE, and discards every connection's
//       bytes with splice(2) into /dev/null (so the sink is never the bottleneck), closing its
//       side at EOF. By default one thread per connection (the fastest for a few big streams);
//       with --epoll two epoll threads serve all connections (for thousands of idle or short
//       ones), and --reply R answers each connection's EOF with R bytes before closing. Every
//       20 ms PORT_FILE.stats is rewritten (when it changed) with the connections closed, the
//       connections open and the bytes received, for the driver to check every byte arrived.
//       --check reads each connection instead and compares its bytes with the stream its first
//       block names, counting the connections that differ as "bad" (slow: for an untimed pass).
//   spliced-loadgen verify --bytes B --seed S FILE...
//       The concatenation of FILEs must be exactly client seed S's B-byte stream. Exit 1 if not.
//   spliced-loadgen verify-lines --lines L --bytes B --seed S --clients N [--unordered]
//                                [--whole-files] FILE...
//       FILEs (read in order, as one stream) hold exactly the lines of clients S..S+N-1, every
//       line whole and intact, each client's lines in order (or in any order with --unordered;
//       lines of different clients may interleave either way). --whole-files: no line may span
//       two files (segments of a shared chain with lines framing).
//   spliced-loadgen write --bytes B --seed S [--lines L] FILE
//       Writes client seed S's B-byte stream (what `send` sends) into FILE.
//   spliced-loadgen idle --to ADDR --clients N --bytes B
//       Opens N connections, sends B bytes on each, prints {"open":N,...} and holds them all open
//       until its standard input is closed.
//   spliced-loadgen rate --to ADDR --clients C --conns N --bytes B --reply R
//       C threads make N short connections in all: connect, send B bytes, shut down the write
//       side, read the answer to EOF (it must be R bytes), close. Prints connections per second.
//   spliced-loadgen echo --listen PORT_FILE
//       Listens on 127.0.0.1:0, writes the port to PORT_FILE, and sends every connection's bytes
//       back as they come (a thread per connection, blocking), until the peer closes.
//   spliced-loadgen udp --to HOST:PORT --messages N --lines S [--clients K] [--rate R]
//       K senders (threads, each its own socket) send N datagrams in all, S bytes each, with
//       sendmmsg in batches of 64: "<14>" (a syslog priority), "<sender:8 hex> <n:10 digits> ",
//       then 'x' up to S bytes (no '\n', as syslog senders send UDP). --rate R paces the total
//       to R datagrams per second (0: as fast as they go). Prints messages, bytes, seconds.
//   spliced-loadgen pingpong --to ADDR --clients C --bytes B --seconds T
//       C connections, each in its own thread, send B bytes and wait for B bytes back, again
//       and again for T seconds. Prints round trips, seconds and the latency percentiles (p50,
//       p99, p99.9, max in microseconds) over every round trip of every connection.
//
// The binary stream: every 4 KiB block starts with (seed, offset), followed by keyed bytes of
// the stream, so misplaced, repeated or missing blocks are caught, not only wrong sizes.
// With --lines L the stream is text: lines of L bytes (the last one '\n'), each starting with
// a syslog priority, the hex seed and line number, then keyed printable characters, as a log
// shipper would send.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

constexpr size_t kBlock = 4096;

uint64_t mix(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// The body of stream `seed`: 1 MiB of keyed bytes, repeated; every 4 KiB block then gets its
// (seed, offset) header stamped over its first 16 bytes.
constexpr size_t kBody = 1 << 20;

std::vector<char> makeBody(uint64_t seed) {
  std::vector<char> body(kBody);
  uint64_t x = mix(seed * 0x9e3779b97f4a7c15ull);
  for (size_t i = 0; i < kBody; i += 8) {
    x += 0x9e3779b97f4a7c15ull;
    uint64_t v = mix(x);
    std::memcpy(body.data() + i, &v, 8);
  }
  return body;
}

// Fills `out` with the pattern bytes [offset, offset + len) of stream `seed` (body from
// makeBody(seed)); offset is a multiple of kBlock.
void fillPattern(const std::vector<char>& body, uint64_t seed, uint64_t offset, char* out,
                 size_t len) {
  for (size_t b = 0; b < len; b += kBlock) {
    uint64_t block_off = offset + b;
    size_t n = std::min(kBlock, len - b);
    std::memcpy(out + b, body.data() + (block_off % kBody), n);
    uint64_t header[2] = {seed, block_off};
    std::memcpy(out + b, header, std::min(n, sizeof header));
  }
}

// Compares bytes, arriving in pieces of any size, with stream `seed`'s binary pattern.
class PatternChecker {
 public:
  explicit PatternChecker(uint64_t seed) : seed_(seed), body_(makeBody(seed)), want_(kBlock) {}

  // False at the first byte that differs.
  bool feed(const char* p, size_t n) {
    for (size_t done = 0; done < n;) {
      uint64_t base = (off_ / kBlock) * kBlock;
      size_t skip = static_cast<size_t>(off_ - base);
      size_t len = std::min(n - done, kBlock - skip);
      fillPattern(body_, seed_, base, want_.data(), kBlock);
      if (std::memcmp(want_.data() + skip, p + done, len) != 0) return false;
      done += len;
      off_ += len;
    }
    return true;
  }

  uint64_t offset() const { return off_; }

 private:
  uint64_t seed_;
  std::vector<char> body_;
  std::vector<char> want_;
  uint64_t off_ = 0;
};

// The text stream: line k of stream `seed` is "<14>" (a syslog priority, so syslog daemons take
// it as one message framed by its '\n'), "<seed:16 hex> <k:16 hex> ", then printable characters
// taken from one shared 1 MiB text at an offset keyed by (seed, k), and '\n'.
constexpr size_t kLineHeader = 38;
constexpr size_t kMinLine = kLineHeader + 8;

std::vector<char> makeText() {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::vector<char> text = makeBody(0);
  for (char& c : text) c = kAlphabet[static_cast<uint8_t>(c) & 63];
  return text;
}

// Generates lines of one length from the shared text; one per thread.
class Lines {
 public:
  Lines(size_t len, const std::vector<char>& text) : len_(len), text_(text), line_(len) {}

  size_t len() const { return len_; }

  // Line k of stream `seed` (len() bytes, ending in '\n'); valid until the next call.
  const char* line(uint64_t seed, uint64_t k) {
    if (seed == seed_ && k == k_) return line_.data();
    seed_ = seed;
    k_ = k;
    std::memcpy(line_.data(), "<14>", 4);
    hex(seed, line_.data() + 4);
    line_[20] = ' ';
    hex(k, line_.data() + 21);
    line_[37] = ' ';
    size_t n = len_ - kLineHeader - 1;
    size_t start = static_cast<size_t>(mix(seed * 0x9e3779b97f4a7c15ull + k) % (kBody - n));
    std::memcpy(line_.data() + kLineHeader, text_.data() + start, n);
    line_[len_ - 1] = '\n';
    return line_.data();
  }

  // Bytes [offset, offset + n) of stream `seed`.
  void fill(uint64_t seed, uint64_t offset, char* out, size_t n) {
    while (n > 0) {
      uint64_t k = offset / len_;
      size_t col = static_cast<size_t>(offset % len_);
      size_t take = std::min(n, len_ - col);
      std::memcpy(out, line(seed, k) + col, take);
      out += take;
      offset += take;
      n -= take;
    }
  }

  static bool parseHex(const char* p, uint64_t& v) {
    v = 0;
    for (int i = 0; i < 16; ++i) {
      char c = p[i];
      int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
      if (d < 0) return false;
      v = (v << 4) | static_cast<uint64_t>(d);
    }
    return true;
  }

 private:
  static void hex(uint64_t v, char* out) {
    for (int i = 15; i >= 0; --i, v >>= 4) out[i] = "0123456789abcdef"[v & 15];
  }

  size_t len_;
  const std::vector<char>& text_;
  std::vector<char> line_;
  uint64_t seed_ = ~0ull, k_ = ~0ull;
};

// Client `seed`'s stream, binary or (line_len > 0) text lines, generated piece by piece.
class Stream {
 public:
  Stream(uint64_t seed, size_t line_len, const std::vector<char>& text)
      : seed_(seed),
        line_len_(line_len),
        body_(line_len ? std::vector<char>() : makeBody(seed)),
        lines_(line_len, text) {}

  // Bytes [offset, offset + n); binary streams need offset to be a multiple of 4 KiB.
  void fill(uint64_t offset, char* out, size_t n) {
    if (line_len_) {
      lines_.fill(seed_, offset, out, n);
    } else {
      fillPattern(body_, seed_, offset, out, n);
    }
  }

 private:
  uint64_t seed_;
  size_t line_len_;
  std::vector<char> body_;
  Lines lines_;
};

[[noreturn]] void die(const char* msg) {
  std::fprintf(stderr, "spliced-loadgen: %s\n", msg);
  std::exit(2);
}

int connectTo(const std::string& to) {
  if (to.rfind("unix:", 0) == 0) {
    sockaddr_un un{};
    un.sun_family = AF_UNIX;
    std::strncpy(un.sun_path, to.c_str() + 5, sizeof un.sun_path - 1);
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&un), sizeof un) != 0) {
      int err = errno;
      ::close(fd);
      errno = err;
      return -1;
    }
    return fd;
  }
  auto colon = to.rfind(':');
  std::string host = to.substr(0, colon), port = to.substr(colon + 1);
  if (!host.empty() && host.front() == '[') host = host.substr(1, host.size() - 2);
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &res) != 0) return -1;
  int fd = ::socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    int err = errno;
    freeaddrinfo(res);
    errno = err;
    return -1;
  }
  int rc = ::connect(fd, res->ai_addr, res->ai_addrlen);
  int err = errno;
  freeaddrinfo(res);
  if (rc != 0) {
    ::close(fd);
    errno = err;
    return -1;
  }
  return fd;
}

// Failed clients: how many, and the first failure's cause, for the driver to show.
// Connects, trying again for up to a second (a listener that is not up yet, a full backlog).
int connectRetrying(const std::string& to) {
  int fd = -1;
  for (int attempt = 0; attempt < 50 && fd < 0; ++attempt) {
    fd = connectTo(to);
    if (fd < 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return fd;
}

class Failures {
 public:
  void note(const char* what, int err) {
    std::lock_guard lock(mu_);
    if (count_++ == 0) first_ = std::string(what) + ": " + std::strerror(err);
  }
  int count() const {
    std::lock_guard lock(mu_);
    return count_;
  }
  std::string json() const {
    std::lock_guard lock(mu_);
    return "\"failed\":" + std::to_string(count_) + ",\"error\":\"" + first_ + "\"";
  }

 private:
  mutable std::mutex mu_;
  int count_ = 0;
  std::string first_;
};

// Client `seed`'s lines as octet-counted records, as many whole records per piece as fit in
// `chunk` bytes (at least one).
class OctetRecords {
 public:
  OctetRecords(uint64_t seed, size_t line_len, uint64_t bytes, const std::vector<char>& text)
      : seed_(seed),
        lines_(line_len, text),
        header_(std::to_string(line_len - 1) + " "),
        count_(bytes / line_len) {}

  bool done() const { return k_ >= count_; }
  // The next piece, into `buf` (grown as needed); returns its length.
  size_t next(std::vector<char>& buf, size_t chunk) {
    const size_t rec = header_.size() + lines_.len() - 1;
    if (buf.size() < std::max(chunk, rec)) buf.resize(std::max(chunk, rec));
    size_t used = 0;
    while (k_ < count_ && (used == 0 || used + rec <= chunk)) {
      std::memcpy(buf.data() + used, header_.data(), header_.size());
      std::memcpy(buf.data() + used + header_.size(), lines_.line(seed_, k_), lines_.len() - 1);
      used += rec;
      ++k_;
    }
    return used;
  }

 private:
  uint64_t seed_;
  Lines lines_;
  std::string header_;
  uint64_t count_;
  uint64_t k_ = 0;
};

bool sendAll(int fd, const char* p, size_t n, Failures& failed) {
  size_t done = 0;
  while (done < n) {
    ssize_t w = ::send(fd, p + done, n - done, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      failed.note(w < 0 ? "send" : "send returned 0", errno);
      return false;
    }
    done += static_cast<size_t>(w);
  }
  return true;
}

int send(const std::string& to, int clients, uint64_t bytes, uint64_t seed, size_t chunk,
         size_t line_len, bool octet) {
  Failures failed;
  std::vector<char> text = line_len ? makeText() : std::vector<char>();
  std::vector<std::thread> threads;
  auto start = std::chrono::steady_clock::now();
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      int fd = connectRetrying(to);
      if (fd < 0) {
        failed.note("connect", errno);
        return;
      }
      std::vector<char> buf(chunk);
      if (octet) {
        OctetRecords records(seed + static_cast<uint64_t>(c), line_len, bytes, text);
        while (!records.done()) {
          size_t n = records.next(buf, chunk);
          if (!sendAll(fd, buf.data(), n, failed)) {
            ::close(fd);
            return;
          }
        }
        ::shutdown(fd, SHUT_WR);
        char tmp[256];
        while (::recv(fd, tmp, sizeof tmp, 0) > 0) {
        }
        ::close(fd);
        return;
      }
      Stream stream(seed + static_cast<uint64_t>(c), line_len, text);
      for (uint64_t off = 0; off < bytes;) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(chunk, bytes - off));
        stream.fill(off, buf.data(), n);
        size_t done = 0;
        while (done < n) {
          ssize_t w = ::send(fd, buf.data() + done, n - done, MSG_NOSIGNAL);
          if (w < 0 && errno == EINTR) continue;
          if (w <= 0) {
            failed.note(w < 0 ? "send" : "send returned 0", errno);
            ::close(fd);
            return;
          }
          done += static_cast<size_t>(w);
        }
        off += n;
      }
      ::shutdown(fd, SHUT_WR);
      char tmp[256];
      while (::recv(fd, tmp, sizeof tmp, 0) > 0) {
      }
      ::close(fd);
    });
  }
  for (auto& t : threads) t.join();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("{\"clients\":%d,\"bytes\":%llu,\"seconds\":%.6f,%s}\n", clients,
              static_cast<unsigned long long>(bytes) * static_cast<unsigned>(clients), secs,
              failed.json().c_str());
  return failed.count() ? 1 : 0;
}

// `clients` long streams, each sending its pattern (seed + i) as fast as it can for `seconds`,
// then a half-close and a wait for the peer's close: a proxy reloaded (or upgraded) meanwhile must
// carry every stream on without a reset. Prints the bytes sent and how many streams were reset.
int streams(const std::string& to, int clients, double seconds, uint64_t seed, size_t chunk) {
  Failures failed;
  std::atomic<uint64_t> total{0};
  std::atomic<int> resets{0};
  std::vector<std::thread> threads;
  // Each stream's longest wait between two sends that moved bytes: how long a reload or an
  // upgrade held it up (and the machine's own hiccups, which every system sees alike).
  std::vector<double> stall_ms(static_cast<size_t>(clients), 0.0);
  const auto start = std::chrono::steady_clock::now();
  const auto end = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                               std::chrono::duration<double>(seconds));
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      int fd = connectRetrying(to);
      if (fd < 0) {
        failed.note("connect", errno);
        return;
      }
      auto broken = [&](const char* what, int err) {
        if (err == ECONNRESET || err == EPIPE) {
          ++resets;
        } else {
          failed.note(what, err);
        }
        ::close(fd);
      };
      std::vector<char> buf(chunk);
      Stream stream(seed + static_cast<uint64_t>(c), 0, {});
      uint64_t off = 0;
      auto last = std::chrono::steady_clock::now();
      double& stall = stall_ms[static_cast<size_t>(c)];
      while (std::chrono::steady_clock::now() < end) {
        stream.fill(off, buf.data(), chunk);
        for (size_t done = 0; done < chunk;) {
          ssize_t w = ::send(fd, buf.data() + done, chunk - done, MSG_NOSIGNAL);
          if (w < 0 && errno == EINTR) continue;
          if (w <= 0) return broken("send", w < 0 ? errno : EPIPE);
          done += static_cast<size_t>(w);
          total += static_cast<uint64_t>(w);
          const auto now = std::chrono::steady_clock::now();
          stall = std::max(stall, std::chrono::duration<double, std::milli>(now - last).count());
          last = now;
        }
        off += chunk;
      }
      ::shutdown(fd, SHUT_WR);
      char tmp[256];
      ssize_t r;
      while ((r = ::recv(fd, tmp, sizeof tmp, 0)) > 0) {
      }
      if (r < 0) return broken("recv", errno);
      ::close(fd);
    });
  }
  for (auto& t : threads) t.join();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::sort(stall_ms.begin(), stall_ms.end());
  auto pct = [&](double p) {
    if (stall_ms.empty()) return 0.0;
    return stall_ms[std::min(stall_ms.size() - 1, static_cast<size_t>(p * stall_ms.size()))];
  };
  std::printf(
      "{\"clients\":%d,\"bytes\":%llu,\"seconds\":%.6f,\"resets\":%d,\"stall_p50_ms\":%.3f,"
      "\"stall_p99_ms\":%.3f,\"stall_max_ms\":%.3f,%s}\n",
      clients, static_cast<unsigned long long>(total.load()), secs, resets.load(), pct(0.5),
      pct(0.99), stall_ms.empty() ? 0.0 : stall_ms.back(), failed.json().c_str());
  return failed.count() ? 1 : 0;
}

int verify(uint64_t bytes, uint64_t seed, const std::vector<std::string>& files) {
  std::vector<char> got(1 << 20);
  PatternChecker checker(seed);
  for (const auto& f : files) {
    int fd = ::open(f.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) die(("cannot open " + f).c_str());
    while (true) {
      ssize_t n = ::read(fd, got.data(), got.size());
      if (n < 0) die("read failed");
      if (n == 0) break;
      if (checker.offset() + static_cast<uint64_t>(n) > bytes) {
        std::fprintf(stderr, "verify: more bytes than the %llu sent\n",
                     static_cast<unsigned long long>(bytes));
        return 1;
      }
      uint64_t at = checker.offset();
      if (!checker.feed(got.data(), static_cast<size_t>(n))) {
        std::fprintf(stderr, "verify: %s differs in stream bytes %llu+%zd\n", f.c_str(),
                     static_cast<unsigned long long>(at), n);
        return 1;
      }
    }
    ::close(fd);
  }
  if (checker.offset() != bytes) {
    std::fprintf(stderr, "verify: %llu bytes archived, %llu sent\n",
                 static_cast<unsigned long long>(checker.offset()),
                 static_cast<unsigned long long>(bytes));
    return 1;
  }
  return 0;
}

int verifyLines(size_t line_len, uint64_t bytes, uint64_t seed, uint64_t clients, bool unordered,
                bool whole_files, const std::vector<std::string>& files) {
  if (bytes % line_len != 0) die("--bytes must be a multiple of --lines");
  const uint64_t per_client = bytes / line_len;
  std::vector<char> text = makeText();
  Lines lines(line_len, text);
  std::vector<uint64_t> count(clients, 0);
  std::vector<std::vector<bool>> seen(unordered ? clients : 0);
  for (auto& v : seen) v.assign(per_client, false);
  std::string carry;  // a line split across files
  std::vector<char> got(1 << 20);
  uint64_t line_no = 0;
  auto check = [&](const std::string& file, const char* p, size_t n) -> bool {
    ++line_no;
    uint64_t s = 0, k = 0;
    auto fail = [&](const char* why) {
      std::fprintf(stderr, "verify-lines: %s: line %llu: %s\n", file.c_str(),
                   static_cast<unsigned long long>(line_no), why);
      return false;
    };
    if (n != line_len) return fail("wrong length");
    if (!Lines::parseHex(p + 4, s) || !Lines::parseHex(p + 21, k)) return fail("bad header");
    if (s < seed || s - seed >= clients) return fail("unknown client");
    uint64_t c = s - seed;
    if (k >= per_client) return fail("line number beyond what was sent");
    if (std::memcmp(p, lines.line(s, k), line_len) != 0) return fail("line differs");
    if (unordered) {
      if (seen[c][k]) return fail("line repeated");
      seen[c][k] = true;
    } else if (k != count[c]) {
      return fail("line out of order (or a line missing before it)");
    }
    ++count[c];
    return true;
  };
  for (const auto& f : files) {
    int fd = ::open(f.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) die(("cannot open " + f).c_str());
    while (true) {
      ssize_t n = ::read(fd, got.data(), got.size());
      if (n < 0) die("read failed");
      if (n == 0) break;
      const char* p = got.data();
      const char* end = p + n;
      while (p < end) {
        const char* nl = static_cast<const char*>(std::memchr(p, '\n', end - p));
        if (nl == nullptr) {
          carry.append(p, end);
          if (carry.size() > line_len) {
            check(f, carry.data(), carry.size());  // reports the over-long line
            return 1;
          }
          break;
        }
        bool ok;
        if (!carry.empty()) {
          carry.append(p, nl + 1);
          ok = check(f, carry.data(), carry.size());
          carry.clear();
        } else {
          ok = check(f, p, static_cast<size_t>(nl + 1 - p));
        }
        if (!ok) return 1;
        p = nl + 1;
      }
    }
    ::close(fd);
    if (whole_files && !carry.empty()) {
      std::fprintf(stderr, "verify-lines: %s ends inside a line (%zu bytes of it)\n", f.c_str(),
                   carry.size());
      return 1;
    }
  }
  if (!carry.empty()) {
    std::fprintf(stderr, "verify-lines: %zu bytes after the last whole line\n", carry.size());
    return 1;
  }
  for (uint64_t c = 0; c < clients; ++c) {
    if (count[c] != per_client) {
      std::fprintf(stderr, "verify-lines: client %llu: %llu lines of %llu\n",
                   static_cast<unsigned long long>(seed + c),
                   static_cast<unsigned long long>(count[c]),
                   static_cast<unsigned long long>(per_client));
      return 1;
    }
  }
  return 0;
}

int writeStream(uint64_t bytes, uint64_t seed, size_t line_len, const std::string& file) {
  FILE* f = std::fopen(file.c_str(), "wb");
  if (f == nullptr) die(("cannot create " + file).c_str());
  std::vector<char> text = line_len ? makeText() : std::vector<char>();
  Stream stream(seed, line_len, text);
  std::vector<char> buf(1 << 20);
  for (uint64_t off = 0; off < bytes;) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), bytes - off));
    stream.fill(off, buf.data(), n);
    if (std::fwrite(buf.data(), 1, n, f) != n) die("write failed");
    off += n;
  }
  return std::fclose(f) == 0 ? 0 : 1;
}

void raiseFdLimit() {
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
}

// What the sink has seen; a thread rewrites PORT_FILE.stats from it every 20 ms when it changed.
// With --check, `bad` counts connections whose bytes were not a client's stream and `seeds`
// sums the client numbers of the good ones (each client once: 1 + 2 + ... + N).
struct SinkStats {
  std::atomic<uint64_t> accepted{0}, closed{0}, bytes{0}, bad{0}, seeds{0};
  // Bytes received per 100 ms since the sink started (CLOCK_MONOTONIC, as the driver's clock):
  // the throughput over time, timed where the bytes arrive.
  static constexpr size_t kWindows = 3000;
  const int64_t start_ns = monotonicNs();
  std::array<std::atomic<uint64_t>, kWindows> windows{};

  static int64_t monotonicNs() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
  }
  void received(uint64_t n) {
    bytes += n;
    const auto w = static_cast<size_t>((monotonicNs() - start_ns) / 100000000);
    if (w < kWindows) windows[w] += n;
  }

  // PORT_FILE.windows: the start (ns, CLOCK_MONOTONIC) and the bytes of each 100 ms since.
  void writeWindows(const std::string& port_file) {
    std::string out = "{\"start_ns\":" + std::to_string(start_ns) + ",\"bytes\":[";
    size_t last = 0;
    for (size_t i = 0; i < kWindows; ++i) {
      if (windows[i].load() != 0) last = i + 1;
    }
    for (size_t i = 0; i < last; ++i) {
      if (i != 0) out += ',';
      out += std::to_string(windows[i].load());
    }
    out += "]}\n";
    std::string tmp = port_file + ".windows.tmp";
    FILE* f = std::fopen(tmp.c_str(), "w");
    if (f == nullptr) return;
    std::fwrite(out.data(), 1, out.size(), f);
    std::fclose(f);
    std::rename(tmp.c_str(), (port_file + ".windows").c_str());
  }

  [[noreturn]] void writeLoop(const std::string& port_file) {
    uint64_t last[5] = {~0ull, ~0ull, ~0ull, ~0ull, ~0ull};
    while (true) {
      uint64_t now[5] = {closed.load(), accepted.load(), bytes.load(), bad.load(), seeds.load()};
      if (std::memcmp(now, last, sizeof now) != 0) {
        std::string tmp = port_file + ".stats.tmp";
        FILE* f = std::fopen(tmp.c_str(), "w");
        if (f == nullptr) die("sink: cannot write the stats file");
        std::fprintf(f,
                     "{\"connections\":%llu,\"open\":%llu,\"bytes\":%llu,\"bad\":%llu,"
                     "\"seeds\":%llu}\n",
                     static_cast<unsigned long long>(now[0]),
                     static_cast<unsigned long long>(now[1] - now[0]),
                     static_cast<unsigned long long>(now[2]),
                     static_cast<unsigned long long>(now[3]),
                     static_cast<unsigned long long>(now[4]));
        std::fclose(f);
        std::rename(tmp.c_str(), (port_file + ".stats").c_str());
        std::memcpy(last, now, sizeof now);
        writeWindows(port_file);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
};

int listenAndPublish(const std::string& port_file) {
  int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  ::setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::bind(lfd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0 || ::listen(lfd, 4096) != 0) {
    die("sink: cannot listen");
  }
  socklen_t len = sizeof sa;
  ::getsockname(lfd, reinterpret_cast<sockaddr*>(&sa), &len);
  std::string tmp = port_file + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "w");
  if (f == nullptr) die("sink: cannot write the port file");
  std::fprintf(f, "%u\n", ntohs(sa.sin_port));
  std::fclose(f);
  std::rename(tmp.c_str(), port_file.c_str());
  return lfd;
}

// 1 MiB pipes need root beyond the user's pipe budget (fs/pipe-user-pages-soft), which the
// system under test shares: other users keep the default size.
void growPipe(int fd) {
  if (::geteuid() == 0) ::fcntl(fd, F_SETPIPE_SZ, 1 << 20);
}

int acceptOrWait(int lfd, int flags) {
  int fd = ::accept4(lfd, nullptr, nullptr, flags);
  if (fd < 0 && errno != EINTR && errno != ECONNABORTED) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // EMFILE and the like
  }
  return fd;
}

// --check: reads the connection's bytes and compares them with the stream its first block
// names (slow, for an untimed verification pass). False if they are not a client's stream.
bool readAndCheck(int fd, SinkStats& stats, uint64_t& seed_out) {
  std::vector<char> got(1 << 20);
  uint64_t seed = 0;
  ssize_t first = ::recv(fd, got.data(), sizeof seed, MSG_WAITALL);  // the first block's seed
  if (first == 0) return true;
  if (first != static_cast<ssize_t>(sizeof seed)) return false;
  std::memcpy(&seed, got.data(), sizeof seed);
  seed_out = seed;
  PatternChecker checker(seed);
  for (ssize_t n = first; n != 0; n = ::read(fd, got.data(), got.size())) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    stats.received(static_cast<uint64_t>(n));
    if (!checker.feed(got.data(), static_cast<size_t>(n))) return false;
  }
  return true;
}

// One thread per connection: socket -> pipe -> /dev/null, all in the kernel, blocking.
[[noreturn]] void sinkThreads(int lfd, int devnull, SinkStats& stats, bool check) {
  while (true) {
    int fd = acceptOrWait(lfd, SOCK_CLOEXEC);
    if (fd < 0) continue;
    stats.accepted++;
    std::thread([&stats, fd, devnull, check] {
      if (check) {
        uint64_t seed = 0;
        if (readAndCheck(fd, stats, seed)) {
          stats.seeds += seed;
        } else {
          stats.bad++;
        }
        ::close(fd);
        stats.closed++;
        return;
      }
      int p[2];
      if (::pipe2(p, O_CLOEXEC) == 0) {
        growPipe(p[1]);
        while (true) {
          ssize_t n = ::splice(fd, nullptr, p[1], nullptr, 1 << 20, SPLICE_F_MOVE);
          if (n <= 0) break;
          stats.received(static_cast<uint64_t>(n));
          for (ssize_t left = n; left > 0;) {
            ssize_t w =
                ::splice(p[0], nullptr, devnull, nullptr, static_cast<size_t>(left), SPLICE_F_MOVE);
            if (w <= 0) break;
            left -= w;
          }
        }
        ::close(p[0]);
        ::close(p[1]);
      }
      ::close(fd);  // EOF reached: close our side, the FIN travels back to the client
      stats.closed++;
    }).detach();
  }
}

// Two epoll threads for all connections (non-blocking sockets), each with one pipe.
[[noreturn]] void sinkEpoll(int lfd, int devnull, SinkStats& stats, size_t reply) {
  constexpr int kWorkers = 2;
  int epfd[kWorkers];
  std::string answer(reply, 'r');
  for (int w = 0; w < kWorkers; ++w) {
    epfd[w] = ::epoll_create1(EPOLL_CLOEXEC);
    std::thread([&stats, &answer, devnull, ep = epfd[w]] {
      int p[2];
      if (::pipe2(p, O_CLOEXEC) != 0) die("sink: pipe2");
      growPipe(p[1]);
      epoll_event events[256];
      while (true) {
        int n = ::epoll_wait(ep, events, 256, -1);
        for (int i = 0; i < n; ++i) {
          int fd = events[i].data.fd;
          size_t moved = 0;
          bool done = false;
          while (moved < (4u << 20)) {
            ssize_t r =
                ::splice(fd, nullptr, p[1], nullptr, 1 << 20, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (r > 0) {
              moved += static_cast<size_t>(r);
              for (ssize_t left = r; left > 0;) {
                ssize_t w = ::splice(p[0], nullptr, devnull, nullptr, static_cast<size_t>(left),
                                     SPLICE_F_MOVE);
                if (w <= 0) die("sink: splice to /dev/null");
                left -= w;
              }
              continue;
            }
            if (r < 0 && errno == EAGAIN) break;
            if (r < 0 && errno == EINTR) continue;
            done = true;  // EOF or an error
            if (r == 0 && !answer.empty()) {
              (void)::send(fd, answer.data(), answer.size(), MSG_NOSIGNAL);
            }
            break;
          }
          stats.received(moved);
          if (done) {
            ::close(fd);
            stats.closed++;
          }
        }
      }
    }).detach();
  }
  for (unsigned next = 0;; next = (next + 1) % kWorkers) {
    int fd = acceptOrWait(lfd, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0) continue;
    stats.accepted++;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLRDHUP;
    ev.data.fd = fd;
    if (::epoll_ctl(epfd[next], EPOLL_CTL_ADD, fd, &ev) != 0) die("sink: epoll_ctl");
  }
}

int sink(const std::string& port_file, bool use_epoll, size_t reply, bool check) {
  raiseFdLimit();
  int lfd = listenAndPublish(port_file);
  int devnull = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  static SinkStats stats;
  std::thread([&port_file] { stats.writeLoop(port_file); }).detach();
  if (use_epoll) sinkEpoll(lfd, devnull, stats, reply);
  sinkThreads(lfd, devnull, stats, check);
}

bool sendAll(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

int idle(const std::string& to, int clients, uint64_t bytes) {
  raiseFdLimit();
  std::vector<int> fds;
  std::string hello(bytes, 'i');
  int failed = 0;
  auto start = std::chrono::steady_clock::now();
  for (int c = 0; c < clients; ++c) {
    int fd = connectRetrying(to);
    if (fd < 0) {
      ++failed;
      continue;
    }
    if (!sendAll(fd, hello.data(), hello.size())) ++failed;
    fds.push_back(fd);
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("{\"open\":%zu,\"failed\":%d,\"seconds\":%.6f}\n", fds.size(), failed, secs);
  std::fflush(stdout);
  char tmp[64];
  while (::read(0, tmp, sizeof tmp) > 0) {
  }
  for (int fd : fds) ::close(fd);
  return failed ? 1 : 0;
}

int rate(const std::string& to, int threads, uint64_t conns, uint64_t bytes, uint64_t reply) {
  raiseFdLimit();
  std::atomic<uint64_t> next{0};
  Failures failed;
  std::vector<char> request(std::max<uint64_t>(bytes, 1), 'q');
  auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      char buf[4096];
      while (next++ < conns) {
        int fd = connectRetrying(to);
        if (fd < 0) {
          failed.note("connect", errno);
          continue;
        }
        uint64_t got = 0;
        bool intact = true;
        bool ok = sendAll(fd, request.data(), bytes) && ::shutdown(fd, SHUT_WR) == 0;
        if (!ok) failed.note("send", errno);
        while (ok) {
          ssize_t n = ::recv(fd, buf, sizeof buf, 0);
          if (n < 0 && errno == EINTR) continue;
          if (n < 0) {
            failed.note("recv", errno);
            ok = false;
          }
          if (n <= 0) break;
          got += static_cast<uint64_t>(n);
          intact = intact && std::all_of(buf, buf + n, [](char c) { return c == 'r'; });
        }
        if (ok && (got != reply || !intact)) failed.note("answer differs", EPROTO);
        ::close(fd);
      }
    });
  }
  for (auto& t : pool) t.join();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("{\"connections\":%llu,\"seconds\":%.6f,%s}\n",
              static_cast<unsigned long long>(conns), secs, failed.json().c_str());
  return failed.count() ? 1 : 0;
}

int echo(const std::string& port_file) {
  raiseFdLimit();
  int lfd = listenAndPublish(port_file);
  for (;;) {
    int fd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      die("echo: accept");
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    std::thread([fd] {
      std::vector<char> buf(256 * 1024);
      for (;;) {
        ssize_t n = ::recv(fd, buf.data(), buf.size(), 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0 || !sendAll(fd, buf.data(), static_cast<size_t>(n))) break;
      }
      ::close(fd);
    }).detach();
  }
}

int pingpong(const std::string& to, int clients, uint64_t bytes, double seconds) {
  raiseFdLimit();
  Failures failed;
  std::mutex mu;
  std::vector<uint32_t> all_ns;  // every round trip, in nanoseconds (capped at 4.29 s)
  const auto start = std::chrono::steady_clock::now();
  const auto end = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                               std::chrono::duration<double>(seconds));
  std::vector<std::thread> pool;
  for (int c = 0; c < clients; ++c) {
    pool.emplace_back([&, c] {
      int fd = connectRetrying(to);
      if (fd < 0) return failed.note("connect", errno);
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      std::vector<char> msg(bytes, static_cast<char>('a' + c % 26));
      std::vector<char> back(bytes);
      std::vector<uint32_t> mine;
      mine.reserve(1 << 20);
      while (std::chrono::steady_clock::now() < end) {
        const auto t0 = std::chrono::steady_clock::now();
        if (!sendAll(fd, msg.data(), msg.size())) {
          failed.note("send", errno);
          break;
        }
        size_t got = 0;
        while (got < bytes) {
          ssize_t n = ::recv(fd, back.data() + got, bytes - got, 0);
          if (n < 0 && errno == EINTR) continue;
          if (n <= 0) {
            failed.note(n == 0 ? "closed" : "recv", n == 0 ? EPIPE : errno);
            got = 0;
            break;
          }
          got += static_cast<size_t>(n);
        }
        if (got != bytes) break;
        const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                            std::chrono::steady_clock::now() - t0)
                            .count();
        mine.push_back(static_cast<uint32_t>(std::min<int64_t>(ns, UINT32_MAX)));
        if (back != msg) {
          failed.note("answer differs", EPROTO);
          break;
        }
      }
      ::close(fd);
      std::lock_guard<std::mutex> lock(mu);
      all_ns.insert(all_ns.end(), mine.begin(), mine.end());
    });
  }
  for (auto& t : pool) t.join();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::sort(all_ns.begin(), all_ns.end());
  auto pct = [&](double p) {
    if (all_ns.empty()) return 0.0;
    size_t i =
        std::min(all_ns.size() - 1, static_cast<size_t>(p * static_cast<double>(all_ns.size())));
    return all_ns[i] / 1000.0;
  };
  std::printf(
      "{\"round_trips\":%zu,\"seconds\":%.6f,\"p50_us\":%.1f,\"p99_us\":%.1f,"
      "\"p999_us\":%.1f,\"max_us\":%.1f,%s}\n",
      all_ns.size(), secs, pct(0.50), pct(0.99), pct(0.999),
      all_ns.empty() ? 0.0 : all_ns.back() / 1000.0, failed.json().c_str());
  return failed.count() ? 1 : 0;
}

}  // namespace

int udp(const std::string& to, int senders, uint64_t messages, size_t size, uint64_t rate) {
  if (size < 25) die("--lines must be at least 25 for udp");
  auto colon = to.rfind(':');
  if (colon == std::string::npos) die("udp needs --to HOST:PORT");
  std::string host = to.substr(0, colon);
  if (host.size() > 1 && host.front() == '[') host = host.substr(1, host.size() - 2);
  sockaddr_storage ss{};
  socklen_t ss_len = 0;
  const int port = std::stoi(to.substr(colon + 1));
  if (host.find(':') != std::string::npos) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET6, host.c_str(), &a->sin6_addr) != 1) die("bad IPv6 address");
    ss_len = sizeof *a;
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(static_cast<uint16_t>(port));
    if (inet_pton(AF_INET, host.c_str(), &a->sin_addr) != 1) die("bad IPv4 address");
    ss_len = sizeof *a;
  }
  constexpr unsigned kBatch = 64;
  Failures failed;
  std::vector<std::thread> threads;
  auto start = std::chrono::steady_clock::now();
  for (int t = 0; t < senders; ++t) {
    threads.emplace_back([&, t] {
      int fd = ::socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
      if (fd < 0 || ::connect(fd, reinterpret_cast<const sockaddr*>(&ss), ss_len) != 0) {
        failed.note("udp socket", errno);
        if (fd >= 0) ::close(fd);
        return;
      }
      const uint64_t first = messages * static_cast<uint64_t>(t) / static_cast<uint64_t>(senders);
      const uint64_t last =
          messages * static_cast<uint64_t>(t + 1) / static_cast<uint64_t>(senders);
      std::vector<char> buf(static_cast<size_t>(kBatch) * size, 'x');
      std::vector<mmsghdr> msgs(kBatch);
      std::vector<iovec> iov(kBatch);
      const double per_sender = rate ? static_cast<double>(rate) / senders : 0;
      auto t0 = std::chrono::steady_clock::now();
      for (uint64_t n = first; n < last;) {
        const unsigned k = static_cast<unsigned>(std::min<uint64_t>(kBatch, last - n));
        for (unsigned i = 0; i < k; ++i) {
          char* m = buf.data() + static_cast<size_t>(i) * size;
          char head[32];
          int h = std::snprintf(head, sizeof head, "<14>%08x %010llu ", t,
                                static_cast<unsigned long long>(n + i + 1));
          std::memcpy(m, head, static_cast<size_t>(h));
          iov[i] = {m, size};
          msgs[i] = {};
          msgs[i].msg_hdr.msg_iov = &iov[i];
          msgs[i].msg_hdr.msg_iovlen = 1;
        }
        int sent = ::sendmmsg(fd, msgs.data(), k, 0);
        if (sent < 0) {
          if (errno == EINTR || errno == ENOBUFS || errno == EAGAIN) continue;
          if (errno == ECONNREFUSED) continue;  // an ICMP error of an earlier datagram
          failed.note("sendmmsg", errno);
          break;
        }
        n += static_cast<uint64_t>(sent);
        if (per_sender > 0) {
          auto due =
              t0 + std::chrono::duration<double>(static_cast<double>(n - first) / per_sender);
          std::this_thread::sleep_until(
              std::chrono::time_point_cast<std::chrono::steady_clock::duration>(due));
        }
      }
      ::close(fd);
    });
  }
  for (auto& th : threads) th.join();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("{\"messages\":%llu,\"bytes\":%llu,\"seconds\":%.6f,%s}\n",
              static_cast<unsigned long long>(messages),
              static_cast<unsigned long long>(messages * size), secs, failed.json().c_str());
  return failed.count() ? 1 : 0;
}

int main(int argc, char** argv) {
  if (argc < 2)
    die("usage: spliced-loadgen send|streams|sink|verify|verify-lines|idle|rate|echo|pingpong|udp "
        "...");
  std::string mode = argv[1];
  std::string to;
  int clients = 1;
  uint64_t bytes = 0, seed = 1, conns = 0, reply = 0, messages = 0, per_second = 0;
  double seconds = 0;
  size_t chunk = 256 * 1024, line_len = 0;
  bool use_epoll = false, unordered = false, whole_files = false, check = false, octet = false;
  std::vector<std::string> files;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) die(("missing value for " + a).c_str());
      return argv[++i];
    };
    if (a == "--to" || a == "--listen") {
      to = val();
    } else if (a == "--clients") {
      clients = std::stoi(val());
    } else if (a == "--bytes") {
      bytes = std::stoull(val());
    } else if (a == "--seed") {
      seed = std::stoull(val());
    } else if (a == "--chunk") {
      chunk = std::stoul(val());
    } else if (a == "--lines") {
      line_len = std::stoul(val());
    } else if (a == "--messages") {
      messages = std::stoull(val());
    } else if (a == "--rate") {
      per_second = std::stoull(val());
    } else if (a == "--conns") {
      conns = std::stoull(val());
    } else if (a == "--reply") {
      reply = std::stoull(val());
    } else if (a == "--seconds") {
      seconds = std::stod(val());
    } else if (a == "--epoll") {
      use_epoll = true;
    } else if (a == "--unordered") {
      unordered = true;
    } else if (a == "--whole-files") {
      whole_files = true;
    } else if (a == "--check") {
      check = true;
    } else if (a == "--octet") {
      octet = true;
    } else if (a.rfind("--", 0) == 0) {
      die(("unknown option " + a).c_str());
    } else {
      files.push_back(a);
    }
  }
  if (chunk == 0 || chunk % kBlock != 0) die("--chunk must be a multiple of 4096");
  if (mode == "udp") {
    if (to.empty() || messages == 0 || line_len == 0) die("udp needs --to, --messages, --lines");
    return udp(to, clients, messages, line_len, per_second);
  }
  if (line_len != 0 && (line_len < kMinLine || line_len > kBody / 2)) {
    die("--lines must be between 46 and 524288");
  }
  if (mode == "send") {
    if (to.empty() || bytes == 0) die("send needs --to and --bytes");
    if (octet && (line_len == 0 || bytes % line_len != 0)) {
      die("--octet needs --lines, and --bytes a multiple of it");
    }
    return send(to, clients, bytes, seed, chunk, line_len, octet);
  }
  if (mode == "streams") {
    if (to.empty() || seconds <= 0) die("streams needs --to and --seconds");
    return streams(to, clients, seconds, seed, chunk);
  }
  if (mode == "verify") return verify(bytes, seed, files);
  if (mode == "write") {
    if (files.size() != 1) die("write needs one FILE");
    return writeStream(bytes, seed, line_len, files[0]);
  }
  if (mode == "verify-lines") {
    if (line_len == 0 || bytes == 0) die("verify-lines needs --lines and --bytes");
    return verifyLines(line_len, bytes, seed, static_cast<uint64_t>(clients), unordered,
                       whole_files, files);
  }
  if (mode == "sink") {
    if (files.size() != 1 && to.empty()) die("sink needs --listen PORT_FILE");
    if (check && use_epoll) die("--check works with the thread sink only");
    return sink(files.empty() ? to : files[0], use_epoll, reply, check);
  }
  if (mode == "idle") {
    if (to.empty()) die("idle needs --to");
    return idle(to, clients, bytes);
  }
  if (mode == "rate") {
    if (to.empty() || conns == 0) die("rate needs --to and --conns");
    return rate(to, clients, conns, bytes, reply);
  }
  if (mode == "echo") {
    if (files.size() != 1 && to.empty()) die("echo needs --listen PORT_FILE");
    return echo(files.empty() ? to : files[0]);
  }
  if (mode == "pingpong") {
    if (to.empty() || bytes == 0 || seconds <= 0) die("pingpong needs --to, --bytes, --seconds");
    return pingpong(to, clients, bytes, seconds);
  }
  die("unknown mode");
}
