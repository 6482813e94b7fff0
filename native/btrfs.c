// btrfs subvolume operations as single ioctls (linux/btrfs.h), so that the
// CLI does not spawn btrfs-progs on its hot paths. Each function is one open
// plus one ioctl (tree search: a few); src/btrfs/native.ts gives them meaning.
// Numbers that are u64 in the kernel travel as JS numbers: subvolume ids and
// generations stay far below 2^53; a negative argument stands for its u64
// two's complement (-1 = UINT64_MAX), as search ranges need the top values.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/btrfs.h>
#include <linux/btrfs_tree.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "napi-util.h"

static int open_dir(const char *path) { return open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC); }

// Closes fd keeping errno (the ioctl's) intact.
static void close_keep(int fd) {
  int saved = errno;
  close(fd);
  errno = saved;
}

static napi_value make_u64(napi_env env, uint64_t v) {
  napi_value r;
  napi_create_double(env, (double)v, &r);
  return r;
}

static void set_u64(napi_env env, napi_value obj, const char *name, uint64_t v) {
  napi_set_named_property(env, obj, name, make_u64(env, v));
}

static void set_buffer(napi_env env, napi_value obj, const char *name, const void *data, size_t len) {
  napi_value b;
  void *out;
  napi_create_buffer_copy(env, len, data, &out, &b);
  napi_set_named_property(env, obj, name, b);
}

// "dir/name" for error messages.
static void join_path(char *out, size_t len, const char *dir, const char *name) {
  snprintf(out, len, "%s/%s", dir, name);
}

// (dir, name) arguments of the create/destroy calls; name must fit vol_args.
static int get_dir_name(napi_env env, napi_value *a, char *dir, char *name, size_t name_len) {
  if (!get_str(env, a[0], dir, PATH_BUF) || !get_str(env, a[1], name, name_len)) return 0;
  if (name[0] == 0 || strchr(name, '/') != NULL || strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
    napi_throw_type_error(env, NULL, "expected a single path component as the subvolume name");
    return 0;
  }
  return 1;
}

// btrfsSubvolCreate(dir, name): BTRFS_IOC_SUBVOL_CREATE in dir.
static napi_value js_subvol_create(napi_env env, napi_callback_info info) {
  napi_value a[2];
  char dir[PATH_BUF], name[NAME_BUF], full[PATH_BUF + NAME_BUF];
  if (!get_args(env, info, 2, a) || !get_dir_name(env, a, dir, name, sizeof name)) return NULL;
  join_path(full, sizeof full, dir, name);
  int fd = open_dir(dir);
  if (fd < 0) return throw_errno(env, errno, "open", dir);
  struct btrfs_ioctl_vol_args args;
  memset(&args, 0, sizeof args);
  strncpy(args.name, name, sizeof args.name - 1);
  if (ioctl(fd, BTRFS_IOC_SUBVOL_CREATE, &args) < 0) {
    close_keep(fd);
    return throw_errno(env, errno, "BTRFS_IOC_SUBVOL_CREATE", full);
  }
  close(fd);
  return NULL;
}

// btrfsSnapCreate(source, dir, name, readonly): BTRFS_IOC_SNAP_CREATE_V2.
static napi_value js_snap_create(napi_env env, napi_callback_info info) {
  napi_value a[4];
  char source[PATH_BUF], dir[PATH_BUF], name[NAME_BUF], full[PATH_BUF + NAME_BUF];
  bool readonly;
  if (!get_args(env, info, 4, a) || !get_str(env, a[0], source, sizeof source) ||
      !get_dir_name(env, a + 1, dir, name, sizeof name))
    return NULL;
  if (napi_get_value_bool(env, a[3], &readonly) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected a boolean");
    return NULL;
  }
  join_path(full, sizeof full, dir, name);
  int src = open_dir(source);
  if (src < 0) return throw_errno(env, errno, "open", source);
  int fd = open_dir(dir);
  if (fd < 0) {
    close_keep(src);
    return throw_errno(env, errno, "open", dir);
  }
  struct btrfs_ioctl_vol_args_v2 args;
  memset(&args, 0, sizeof args);
  args.fd = src;
  args.flags = readonly ? BTRFS_SUBVOL_RDONLY : 0;
  strncpy(args.name, name, sizeof args.name - 1);
  int rc = ioctl(fd, BTRFS_IOC_SNAP_CREATE_V2, &args);
  close_keep(fd);
  close_keep(src);
  if (rc < 0) return throw_errno(env, errno, "BTRFS_IOC_SNAP_CREATE_V2", full);
  return NULL;
}

