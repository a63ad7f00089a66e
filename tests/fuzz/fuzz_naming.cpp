// libFuzzer target: NameTemplate::compile and expand. Input: the template up to the first '\n'
// (which a template may not contain), then bytes for placeholder values and the time. A template
// that compiles is expanded with fixed values and with fuzzed ones (a valid route name, the
// file-safe IP describePeer gives for a fuzzed peer, any ports/counters/pid, any time, UTC and
// local). Every expansion that succeeds must stay inside the archive dir, and, since all these
// values are ones a real connection can have, every expansion must succeed: naming.hpp says
// expand() fails only for a name that escapes the dir or is empty, which compile() has ruled out
// with its sample values (strftime codes never expand to '/', "." or "..").
#include <fuzzer/FuzzedDataProvider.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "spliced/archive/naming.hpp"
#include "spliced/core/address.hpp"

namespace {

using Clock = std::chrono::system_clock;

void expandChecked(const spliced::NameTemplate& t, const spliced::NameVars& vars,
                   Clock::time_point when, bool localtime) {
  auto r = t.expand(vars, when, localtime);
  if (!r.ok()) {
    std::fprintf(stderr,
                 "expand failed: %s\n  route=%s peer=%s peer_port=%u conn=%llu seq=%llu pid=%d "
                 "when=%lld ns since the epoch localtime=%d\n",
                 r.error().c_str(), vars.route.c_str(), vars.peer.c_str(),
                 static_cast<unsigned>(vars.peer_port), static_cast<unsigned long long>(vars.conn),
                 static_cast<unsigned long long>(vars.seq), vars.pid,
                 static_cast<long long>(when.time_since_epoch().count()), localtime ? 1 : 0);
    FUZZ_CHECK(r.ok(), "a template that compiles expands for every connection and time");
  }
  FUZZ_CHECK(spliced::isContainedRelativePath(r.value()),
             "an expanded name stays inside the archive dir");
}

// A route name as the config accepts it: 1-64 of [A-Za-z0-9_-].
std::string routeName(FuzzedDataProvider& in) {
  static constexpr std::string_view kChars =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
  std::string raw = in.ConsumeRandomLengthString(64);
  std::string name;
  for (char c : raw) name += kChars[static_cast<unsigned char>(c) % kChars.size()];
  return name.empty() ? std::string("r") : name;
}

// {peer} as a session computes it: describePeer() of an accepted IPv4, IPv6 or unix peer.
std::string peerValue(FuzzedDataProvider& in) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  switch (in.ConsumeIntegralInRange<int>(0, 3)) {
    case 0: {
      auto* a = reinterpret_cast<sockaddr_in*>(&ss);
      a->sin_family = AF_INET;
      a->sin_addr.s_addr = in.ConsumeIntegral<uint32_t>();
      break;
    }
    case 1: {
      auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
      a->sin6_family = AF_INET6;
      auto bytes = in.ConsumeBytes<uint8_t>(16);
      if (!bytes.empty()) std::memcpy(&a->sin6_addr, bytes.data(), bytes.size());
      break;
    }
    case 2:
      ss.ss_family = AF_UNIX;
      break;
    default:
      return "shared";  // the NameVars default, used by layout: shared
  }
  return spliced::describePeer(reinterpret_cast<const sockaddr*>(&ss), len).fileSafeIp();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nl = input.find('\n');
  const std::string_view text = input.substr(0, nl);

  auto compiled = spliced::NameTemplate::compile(text);
  if (!compiled.ok()) {
    FUZZ_CHECK(!compiled.error().empty(), "a refused template says why");
    return 0;
  }
  const spliced::NameTemplate& t = compiled.value();
  FUZZ_CHECK(t.text() == text, "a template keeps its text");

  // Fixed values at a few fixed times.
  const spliced::NameVars fixed[] = {
      {"app", "127.0.0.1", 51134, 1, 0, 1234},
      {"web-2_x", "2001_db8__1", 65535, UINT64_MAX, UINT64_MAX, 2147483647},
      {"a", "unix", 0, 0, 999999, 1},
      {"shared-route", "shared", 0, 0, 1000000, 0},
  };
  const Clock::time_point times[] = {
      Clock::time_point{},
      Clock::time_point{std::chrono::seconds(1795725160)},  // 2026-11-26T20:32:40Z
      Clock::time_point{std::chrono::seconds(1788955200)},  // Wednesday, September: longest %A %B
      Clock::time_point{std::chrono::seconds(-1)},
      Clock::time_point::min(),
      Clock::time_point::max(),
  };
  for (const auto& vars : fixed) {
    for (auto when : times) expandChecked(t, vars, when, false);
  }
  expandChecked(t, fixed[0], times[1], true);

  // Fuzzed values from the bytes after the template.
  const size_t rest = nl == std::string_view::npos ? size : nl + 1;
  FuzzedDataProvider in(data + rest, size - rest);
  spliced::NameVars vars;
  vars.route = routeName(in);
  vars.peer = peerValue(in);
  vars.peer_port = in.ConsumeIntegral<uint16_t>();
  vars.conn = in.ConsumeIntegral<uint64_t>();
  vars.seq = in.ConsumeIntegral<uint64_t>();
  vars.pid = in.ConsumeIntegralInRange<int>(0, 4194304);  // pid_max on 64-bit Linux
  const Clock::time_point when{Clock::duration(in.ConsumeIntegral<int64_t>())};
  const bool localtime = in.ConsumeBool();
  expandChecked(t, vars, when, localtime);
  return 0;
}
