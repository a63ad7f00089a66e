// libFuzzer target: what `spliced cat` reads from outside, segment names (read backwards with a
// name template) and time arguments. Input: a template up to the first '\n', a name up to the
// next '\n', then bytes for a time argument and for values. Properties: any template that
// compiles parses any name without crashing, within its step bound; a name the default
// per_connection template expands from real values (a valid route name, an IPv4 or file-safe
// IPv6 peer, any conn, seq and time) is read back to exactly those values; parseTimeArg never
// crashes and unix seconds read back as themselves.
#include <arpa/inet.h>
#include <fuzzer/FuzzedDataProvider.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "fuzz_check.hpp"
#include "spliced/archive/naming.hpp"
#include "spliced/cli/segment_index.hpp"

namespace {

constexpr const char* kDefault = "%Y/%m/%d/{route}-{peer}-{conn}-%H%M%S-{seq}.log";

std::string routeName(FuzzedDataProvider& in) {
  static constexpr std::string_view kChars =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-";
  std::string out;
  const size_t n = in.ConsumeIntegralInRange<size_t>(1, 64);
  for (size_t i = 0; i < n; ++i) out += kChars[in.ConsumeIntegralInRange<size_t>(0, 63)];
  return out;
}

std::string peerName(FuzzedDataProvider& in) {
  if (in.ConsumeBool()) {
    return std::to_string(in.ConsumeIntegral<uint8_t>()) + "." +
           std::to_string(in.ConsumeIntegral<uint8_t>()) + "." +
           std::to_string(in.ConsumeIntegral<uint8_t>()) + "." +
           std::to_string(in.ConsumeIntegral<uint8_t>());
  }
  // An IPv6 address as inet_ntop writes it, with ':' as '_' (what {peer} holds).
  unsigned char a[16];
  for (auto& b : a) b = in.ConsumeIntegral<uint8_t>();
  char text[INET6_ADDRSTRLEN];
  ::inet_ntop(AF_INET6, a, text, sizeof text);
  return spliced::cli::fileSafePeer(text);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view all(reinterpret_cast<const char*>(data), size);
  const size_t nl = all.find('\n');
  const std::string_view text = all.substr(0, nl);
  std::string_view rest = nl == std::string_view::npos ? std::string_view() : all.substr(nl + 1);
  const size_t nl2 = rest.find('\n');
  const std::string_view name = rest.substr(0, nl2);
  rest = nl2 == std::string_view::npos ? std::string_view() : rest.substr(nl2 + 1);

  if (spliced::NameTemplate::compile(text).ok()) {
    spliced::cli::NameParser p(text, false);
    (void)p.parse(name);
    spliced::cli::NameParser local(text, true);
    (void)local.parse(name);
  }
  (void)spliced::cli::parseTimeArg(name);

  FuzzedDataProvider in(reinterpret_cast<const uint8_t*>(rest.data()), rest.size());
  const int64_t secs = in.ConsumeIntegralInRange<int64_t>(0, 9223372035);  // int64 ns: to 2262
  auto t = spliced::cli::parseTimeArg(std::to_string(secs));
  FUZZ_CHECK(t.ok() && t.value() == secs * 1000000000, "unix seconds read back as themselves");

  spliced::NameVars vars{routeName(in),
                         peerName(in),
                         0,
                         in.ConsumeIntegral<uint64_t>(),
                         in.ConsumeIntegral<uint64_t>(),
                         0};
  // 1800 to 2255: four-digit years, within what system_clock (int64 ns) holds.
  const int64_t when = in.ConsumeIntegralInRange<int64_t>(-5364662400, 9000000000);
  auto tmpl = spliced::NameTemplate::compile(kDefault);
  auto expanded = tmpl.value().expand(
      vars, std::chrono::system_clock::time_point(std::chrono::seconds(when)), false);
  if (!expanded.ok()) return 0;
  spliced::cli::NameParser p(kDefault, false);
  auto n = p.parse(expanded.value());
  if (!n) std::fprintf(stderr, "name: '%s'\n", expanded.value().c_str());
  FUZZ_CHECK(n.has_value(), "a name the default template wrote is read back");
  FUZZ_CHECK(n->route == vars.route && n->peer == vars.peer && n->conn == vars.conn &&
                 n->seq == vars.seq && n->opened == when && n->suffix == 0,
             "the values read back are the ones the name was written from");
  return 0;
}
