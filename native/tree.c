// Tree walking and file comparison for the /etc merge (src/deploy/tree-compare.ts).
//
// Why native: a deploy walks three /etc trees (about 700 entries each) once,
// in a fresh process. In JavaScript each walk ran mostly in V8's interpreter
// (an lstat, an llistxattr and often a readlink per entry, each wrapped in
// objects): 25-50 ms per tree, against a few ms here; and on the thread pool
// the three walks overlap their reads when the page cache is cold. The semantics are those
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

// The walk runs on libuv's thread pool (three trees at once overlap their
// disk reads when the page cache is cold) and collects into these C
// structures; the completion turns them into JavaScript objects.
struct xattr {
  char *name;
  char *value;
  size_t len;
};

struct entry {
  char *rel; // below the root, '/'-separated
  struct stat st;
  char *link; // symlink target
  struct xattr *xattrs;
  size_t n_xattrs;
};

struct skip {
  char *rel;
  const char *reason;
};

struct walk {
  char path[PATH_BUF]; // root + '/' + rel
  size_t root_len;     // length of root + '/'
  dev_t root_dev;
  struct entry *entries;
  size_t n_entries, cap_entries;
  struct skip *skips;
  size_t n_skips, cap_skips;
  // The first failure: errno and the syscall and path it came from; or not_dir.
  int err;
  const char *err_syscall;
  char err_path[PATH_BUF];
  bool not_dir;
  napi_async_work work;
  napi_deferred deferred;
};

static bool fail(struct walk *w, int err, const char *syscall) {
  w->err = err;
  w->err_syscall = syscall;
  snprintf(w->err_path, sizeof w->err_path, "%s", w->path);
  return false;
}

static bool grow(void **items, size_t *cap, size_t n, size_t size) {
  if (n < *cap) return true;
  size_t next = *cap == 0 ? 64 : *cap * 2;
  void *p = realloc(*items, next * size);
  if (p == NULL) return false;
  *items = p;
  *cap = next;
  return true;
}

static bool add_skip(struct walk *w, const char *reason) {
  if (!grow((void **)&w->skips, &w->cap_skips, w->n_skips, sizeof *w->skips)) return fail(w, ENOMEM, "walk");
  char *rel = strdup(w->path + w->root_len);
  if (rel == NULL) return fail(w, ENOMEM, "walk");
  w->skips[w->n_skips++] = (struct skip){rel, reason};
  return true;
}

// Every extended attribute of w->path (not followed), sorted by name; none
// where the filesystem has no xattrs. *gone when the entry disappeared.
static bool read_xattrs(struct walk *w, struct entry *e, bool *gone) {
  char *names = NULL;
  ssize_t n;
  for (;;) {
    n = llistxattr(w->path, NULL, 0);
    if (n < 0 && errno == ENOTSUP) return true;
    if (n < 0 && errno == ENOENT) return *gone = true;
    if (n < 0) return fail(w, errno, "llistxattr");
    if (n == 0) return true;
    names = malloc((size_t)n);
    if (names == NULL) return fail(w, ENOMEM, "llistxattr");
    ssize_t m = llistxattr(w->path, names, (size_t)n);
    if (m >= 0) {
      n = m;
      break;
    }
    int err = errno;
    free(names);
    if (err != ERANGE) return fail(w, err, "llistxattr");
  }
  size_t count = 0;
  for (ssize_t off = 0; off < n; off += (ssize_t)strnlen(names + off, (size_t)(n - off)) + 1) count++;
  const char **sorted = malloc(count * sizeof *sorted);
  e->xattrs = calloc(count, sizeof *e->xattrs);
  bool ok = sorted != NULL && e->xattrs != NULL;
  if (!ok) fail(w, ENOMEM, "llistxattr");
  size_t k = 0;
  for (ssize_t off = 0; ok && off < n; off += (ssize_t)strnlen(names + off, (size_t)(n - off)) + 1) sorted[k++] = names + off;
  if (ok) qsort(sorted, count, sizeof *sorted, cmp_names);
  for (size_t i = 0; ok && i < count; i++) {
    for (;;) {
      ssize_t len = lgetxattr(w->path, sorted[i], NULL, 0);
      if (len < 0) {
        if (errno != ENODATA) ok = fail(w, errno, "lgetxattr");
        break; // removed meanwhile: not there
      }
      char *value = malloc(len > 0 ? (size_t)len : 1);
      if (value == NULL) {
        ok = fail(w, ENOMEM, "lgetxattr");
        break;
      }
      ssize_t got = lgetxattr(w->path, sorted[i], value, (size_t)len);
      if (got < 0) {
        int err = errno;
        free(value);
        if (err == ERANGE) continue; // grew meanwhile
        if (err != ENODATA) ok = fail(w, err, "lgetxattr");
        break;
      }
      struct xattr *x = &e->xattrs[e->n_xattrs++];
      x->name = strdup(sorted[i]);
      x->value = value;
      x->len = (size_t)got;
      if (x->name == NULL) ok = fail(w, ENOMEM, "lgetxattr");
      break;
    }
  }
  free(sorted);
  free(names);
  return ok;
}

