#pragma once
// A connected socket as a pump's sink: the proxy's client -> upstream and upstream -> client
// directions. End of stream becomes shutdown(SHUT_WR), sent only after every byte (the pump calls
// finish() once its pipe and buffer are empty), so a half-close never overtakes piped bytes.
#include <cstdint>

#include "spliced/core/pump.hpp"
#include "spliced/core/syscalls.hpp"

namespace spliced {

// A SocketSink borrows the socket fd and the counter of bytes written into it.
class SocketSink : public Sink {
 public:
  SocketSink(int fd, SysCalls& sys, Counter* written) : fd_(fd), sys_(sys), written_(written) {}

  // EAGAIN is Blocked (wait for EV_WRITE); EPIPE/ECONNRESET and others are Error.
  SinkResult fromPipe(Pipe& pipe, size_t n) override;
  SinkResult fromBuffer(const char* data, size_t n) override;
  SinkResult finish() override;
  // The socket is closed as soon as this stream ends (the other direction has ended cleanly and
  // read its source to EOF, so nothing unread makes the close a reset): the close sends the FIN
  // and finish() makes no shutdown(2) of its own.
  void finishByClose() { close_follows_ = true; }
  bool closeFollows() const { return close_follows_; }

 private:
  int fd_;
  bool close_follows_ = false;
  SysCalls& sys_;
  Counter* written_;
};

}  // namespace spliced