// btrfsSnapDestroy(dir, name): BTRFS_IOC_SNAP_DESTROY. Quick: the kernel only
// unlinks the subvolume; its cleaner thread frees the extents later.
static napi_value js_snap_destroy(napi_env env, napi_callback_info info) {
  napi_value a[2];
  char dir[PATH_BUF], name[NAME_BUF], full[PATH_BUF + NAME_BUF];
  if (!get_args(env, info, 2, a) || !get_dir_name(env, a, dir, name, sizeof name)) return NULL;
  join_path(full, sizeof full, dir, name);
  int fd = open_dir(dir);
  if (fd < 0) return throw_errno(env, errno, "open", dir);
  struct btrfs_ioctl_vol_args args;
  memset(&args, 0, sizeof args);
  strncpy(args.name, name, sizeof args.name - 1);
  if (ioctl(fd, BTRFS_IOC_SNAP_DESTROY, &args) < 0) {
    close_keep(fd);
    return throw_errno(env, errno, "BTRFS_IOC_SNAP_DESTROY", full);
  }
  close(fd);
  return NULL;
}

// btrfsGetFlags(path) -> BTRFS_SUBVOL_* flags of the subvolume whose root is path.
static napi_value js_get_flags(napi_env env, napi_callback_info info) {
  napi_value a[1];
  char path[PATH_BUF];
  if (!get_args(env, info, 1, a) || !get_str(env, a[0], path, sizeof path)) return NULL;
  int fd = open_dir(path);
  if (fd < 0) return throw_errno(env, errno, "open", path);
  uint64_t flags = 0;
  if (ioctl(fd, BTRFS_IOC_SUBVOL_GETFLAGS, &flags) < 0) {
    close_keep(fd);
    return throw_errno(env, errno, "BTRFS_IOC_SUBVOL_GETFLAGS", path);
  }
  close(fd);
  return make_u64(env, flags);
}

// btrfsSetFlags(path, flags)
static napi_value js_set_flags(napi_env env, napi_callback_info info) {
  napi_value a[2];
  char path[PATH_BUF];
  int64_t flags;
  if (!get_args(env, info, 2, a) || !get_str(env, a[0], path, sizeof path) || !get_i64(env, a[1], &flags)) return NULL;
  int fd = open_dir(path);
  if (fd < 0) return throw_errno(env, errno, "open", path);
  uint64_t f = (uint64_t)flags;
  if (ioctl(fd, BTRFS_IOC_SUBVOL_SETFLAGS, &f) < 0) {
    close_keep(fd);
    return throw_errno(env, errno, "BTRFS_IOC_SUBVOL_SETFLAGS", path);
  }
  close(fd);
  return NULL;
}

// btrfsSetDefault(path, id): BTRFS_IOC_DEFAULT_SUBVOL on the filesystem holding path.
static napi_value js_set_default(napi_env env, napi_callback_info info) {
  napi_value a[2];
  char path[PATH_BUF];
  int64_t id;
  if (!get_args(env, info, 2, a) || !get_str(env, a[0], path, sizeof path) || !get_i64(env, a[1], &id)) return NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return throw_errno(env, errno, "open", path);
  uint64_t v = (uint64_t)id;
  if (ioctl(fd, BTRFS_IOC_DEFAULT_SUBVOL, &v) < 0) {
    close_keep(fd);
    return throw_errno(env, errno, "BTRFS_IOC_DEFAULT_SUBVOL", path);
  }
  close(fd);
  return NULL;
}

