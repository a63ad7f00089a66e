// The records of a binary upgrade's channel: fields, a blob and descriptors over a real Unix
// socketpair, and what a broken or foreign stream gives.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <string>
#include <thread>

#include "spliced/core/handoff.hpp"

using namespace spliced;

namespace {

struct Channel {
  UniqueFd a, b;
  Channel() {
    int sv[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    a.reset(sv[0]);
    b.reset(sv[1]);
    timeval tv{2, 0};
    ::setsockopt(b.get(), SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
};

}  // namespace

TEST_CASE("handoff: a record's fields, blob and descriptors arrive as sent", "[handoff]") {
  Channel ch;
  int p[2];
  REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
  UniqueFd rd(p[0]), wr(p[1]);
  HandoffRecord r("session");
  r.set("route", "web app=1 %x\n").setNum("id", 18446744073709551615ull).set("empty", "");
  r.blob.assign("held\0bytes", 10);
  r.blob.append(300000, 'x');
  r.fds = {rd.get(), wr.get()};
  // More than the socket buffer holds: sent from a thread while this one reads.
  bool sent = false;
  std::thread sender([&] {
    sent = sendRecord(ch.a.get(), r).ok() && sendRecord(ch.a.get(), HandoffRecord("end")).ok();
  });
  Result<HandoffRecord> got = recvRecord(ch.b.get());
  Result<HandoffRecord> end = recvRecord(ch.b.get());
  sender.join();
  CHECK(sent);
  REQUIRE(got.ok());
  HandoffRecord& g = got.value();
  CHECK(g.kind == "session");
  CHECK(g.str("route").value() == "web app=1 %x\n");
  CHECK(g.num("id").value() == 18446744073709551615ull);
  CHECK(g.str("empty").value().empty());
  CHECK(g.blob == r.blob);
  REQUIRE(g.owned.size() == 2);
  // The same pipe: what goes into the received write end comes out of the sender's read end.
  UniqueFd w2 = g.takeFd(1);
  REQUIRE(::write(w2.get(), "abc", 3) == 3);
  char buf[3];
  REQUIRE(::read(rd.get(), buf, 3) == 3);
  CHECK(std::string(buf, 3) == "abc");
  CHECK_FALSE(g.takeFd(5).valid());
  CHECK_FALSE(g.num("route").ok());
  CHECK(g.str("missing").error().message() == "handoff record 'session' has no field 'missing'");
  REQUIRE(end.ok());
  CHECK(end.value().kind == "end");
  CHECK(end.value().owned.empty());
}

TEST_CASE("handoff: a closed channel, foreign bytes and a cut record are errors that say which",
          "[handoff]") {
  SECTION("closed") {
    Channel ch;
    ch.a.reset();
    Result<HandoffRecord> got = recvRecord(ch.b.get());
    REQUIRE_FALSE(got.ok());
    CHECK(got.error().message() == "the other process closed the handoff channel");
  }
  SECTION("not a record") {
    Channel ch;
    REQUIRE(::write(ch.a.get(), "GET / HTTP/1.0\r\n\r\n", 18) == 18);
    Result<HandoffRecord> got = recvRecord(ch.b.get());
    REQUIRE_FALSE(got.ok());
    CHECK(got.error().message() == "not a handoff record (bad magic)");
  }
  SECTION("cut short") {
    Channel ch;
    const char header[12] = {'S', 'P', 'L', 'H', 100, 0, 0, 0, 0, 0, 0, 0};
    REQUIRE(::write(ch.a.get(), header, 12) == 12);
    REQUIRE(::write(ch.a.get(), "hello", 5) == 5);
    ch.a.reset();
    Result<HandoffRecord> got = recvRecord(ch.b.get());
    REQUIRE_FALSE(got.ok());
    CHECK(got.error().message() == "a handoff record was cut short");
  }
  SECTION("nothing comes in time") {
    Channel ch;
    Result<HandoffRecord> got = recvRecord(ch.b.get());
    REQUIRE_FALSE(got.ok());
    CHECK(got.error().message() == "no handoff record came in time");
  }
}

TEST_CASE("handoff: field escaping and hex round-trip every byte", "[handoff]") {
  std::string all;
  for (int c = 0; c < 256; ++c) all.push_back(static_cast<char>(c));
  const std::string e = escapeField(all);
  CHECK(e.find(' ') == std::string::npos);
  CHECK(e.find('=') == std::string::npos);
  CHECK(unescapeField(e) == all);
  const std::string h = toHex(all.data(), all.size());
  std::string back(256, '\0');
  size_t len = 0;
  REQUIRE(fromHex(h, back.data(), back.size(), &len));
  CHECK(len == 256);
  CHECK(back == all);
  CHECK_FALSE(fromHex("abc", back.data(), back.size(), &len));
  CHECK_FALSE(fromHex("zz", back.data(), back.size(), &len));
  CHECK_FALSE(fromHex(h, back.data(), 10, &len));
}
