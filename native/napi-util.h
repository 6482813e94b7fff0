// N-API helpers shared by the addon's source files (napi-util.c), and the
// registration function of each part of the addon.
#ifndef OCISNAP_NAPI_UTIL_H
#define OCISNAP_NAPI_UTIL_H
#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PATH_BUF 4096
#define NAME_BUF 256

// A Node-style errno error (code, errno, syscall, path).
napi_value make_errno_error(napi_env env, int err, const char *syscall, const char *path);
// Throws make_errno_error(...); returns NULL.
napi_value throw_errno(napi_env env, int err, const char *syscall, const char *path);
// The first `want` arguments; throws a TypeError (returns 0) when fewer were given.
int get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv);
// A path or name: a string (UTF-8) or a Buffer with the raw bytes, NUL-terminated into buf.
int get_str(napi_env env, napi_value v, char *buf, size_t len);
int get_i32(napi_env env, napi_value v, int32_t *out);
int get_i64(napi_env env, napi_value v, int64_t *out);
napi_value make_i32(napi_env env, int32_t v);
// Byte data of a Buffer or any Uint8Array (not copied).
int get_bytes(napi_env env, napi_value v, uint8_t **data, size_t *len);
void export_fn(napi_env env, napi_value exports, const char *name, napi_callback cb);
void export_int(napi_env env, napi_value obj, const char *name, int32_t v);

// Each part of the addon adds its functions to the exports (called by init in ocisnap_sys.c).
void register_btrfs(napi_env env, napi_value exports);
void register_zstd(napi_env env, napi_value exports);
void register_tree(napi_env env, napi_value exports);

#endif
