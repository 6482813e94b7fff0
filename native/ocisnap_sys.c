// Linux syscalls Node.js does not expose, kept as thin as possible: every
// function maps one syscall and throws a Node-style errno error on failure.
// Callers (src/sys/native.ts) give them types and meaning.
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdbool.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <node_api.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <endian.h>
#include <uv.h>
// Node links OpenSSL statically and exports its symbols to addons
// (node_shared_openssl=false); <openssl/evp.h> comes from Node's own headers.
#include <openssl/evp.h>

#include "napi-util.h"

// openat2(dirfd, path, flags, mode, resolve) -> fd
static napi_value js_openat2(napi_env env, napi_callback_info info) {
  napi_value a[5];
  char path[PATH_BUF];
  int32_t dirfd, flags, mode, resolve;
  if (!get_args(env, info, 5, a) || !get_i32(env, a[0], &dirfd) || !get_str(env, a[1], path, sizeof path) ||
      !get_i32(env, a[2], &flags) || !get_i32(env, a[3], &mode) || !get_i32(env, a[4], &resolve))
    return NULL;
  struct open_how how;
  memset(&how, 0, sizeof how);
  how.flags = (uint64_t)(uint32_t)flags | O_CLOEXEC;
  how.mode = (flags & (O_CREAT | O_TMPFILE)) ? (uint64_t)mode : 0;
  how.resolve = (uint64_t)(uint32_t)resolve;
  long fd;
  do fd = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
  while (fd < 0 && errno == EAGAIN);
  if (fd < 0) return throw_errno(env, errno, "openat2", path);
  return make_i32(env, (int32_t)fd);
}

// mknodat(dirfd, name, mode, major, minor)
static napi_value js_mknodat(napi_env env, napi_callback_info info) {
  napi_value a[5];
  char path[PATH_BUF];
  int32_t dirfd, mode, maj, min;
  if (!get_args(env, info, 5, a) || !get_i32(env, a[0], &dirfd) || !get_str(env, a[1], path, sizeof path) ||
      !get_i32(env, a[2], &mode) || !get_i32(env, a[3], &maj) || !get_i32(env, a[4], &min))
    return NULL;
  if (mknodat(dirfd, path, (mode_t)mode, makedev((unsigned)maj, (unsigned)min)) != 0)
    return throw_errno(env, errno, "mknodat", path);
  return NULL;
}

// fchownat(dirfd, name, uid, gid, flags)
static napi_value js_fchownat(napi_env env, napi_callback_info info) {
  napi_value a[5];
  char path[PATH_BUF];
  int32_t dirfd, flags;
  int64_t uid, gid;
  if (!get_args(env, info, 5, a) || !get_i32(env, a[0], &dirfd) || !get_str(env, a[1], path, sizeof path) ||
      !get_i64(env, a[2], &uid) || !get_i64(env, a[3], &gid) || !get_i32(env, a[4], &flags))
    return NULL;
  if (fchownat(dirfd, path, (uid_t)uid, (gid_t)gid, flags) != 0) return throw_errno(env, errno, "fchownat", path);
  return NULL;
}

// fchmodat(dirfd, name, mode): never follows a symlink (AT_SYMLINK_NOFOLLOW is
// refused by glibc for fchmodat on older kernels, so callers pass non-links).
static napi_value js_fchmodat(napi_env env, napi_callback_info info) {
  napi_value a[3];
  char path[PATH_BUF];
  int32_t dirfd, mode;
  if (!get_args(env, info, 3, a) || !get_i32(env, a[0], &dirfd) || !get_str(env, a[1], path, sizeof path) ||
      !get_i32(env, a[2], &mode))
    return NULL;
  if (fchmodat(dirfd, path, (mode_t)mode, 0) != 0) return throw_errno(env, errno, "fchmodat", path);
  return NULL;
}

// utimensat(dirfd, name, atimeSec, atimeNsec, mtimeSec, mtimeNsec, flags)
static napi_value js_utimensat(napi_env env, napi_callback_info info) {
  napi_value a[7];
  char path[PATH_BUF];
  int32_t dirfd, ans, mns, flags;
  int64_t as, ms;
  if (!get_args(env, info, 7, a) || !get_i32(env, a[0], &dirfd) || !get_str(env, a[1], path, sizeof path) ||
      !get_i64(env, a[2], &as) || !get_i32(env, a[3], &ans) || !get_i64(env, a[4], &ms) ||
      !get_i32(env, a[5], &mns) || !get_i32(env, a[6], &flags))
    return NULL;
  struct timespec ts[2] = {{.tv_sec = as, .tv_nsec = ans}, {.tv_sec = ms, .tv_nsec = mns}};
  if (utimensat(dirfd, path, ts, flags) != 0) return throw_errno(env, errno, "utimensat", path);
  return NULL;
}