// btrfsSync(path): BTRFS_IOC_SYNC (commit the current transaction), as `btrfs filesystem sync`.
static napi_value js_sync(napi_env env, napi_callback_info info) {
  napi_value a[1];
  char path[PATH_BUF];
  if (!get_args(env, info, 1, a) || !get_str(env, a[0], path, sizeof path)) return NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return throw_errno(env, errno, "open", path);
  if (ioctl(fd, BTRFS_IOC_SYNC, NULL) < 0) {
    close_keep(fd);
    return throw_errno(env, errno, "BTRFS_IOC_SYNC", path);
  }
  close(fd);
  return NULL;
}

// btrfsSubvolInfo(path) -> BTRFS_IOC_GET_SUBVOL_INFO of the subvolume containing path.
static napi_value js_subvol_info(napi_env env, napi_callback_info info) {
  napi_value a[1];
  char path[PATH_BUF];
  if (!get_args(env, info, 1, a) || !get_str(env, a[0], path, sizeof path)) return NULL;
  int fd = open_dir(path);
  if (fd < 0) return throw_errno(env, errno, "open", path);
  struct btrfs_ioctl_get_subvol_info_args args;
  memset(&args, 0, sizeof args);
  if (ioctl(fd, BTRFS_IOC_GET_SUBVOL_INFO, &args) < 0) {
    close_keep(fd);
    return throw_errno(env, errno, "BTRFS_IOC_GET_SUBVOL_INFO", path);
  }
  close(fd);
  napi_value r, name;
  napi_create_object(env, &r);
  set_u64(env, r, "id", args.treeid);
  args.name[sizeof args.name - 1] = 0;
  napi_create_string_utf8(env, args.name, NAPI_AUTO_LENGTH, &name);
  napi_set_named_property(env, r, "name", name);
  set_u64(env, r, "parentId", args.parent_id);
  set_u64(env, r, "dirId", args.dirid);
  set_u64(env, r, "generation", args.generation);
  set_u64(env, r, "flags", args.flags);
  set_buffer(env, r, "uuid", args.uuid, BTRFS_UUID_SIZE);
  set_buffer(env, r, "parentUuid", args.parent_uuid, BTRFS_UUID_SIZE);
  set_buffer(env, r, "receivedUuid", args.received_uuid, BTRFS_UUID_SIZE);
  set_u64(env, r, "ctransid", args.ctransid);
  set_u64(env, r, "otransid", args.otransid);
  return r;
}

// btrfsInoLookup(path, treeId, objectId) -> { treeId, name }: BTRFS_IOC_INO_LOOKUP.
// treeId 0 means the tree of path itself; name is the path of the directory
// objectId inside that tree, with a trailing "/" ("" for its root directory).
static napi_value js_ino_lookup(napi_env env, napi_callback_info info) {
  napi_value a[3];
  char path[PATH_BUF];
  int64_t tree, object;
  if (!get_args(env, info, 3, a) || !get_str(env, a[0], path, sizeof path) || !get_i64(env, a[1], &tree) ||
      !get_i64(env, a[2], &object))
    return NULL;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return throw_errno(env, errno, "open", path);
  struct btrfs_ioctl_ino_lookup_args args;
  memset(&args, 0, sizeof args);
  args.treeid = (uint64_t)tree;
  args.objectid = (uint64_t)object;
  if (ioctl(fd, BTRFS_IOC_INO_LOOKUP, &args) < 0) {
    close_keep(fd);
    return throw_errno(env, errno, "BTRFS_IOC_INO_LOOKUP", path);
  }
  close(fd);
  napi_value r, name;
  napi_create_object(env, &r);
  set_u64(env, r, "treeId", args.treeid);
  args.name[sizeof args.name - 1] = 0;
  napi_create_string_utf8(env, args.name, NAPI_AUTO_LENGTH, &name);
  napi_set_named_property(env, r, "name", name);
  return r;
}

#define SEARCH_BUF (64 * 1024)

