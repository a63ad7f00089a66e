#include "spliced/cli/cat_output.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <fmt/format.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

namespace spliced::cli {
namespace {

// sendfile moves at most this much per call (the kernel's own limit is 0x7ffff000).
constexpr size_t kSendfileChunk = 1u << 30;
// Compressed input is read in pieces of this size.
constexpr size_t kCompressedIn = 256u << 10;
// Decoded bytes are written in pieces of up to this size: fewer writes, and fewer wake-ups of a
// reader on the other end of a pipe.
constexpr size_t kDecodedOut = 1u << 20;
// The pipe buffer asked for when the output is a pipe (the kernel's default is 64 KiB).
constexpr int kPipeSize = 1 << 20;

// Waits until `fd` takes more (a non-blocking output that said EAGAIN).
void waitWritable(int fd) {
  pollfd p{fd, POLLOUT, 0};
  while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
  }
}

CopyResult outputFailed(int err, uint64_t written) {
  CopyResult r;
  r.written = written;
  if (err == EPIPE) {
    r.status = CopyStatus::OutputClosed;
  } else {
    r.status = CopyStatus::OutputError;
    r.message = fmt::format("cannot write to the output: {}", std::strerror(err));
  }
  return r;
}

struct ZstdFree {
  void operator()(ZSTD_DCtx* c) const { ZSTD_freeDCtx(c); }
};

}  // namespace

Output::Output(int fd, bool force_mmap) : fd_(fd), use_sendfile_(!force_mmap) {
  // A pipe: a bigger buffer halves the wake-ups per MiB on both ends. Refused (an unprivileged
  // user past pipe-user-pages-soft) means the default stays; nothing else changes.
  struct stat st {};
  if (::fstat(fd_, &st) == 0 && S_ISFIFO(st.st_mode)) (void)::fcntl(fd_, F_SETPIPE_SZ, kPipeSize);
}

CopyResult Output::writeAll(const char* data, size_t n) {
  CopyResult r;
  while (n > 0) {
    ssize_t w = ::write(fd_, data, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        waitWritable(fd_);
        continue;
      }
      return outputFailed(errno, r.written);
    }
    data += w;
    n -= static_cast<size_t>(w);
    r.written += static_cast<uint64_t>(w);
  }
  return r;
}

CopyResult Output::copyPlain(int in, uint64_t& offset, uint64_t end, const std::string& what) {
  CopyResult r;
  while (use_sendfile_ && offset < end) {
    off_t off = static_cast<off_t>(offset);
    const size_t want = static_cast<size_t>(std::min<uint64_t>(end - offset, kSendfileChunk));
    ssize_t n = ::sendfile(fd_, in, &off, want);
    if (n > 0) {
      offset += static_cast<uint64_t>(n);
      r.written += static_cast<uint64_t>(n);
      continue;
    }
    if (n == 0) return r;  // the file is shorter than `end`
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      waitWritable(fd_);
      continue;
    }
    if (errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP) {
      // The output takes no sendfile (a terminal, an O_APPEND file): the mmap path from here on.
      use_sendfile_ = false;
      break;
    }
    if (errno == EIO) {
      r.status = CopyStatus::InputError;
      r.message = fmt::format("{}: read error at byte {}: {}", what, offset, std::strerror(errno));
      return r;
    }
    CopyResult f = outputFailed(errno, r.written);
    return f;
  }
  if (offset >= end) return r;
  CopyResult m = copyMapped(in, offset, end, what);
  m.written += r.written;
  return m;
}