// finishFile(fd, uid, gid, mode, atimeSec, atimeNsec, mtimeSec, mtimeNsec):
// fchown, then fchmod (chown clears setuid/setgid), then futimens, then
// close — the end of every regular file a layer writes, in one call. The fd
// is closed whatever fails; the first failure is thrown.
static napi_value js_finish_file(napi_env env, napi_callback_info info) {
  napi_value a[8];
  int32_t fd, mode, ans, mns;
  int64_t uid, gid, as, ms;
  if (!get_args(env, info, 8, a) || !get_i32(env, a[0], &fd)) return NULL;
  if (!get_i64(env, a[1], &uid) || !get_i64(env, a[2], &gid) || !get_i32(env, a[3], &mode) ||
      !get_i64(env, a[4], &as) || !get_i32(env, a[5], &ans) || !get_i64(env, a[6], &ms) || !get_i32(env, a[7], &mns)) {
    close(fd);
    return NULL;
  }
  struct timespec ts[2] = {{.tv_sec = as, .tv_nsec = ans}, {.tv_sec = ms, .tv_nsec = mns}};
  const char *failed = NULL;
  int err = 0;
  if (fchown(fd, (uid_t)uid, (gid_t)gid) != 0) failed = "fchown";
  else if (fchmod(fd, (mode_t)mode) != 0) failed = "fchmod";
  else if (futimens(fd, ts) != 0) failed = "futimens";
  if (failed) err = errno;
  if (close(fd) != 0 && !failed && errno != EINTR) {
    failed = "close";
    err = errno;
  }
  if (failed) return throw_errno(env, err, failed, NULL);
  return NULL;
}

// lsetxattr(path, name, value: Buffer)
static napi_value js_lsetxattr(napi_env env, napi_callback_info info) {
  napi_value a[3];
  char path[PATH_BUF], name[NAME_BUF];
  void *data;
  size_t len;
  if (!get_args(env, info, 3, a) || !get_str(env, a[0], path, sizeof path) || !get_str(env, a[1], name, sizeof name))
    return NULL;
  if (napi_get_buffer_info(env, a[2], &data, &len) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected a Buffer");
    return NULL;
  }
  if (lsetxattr(path, name, data, len, 0) != 0) return throw_errno(env, errno, "lsetxattr", path);
  return NULL;
}

// lgetxattr(path, name) -> Buffer | null (null when the attribute is absent)
static napi_value js_lgetxattr(napi_env env, napi_callback_info info) {
  napi_value a[2];
  char path[PATH_BUF], name[NAME_BUF];
  if (!get_args(env, info, 2, a) || !get_str(env, a[0], path, sizeof path) || !get_str(env, a[1], name, sizeof name))
    return NULL;
  for (;;) {
    ssize_t n = lgetxattr(path, name, NULL, 0);
    if (n < 0) {
      if (errno == ENODATA) {
        napi_value r;
        napi_get_null(env, &r);
        return r;
      }
      return throw_errno(env, errno, "lgetxattr", path);
    }
    void *out;
    napi_value buf;
    napi_create_buffer(env, (size_t)n, &out, &buf);
    ssize_t m = lgetxattr(path, name, out, (size_t)n);
    if (m >= 0 && m <= n) {
      if (m == n) return buf;
      napi_value sliced;
      void *o2;
      napi_create_buffer_copy(env, (size_t)m, out, &o2, &sliced);
      return sliced;
    }
    if (errno != ERANGE) return throw_errno(env, errno, "lgetxattr", path);
  }
}

// llistxattr(path) -> string[]
static napi_value js_llistxattr(napi_env env, napi_callback_info info) {
  napi_value a[1];
  char path[PATH_BUF];
  if (!get_args(env, info, 1, a) || !get_str(env, a[0], path, sizeof path)) return NULL;
  for (;;) {
    ssize_t n = llistxattr(path, NULL, 0);
    if (n < 0) return throw_errno(env, errno, "llistxattr", path);
    char *buf = malloc((size_t)n + 1);
    if (!buf) return throw_errno(env, ENOMEM, "llistxattr", path);
    ssize_t m = llistxattr(path, buf, (size_t)n);
    if (m < 0) {
      int e = errno;
      free(buf);
      if (e == ERANGE) continue;
      return throw_errno(env, e, "llistxattr", path);
    }
    napi_value arr;
    napi_create_array(env, &arr);
    uint32_t i = 0;
    for (ssize_t off = 0; off < m;) {
      size_t l = strnlen(buf + off, (size_t)(m - off));
      napi_value s;
      napi_create_string_utf8(env, buf + off, l, &s);
      napi_set_element(env, arr, i++, s);
      off += (ssize_t)l + 1;
    }
    free(buf);
    return arr;
  }
}

