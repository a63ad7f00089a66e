#include "spliced/collect/udp_receiver.hpp"

#include <arpa/inet.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <fmt/format.h>
#include <algorithm>
#include <cerrno>
#include <cstring>

#include "spliced/collect/collect_route.hpp"
#include "spliced/core/log.hpp"
#include "spliced/core/units.hpp"

namespace spliced {
namespace {

// Datagrams per recvmmsg call, and calls per wake-up before the other events of the loop get a
// turn (level-triggered: the loop comes back at once if more is waiting).
constexpr unsigned kBatch = 64;
constexpr size_t kBatchesPerWakeup = 16;
// At a stop, at most this many more batches are taken from the socket.
constexpr size_t kCloseBatches = 256;
// The largest UDP payload (IPv6 without jumbograms: 65535 less the UDP header, IPv4 less).
constexpr size_t kMaxDatagram = 65535;
constexpr std::chrono::milliseconds kFirstBackoff{100};
constexpr std::chrono::milliseconds kMaxBackoff{5000};

size_t digits(size_t v) {
  size_t d = 1;
  while (v >= 10) {
    v /= 10;
    ++d;
  }
  return d;
}

// The raw bytes of a sender's IP (an IPv4-mapped IPv6 address as IPv4): the key of its chain.
std::string peerKey(const sockaddr* sa) {
  if (sa->sa_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(sa);
    return std::string(reinterpret_cast<const char*>(&in->sin_addr), 4);
  }
  if (sa->sa_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(sa);
    const char* a = reinterpret_cast<const char*>(&in6->sin6_addr);
    if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) return std::string(a + 12, 4);
    return std::string(a, 16);
  }
  return {};
}

}  // namespace

UdpRecordShape udpRecordShape(const ArchiveConfig& cfg) {
  UdpRecordShape s;
  const bool octet = cfg.framing == Framing::OctetCounted;
  s.newline = cfg.framing == Framing::Lines || (octet && cfg.output == RecordOutput::Lines);
  s.header = octet && cfg.output == RecordOutput::AsReceived;
  // The longest datagram whose record fits max_line: with a header, its digits are at most those
  // of max_line itself.
  if (s.header) {
    s.room = digits(static_cast<size_t>(cfg.max_line)) + 1;
  } else if (s.newline) {
    s.room = 1;
  }
  s.max_payload = static_cast<size_t>(std::min<uint64_t>(cfg.max_line - s.room, kMaxDatagram));
  return s;
}

size_t writeUdpRecord(const UdpRecordShape& shape, const char* data, size_t n, char* out) {
  size_t h = 0;
  char hdr[24];
  if (shape.header) {
    auto r = fmt::format_to_n(hdr, sizeof hdr, "{} ", n);
    h = r.size;
  }
  // The datagram first (it may overlap the header's place), then the header before it.
  std::memmove(out + h, data, n);
  std::memcpy(out, hdr, h);
  size_t len = h + n;
  if (shape.newline && out[len - 1] != '\n') out[len++] = '\n';
  return len;
}

UdpReceiver::UdpReceiver(RouteContext& ctx, CollectRoute& archive, UniqueFd fd,
                         UdpAdmission admission)
    : ctx_(ctx),
      archive_(archive),
      cfg_(archive.current()),
      fd_(std::move(fd)),
      admission_(std::move(admission)),
      shape_(udpRecordShape(*cfg_)) {
  slot_ = shape_.max_payload + shape_.room;
  buf_.resize(slot_ * kBatch);
  msgs_.resize(kBatch);
  iovs_.resize(kBatch);
  names_.resize(kBatch);
  control_.resize(CMSG_SPACE(sizeof(uint32_t)) * kBatch);
  owner_ = ctx_.nextConnectionId();
}

UdpReceiver::~UdpReceiver() {
  // Chains close (and publish) their segments as they go; admitted senders are given back.
  for (size_t i = 0; i < peers_.size(); ++i) {
    --ctx_.metrics().connections_active;
    admission_.release();
  }
}

void UdpReceiver::start() {
  read_ev_.reset(
      event_new(ctx_.base(), fd_.get(), EV_READ | EV_PERSIST, &UdpReceiver::onReadable, this));
  retry_ev_.reset(evtimer_new(ctx_.base(), &UdpReceiver::onRetry, this));
  event_add(read_ev_.get(), nullptr);
  const auto idle = ctx_.idleTimeout();
  if (archive_.config().layout == Layout::PerPeer && idle.count() > 0) {
    sweep_ev_.reset(event_new(ctx_.base(), -1, EV_PERSIST, &UdpReceiver::onSweep, this));
    addEvent(sweep_ev_.get(),
             std::clamp(idle / 4, std::chrono::milliseconds(100), std::chrono::milliseconds(1000)));
  }
}

