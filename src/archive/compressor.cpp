#include "spliced/archive/compressor.hpp"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <fmt/format.h>
#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <memory>
#include <string_view>
#include <vector>

#include "spliced/archive/segment_files.hpp"
#include "spliced/core/fd.hpp"

namespace spliced {
namespace {

// Bytes read from (or produced into) memory per step: memory use is bounded whatever the size.
constexpr size_t kChunk = 256 * kKiB;
constexpr int kZstdDefaultLevel = 3;
constexpr int kGzipDefaultLevel = 6;

// Receives decompressed bytes; returns false to stop.
using ChunkFn = std::function<bool(const char* data, size_t n)>;

struct ZstdCCtxFree {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct ZstdDCtxFree {
  void operator()(ZSTD_DCtx* c) const { ZSTD_freeDCtx(c); }
};

// A deflate/inflate stream that is ended in exactly one place.
class ZStream {
 public:
  explicit ZStream(bool deflating) : deflating_(deflating) {}
  ~ZStream() {
    if (!ready_) return;
    if (deflating_) {
      deflateEnd(&zs_);
    } else {
      inflateEnd(&zs_);
    }
  }
  ZStream(const ZStream&) = delete;
  ZStream& operator=(const ZStream&) = delete;

  // windowBits 15 + 16: the gzip container (header and CRC-32 trailer), not raw zlib.
  bool initDeflate(int level) {
    ready_ = deflateInit2(&zs_, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK;
    return ready_;
  }
  bool initInflate() {
    ready_ = inflateInit2(&zs_, 15 + 16) == Z_OK;
    return ready_;
  }
  z_stream* get() { return &zs_; }

 private:
  z_stream zs_{};
  bool deflating_;
  bool ready_ = false;
};

// One read(2), retried on EINTR. Returns the bytes read (0 at end of file) or -1 with errno.
ssize_t readSome(int fd, char* buf, size_t n) {
  for (;;) {
    ssize_t r = ::read(fd, buf, n);
    if (r >= 0 || errno != EINTR) return r;
  }
}

// Reads up to n bytes at `off`, stopping early only at end of file. -1 with errno on error.
ssize_t preadFull(int fd, char* buf, size_t n, uint64_t off) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::pread(fd, buf + done, n - done, static_cast<off_t>(off + done));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) break;
    done += static_cast<size_t>(r);
  }
  return static_cast<ssize_t>(done);
}

// Writes all of `data`. Returns 0 or an errno.
int writeAll(int fd, const char* data, size_t n) {
  while (n > 0) {
    ssize_t w = ::write(fd, data, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return errno;
    if (w == 0) return EIO;
    data += w;
    n -= static_cast<size_t>(w);
  }
  return 0;
}

// Streams `in` into `out` as one zstd frame (content size and checksum in it). `size` is the
// plain size, pledged up front: a file that turns out longer or shorter is an error.
int zstdCompress(int in, int out, int level, uint64_t size, CompressResult& r) {
  std::unique_ptr<ZSTD_CCtx, ZstdCCtxFree> cctx(ZSTD_createCCtx());
  if (!cctx) {
    r.message = "zstd: cannot create a compression context";
    return ENOMEM;
  }
  for (size_t rc : {ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_compressionLevel, level),
                    ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_checksumFlag, 1),
                    ZSTD_CCtx_setPledgedSrcSize(cctx.get(), size)}) {
    if (ZSTD_isError(rc)) {
      r.message = fmt::format("zstd: {}", ZSTD_getErrorName(rc));
      return EINVAL;
    }
  }
  std::vector<char> ibuf(kChunk), obuf(kChunk);
  for (;;) {
    ssize_t n = readSome(in, ibuf.data(), ibuf.size());
    if (n < 0) {
      r.message = fmt::format("read: {}", std::strerror(errno));
      return errno;
    }
    r.in_bytes += static_cast<uint64_t>(n);
    const ZSTD_EndDirective mode = n == 0 ? ZSTD_e_end : ZSTD_e_continue;
    ZSTD_inBuffer ib{ibuf.data(), static_cast<size_t>(n), 0};
    size_t left;
    do {
      ZSTD_outBuffer ob{obuf.data(), obuf.size(), 0};
      left = ZSTD_compressStream2(cctx.get(), &ob, &ib, mode);
      if (ZSTD_isError(left)) {
        r.message = fmt::format("zstd: {}", ZSTD_getErrorName(left));
        return EIO;
      }
      if (int err = writeAll(out, obuf.data(), ob.pos)) {
        r.message = fmt::format("write: {}", std::strerror(err));
        return err;
      }
      r.out_bytes += ob.pos;
      // continue: until the input is consumed; end: until the frame is flushed whole.
    } while (mode == ZSTD_e_end ? left != 0 : ib.pos < ib.size);
    if (n == 0) return 0;
  }
}