// setlk(fd, type: 0 read | 1 write | 2 unlock) -> boolean. A POSIX record
// lock over the whole file, never blocking: false means another process
// holds a conflicting lock. containers/storage (pkg/lockfile) uses these
// fcntl(2) locks on its *.lock files; flock(2) locks would not conflict.
static napi_value js_setlk(napi_env env, napi_callback_info info) {
  napi_value a[2];
  int32_t fd, type;
  if (!get_args(env, info, 2, a) || !get_i32(env, a[0], &fd) || !get_i32(env, a[1], &type)) return NULL;
  struct flock fl;
  memset(&fl, 0, sizeof fl);
  fl.l_type = type == 0 ? F_RDLCK : type == 1 ? F_WRLCK : F_UNLCK;
  fl.l_whence = SEEK_SET;
  int r;
  do r = fcntl(fd, F_SETLK, &fl);
  while (r != 0 && errno == EINTR);
  napi_value out;
  if (r == 0) {
    napi_get_boolean(env, 1, &out);
    return out;
  }
  if (errno == EAGAIN || errno == EACCES) {
    napi_get_boolean(env, 0, &out);
    return out;
  }
  return throw_errno(env, errno, "fcntl(F_SETLK)", NULL);
}


// CRC-64 with the ISO polynomial, reflected, as Go's hash/crc64
// (MakeTable(crc64.ISO)) which tar-split uses for file payloads; sliced by 8
// (table k = the CRC of a byte followed by k zero bytes) like Go's update.
static uint64_t crc64_tab[8][256];

static void crc64_init(void) {
  const uint64_t poly = 0xD800000000000000ULL;
  for (int i = 0; i < 256; i++) {
    uint64_t c = (uint64_t)i;
    for (int j = 0; j < 8; j++) c = (c & 1) ? (c >> 1) ^ poly : c >> 1;
    crc64_tab[0][i] = c;
  }
  for (int k = 1; k < 8; k++)
    for (int i = 0; i < 256; i++) {
      uint64_t c = crc64_tab[k - 1][i];
      crc64_tab[k][i] = (c >> 8) ^ crc64_tab[0][c & 0xff];
    }
}