void UdpReceiver::reconfigure(std::shared_ptr<const ArchiveConfig> cfg, std::vector<Cidr> allow) {
  // Between two reads (on this thread): the batch buffers hold nothing now.
  cfg_ = std::move(cfg);
  admission_.allow = std::move(allow);
  shape_ = udpRecordShape(*cfg_);
  slot_ = shape_.max_payload + shape_.room;
  buf_.resize(slot_ * kBatch);
}

std::string UdpReceiver::boundAddress() const {
  if (!fd_.valid()) return "";
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "";
  return "udp:" + describePeer(reinterpret_cast<const sockaddr*>(&ss), len).display();
}

void UdpReceiver::onReadable(evutil_socket_t, short, void* arg) {
  static_cast<UdpReceiver*>(arg)->receive(kBatchesPerWakeup);
}

bool UdpReceiver::receive(size_t batches) {
  const size_t ctl = CMSG_SPACE(sizeof(uint32_t));
  for (size_t b = 0; b < batches; ++b) {
    if (!held_.empty()) return false;
    for (unsigned i = 0; i < kBatch; ++i) {
      iovs_[i] = {buf_.data() + i * slot_, shape_.max_payload};
      msghdr& h = msgs_[i].msg_hdr;
      h = msghdr{};
      h.msg_name = &names_[i];
      h.msg_namelen = sizeof(sockaddr_storage);
      h.msg_iov = &iovs_[i];
      h.msg_iovlen = 1;
      h.msg_control = control_.data() + i * ctl;
      h.msg_controllen = ctl;
      msgs_[i].msg_len = 0;
    }
    int n = ctx_.sys().recvmmsg(fd_.get(), msgs_.data(), kBatch, MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK && recv_log_.hit()) {
        // ECONNREFUSED and the like come from ICMP errors of earlier sends: nothing is sent here,
        // so anything but EAGAIN is unexpected; said once per episode.
        spdlog::warn("route={} udp receive failed: {}", ctx_.routeName(), std::strerror(errno));
      }
      return true;
    }
    if (auto n_quiet = recv_log_.end(); n_quiet && *n_quiet > 0) {
      spdlog::info("route={} udp receive works again ({} failures not logged)", ctx_.routeName(),
                   *n_quiet);
    }
    process(static_cast<unsigned>(n));
    if (static_cast<unsigned>(n) < kBatch) return held_.empty();
  }
  return held_.empty();
}

void UdpReceiver::process(unsigned n) {
  RouteMetrics& m = ctx_.metrics();
  const auto now = std::chrono::steady_clock::now();
  const bool per_peer = archive_.config().layout == Layout::PerPeer;
  char* base = buf_.data();
  size_t w = 0;      // where the next record goes (never past the slot being read)
  size_t start = 0;  // the current run's first byte
  Peer* run_peer = nullptr;
  std::vector<size_t> ends;
  ends.reserve(n);
  auto flushRun = [&] {
    if (!ends.empty()) writeRun(run_peer, base + start, ends);
    ends.clear();
    start = w;
  };
  for (unsigned i = 0; i < n; ++i) {
    const msghdr& h = msgs_[i].msg_hdr;
    const size_t len = msgs_[i].msg_len;
    ++m.udp_datagrams;
    m.bytes_in += len;
    m.copy_fallback_bytes += len;
    for (cmsghdr* c = CMSG_FIRSTHDR(&h); c != nullptr;
         c = CMSG_NXTHDR(const_cast<msghdr*>(&h), c)) {
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL) {
        uint32_t drops = 0;
        std::memcpy(&drops, CMSG_DATA(c), sizeof drops);
        if (drops != kernel_drops_) {
          const uint32_t lost = drops - kernel_drops_;  // the kernel's counter wraps at 2^32
          kernel_drops_ = drops;
          m.udp_dropped += lost;
          if (drop_log_.hit(now)) {
            spdlog::warn(
                "route={} the kernel dropped {} datagram(s): the receive buffer was full "
                "(udp_rcvbuf); further drops are counted in spliced_udp_dropped_total",
                ctx_.routeName(), lost);
          }
        }
      }
    }
    const auto* sa = static_cast<const sockaddr*>(h.msg_name);
    if (!allowed(admission_.allow, sa)) {
      ++m.udp_denied;
      if (spdlog::should_log(spdlog::level::debug)) {
        spdlog::debug("route={} dropped a datagram from {}: not in allow list", ctx_.routeName(),
                      describePeer(sa, h.msg_namelen).display());
      }
      continue;
    }
    if (h.msg_flags & MSG_TRUNC) {
      ++m.udp_truncated;
      if (truncated_log_.hit(now)) {
        spdlog::warn(
            "error=downstream route={} peer={} a datagram longer than {} bytes was truncated to "
            "that length (max_line {}); further ones are counted in spliced_udp_truncated_total",
            ctx_.routeName(), describePeer(sa, h.msg_namelen).ip, shape_.max_payload,
            formatSize(cfg_->max_line));
      }
    }
    if (len == 0) continue;  // no record
    Peer* peer = nullptr;
    if (per_peer) {
      peer = peerFor(sa, h.msg_namelen, now);
      if (peer == nullptr) continue;  // counted
      ++peer->datagrams;
      peer->bytes += len;
      peer->last = now;
    }
    if (peer != run_peer) {
      flushRun();
      run_peer = peer;
    }
    w += writeUdpRecord(shape_, base + i * slot_, len, base + w);
    ends.push_back(w - start);
  }
  flushRun();
}