CopyResult Output::copyMapped(int in, uint64_t& offset, uint64_t end, const std::string& what) {
  CopyResult r;
  const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
  while (offset < end) {
    const uint64_t base = offset - offset % page;
    const uint64_t len = std::min(end - base, kMapWindow);
    void* map = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, in, static_cast<off_t>(base));
    if (map == MAP_FAILED) {
      // A file mmap does not take: read it in pieces of the same window... one small buffer.
      std::vector<char> buf(1u << 20);
      while (offset < end) {
        ssize_t n = ::pread(in, buf.data(), std::min<uint64_t>(buf.size(), end - offset),
                            static_cast<off_t>(offset));
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
          r.status = CopyStatus::InputError;
          r.message =
              fmt::format("{}: read error at byte {}: {}", what, offset, std::strerror(errno));
          return r;
        }
        if (n == 0) return r;
        CopyResult w = writeAll(buf.data(), static_cast<size_t>(n));
        r.written += w.written;
        offset += w.written;
        if (w.status != CopyStatus::Ok) {
          w.written = r.written;
          return w;
        }
      }
      return r;
    }
    ::madvise(map, len, MADV_SEQUENTIAL);
    const char* p = static_cast<const char*>(map) + (offset - base);
    CopyResult w = writeAll(p, static_cast<size_t>(base + len - offset));
    ::munmap(map, len);
    r.written += w.written;
    offset += w.written;
    if (w.status != CopyStatus::Ok) {
      w.written = r.written;
      return w;
    }
  }
  return r;
}