// Updates `crc` (the inverted running state, as Go keeps it between calls).
static uint64_t crc64_update(uint64_t crc, const uint8_t *p, size_t n) {
  while (n >= 8) {
    uint64_t v;
    memcpy(&v, p, 8);
    crc ^= le64toh(v);
    crc = crc64_tab[7][crc & 0xff] ^ crc64_tab[6][(crc >> 8) & 0xff] ^ crc64_tab[5][(crc >> 16) & 0xff] ^
          crc64_tab[4][(crc >> 24) & 0xff] ^ crc64_tab[3][(crc >> 32) & 0xff] ^ crc64_tab[2][(crc >> 40) & 0xff] ^
          crc64_tab[1][(crc >> 48) & 0xff] ^ crc64_tab[0][crc >> 56];
    p += 8;
    n -= 8;
  }
  while (n--) crc = crc64_tab[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
  return crc;
}

#if defined(__x86_64__)
#include <immintrin.h>
// The same CRC by carry-less multiplication (Intel white paper 323102, "Fast
// CRC Computation for Generic Polynomials Using PCLMULQDQ"), about 8x the
// table: 16-byte blocks are folded forward, four streams at once, and the
// last block goes through the table. For a reflected CRC, folding a block
// forward by N bits multiplies its low half by x^(N+63) mod P and its high
// half by x^(N-1) mod P (both bit-reflected); checked against the table by
// test/unit/store-tar-split.test.ts.
typedef struct {
  uint64_t lo, hi;
} crc64_fold_k;
static crc64_fold_k fold128, fold256, fold384, fold512;
static bool crc64_use_clmul;

static uint64_t reflect64(uint64_t v) {
  uint64_t r = 0;
  for (int i = 0; i < 64; i++)
    if (v >> i & 1) r |= 1ULL << (63 - i);
  return r;
}

// x^n mod (x^64 + x^4 + x^3 + x + 1), in normal bit order.
static uint64_t crc64_xpow(unsigned n) {
  uint64_t r = 1;
  for (unsigned i = 0; i < n; i++) r = (r >> 63) ? (r << 1) ^ 0x1B : r << 1;
  return r;
}

static crc64_fold_k crc64_fold_by(unsigned bits) {
  crc64_fold_k k = {reflect64(crc64_xpow(bits + 63)), reflect64(crc64_xpow(bits - 1))};
  return k;
}

static void crc64_clmul_init(void) {
  __builtin_cpu_init();
  crc64_use_clmul = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
  fold128 = crc64_fold_by(128);
  fold256 = crc64_fold_by(256);
  fold384 = crc64_fold_by(384);
  fold512 = crc64_fold_by(512);
}

__attribute__((target("pclmul,sse4.1"))) static inline __m128i crc64_fold(__m128i x, crc64_fold_k k) {
  __m128i kk = _mm_set_epi64x((long long)k.hi, (long long)k.lo);
  return _mm_xor_si128(_mm_clmulepi64_si128(x, kk, 0x00), _mm_clmulepi64_si128(x, kk, 0x11));
}

__attribute__((target("pclmul,sse4.1"))) static uint64_t crc64_clmul(uint64_t crc, const uint8_t *p, size_t n) {
  // The running CRC joins the first 8 bytes; the block registers then start from zero.
  __m128i a = _mm_xor_si128(_mm_loadu_si128((const __m128i *)p), _mm_cvtsi64_si128((long long)crc));
  __m128i b = _mm_loadu_si128((const __m128i *)(p + 16));
  __m128i c = _mm_loadu_si128((const __m128i *)(p + 32));
  __m128i d = _mm_loadu_si128((const __m128i *)(p + 48));
  p += 64;
  n -= 64;
  for (; n >= 64; p += 64, n -= 64) {
    a = _mm_xor_si128(crc64_fold(a, fold512), _mm_loadu_si128((const __m128i *)p));
    b = _mm_xor_si128(crc64_fold(b, fold512), _mm_loadu_si128((const __m128i *)(p + 16)));
    c = _mm_xor_si128(crc64_fold(c, fold512), _mm_loadu_si128((const __m128i *)(p + 32)));
    d = _mm_xor_si128(crc64_fold(d, fold512), _mm_loadu_si128((const __m128i *)(p + 48)));
  }
  __m128i x = _mm_xor_si128(_mm_xor_si128(crc64_fold(a, fold384), crc64_fold(b, fold256)),
                            _mm_xor_si128(crc64_fold(c, fold128), d));
  for (; n >= 16; p += 16, n -= 16) x = _mm_xor_si128(crc64_fold(x, fold128), _mm_loadu_si128((const __m128i *)p));
  uint8_t last[16];
  _mm_storeu_si128((__m128i *)last, x);
  return crc64_update(crc64_update(0, last, 16), p, n);
}
#endif

// crc64(state: Buffer(8), data): state holds the inverted CRC, little-endian;
// start from 8 bytes of 0xff, and the CRC is the complement of the final state.
static napi_value js_crc64(napi_env env, napi_callback_info info) {
  napi_value a[2];
  uint8_t *state, *data;
  size_t slen, len;
  if (!get_args(env, info, 2, a) || !get_bytes(env, a[0], &state, &slen) || !get_bytes(env, a[1], &data, &len))
    return NULL;
  if (slen != 8) {
    napi_throw_range_error(env, NULL, "crc64 state must be 8 bytes");
    return NULL;
  }
  uint64_t crc;
  memcpy(&crc, state, 8);
#if defined(__x86_64__)
  if (crc64_use_clmul && len >= 64) crc = htole64(crc64_clmul(le64toh(crc), data, len));
  else
#endif
    crc = htole64(crc64_update(le64toh(crc), data, len));
  memcpy(state, &crc, 8);
  return NULL;
}

// A SHA-256 context whose updates run on libuv's thread pool, so a layer's
// digest is computed beside the extraction without copying its bytes. One
// update at a time (the caller chains them); `data` stays referenced, and
// must not change, until its callback runs.
typedef struct {
  EVP_MD_CTX *md;
  bool busy;
} sha256_ctx;

typedef struct {
  sha256_ctx *ctx;
  uint32_t count;
  int ok;
  napi_ref data_ref, ctx_ref, cb_ref;
  napi_async_work work;
  struct {
    const uint8_t *p;
    size_t n;
  } parts[];
} sha256_job;

static void sha256_finalize(napi_env env, void *data, void *hint) {
  sha256_ctx *ctx = data;
  EVP_MD_CTX_free(ctx->md);
  free(ctx);
}

static sha256_ctx *get_sha256(napi_env env, napi_value v) {
  void *p = NULL;
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external || napi_get_value_external(env, v, &p) != napi_ok ||
      p == NULL) {
    napi_throw_type_error(env, NULL, "expected a sha256 context");
    return NULL;
  }
  sha256_ctx *ctx = p;
  if (ctx->busy) {
    napi_throw_error(env, NULL, "sha256 context is busy (an update is running)");
    return NULL;
  }
  return ctx;
}

