// spliced/core/log.hpp: the JSON log format (a text line's fields as members) and logQuote.
#include <catch2/catch.hpp>
#include <string>

#include "spliced/core/log.hpp"

using spliced::jsonLogLine;
using spliced::logQuote;

namespace {

const char* const kTs = "2026-01-02T03:04:05.678Z";

// The members after ts and level: `{"ts":...,"level":"info",` + what the test names + `}`.
std::string json(const std::string& text, const std::string& level = "info") {
  return jsonLogLine(kTs, level, text);
}
std::string expect(const std::string& members, const std::string& level = "info") {
  std::string out = "{\"ts\":\"";
  out += kTs;
  out += "\",\"level\":\"";
  out += level;
  out += '"';
  if (!members.empty()) {
    out += ',';
    out += members;
  }
  out += '}';
  return out;
}

}  // namespace

TEST_CASE("json log: a close line - event, every field a member, numbers, duration_ms", "[log]") {
  CHECK(json("close route=app conn=3 peer=1.2.3.4:5 bytes=10 segments=1 duration=1.234s end=eof") ==
        expect(R"("event":"close","route":"app","conn":3,"peer":"1.2.3.4:5","bytes":10,)"
               R"("segments":1,"duration":"1.234s","duration_ms":1234,"end":"eof")"));
}

TEST_CASE("json log: durations as formatDuration writes them give KEY_ms", "[log]") {
  CHECK(json("x a=16ms") == expect(R"("event":"x","a":"16ms","a_ms":16)"));
  CHECK(json("x a=0ms") == expect(R"("event":"x","a":"0ms","a_ms":0)"));
  CHECK(json("x a=2s") == expect(R"("event":"x","a":"2s","a_ms":2000)"));
  CHECK(json("x a=5m3s") == expect(R"("event":"x","a":"5m3s","a_ms":303000)"));
  CHECK(json("x a=1h2m3s") == expect(R"("event":"x","a":"1h2m3s","a_ms":3723000)"));
  // Not durations: a dash (no connect yet), units without digits, a fraction of a millisecond.
  CHECK(json("x connect=-") == expect(R"("event":"x","connect":"-")"));
  CHECK(json("x a=ms b=1.5ms c=1.s") == expect(R"("event":"x","a":"ms","b":"1.5ms","c":"1.s")"));
}

TEST_CASE("json log: an error line - fields, then the free text as msg", "[log]") {
  CHECK(json("error=storage route=app conn=3 archive write failed: No space left on device; "
             "pausing this client",
             "error") ==
        expect(R"("error":"storage","route":"app","conn":3,)"
               R"("msg":"archive write failed: No space left on device; pausing this client")",
               "error"));
}

TEST_CASE("json log: fields at the end of the line are members too", "[log]") {
  CHECK(json("route=app listening on 127.0.0.1:5140 archive=var/archive/app") ==
        expect(R"("route":"app","archive":"var/archive/app","msg":"listening on 127.0.0.1:5140")"));
  CHECK(json("route=app retention: deleted 2026/a.log size=10 reason=age") ==
        expect(R"("route":"app","size":10,"reason":"age","msg":"retention: deleted 2026/a.log")"));
  // key=value in the middle of the text stays text.
  CHECK(json("route=app cannot rename a=b.log to c.log") ==
        expect(R"("route":"app","msg":"cannot rename a=b.log to c.log")"));
}

TEST_CASE("json log: a line without fields is all msg, and has no event", "[log]") {
  CHECK(json("spliced stopped") == expect(R"("msg":"spliced stopped")"));
  CHECK(json("SIGUSR1: rotating every active segment") ==
        expect(R"("msg":"SIGUSR1: rotating every active segment")"));
  CHECK(json("libevent: epoll_wait: x=1") == expect(R"("x":1,"msg":"libevent: epoll_wait:")"));
  CHECK(json("") == expect(""));
  // A word followed by text (not by a field) is not an event.
  CHECK(json("shutting down: stopped accepting") ==
        expect(R"("msg":"shutting down: stopped accepting")"));
}