SegmentChain& UdpReceiver::chainOf(Peer* peer) {
  if (peer != nullptr) return *peer->chain;
  SegmentChain* shared = archive_.sharedChain();
  SPLICED_ASSERT(shared != nullptr, "layout: shared has a shared chain");
  return *shared;
}

void UdpReceiver::writeRun(Peer* peer, const char* data, std::span<const size_t> ends) {
  const size_t n = ends.back();
  size_t done = 0;
  if (held_.empty()) {
    SinkResult r = chainOf(peer).writeRecords(peer ? peer->id : owner_, data, n, ends);
    done = r.bytes;
    if (done == n) return;
    pause(r.err, r.status);
  }
  // What was not written waits, in order, before anything is read again.
  Held h;
  h.peer = peer;
  h.bytes.assign(data + done, n - done);
  for (size_t e : ends) {
    if (e > done) h.ends.push_back(e - done);
  }
  held_.push_back(std::move(h));
}

bool UdpReceiver::flushHeld() {
  while (!held_.empty()) {
    Held& h = held_.front();
    SinkResult r = chainOf(h.peer).writeRecords(h.peer ? h.peer->id : owner_, h.bytes.data(),
                                                h.bytes.size(), h.ends);
    if (r.bytes == h.bytes.size()) {
      held_.pop_front();
      continue;
    }
    h.bytes.erase(0, r.bytes);
    std::vector<size_t> rest;
    for (size_t e : h.ends) {
      if (e > r.bytes) rest.push_back(e - r.bytes);
    }
    h.ends = std::move(rest);
    pause(r.err, r.status);
    return false;
  }
  return true;
}

void UdpReceiver::pause(int err, IoStatus status) {
  if (status == IoStatus::Error && err != storage_err_) {
    spdlog::error(
        "error=storage route={} archive write failed: {}; not reading the udp socket until it "
        "works again (the kernel drops what its buffer cannot hold, counted)",
        ctx_.routeName(), std::strerror(err));
    storage_err_ = err;
    if (!stalled_) {
      stalled_ = true;
      archive_.storageStalled(err);
    }
  }
  if (read_ev_ && event_pending(read_ev_.get(), EV_READ, nullptr)) {
    event_del(read_ev_.get());
    backoff_ = kFirstBackoff;
  } else {
    backoff_ = std::min(std::max(backoff_ * 2, kFirstBackoff), kMaxBackoff);
  }
  if (retry_ev_) addEvent(retry_ev_.get(), backoff_);
}

void UdpReceiver::resume() {
  if (storage_err_ != 0) {
    spdlog::info("route={} archive writable again; reading the udp socket again", ctx_.routeName());
    storage_err_ = 0;
  }
  if (stalled_) {
    stalled_ = false;
    archive_.storageRecovered();
  }
  if (fd_.valid() && read_ev_) event_add(read_ev_.get(), nullptr);
}

void UdpReceiver::onRetry(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<UdpReceiver*>(arg);
  if (self->flushHeld()) self->resume();
}