// Streams `in` into `out` as one gzip member.
int gzipCompress(int in, int out, int level, CompressResult& r) {
  ZStream zs(true);
  if (!zs.initDeflate(level)) {
    r.message = "zlib: deflateInit2 failed";
    return ENOMEM;
  }
  z_stream* z = zs.get();
  std::vector<char> ibuf(kChunk), obuf(kChunk);
  for (;;) {
    ssize_t n = readSome(in, ibuf.data(), ibuf.size());
    if (n < 0) {
      r.message = fmt::format("read: {}", std::strerror(errno));
      return errno;
    }
    r.in_bytes += static_cast<uint64_t>(n);
    const int flush = n == 0 ? Z_FINISH : Z_NO_FLUSH;
    z->next_in = reinterpret_cast<Bytef*>(ibuf.data());
    z->avail_in = static_cast<uInt>(n);
    int rc;
    do {
      z->next_out = reinterpret_cast<Bytef*>(obuf.data());
      z->avail_out = static_cast<uInt>(obuf.size());
      rc = deflate(z, flush);
      if (rc == Z_STREAM_ERROR) {
        r.message = "zlib: deflate failed";
        return EIO;
      }
      size_t produced = obuf.size() - z->avail_out;
      if (int err = writeAll(out, obuf.data(), produced)) {
        r.message = fmt::format("write: {}", std::strerror(err));
        return err;
      }
      r.out_bytes += produced;
    } while (flush == Z_FINISH ? rc != Z_STREAM_END : z->avail_out == 0);
    if (n == 0) return 0;
  }
}

// Streams the decompressed content of the zstd file open as `fd` to `sink`. Returns 0 when the
// file is one or more complete frames, EBADMSG when it is empty, truncated or corrupt (the
// checksum, when present, is checked), ECANCELED when the sink stopped, else a read errno.
int zstdDecompress(int fd, const ChunkFn& sink) {
  std::unique_ptr<ZSTD_DCtx, ZstdDCtxFree> dctx(ZSTD_createDCtx());
  if (!dctx) return ENOMEM;
  std::vector<char> ibuf(kChunk), obuf(kChunk);
  bool any = false;
  size_t hint = 1;  // 0 once a frame is completely decoded and flushed
  for (;;) {
    ssize_t n = readSome(fd, ibuf.data(), ibuf.size());
    if (n < 0) return errno;
    if (n == 0) break;
    any = true;
    ZSTD_inBuffer ib{ibuf.data(), static_cast<size_t>(n), 0};
    bool full;
    do {
      ZSTD_outBuffer ob{obuf.data(), obuf.size(), 0};
      hint = ZSTD_decompressStream(dctx.get(), &ob, &ib);
      if (ZSTD_isError(hint)) return EBADMSG;
      if (ob.pos > 0 && !sink(obuf.data(), ob.pos)) return ECANCELED;
      full = ob.pos == ob.size;  // more may be waiting inside the decoder
    } while (ib.pos < ib.size || (full && hint != 0));
  }
  return any && hint == 0 ? 0 : EBADMSG;
}

// As zstdDecompress, for gzip: one or more complete members, nothing after the last one.
int gzipDecompress(int fd, const ChunkFn& sink) {
  ZStream zs(false);
  if (!zs.initInflate()) return ENOMEM;
  z_stream* z = zs.get();
  std::vector<char> ibuf(kChunk), obuf(kChunk);
  bool any = false;
  bool ended = false;  // the last member seen is complete
  for (;;) {
    ssize_t n = readSome(fd, ibuf.data(), ibuf.size());
    if (n < 0) return errno;
    if (n == 0) break;
    any = true;
    z->next_in = reinterpret_cast<Bytef*>(ibuf.data());
    z->avail_in = static_cast<uInt>(n);
    do {
      if (ended) {
        if (z->avail_in == 0) break;
        inflateReset(z);  // bytes after a member: the next member (gzip files concatenate)
        ended = false;
      }
      z->next_out = reinterpret_cast<Bytef*>(obuf.data());
      z->avail_out = static_cast<uInt>(obuf.size());
      int rc = inflate(z, Z_NO_FLUSH);
      if (rc == Z_STREAM_END) {
        ended = true;
      } else if (rc == Z_BUF_ERROR) {
        if (z->avail_in != 0) return EBADMSG;  // no progress although input is there
      } else if (rc != Z_OK) {
        return EBADMSG;
      }
      size_t produced = obuf.size() - z->avail_out;
      if (produced > 0 && !sink(obuf.data(), produced)) return ECANCELED;
      if (rc == Z_BUF_ERROR) break;
    } while (z->avail_in > 0 || (z->avail_out == 0 && !ended));
  }
  return any && ended ? 0 : EBADMSG;
}

