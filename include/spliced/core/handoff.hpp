#pragma once
// The messages of a binary upgrade (SIGUSR2): the running process and the new binary it started
// talk over a Unix stream socketpair. Each message is one record: a kind, named fields, an
// optional blob of bytes, and the descriptors that go with it (SCM_RIGHTS).
//
// On the wire a record is one sendmsg: a 12-byte header (the magic "SPLH", the text's length and
// the blob's, both u32 little-endian), the text ("KIND key=value key=value", values
// percent-escaped), the blob; its descriptors ride on the same sendmsg. The receiver reads the
// header with recvmsg (which delivers the descriptors) and the rest with read. The version of
// what the records say is in the first record each side sends (kHandoffVersion): a process
// refuses a version it does not know, and nothing is moved.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "spliced/core/error.hpp"
#include "spliced/core/fd.hpp"

namespace spliced {

// The version of the handoff state: raised whenever a record's meaning changes.
constexpr uint64_t kHandoffVersion = 1;
// The environment variable that tells a new binary which descriptor is its channel to the
// process that started it.
constexpr const char* kUpgradeFdEnv = "SPLICED_UPGRADE_FD";

// One record. Sent: `fds` are borrowed numbers (the sender keeps its descriptors, so that it can
// take everything back if the upgrade fails). Received: `owned` holds the descriptors, in order.
struct HandoffRecord {
  std::string kind;
  std::map<std::string, std::string> fields;
  std::string blob;
  std::vector<int> fds;
  std::vector<UniqueFd> owned;

  HandoffRecord() = default;
  explicit HandoffRecord(std::string k) : kind(std::move(k)) {}
  HandoffRecord& set(const std::string& key, const std::string& value) {
    fields[key] = value;
    return *this;
  }
  HandoffRecord& set(const std::string& key, const char* value) {
    return set(key, std::string(value));
  }
  HandoffRecord& setNum(const std::string& key, uint64_t value) {
    return set(key, std::to_string(value));
  }
  bool has(const std::string& key) const { return fields.count(key) != 0; }
  // The field, or an Error naming the record and the key.
  Result<std::string> str(const std::string& key) const;
  Result<uint64_t> num(const std::string& key) const;
  // Takes the i-th received descriptor (an invalid one when there is none).
  UniqueFd takeFd(size_t i);
};

// The most descriptors one record carries.
constexpr size_t kHandoffMaxFds = 64;

// Sends `r` whole (blocking; the socket's SO_SNDTIMEO bounds it).
Status sendRecord(int sock, const HandoffRecord& r);
// Receives one record (blocking; SO_RCVTIMEO bounds it). The end of the stream, a malformed
// header or a record over the limits is an Error that says which.
Result<HandoffRecord> recvRecord(int sock);

// Bytes as lowercase hex, and back (false: not hex, or longer than `max`).
std::string toHex(const void* data, size_t n);
bool fromHex(const std::string& hex, void* out, size_t max, size_t* len);

// "a%20b" escaping of a field value (space, '%', '=', newline and control bytes).
std::string escapeField(const std::string& v);
std::string unescapeField(const std::string& v);

}  // namespace spliced
