// spliced-loadgen: the benchmark's load generator and verifier.
//
//   spliced-loadgen send --to HOST:PORT|unix:PATH --clients N --bytes B [--seed S] [--chunk C]
//       N concurrent clients each send B bytes of client i's pattern (seed S+i), then close.
//       Prints one JSON line: clients, bytes, seconds (first connect to last close).
//   spliced-loadgen sink --listen PORT_FILE
//       Listens on 127.0.0.1:0, writes the port to PORT_FILE, and discards every connection's
//       bytes with splice(2) into /dev/null (so the sink is never the bottleneck), closing its
//       side at EOF. After each connection it rewrites PORT_FILE.stats with the connection and
//       byte totals, for the driver to check that every byte arrived.
//   spliced-loadgen verify --bytes B --seed S FILE...
//       The concatenation of FILEs must be exactly client seed S's B-byte pattern. Exit 1 if not.
//
// The pattern: every 4 KiB block starts with (seed, offset), followed by keyed bytes of the
// stream, so misplaced, repeated or missing blocks are caught, not only wrong sizes.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
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
    if (::connect(fd, reinterpret_cast<sockaddr*>(&un), sizeof un) != 0) return -1;
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
  int rc = ::connect(fd, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
  if (rc != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

int send(const std::string& to, int clients, uint64_t bytes, uint64_t seed, size_t chunk) {
  std::atomic<int> failed{0};
  std::vector<std::thread> threads;
  auto start = std::chrono::steady_clock::now();
  for (int c = 0; c < clients; ++c) {
    threads.emplace_back([&, c] {
      int fd = -1;
      for (int attempt = 0; attempt < 50 && fd < 0; ++attempt) {
        fd = connectTo(to);
        if (fd < 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      if (fd < 0) {
        failed++;
        return;
      }
      std::vector<char> buf(chunk);
      uint64_t s = seed + static_cast<uint64_t>(c);
      std::vector<char> body = makeBody(s);
      for (uint64_t off = 0; off < bytes;) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(chunk, bytes - off));
        fillPattern(body, s, off, buf.data(), n);
        size_t done = 0;
        while (done < n) {
          ssize_t w = ::send(fd, buf.data() + done, n - done, MSG_NOSIGNAL);
          if (w < 0 && errno == EINTR) continue;
          if (w <= 0) {
            failed++;
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
  std::printf("{\"clients\":%d,\"bytes\":%llu,\"seconds\":%.6f,\"failed\":%d}\n", clients,
              static_cast<unsigned long long>(bytes) * static_cast<unsigned>(clients), secs,
              failed.load());
  return failed ? 1 : 0;
}

int verify(uint64_t bytes, uint64_t seed, const std::vector<std::string>& files) {
  std::vector<char> want(kBlock), got(1 << 20);
  std::vector<char> body = makeBody(seed);
  uint64_t off = 0;
  for (const auto& f : files) {
    int fd = ::open(f.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) die(("cannot open " + f).c_str());
    while (true) {
      ssize_t n = ::read(fd, got.data(), got.size());
      if (n < 0) die("read failed");
      if (n == 0) break;
      // Compare against the pattern from `off` (which may not be block aligned across files).
      size_t done = 0;
      while (done < static_cast<size_t>(n)) {
        uint64_t base = (off / kBlock) * kBlock;
        size_t skip = static_cast<size_t>(off - base);
        size_t len = std::min(static_cast<size_t>(n) - done, kBlock - skip);
        if (off + len > bytes) {
          std::fprintf(stderr, "verify: more bytes than the %llu sent\n",
                       static_cast<unsigned long long>(bytes));
          return 1;
        }
        fillPattern(body, seed, base, want.data(), kBlock);
        if (std::memcmp(want.data() + skip, got.data() + done, len) != 0) {
          std::fprintf(stderr, "verify: %s differs near stream offset %llu\n", f.c_str(),
                       static_cast<unsigned long long>(off));
          return 1;
        }
        done += len;
        off += len;
      }
    }
    ::close(fd);
  }
  if (off != bytes) {
    std::fprintf(stderr, "verify: %llu bytes archived, %llu sent\n",
                 static_cast<unsigned long long>(off), static_cast<unsigned long long>(bytes));
    return 1;
  }
  return 0;
}

// One thread per connection: socket -> pipe -> /dev/null, all in the kernel.
int sink(const std::string& port_file) {
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
  {
    std::string tmp = port_file + ".tmp";
    FILE* f = std::fopen(tmp.c_str(), "w");
    std::fprintf(f, "%u\n", ntohs(sa.sin_port));
    std::fclose(f);
    std::rename(tmp.c_str(), port_file.c_str());
  }
  int devnull = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  std::atomic<uint64_t> bytes{0}, conns{0};
  std::mutex stats_mu;
  while (true) {
    int fd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;
    std::thread([&, fd] {
      int p[2];
      if (::pipe2(p, O_CLOEXEC) != 0) {
        ::close(fd);
        return;
      }
      ::fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
      uint64_t mine = 0;
      while (true) {
        ssize_t n = ::splice(fd, nullptr, p[1], nullptr, 1 << 20, SPLICE_F_MOVE);
        if (n <= 0) break;
        mine += static_cast<uint64_t>(n);
        for (ssize_t left = n; left > 0;) {
          ssize_t w =
              ::splice(p[0], nullptr, devnull, nullptr, static_cast<size_t>(left), SPLICE_F_MOVE);
          if (w <= 0) break;
          left -= w;
        }
      }
      ::close(p[0]);
      ::close(p[1]);
      bytes += mine;
      conns += 1;
      {
        std::lock_guard lock(stats_mu);
        std::string tmp = port_file + ".stats.tmp";
        FILE* f = std::fopen(tmp.c_str(), "w");
        std::fprintf(f, "{\"connections\":%llu,\"bytes\":%llu}\n",
                     static_cast<unsigned long long>(conns.load()),
                     static_cast<unsigned long long>(bytes.load()));
        std::fclose(f);
        std::rename(tmp.c_str(), (port_file + ".stats").c_str());
      }
      ::close(fd);  // EOF reached: close our side, the FIN travels back to the client
    }).detach();
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) die("usage: spliced-loadgen send|sink|verify ...");
  std::string mode = argv[1];
  std::string to;
  int clients = 1;
  uint64_t bytes = 0, seed = 1;
  size_t chunk = 256 * 1024;
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
    } else {
      files.push_back(a);
    }
  }
  if (chunk == 0 || chunk % kBlock != 0) die("--chunk must be a multiple of 4096");
  if (mode == "send") {
    if (to.empty() || bytes == 0) die("send needs --to and --bytes");
    return send(to, clients, bytes, seed, chunk);
  }
  if (mode == "verify") return verify(bytes, seed, files);
  if (mode == "sink") {
    if (files.size() != 1 && to.empty()) die("sink needs --listen PORT_FILE");
    return sink(files.empty() ? to : files[0]);
  }
  die("unknown mode");
}
