// Tree walking and file comparison for the /etc merge (src/deploy/tree-compare.ts).
//
// Why native: a deploy walks three /etc trees (about 700 entries each) once,
// in a fresh process. In JavaScript each walk ran mostly in V8's interpreter
// (an lstat, an llistxattr and often a readlink per entry, each wrapped in
// objects): 25-50 ms per tree, against a few ms here. The semantics are those
// of the JavaScript walk they replace: symlinks are described, never followed;
// directories on another device are listed but not entered; names that are not
// valid UTF-8 are reported instead of listed.
#define _GNU_SOURCE
#include "napi-util.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

// Strict UTF-8 (RFC 3629): no overlong forms, no surrogates, nothing above U+10FFFF.
static bool valid_utf8(const unsigned char *s, size_t n) {
  size_t i = 0;
  while (i < n) {
    unsigned char c = s[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t len;
    unsigned int cp;
    if (c >= 0xc2 && c <= 0xdf) len = 2, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef) len = 3, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4) len = 4, cp = c & 0x07;
    else return false;
    if (i + len > n) return false;
    for (size_t k = 1; k < len; k++) {
      if ((s[i + k] & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (s[i + k] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += len;
  }
  return true;
}

static int cmp_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static napi_value bigint_i64(napi_env env, int64_t v) {
  napi_value r;
  napi_create_bigint_int64(env, v, &r);
  return r;
}

static napi_value bigint_u64(napi_env env, uint64_t v) {
  napi_value r;
  napi_create_bigint_uint64(env, v, &r);
  return r;
}

static void set_str(napi_env env, napi_value obj, const char *key, const char *s, size_t n) {
  napi_value v;
  napi_create_string_utf8(env, s, n, &v);
  napi_set_named_property(env, obj, key, v);
}

// [name, Buffer] pairs of every extended attribute of `path` (not followed),
// sorted by name; none where the filesystem has no xattrs. 0 after a throw,
// -1 when the entry is gone.
static int read_xattrs(napi_env env, const char *path, napi_value *out) {
  napi_create_array(env, out);
  char *names = NULL;
  ssize_t n;
  for (;;) {
    n = llistxattr(path, NULL, 0);
    if (n < 0) {
      if (errno == ENOTSUP) return 1;
      if (errno == ENOENT) return -1;
      throw_errno(env, errno, "llistxattr", path);
      return 0;
    }
    if (n == 0) return 1;
    names = malloc((size_t)n);
    if (names == NULL) {
      throw_errno(env, ENOMEM, "llistxattr", path);
      return 0;
    }
    ssize_t m = llistxattr(path, names, (size_t)n);
    if (m >= 0) {
      n = m;
      break;
    }
    int e = errno;
    free(names);
    if (e != ERANGE) {
      throw_errno(env, e, "llistxattr", path);
      return 0;
    }
  }
  // Names in sorted order, as the JavaScript walk produced them.
  size_t count = 0;
  for (ssize_t off = 0; off < n; off += (ssize_t)strnlen(names + off, (size_t)(n - off)) + 1) count++;
  const char **sorted = malloc(count * sizeof *sorted);
  if (sorted == NULL) {
    free(names);
    throw_errno(env, ENOMEM, "llistxattr", path);
    return 0;
  }
  size_t k = 0;
  for (ssize_t off = 0; off < n; off += (ssize_t)strnlen(names + off, (size_t)(n - off)) + 1) sorted[k++] = names + off;
  qsort(sorted, count, sizeof *sorted, cmp_names);
  uint32_t idx = 0;
  int ok = 1;
  for (size_t i = 0; i < count && ok; i++) {
    const char *name = sorted[i];
    for (;;) {
      ssize_t len = lgetxattr(path, name, NULL, 0);
      if (len < 0) {
        if (errno != ENODATA) ok = 0, throw_errno(env, errno, "lgetxattr", path);
        break; // removed meanwhile: not there
      }
      napi_value buf;
      void *data;
      napi_create_buffer(env, (size_t)len, &data, &buf);
      ssize_t got = lgetxattr(path, name, data, (size_t)len);
      if (got < 0 && errno == ERANGE) continue; // grew meanwhile
      if (got < 0) {
        if (errno != ENODATA) ok = 0, throw_errno(env, errno, "lgetxattr", path);
        break;
      }
      if (got < len) {
        void *d2;
        napi_create_buffer_copy(env, (size_t)got, data, &d2, &buf);
      }
      napi_value pair, nm;
      napi_create_array_with_length(env, 2, &pair);
      napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &nm);
      napi_set_element(env, pair, 0, nm);
      napi_set_element(env, pair, 1, buf);
      napi_set_element(env, *out, idx++, pair);
      break;
    }
  }
  free(sorted);
  free(names);
  return ok;
}

struct walk {
  napi_env env;
  char path[PATH_BUF]; // root + '/' + rel
  size_t root_len;     // length of root + '/'
  dev_t root_dev;
  napi_value entries, skipped;
  uint32_t n_entries, n_skipped;
};

static void add_skip(struct walk *w, const char *rel, size_t rel_len, const char *reason) {
  napi_value o;
  napi_create_object(w->env, &o);
  set_str(w->env, o, "rel", rel, rel_len);
  set_str(w->env, o, "reason", reason, NAPI_AUTO_LENGTH);
  napi_set_element(w->env, w->skipped, w->n_skipped++, o);
}

// Lists the entry at w->path (its rel starts at root_len); *descend tells
// the caller to enter it. 0 after a throw; 1 also when the entry vanished
// meanwhile (then it is not listed).
static int describe(struct walk *w, size_t path_len, bool *descend) {
  napi_env env = w->env;
  *descend = false;
  struct stat st;
  if (lstat(w->path, &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return 1; // removed while we looked
    throw_errno(env, errno, "lstat", w->path);
    return 0;
  }
  napi_value o;
  napi_create_object(env, &o);
  const char *rel = w->path + w->root_len;
  size_t rel_len = path_len - w->root_len;
  set_str(env, o, "rel", rel, rel_len);
  napi_set_named_property(env, o, "mode", make_i32(env, (int32_t)st.st_mode));
  napi_value uid, gid;
  napi_create_uint32(env, st.st_uid, &uid);
  napi_create_uint32(env, st.st_gid, &gid);
  napi_set_named_property(env, o, "uid", uid);
  napi_set_named_property(env, o, "gid", gid);
  napi_set_named_property(env, o, "size", bigint_i64(env, (int64_t)st.st_size));
  napi_set_named_property(env, o, "dev", bigint_u64(env, (uint64_t)st.st_dev));
  napi_set_named_property(env, o, "rdev", bigint_u64(env, (uint64_t)st.st_rdev));
  napi_set_named_property(env, o, "atimeNs", bigint_i64(env, (int64_t)st.st_atim.tv_sec * 1000000000 + st.st_atim.tv_nsec));
  napi_set_named_property(env, o, "mtimeNs", bigint_i64(env, (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec));
  if (S_ISLNK(st.st_mode)) {
    char target[PATH_BUF];
    ssize_t n = readlink(w->path, target, sizeof target);
    if (n < 0) {
      if (errno == ENOENT) return 1;
      throw_errno(env, errno, "readlink", w->path);
      return 0;
    }
    if ((size_t)n >= sizeof target) {
      throw_errno(env, ENAMETOOLONG, "readlink", w->path);
      return 0;
    }
    set_str(env, o, "linkTarget", target, (size_t)n);
  }
  napi_value xattrs;
  int got = read_xattrs(env, w->path, &xattrs);
  if (got == 0) return 0;
  if (got < 0) return 1; // removed while we looked
  napi_set_named_property(env, o, "xattrs", xattrs);
  napi_set_element(env, w->entries, w->n_entries++, o);
  if (S_ISDIR(st.st_mode)) {
    if (st.st_dev != w->root_dev)
      add_skip(w, rel, rel_len, "another filesystem or subvolume is mounted here; not descended into");
    else
      *descend = true;
  }
  return 1;
}

// Lists the directory at w->path (length path_len) and everything below it.
static int walk_dir(struct walk *w, size_t path_len) {
  napi_env env = w->env;
  DIR *d = opendir(w->path);
  if (d == NULL) {
    throw_errno(env, errno, "opendir", w->path);
    return 0;
  }
  char **names = NULL;
  size_t count = 0, cap = 0;
  int ok = 1;
  for (;;) {
    errno = 0;
    struct dirent *de = readdir(d);
    if (de == NULL) {
      if (errno != 0) ok = 0, throw_errno(env, errno, "readdir", w->path);
      break;
    }
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
    if (count == cap) {
      cap = cap == 0 ? 32 : cap * 2;
      char **grown = realloc(names, cap * sizeof *names);
      if (grown == NULL) {
        ok = 0, throw_errno(env, ENOMEM, "readdir", w->path);
        break;
      }
      names = grown;
    }
    names[count] = strdup(de->d_name);
    if (names[count] == NULL) {
      ok = 0, throw_errno(env, ENOMEM, "readdir", w->path);
      break;
    }
    count++;
  }
  closedir(d);
  if (ok) qsort(names, count, sizeof *names, cmp_names);
  for (size_t i = 0; i < count && ok; i++) {
    size_t len = strlen(names[i]);
    // rel of a directory's child: "<rel>/<name>", or "<name>" under the root.
    size_t sep = path_len > w->root_len ? 1 : 0;
    if (path_len + sep + len >= sizeof w->path) {
      ok = 0, throw_errno(env, ENAMETOOLONG, "lstat", w->path);
      break;
    }
    if (sep) w->path[path_len] = '/';
    memcpy(w->path + path_len + sep, names[i], len + 1);
    size_t child_len = path_len + sep + len;
    if (!valid_utf8((const unsigned char *)names[i], len)) {
      add_skip(w, w->path + w->root_len, child_len - w->root_len, "name is not valid UTF-8; not merged");
    } else {
      bool descend;
      ok = describe(w, child_len, &descend);
      if (ok && descend) ok = walk_dir(w, child_len);
    }
    w->path[path_len] = 0;
  }
  for (size_t i = 0; i < count; i++) free(names[i]);
  free(names);
  return ok;
}

// walkTree(root) -> { entries: RawEntry[], skipped: { rel, reason }[] }
// RawEntry: { rel, mode, uid, gid, size, dev, rdev, atimeNs, mtimeNs, linkTarget?, xattrs: [name, Buffer][] }
// (bigint for size, dev, rdev and the times). Pre-order; a directory's
// children in byte order of their names.
static napi_value js_walk_tree(napi_env env, napi_callback_info info) {
  napi_value a[1];
  struct walk *w = calloc(1, sizeof *w);
  if (w == NULL) return throw_errno(env, ENOMEM, "walk", NULL);
  napi_value result = NULL;
  if (!get_args(env, info, 1, a) || !get_str(env, a[0], w->path, sizeof w->path - 1)) goto out;
  struct stat st;
  if (lstat(w->path, &st) != 0) {
    throw_errno(env, errno, "lstat", w->path);
    goto out;
  }
  if (!S_ISDIR(st.st_mode)) {
    char msg[PATH_BUF + 32];
    snprintf(msg, sizeof msg, "%s is not a directory", w->path);
    napi_throw_error(env, NULL, msg);
    goto out;
  }
  w->env = env;
  w->root_dev = st.st_dev;
  size_t len = strlen(w->path);
  while (len > 1 && w->path[len - 1] == '/') w->path[--len] = 0;
  if (len > 1 || w->path[0] != '/') w->path[len++] = '/';
  w->path[len] = 0;
  w->root_len = len;
  napi_create_array(env, &w->entries);
  napi_create_array(env, &w->skipped);
  if (!walk_dir(w, len)) goto out;
  napi_create_object(env, &result);
  napi_set_named_property(env, result, "entries", w->entries);
  napi_set_named_property(env, result, "skipped", w->skipped);
out:
  free(w);
  return result;
}

static int open_for_compare(const char *path) {
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOATIME);
  // O_NOATIME needs the file's owner or CAP_FOWNER (open(2)).
  if (fd < 0 && errno == EPERM) fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  return fd;
}

// Reads until buf is full or the file ends; -1 on error.
static ssize_t read_full(int fd, char *buf, size_t len) {
  size_t got = 0;
  while (got < len) {
    ssize_t n = read(fd, buf + got, len - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (n == 0) break;
    got += (size_t)n;
  }
  return (ssize_t)got;
}

// sameContent(pathA, pathB) -> boolean: byte equality of two regular files,
// opened without following a symlink and without touching their atimes (in a
// fresh snapshot each atime write would copy a shared metadata block).
static napi_value js_same_content(napi_env env, napi_callback_info info) {
  napi_value a[2];
  char pa[PATH_BUF], pb[PATH_BUF];
  if (!get_args(env, info, 2, a) || !get_str(env, a[0], pa, sizeof pa) || !get_str(env, a[1], pb, sizeof pb)) return NULL;
  int fa = open_for_compare(pa);
  if (fa < 0) return throw_errno(env, errno, "open", pa);
  int fb = open_for_compare(pb);
  if (fb < 0) {
    int e = errno;
    close(fa);
    return throw_errno(env, e, "open", pb);
  }
  char ba[32768], bb[32768];
  bool same = true;
  for (;;) {
    ssize_t ra = read_full(fa, ba, sizeof ba);
    if (ra < 0) {
      int e = errno;
      close(fa), close(fb);
      return throw_errno(env, e, "read", pa);
    }
    ssize_t rb = read_full(fb, bb, sizeof bb);
    if (rb < 0) {
      int e = errno;
      close(fa), close(fb);
      return throw_errno(env, e, "read", pb);
    }
    if (ra != rb || memcmp(ba, bb, (size_t)ra) != 0) {
      same = false;
      break;
    }
    if ((size_t)ra < sizeof ba) break; // both ended here
  }
  close(fa);
  close(fb);
  napi_value out;
  napi_get_boolean(env, same, &out);
  return out;
}

void register_tree(napi_env env, napi_value exports) {
  export_fn(env, exports, "walkTree", js_walk_tree);
  export_fn(env, exports, "sameContent", js_same_content);
}