TEST_CASE("json log: quoted values run to their closing quote, escapes undone", "[log]") {
  CHECK(
      json(R"(close conn=1 end=client_error error=downstream detail="Connection reset by peer")") ==
      expect(R"("event":"close","conn":1,"end":"client_error","error":"downstream",)"
             R"("detail":"Connection reset by peer")"));
  CHECK(json(R"(x path="a \"b\" c\\d" n=1)") ==
        expect(R"("event":"x","path":"a \"b\" c\\d","n":1)"));
  // A quoted number stays a string.
  CHECK(json(R"(x n="12")") == expect(R"("event":"x","n":"12")"));
  // An unclosed quote is text, not a field.
  CHECK(json(R"(route=app detail="no end)") == expect(R"("route":"app","msg":"detail=\"no end")"));
  CHECK(json(R"(route=app q="a"b end)") == expect(R"("route":"app","msg":"q=\"a\"b end")"));
}

TEST_CASE("json log: numbers only where JSON allows them, never for names", "[log]") {
  CHECK(
      json("x a=0 b=-5 c=007 d=1.5 e=12345678901234567890 f=") ==
      expect(R"("event":"x","a":0,"b":-5,"c":"007","d":"1.5","e":"12345678901234567890","f":"")"));
  // A route, peer or upstream called "7" is still a string (one type per member).
  CHECK(json("x route=7 upstream=8 error=9 end=10") ==
        expect(R"("event":"x","route":"7","upstream":"8","error":"9","end":"10")"));
}

TEST_CASE("json log: repeated and reserved keys stay text, no member written twice", "[log]") {
  CHECK(json("x a=1 a=2 tail") == expect(R"("event":"x","a":1,"msg":"a=2 tail")"));
  CHECK(json("route=app msg=hi level=9 ts=1") ==
        expect(R"("route":"app","msg":"msg=hi level=9 ts=1")"));
  // duration_ms given explicitly wins over the derived one.
  CHECK(json("x duration=1s duration_ms=7") ==
        expect(R"("event":"x","duration":"1s","duration_ms":7)"));
}

TEST_CASE("json log: escaping - quotes, backslashes, control bytes, invalid UTF-8", "[log]") {
  CHECK(json("say \"hi\" \\ \t\n\x01\x7f") == expect(R"("msg":"say \"hi\" \\ \t\n\u0001\u007f")"));
  CHECK(json("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80") ==
        expect("\"msg\":\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\""));
  // A lone continuation byte, a truncated sequence, an overlong '/', a surrogate.
  CHECK(json("a\x80 b\xc3 c\xc0\xaf d\xed\xa0\x80") ==
        expect(R"("msg":"a\ufffd b\ufffd c\ufffd\ufffd d\ufffd\ufffd\ufffd")"));
  CHECK(json("x peer=\xff") == expect(R"("event":"x","peer":"\ufffd")"));
}

TEST_CASE("json log: several spaces inside the text are kept, around it trimmed", "[log]") {
  CHECK(json("route=app  a  b   c=1") == expect(R"("route":"app","c":1,"msg":"a  b")"));
}

TEST_CASE("logQuote: plain values unchanged, others quoted so the JSON format reads them back",
          "[log]") {
  CHECK(logQuote("var/archive/app") == "var/archive/app");
  CHECK(logQuote("Connection reset by peer") == "\"Connection reset by peer\"");
  CHECK(logQuote("") == "\"\"");
  CHECK(logQuote(R"(a"b\c)") == R"("a\"b\\c")");
  CHECK(json("x path=" + logQuote(R"(my "dir" \x)") + " n=1") ==
        expect(R"("event":"x","path":"my \"dir\" \\x","n":1)"));
}