// sha256Create() -> context
static napi_value js_sha256_create(napi_env env, napi_callback_info info) {
  sha256_ctx *ctx = calloc(1, sizeof *ctx);
  if (ctx) ctx->md = EVP_MD_CTX_new();
  if (!ctx || !ctx->md || EVP_DigestInit_ex(ctx->md, EVP_sha256(), NULL) != 1) {
    if (ctx) EVP_MD_CTX_free(ctx->md);
    free(ctx);
    napi_throw_error(env, NULL, "cannot create a sha256 context");
    return NULL;
  }
  napi_value out;
  napi_create_external(env, ctx, sha256_finalize, NULL, &out);
  return out;
}

static void sha256_execute(napi_env env, void *data) {
  sha256_job *job = data;
  job->ok = 1;
  for (uint32_t i = 0; i < job->count && job->ok; i++)
    job->ok = EVP_DigestUpdate(job->ctx->md, job->parts[i].p, job->parts[i].n) == 1;
}

static void sha256_complete(napi_env env, napi_status status, void *data) {
  sha256_job *job = data;
  job->ctx->busy = false;
  napi_value cb, global, arg;
  napi_get_reference_value(env, job->cb_ref, &cb);
  napi_get_global(env, &global);
  if (status == napi_ok && job->ok) {
    napi_get_null(env, &arg);
  } else {
    napi_value m;
    napi_create_string_utf8(env, "sha256 update failed", NAPI_AUTO_LENGTH, &m);
    napi_create_error(env, NULL, m, &arg);
  }
  napi_delete_reference(env, job->data_ref);
  napi_delete_reference(env, job->ctx_ref);
  napi_delete_reference(env, job->cb_ref);
  napi_delete_async_work(env, job->work);
  free(job);
  napi_call_function(env, global, cb, 1, &arg, NULL);
}

// sha256Update(context, chunks: Uint8Array[], callback(err | null)): hashes the
// chunks in order on the thread pool. One job for many small chunks, because
// a job's round trip costs more than hashing 16 KiB.
static napi_value js_sha256_update(napi_env env, napi_callback_info info) {
  napi_value a[3];
  if (!get_args(env, info, 3, a)) return NULL;
  sha256_ctx *ctx = get_sha256(env, a[0]);
  if (!ctx) return NULL;
  bool is_array = false;
  uint32_t count = 0;
  if (napi_is_array(env, a[1], &is_array) != napi_ok || !is_array || napi_get_array_length(env, a[1], &count) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected an array of Uint8Arrays");
    return NULL;
  }
  sha256_job *job = calloc(1, sizeof *job + count * sizeof job->parts[0]);
  if (!job) return throw_errno(env, ENOMEM, "sha256Update", NULL);
  for (uint32_t i = 0; i < count; i++) {
    napi_value el;
    uint8_t *p;
    if (napi_get_element(env, a[1], i, &el) != napi_ok || !get_bytes(env, el, &p, &job->parts[i].n)) {
      free(job);
      return NULL;
    }
    job->parts[i].p = p;
  }
  job->count = count;
  job->ctx = ctx;
  napi_value name;
  napi_create_string_utf8(env, "ocisnap:sha256", NAPI_AUTO_LENGTH, &name);
  // The array keeps its chunks alive until the job is done.
  if (napi_create_reference(env, a[1], 1, &job->data_ref) != napi_ok ||
      napi_create_reference(env, a[0], 1, &job->ctx_ref) != napi_ok ||
      napi_create_reference(env, a[2], 1, &job->cb_ref) != napi_ok ||
      napi_create_async_work(env, NULL, name, sha256_execute, sha256_complete, job, &job->work) != napi_ok ||
      napi_queue_async_work(env, job->work) != napi_ok) {
    // Leaks the references made so far; only reachable when N-API itself fails.
    free(job);
    napi_throw_error(env, NULL, "cannot queue a sha256 update");
    return NULL;
  }
  ctx->busy = true;
  return NULL;
}