static void free_entry(struct entry *e) {
  free(e->rel);
  free(e->link);
  for (size_t i = 0; i < e->n_xattrs; i++) free(e->xattrs[i].name), free(e->xattrs[i].value);
  free(e->xattrs);
}

// Lists the entry at w->path; *descend tells the caller to enter it. An entry
// removed meanwhile is left out.
static bool describe(struct walk *w, bool *descend) {
  *descend = false;
  struct entry e = {0};
  if (lstat(w->path, &e.st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return true;
    return fail(w, errno, "lstat");
  }
  bool gone = false;
  if (S_ISLNK(e.st.st_mode)) {
    char target[PATH_BUF];
    ssize_t n = readlink(w->path, target, sizeof target);
    if (n < 0 && errno == ENOENT) return true;
    if (n < 0) return fail(w, errno, "readlink");
    if ((size_t)n >= sizeof target) return fail(w, ENAMETOOLONG, "readlink");
    e.link = strndup(target, (size_t)n);
    if (e.link == NULL) return fail(w, ENOMEM, "readlink");
  }
  if (!read_xattrs(w, &e, &gone) || gone) {
    free_entry(&e);
    return gone;
  }
  e.rel = strdup(w->path + w->root_len);
  if (e.rel == NULL || !grow((void **)&w->entries, &w->cap_entries, w->n_entries, sizeof *w->entries)) {
    free_entry(&e);
    return fail(w, ENOMEM, "walk");
  }
  w->entries[w->n_entries++] = e;
  if (S_ISDIR(e.st.st_mode)) {
    if (e.st.st_dev != w->root_dev) return add_skip(w, "another filesystem or subvolume is mounted here; not descended into");
    *descend = true;
  }
  return true;
}

// Lists the directory at w->path (length path_len) and everything below it.
static bool walk_dir(struct walk *w, size_t path_len) {
  DIR *d = opendir(w->path);
  if (d == NULL) return fail(w, errno, "opendir");
  char **names = NULL;
  size_t count = 0, cap = 0;
  bool ok = true;
  for (;;) {
    errno = 0;
    struct dirent *de = readdir(d);
    if (de == NULL) {
      if (errno != 0) ok = fail(w, errno, "readdir");
      break;
    }
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) continue;
    char *name = strdup(de->d_name);
    if (name == NULL || !grow((void **)&names, &cap, count, sizeof *names)) {
      free(name);
      ok = fail(w, ENOMEM, "readdir");
      break;
    }
    names[count++] = name;
  }
  closedir(d);
  if (ok) qsort(names, count, sizeof *names, cmp_names);
  // A child's rel: "<rel>/<name>", or "<name>" right under the root.
  size_t sep = path_len > w->root_len ? 1 : 0;
  for (size_t i = 0; i < count && ok; i++) {
    size_t len = strlen(names[i]);
    if (path_len + sep + len >= sizeof w->path) {
      ok = fail(w, ENAMETOOLONG, "lstat");
      break;
    }
    if (sep) w->path[path_len] = '/';
    memcpy(w->path + path_len + sep, names[i], len + 1);
    if (!valid_utf8((const unsigned char *)names[i], len)) {
      ok = add_skip(w, "name is not valid UTF-8; not merged");
    } else {
      bool descend;
      ok = describe(w, &descend);
      if (ok && descend) ok = walk_dir(w, path_len + sep + len);
    }
    if (ok) w->path[path_len] = 0;
  }
  for (size_t i = 0; i < count; i++) free(names[i]);
  free(names);
  return ok;
}

static void walk_execute(napi_env env, void *data) {
  struct walk *w = data;
  struct stat st;
  if (lstat(w->path, &st) != 0) {
    fail(w, errno, "lstat");
    return;
  }
  if (!S_ISDIR(st.st_mode)) {
    w->not_dir = true;
    return;
  }
  w->root_dev = st.st_dev;
  size_t len = strlen(w->path);
  while (len > 1 && w->path[len - 1] == '/') w->path[--len] = 0;
  if (len > 1 || w->path[0] != '/') w->path[len++] = '/';
  w->path[len] = 0;
  w->root_len = len;
  walk_dir(w, len);
}