UdpReceiver::Peer* UdpReceiver::peerFor(const sockaddr* sa, socklen_t len,
                                        std::chrono::steady_clock::time_point now) {
  std::string key = peerKey(sa);
  if (auto it = peers_.find(key); it != peers_.end()) return it->second.get();
  PeerInfo info = describePeer(sa, len);
  if (!admission_.admit()) {
    ++ctx_.metrics().udp_rejected_limit;
    if (limit_log_.hit(now)) {
      spdlog::warn(
          "route={} dropped datagrams of a new sender {}: max_connections chains are open "
          "(layout: per_peer); further ones are counted in spliced_udp_rejected_total",
          ctx_.routeName(), info.ip);
    }
    return nullptr;
  }
  auto peer = std::make_unique<Peer>();
  peer->info = info;
  peer->id = ctx_.nextConnectionId();
  peer->started = now;
  peer->last = now;
  peer->cfg = cfg_;
  NameVars vars{ctx_.routeName(), info.fileSafeIp(), info.port, peer->id, 0, ::getpid()};
  peer->chain = std::make_unique<SegmentChain>(*peer->cfg, archive_.dir(), std::move(vars),
                                               ctx_.sys(), ctx_.metrics());
  peer->chain->onSegmentClosed(
      [&archive = archive_](const std::string& rel, const UnpublishedSegment& seg) {
        archive.segmentClosed(rel, seg);
      });
  peer->chain->onUnpublished(
      [&archive = archive_](UnpublishedSegment seg) { archive.publishLater(std::move(seg)); });
  peer->chain->syncOffLoop(archive_.closeWorker());
  ++ctx_.metrics().connections_total;
  ++ctx_.metrics().connections_active;
  spdlog::info("open route={} conn={} peer={} udp sender", ctx_.routeName(), peer->id, info.ip);
  Peer* out = peer.get();
  peers_.emplace(std::move(key), std::move(peer));
  return out;
}

void UdpReceiver::closePeer(const std::string& key, const char* why) {
  auto it = peers_.find(key);
  if (it == peers_.end()) return;
  Peer& p = *it->second;
  p.chain->rotate();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() -
                                                                  p.started);
  spdlog::info(
      "close route={} conn={} peer={} datagrams={} bytes={} segments={} duration={} end={}",
      ctx_.routeName(), p.id, p.info.ip, p.datagrams, p.bytes, p.chain->segmentsClosed(),
      formatDuration(ms), why);
  peers_.erase(it);
  --ctx_.metrics().connections_active;
  admission_.release();
}

void UdpReceiver::onSweep(evutil_socket_t, short, void* arg) {
  auto* self = static_cast<UdpReceiver*>(arg);
  if (!self->held_.empty()) return;  // held records point at their chains
  const auto now = std::chrono::steady_clock::now();
  const auto idle = self->ctx_.idleTimeout();
  std::vector<std::string> quiet;
  for (const auto& [key, peer] : self->peers_) {
    if (now - peer->last >= idle) quiet.push_back(key);
  }
  for (const auto& key : quiet) self->closePeer(key, "idle_timeout");
}

void UdpReceiver::rotate() {
  for (auto& [key, peer] : peers_) peer->chain->rotate();
}

void UdpReceiver::close() {
  if (!fd_.valid()) return;
  // What the kernel already holds was sent before the stop: it is written too.
  if (held_.empty() || flushHeld()) receive(kCloseBatches);
  if (!held_.empty() && !flushHeld()) {
    // The last chance: segments under a rescue name (new files may work where the active ones
    // fail). What cannot be written then is lost, and said so.
    if (archive_.sharedChain() != nullptr) archive_.sharedChain()->rescueNext();
    for (auto& [key, peer] : peers_) peer->chain->rescueNext();
    if (!flushHeld()) {
      size_t lost = 0;
      for (const Held& h : held_) lost += h.ends.size();
      spdlog::error(
          "error=storage route={} {} datagram(s) could not be written before the stop: {}",
          ctx_.routeName(), lost, std::strerror(storage_err_ ? storage_err_ : EIO));
      held_.clear();
    }
  }
  if (stalled_) {
    stalled_ = false;
    archive_.storageRecovered();
  }
  read_ev_.reset();
  retry_ev_.reset();
  sweep_ev_.reset();
  fd_.reset();
  std::vector<std::string> keys;
  for (const auto& [key, peer] : peers_) keys.push_back(key);
  for (const auto& key : keys) closePeer(key, "shutdown");
}

}  // namespace spliced
