// Linux syscalls Node.js does not expose, kept as thin as possible: every
// function maps one syscall and throws a Node-style errno error on failure.
// Callers (src/sys/native.ts) give them types and meaning.
#define _GNU_SOURCE
#include <errno.h>
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
#include <uv.h>

#define PATH_BUF 4096
#define NAME_BUF 256

static napi_value throw_errno(napi_env env, int err, const char *syscall, const char *path) {
  char msg[PATH_BUF + 128];
  const char *code = uv_err_name(-err);
  if (path)
    snprintf(msg, sizeof msg, "%s: %s, %s '%s'", code, strerror(err), syscall, path);
  else
    snprintf(msg, sizeof msg, "%s: %s, %s", code, strerror(err), syscall);
  napi_value e, m, c, n, s;
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
  napi_create_string_utf8(env, code, NAPI_AUTO_LENGTH, &c);
  napi_create_error(env, c, m, &e);
  napi_create_int32(env, -err, &n);
  napi_set_named_property(env, e, "errno", n);
  napi_set_named_property(env, e, "code", c);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &s);
  napi_set_named_property(env, e, "syscall", s);
  if (path) {
    napi_value p;
    napi_create_string_utf8(env, path, NAPI_AUTO_LENGTH, &p);
    napi_set_named_property(env, e, "path", p);
  }
  napi_throw(env, e);
  return NULL;
}

static int get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < want) {
    napi_throw_type_error(env, NULL, "not enough arguments");
    return 0;
  }
  return 1;
}

// A path or name: a JS string (UTF-8) or a Buffer holding the raw bytes, so
// that names from a tar that are not valid UTF-8 reach the filesystem intact.
static int get_str(napi_env env, napi_value v, char *buf, size_t len) {
  size_t out;
  bool is_buffer = false;
  if (napi_is_buffer(env, v, &is_buffer) == napi_ok && is_buffer) {
    void *data;
    size_t n;
    if (napi_get_buffer_info(env, v, &data, &n) != napi_ok || n >= len - 1 || memchr(data, 0, n) != NULL) {
      napi_throw_type_error(env, NULL, "expected a path without NUL bytes, shorter than PATH_MAX");
      return 0;
    }
    memcpy(buf, data, n);
    buf[n] = 0;
    return 1;
  }
  if (napi_get_value_string_utf8(env, v, buf, len, &out) != napi_ok || out >= len - 1) {
    napi_throw_type_error(env, NULL, "expected a string shorter than PATH_MAX");
    return 0;
  }
  return 1;
}

static int get_i32(napi_env env, napi_value v, int32_t *out) {
  if (napi_get_value_int32(env, v, out) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected an integer");
    return 0;
  }
  return 1;
}

static int get_i64(napi_env env, napi_value v, int64_t *out) {
  if (napi_get_value_int64(env, v, out) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected an integer");
    return 0;
  }
  return 1;
}

static napi_value make_i32(napi_env env, int32_t v) {
  napi_value r;
  napi_create_int32(env, v, &r);
  return r;
}

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

static void export_fn(napi_env env, napi_value exports, const char *name, napi_callback cb) {
  napi_value fn;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn);
  napi_set_named_property(env, exports, name, fn);
}

static void export_int(napi_env env, napi_value obj, const char *name, int32_t v) {
  napi_set_named_property(env, obj, name, make_i32(env, v));
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
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