CopyResult Output::copyCompressed(int in, SegmentForm form, uint64_t skip,
                                  const std::string& what) {
  CopyResult r;
  uint64_t decoded = 0;   // bytes decoded so far (written or skipped)
  uint64_t consumed = 0;  // compressed bytes read so far
  // Writes decoded bytes past `skip`; false when the output failed (r says how).
  auto emit = [&](const char* data, size_t n) {
    const uint64_t start = decoded;
    decoded += n;
    if (decoded <= skip) return true;
    const size_t from = start >= skip ? 0 : static_cast<size_t>(skip - start);
    CopyResult w = writeAll(data + from, n - from);
    r.written += w.written;
    if (w.status != CopyStatus::Ok) {
      r.status = w.status;
      r.message = w.message;
      return false;
    }
    return true;
  };
  auto corrupt = [&](const std::string& why) {
    r.status = CopyStatus::Corrupt;
    r.message = fmt::format(
        "{}: {} at byte {} of the compressed file (the {} bytes decoded before it were written)",
        what, why, consumed, decoded);
    return r;
  };
  auto readMore = [&](std::vector<char>& buf, size_t& len) {
    for (;;) {
      ssize_t n = ::read(in, buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return -errno;
      len = static_cast<size_t>(n);
      return 0;
    }
  };
  std::vector<char> ibuf(kCompressedIn);
  if (form == SegmentForm::Zstd) {
    std::unique_ptr<ZSTD_DCtx, ZstdFree> dctx(ZSTD_createDCtx());
    if (!dctx) return corrupt("zstd: cannot create a decoder");
    std::vector<char> obuf(kDecodedOut);
    size_t last = 1;  // 0 once a frame is complete
    for (;;) {
      size_t len = 0;
      if (int err = readMore(ibuf, len); err != 0) {
        r.status = CopyStatus::InputError;
        r.message =
            fmt::format("{}: read error at byte {}: {}", what, consumed, std::strerror(-err));
        return r;
      }
      if (len == 0) break;
      ZSTD_inBuffer ib{ibuf.data(), len, 0};
      // Until the input is used up and the decoder holds nothing more: a full output buffer
      // means it may hold more, unless the frame just ended (0: decoded and flushed; a call
      // after that would start reading the next frame's header and say it needs bytes).
      bool full = false;
      while (ib.pos < ib.size || (full && last != 0)) {
        ZSTD_outBuffer ob{obuf.data(), obuf.size(), 0};
        const size_t before = ib.pos;
        last = ZSTD_decompressStream(dctx.get(), &ob, &ib);
        consumed += ib.pos - before;
        if (ob.pos > 0 && !emit(obuf.data(), ob.pos)) return r;
        if (ZSTD_isError(last)) {
          return corrupt(fmt::format("corrupt zstd data ({})", ZSTD_getErrorName(last)));
        }
        full = ob.pos == ob.size;
      }
    }
    // At the end of the input the decoder may still hold output to flush: drain it; a call that
    // gives nothing while the frame is unfinished means the file was cut.
    while (last != 0) {
      ZSTD_outBuffer ob{obuf.data(), obuf.size(), 0};
      ZSTD_inBuffer none{nullptr, 0, 0};
      last = ZSTD_decompressStream(dctx.get(), &ob, &none);
      if (ZSTD_isError(last)) {
        return corrupt(fmt::format("corrupt zstd data ({})", ZSTD_getErrorName(last)));
      }
      if (ob.pos > 0 && !emit(obuf.data(), ob.pos)) return r;
      if (ob.pos == 0 && last != 0) {
        return corrupt("the file ends in the middle of a zstd frame (truncated)");
      }
    }
    return r;
  }
  // gzip, possibly several members one after the other (as gzip -d reads them).
  z_stream zs{};
  if (inflateInit2(&zs, 15 + 16) != Z_OK) return corrupt("zlib: cannot create a decoder");
  struct InflateEnd {
    z_stream* z;
    ~InflateEnd() { inflateEnd(z); }
  } end_guard{&zs};
  std::vector<char> obuf(kDecodedOut);
  bool member_done = false;
  bool any = false;
  for (;;) {
    size_t len = 0;
    if (int err = readMore(ibuf, len); err != 0) {
      r.status = CopyStatus::InputError;
      r.message = fmt::format("{}: read error at byte {}: {}", what, consumed, std::strerror(-err));
      return r;
    }
    if (len == 0) break;
    zs.next_in = reinterpret_cast<Bytef*>(ibuf.data());
    zs.avail_in = static_cast<uInt>(len);
    while (zs.avail_in > 0) {
      if (member_done) {
        inflateReset(&zs);
        member_done = false;
      }
      any = true;
      zs.next_out = reinterpret_cast<Bytef*>(obuf.data());
      zs.avail_out = static_cast<uInt>(obuf.size());
      const uInt in_before = zs.avail_in;
      int rc = inflate(&zs, Z_NO_FLUSH);
      consumed += in_before - zs.avail_in;
      const size_t out = obuf.size() - zs.avail_out;
      if (out > 0 && !emit(obuf.data(), out)) return r;
      if (rc == Z_STREAM_END) {
        member_done = true;
      } else if (rc != Z_OK && rc != Z_BUF_ERROR) {
        return corrupt(fmt::format("corrupt gzip data ({})", zs.msg != nullptr ? zs.msg : "?"));
      }
    }
  }
  // Bytes the decoder holds back for lack of output room.
  while (!member_done && any) {
    zs.next_out = reinterpret_cast<Bytef*>(obuf.data());
    zs.avail_out = static_cast<uInt>(obuf.size());
    int rc = inflate(&zs, Z_NO_FLUSH);
    const size_t out = obuf.size() - zs.avail_out;
    if (out > 0 && !emit(obuf.data(), out)) return r;
    if (rc == Z_STREAM_END) member_done = true;
    if (out == 0 || (rc != Z_OK && rc != Z_STREAM_END)) break;
  }
  if (!member_done) return corrupt("the file ends in the middle of a gzip member (truncated)");
  return r;
}

CopyResult copySegment(Output& out, int fd, SegmentForm form, uint64_t& offset,
                       const std::string& what) {
  if (form == SegmentForm::Zstd || form == SegmentForm::Gzip) {
    CopyResult r = out.copyCompressed(fd, form, offset, what);
    offset += r.written;
    return r;
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    CopyResult r;
    r.status = CopyStatus::InputError;
    r.message = fmt::format("{}: {}", what, std::strerror(errno));
    return r;
  }
  return out.copyPlain(fd, offset, static_cast<uint64_t>(st.st_size), what);
}

}  // namespace spliced::cli