// btrfsTreeSearch(path, treeId, minObjectId, maxObjectId, minType, maxType, minOffset, maxOffset)
//   -> [{ objectId, type, offset, data: Buffer }]
// BTRFS_IOC_TREE_SEARCH_V2 (CAP_SYS_ADMIN), repeated until the range is
// exhausted. The range is on whole keys (objectid, type, offset) in order, so
// items of other types between the bounds come back too: callers filter.
static napi_value js_tree_search(napi_env env, napi_callback_info info) {
  napi_value a[8];
  char path[PATH_BUF];
  int64_t v[7];
  if (!get_args(env, info, 8, a) || !get_str(env, a[0], path, sizeof path)) return NULL;
  for (int i = 0; i < 7; i++)
    if (!get_i64(env, a[i + 1], &v[i])) return NULL;
  struct btrfs_ioctl_search_args_v2 *args = calloc(1, sizeof *args + SEARCH_BUF);
  if (!args) return throw_errno(env, ENOMEM, "malloc", NULL);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    free(args);
    return throw_errno(env, errno, "open", path);
  }
  struct btrfs_ioctl_search_key *key = &args->key;
  key->tree_id = (uint64_t)v[0];
  key->min_objectid = (uint64_t)v[1];
  key->max_objectid = (uint64_t)v[2];
  key->min_type = (uint32_t)v[3];
  key->max_type = (uint32_t)v[4];
  key->min_offset = (uint64_t)v[5];
  key->max_offset = (uint64_t)v[6];
  key->min_transid = 0;
  key->max_transid = UINT64_MAX;
  napi_value result;
  napi_create_array(env, &result);
  uint32_t count = 0;
  for (;;) {
    key->nr_items = UINT32_MAX;
    args->buf_size = SEARCH_BUF;
    if (ioctl(fd, BTRFS_IOC_TREE_SEARCH_V2, args) < 0) {
      int err = errno;
      close(fd);
      free(args);
      return throw_errno(env, err, "BTRFS_IOC_TREE_SEARCH_V2", path);
    }
    if (key->nr_items == 0) break;
    size_t off = 0;
    struct btrfs_ioctl_search_header h;
    for (uint32_t i = 0; i < key->nr_items; i++) {
      memcpy(&h, (char *)args->buf + off, sizeof h);
      off += sizeof h;
      napi_value item;
      napi_create_object(env, &item);
      set_u64(env, item, "objectId", h.objectid);
      set_u64(env, item, "type", h.type);
      set_u64(env, item, "offset", h.offset);
      set_buffer(env, item, "data", (char *)args->buf + off, h.len);
      napi_set_element(env, result, count++, item);
      off += h.len;
    }
    // Continue right after the last key returned (btrfs-progs does the same).
    key->min_objectid = h.objectid;
    key->min_type = h.type;
    key->min_offset = h.offset;
    if (key->min_offset < UINT64_MAX) {
      key->min_offset++;
    } else if (key->min_type < 255) {
      key->min_offset = 0;
      key->min_type++;
    } else if (key->min_objectid < UINT64_MAX) {
      key->min_offset = 0;
      key->min_type = 0;
      key->min_objectid++;
    } else {
      break;
    }
    if (key->min_objectid > key->max_objectid) break;
  }
  close(fd);
  free(args);
  return result;
}

void register_btrfs(napi_env env, napi_value exports) {
  export_fn(env, exports, "btrfsSubvolCreate", js_subvol_create);
  export_fn(env, exports, "btrfsSnapCreate", js_snap_create);
  export_fn(env, exports, "btrfsSnapDestroy", js_snap_destroy);
  export_fn(env, exports, "btrfsGetFlags", js_get_flags);
  export_fn(env, exports, "btrfsSetFlags", js_set_flags);
  export_fn(env, exports, "btrfsSetDefault", js_set_default);
  export_fn(env, exports, "btrfsSync", js_sync);
  export_fn(env, exports, "btrfsSubvolInfo", js_subvol_info);
  export_fn(env, exports, "btrfsInoLookup", js_ino_lookup);
  export_fn(env, exports, "btrfsTreeSearch", js_tree_search);
}