static napi_value entry_object(napi_env env, const struct entry *e) {
  napi_value o, uid, gid, xattrs;
  napi_create_object(env, &o);
  set_str(env, o, "rel", e->rel, NAPI_AUTO_LENGTH);
  napi_set_named_property(env, o, "mode", make_i32(env, (int32_t)e->st.st_mode));
  napi_create_uint32(env, e->st.st_uid, &uid);
  napi_create_uint32(env, e->st.st_gid, &gid);
  napi_set_named_property(env, o, "uid", uid);
  napi_set_named_property(env, o, "gid", gid);
  napi_set_named_property(env, o, "size", bigint_i64(env, (int64_t)e->st.st_size));
  napi_set_named_property(env, o, "dev", bigint_u64(env, (uint64_t)e->st.st_dev));
  napi_set_named_property(env, o, "rdev", bigint_u64(env, (uint64_t)e->st.st_rdev));
  napi_set_named_property(env, o, "atimeNs", bigint_i64(env, (int64_t)e->st.st_atim.tv_sec * 1000000000 + e->st.st_atim.tv_nsec));
  napi_set_named_property(env, o, "mtimeNs", bigint_i64(env, (int64_t)e->st.st_mtim.tv_sec * 1000000000 + e->st.st_mtim.tv_nsec));
  if (e->link != NULL) set_str(env, o, "linkTarget", e->link, NAPI_AUTO_LENGTH);
  napi_create_array_with_length(env, e->n_xattrs, &xattrs);
  for (size_t i = 0; i < e->n_xattrs; i++) {
    napi_value pair, name, value;
    void *copy;
    napi_create_array_with_length(env, 2, &pair);
    napi_create_string_utf8(env, e->xattrs[i].name, NAPI_AUTO_LENGTH, &name);
    napi_create_buffer_copy(env, e->xattrs[i].len, e->xattrs[i].value, &copy, &value);
    napi_set_element(env, pair, 0, name);
    napi_set_element(env, pair, 1, value);
    napi_set_element(env, xattrs, (uint32_t)i, pair);
  }
  napi_set_named_property(env, o, "xattrs", xattrs);
  return o;
}

static void walk_complete(napi_env env, napi_status status, void *data) {
  struct walk *w = data;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value result, error;
  if (w->not_dir) {
    char msg[PATH_BUF + 32];
    napi_value m;
    snprintf(msg, sizeof msg, "%s is not a directory", w->path);
    napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
    napi_create_error(env, NULL, m, &error);
    napi_reject_deferred(env, w->deferred, error);
  } else if (w->err != 0) {
    error = make_errno_error(env, w->err, w->err_syscall, w->err_path);
    napi_reject_deferred(env, w->deferred, error);
  } else {
    napi_value entries, skipped;
    napi_create_array_with_length(env, w->n_entries, &entries);
    for (size_t i = 0; i < w->n_entries; i++) napi_set_element(env, entries, (uint32_t)i, entry_object(env, &w->entries[i]));
    napi_create_array_with_length(env, w->n_skips, &skipped);
    for (size_t i = 0; i < w->n_skips; i++) {
      napi_value o;
      napi_create_object(env, &o);
      set_str(env, o, "rel", w->skips[i].rel, NAPI_AUTO_LENGTH);
      set_str(env, o, "reason", w->skips[i].reason, NAPI_AUTO_LENGTH);
      napi_set_element(env, skipped, (uint32_t)i, o);
    }
    napi_create_object(env, &result);
    napi_set_named_property(env, result, "entries", entries);
    napi_set_named_property(env, result, "skipped", skipped);
    napi_resolve_deferred(env, w->deferred, result);
  }
  napi_close_handle_scope(env, scope);
  for (size_t i = 0; i < w->n_entries; i++) free_entry(&w->entries[i]);
  for (size_t i = 0; i < w->n_skips; i++) free(w->skips[i].rel);
  free(w->entries);
  free(w->skips);
  napi_delete_async_work(env, w->work);
  free(w);
}

// walkTree(root) -> Promise<{ entries: RawEntry[], skipped: { rel, reason }[] }>
// RawEntry: { rel, mode, uid, gid, size, dev, rdev, atimeNs, mtimeNs, linkTarget?, xattrs: [name, Buffer][] }
// (bigint for size, dev, rdev and the times). Pre-order; a directory's
// children in byte order of their names.
static napi_value js_walk_tree(napi_env env, napi_callback_info info) {
  napi_value a[1], promise, name;
  struct walk *w = calloc(1, sizeof *w);
  if (w == NULL) return throw_errno(env, ENOMEM, "walk", NULL);
  if (!get_args(env, info, 1, a) || !get_str(env, a[0], w->path, sizeof w->path - 1)) {
    free(w);
    return NULL;
  }
  napi_create_string_utf8(env, "ocisnap:walkTree", NAPI_AUTO_LENGTH, &name);
  if (napi_create_promise(env, &w->deferred, &promise) != napi_ok ||
      napi_create_async_work(env, NULL, name, walk_execute, walk_complete, w, &w->work) != napi_ok ||
      napi_queue_async_work(env, w->work) != napi_ok) {
    free(w);
    napi_throw_error(env, NULL, "walkTree: could not queue the walk");
    return NULL;
  }
  return promise;
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