int decompressFd(int fd, Compress algo, const ChunkFn& sink) {
  return algo == Compress::Gzip ? gzipDecompress(fd, sink) : zstdDecompress(fd, sink);
}

// Opens the regular file `name` in `dir` for reading, without following a symlink, and fills
// `st`. On failure the fd is invalid and `err` holds the errno (EINVAL: not a regular file).
UniqueFd openRegular(int dir, const std::string& name, struct stat& st, int& err) {
  UniqueFd fd(::openat(dir, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  err = 0;
  if (!fd.valid() || ::fstat(fd.get(), &st) != 0) {
    err = errno;
  } else if (!S_ISREG(st.st_mode)) {
    err = EINVAL;
  }
  if (err != 0) fd.reset();
  return fd;
}

// True when `name` in `dir` is a complete compressed file whose content is exactly the `size`
// bytes of `src` (compared chunk by chunk, stopping at the first difference). Sets `comp_size`.
bool sameContent(int dir, const std::string& name, Compress algo, int src, uint64_t size,
                 uint64_t& comp_size) {
  struct stat st;
  int err;
  UniqueFd fd = openRegular(dir, name, st, err);
  if (!fd.valid()) return false;
  comp_size = static_cast<uint64_t>(st.st_size);
  std::vector<char> plain(kChunk);
  uint64_t off = 0;
  int rc = decompressFd(fd.get(), algo, [&](const char* data, size_t n) {
    while (n > 0) {
      size_t step = std::min(n, plain.size());
      if (off + step > size) return false;
      if (preadFull(src, plain.data(), step, off) != static_cast<ssize_t>(step)) return false;
      if (std::memcmp(plain.data(), data, step) != 0) return false;
      off += step;
      data += step;
      n -= step;
    }
    return true;
  });
  return rc == 0 && off == size;
}

CompressResult failure(CompressResult r, int err, std::string message) {
  r.err = err;
  r.message = std::move(message);
  return r;
}

}  // namespace

CompressResult compressSegment(int dir_fd, const std::string& rel, Compress algo, int level,
                               bool fsync, SysCalls& sys) {
  CompressResult r;
  if (algo == Compress::None) return failure(r, EINVAL, fmt::format("{}: no codec", rel));
  if (!isClosedSegmentName(rel))
    return failure(r, EINVAL, fmt::format("{}: not a closed segment", rel));
  if (level == 0) level = algo == Compress::Zstd ? kZstdDefaultLevel : kGzipDefaultLevel;
  const std::string ext(compressedSuffix(algo));

  ParentDir parent = openParentDir(dir_fd, rel);
  if (parent.err != 0) {
    return failure(r, parent.err, fmt::format("{}: {}", rel, std::strerror(parent.err)));
  }
  const int pfd = parent.fd.get();
  struct stat src_st;
  int err;
  UniqueFd src = openRegular(pfd, parent.name, src_st, err);
  if (!src.valid()) return failure(r, err, fmt::format("{}: {}", rel, std::strerror(err)));
  const uint64_t size = static_cast<uint64_t>(src_st.st_size);

  // 1. The tmp file, from scratch (a stale one is from a run that died before its rename).
  const std::string tmp = parent.name + ext + std::string(kTmpSuffix);
  if (sys.unlinkat(pfd, tmp.c_str(), 0) != 0 && errno != ENOENT) {
    err = errno;
    return failure(r, err,
                   fmt::format("cannot remove stale {}{}.tmp: {}", rel, ext, std::strerror(err)));
  }
  UniqueFd out(sys.openat(pfd, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                          src_st.st_mode & 0666));
  if (!out.valid()) {
    err = errno;
    return failure(r, err, fmt::format("cannot create {}{}.tmp: {}", rel, ext, std::strerror(err)));
  }
  auto dropTmp = [&] { sys.unlinkat(pfd, tmp.c_str(), 0); };
  err = algo == Compress::Zstd ? zstdCompress(src.get(), out.get(), level, size, r)
                               : gzipCompress(src.get(), out.get(), level, r);
  if (err == 0 && r.in_bytes != size) {
    err = EIO;
    r.message = fmt::format("read {} bytes, expected {}", r.in_bytes, size);
  }
  // The compressed segment keeps the plain one's times: retention orders segments by mtime, and
  // a segment does not become younger by being compressed (gzip and zstd keep them too).
  if (err == 0) {
    const timespec times[2] = {src_st.st_atim, src_st.st_mtim};
    if (::futimens(out.get(), times) != 0) {
      err = errno;
      r.message = fmt::format("futimens: {}", std::strerror(err));
    }
  }
  // 2. Its bytes on disk before its name can replace the plain file's.
  if (err == 0 && fsync && sys.fdatasync(out.get()) != 0) {
    err = errno;
    r.message = fmt::format("fdatasync: {}", std::strerror(err));
  }
  out.reset();
  if (err != 0) {
    dropTmp();
    return failure(r, err, fmt::format("{}: {}", rel, r.message));
  }

  // 3. Into place, never over anything; an identical file already there (a run that died
  // between its rename and its unlink) is as good as ours.
  const std::string dir = parentOf(rel);
  uint64_t existing_size = 0;
  Published pub = publishNoReplace(sys, pfd, tmp, parent.name, ext, [&](const std::string& name) {
    if (!sameContent(pfd, name, algo, src.get(), size, existing_size)) return false;
    spdlog::info("compress: {} already holds {}; dropping the new copy", joinPath(dir, name), rel);
    return true;
  });
  const std::string target = joinPath(dir, pub.name);
  if (pub.err != 0) {
    dropTmp();
    if (pub.err == EEXIST) {
      return failure(r, EEXIST, fmt::format("{}: no free name for the compressed file", rel));
    }
    return failure(
        r, pub.err,
        fmt::format("cannot rename {}{}.tmp to {}: {}", rel, ext, target, std::strerror(pub.err)));
  }
  const bool renamed = pub.renamed;
  if (!renamed) {
    dropTmp();
    r.out_bytes = existing_size;
  }
  r.out_path = target;

  // 4. The rename durable before the plain file goes. A file found in place may come from a run
  // that died before its own fsyncs: it gets them now.
  if (fsync) {
    if (!renamed) {
      struct stat st;
      UniqueFd existing = openRegular(pfd, pub.name, st, err);
      if (existing.valid() && sys.fdatasync(existing.get()) != 0) err = errno;
      if (err != 0) {
        return failure(r, err,
                       fmt::format("fdatasync {}: {}; {} kept", target, std::strerror(err), rel));
      }
    }
    if (sys.fsync(pfd) != 0) {
      err = errno;
      return failure(r, err,
                     fmt::format("fsync of the directory of {}: {}; {} kept", target,
                                 std::strerror(err), rel));
    }
  }

  // 5. The plain file, if it is still the one compressed.
  struct stat now_st;
  if (::fstatat(pfd, parent.name.c_str(), &now_st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return r;  // removed meanwhile (retention): nothing left to do
    err = errno;
    return failure(r, err, fmt::format("{}: {}", rel, std::strerror(err)));
  }
  if (now_st.st_dev != src_st.st_dev || now_st.st_ino != src_st.st_ino) {
    return failure(r, ESTALE, fmt::format("{} was replaced while it was compressed; kept", rel));
  }
  if (sys.unlinkat(pfd, parent.name.c_str(), 0) != 0 && errno != ENOENT) {
    err = errno;
    return failure(r, err,
                   fmt::format("cannot remove {} after compressing it to {}: {}", rel, target,
                               std::strerror(err)));
  }
  spdlog::debug("compress: {} -> {} {} -> {} bytes", rel, target, r.in_bytes, r.out_bytes);
  return r;
}

bool decompressFile(int dir_fd, const std::string& rel, std::string& out, uint64_t max_bytes) {
  out.clear();
  std::string_view v = rel;
  Compress algo;
  if (v.ends_with(kZstdSuffix)) {
    algo = Compress::Zstd;
  } else if (v.ends_with(kGzipSuffix)) {
    algo = Compress::Gzip;
  } else {
    return false;
  }
  ParentDir parent = openParentDir(dir_fd, rel);
  if (parent.err != 0) return false;
  struct stat st;
  int err;
  UniqueFd fd = openRegular(parent.fd.get(), parent.name, st, err);
  if (!fd.valid()) return false;
  int rc = decompressFd(fd.get(), algo, [&](const char* data, size_t n) {
    if (n > max_bytes - out.size()) return false;
    out.append(data, n);
    return true;
  });
  if (rc != 0) out.clear();
  return rc == 0;
}

}  // namespace spliced