// sha256Digest(context) -> Buffer(32): the digest of everything so far (the
// context goes on, so it can be asked again after more updates).
static napi_value js_sha256_digest(napi_env env, napi_callback_info info) {
  napi_value a[1];
  if (!get_args(env, info, 1, a)) return NULL;
  sha256_ctx *ctx = get_sha256(env, a[0]);
  if (!ctx) return NULL;
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  EVP_MD_CTX *copy = EVP_MD_CTX_new();
  int ok = copy && EVP_MD_CTX_copy_ex(copy, ctx->md) == 1 && EVP_DigestFinal_ex(copy, md, &n) == 1;
  EVP_MD_CTX_free(copy);
  if (!ok) {
    napi_throw_error(env, NULL, "sha256 digest failed");
    return NULL;
  }
  napi_value out;
  void *p;
  napi_create_buffer_copy(env, n, md, &p, &out);
  return out;
}

// setMmapThreshold(bytes) -> boolean: glibc mallopt(M_MMAP_THRESHOLD). Blocks
// at least this large are mmapped and go back to the kernel when freed;
// otherwise glibc raises the threshold after the first such free and serves
// them from the heap, which keeps the freed layer buffers of a pull resident.
static napi_value js_set_mmap_threshold(napi_env env, napi_callback_info info) {
  napi_value a[1];
  if (!get_args(env, info, 1, a)) return NULL;
  int64_t n;
  if (!get_i64(env, a[0], &n)) return NULL;
  if (n < 0 || n > 32 * 1024 * 1024) {
    napi_throw_range_error(env, NULL, "mmap threshold out of range (0 to 32 MiB)");
    return NULL;
  }
  napi_value out;
  napi_get_boolean(env, mallopt(M_MMAP_THRESHOLD, (int)n) == 1, &out);
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  export_fn(env, exports, "openat2", js_openat2);
  export_fn(env, exports, "mknodat", js_mknodat);
  export_fn(env, exports, "fchownat", js_fchownat);
  export_fn(env, exports, "fchmodat", js_fchmodat);
  export_fn(env, exports, "utimensat", js_utimensat);
  export_fn(env, exports, "lsetxattr", js_lsetxattr);
  export_fn(env, exports, "lgetxattr", js_lgetxattr);
  export_fn(env, exports, "llistxattr", js_llistxattr);
  export_fn(env, exports, "setlk", js_setlk);
  export_fn(env, exports, "finishFile", js_finish_file);
  crc64_init();
#if defined(__x86_64__)
  crc64_clmul_init();
#endif
  export_fn(env, exports, "crc64", js_crc64);
  export_fn(env, exports, "sha256Create", js_sha256_create);
  export_fn(env, exports, "sha256Update", js_sha256_update);
  export_fn(env, exports, "sha256Digest", js_sha256_digest);
  export_fn(env, exports, "setMmapThreshold", js_set_mmap_threshold);
  napi_value c;
  napi_create_object(env, &c);
  export_int(env, c, "RESOLVE_NO_XDEV", RESOLVE_NO_XDEV);
  export_int(env, c, "RESOLVE_NO_MAGICLINKS", RESOLVE_NO_MAGICLINKS);
  export_int(env, c, "RESOLVE_NO_SYMLINKS", RESOLVE_NO_SYMLINKS);
  export_int(env, c, "RESOLVE_BENEATH", RESOLVE_BENEATH);
  export_int(env, c, "RESOLVE_IN_ROOT", RESOLVE_IN_ROOT);
  export_int(env, c, "AT_SYMLINK_NOFOLLOW", AT_SYMLINK_NOFOLLOW);
  export_int(env, c, "AT_FDCWD", AT_FDCWD);
  export_int(env, c, "O_PATH", O_PATH);
  export_int(env, c, "O_DIRECTORY", O_DIRECTORY);
  export_int(env, c, "O_NOFOLLOW", O_NOFOLLOW);
  export_int(env, c, "S_IFCHR", S_IFCHR);
  export_int(env, c, "S_IFBLK", S_IFBLK);
  export_int(env, c, "S_IFIFO", S_IFIFO);
  napi_set_named_property(env, exports, "constants", c);
  register_btrfs(env, exports);
  register_zstd(env, exports);
  register_tree(env, exports);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
