#pragma once
// Archive segment names: a template relative to the archive dir with strftime codes and the
// placeholders {route} {peer} {peer_port} {conn} {seq} {pid}. See docs/CONFIG.md.
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "spliced/core/units.hpp"

namespace spliced {

// What a template can refer to when it is expanded.
struct NameVars {
  std::string route;
  std::string peer = "shared";  // file-safe IP (':' -> '_'); "unix" for unix peers
  uint16_t peer_port = 0;
  uint64_t conn = 0;
  uint64_t seq = 0;  // written zero-padded to 6 digits so that `ls` sorts a chain in order
  int pid = 0;
};

class NameTemplate {
 public:
  // Checks placeholders and strftime codes, and refuses absolute paths and '..' components.
  static Parsed<NameTemplate> compile(std::string_view text);

  // The relative path for a segment opened at `when`. Fails only if the result would escape the
  // archive dir or be empty (e.g. a strftime code that expands to "..").
  Parsed<std::string> expand(const NameVars& vars, std::chrono::system_clock::time_point when,
                             bool localtime) const;

  bool usesPeer() const { return uses_peer_; }
  bool usesConn() const { return uses_conn_; }
  bool usesSeq() const { return uses_seq_; }
  const std::string& text() const { return text_; }

 private:
  std::string text_;
  bool uses_peer_ = false;
  bool uses_conn_ = false;
  bool uses_seq_ = false;
};

// True when `rel` is a relative path with no empty, "." or ".." component.
bool isContainedRelativePath(std::string_view rel);

}  // namespace spliced
