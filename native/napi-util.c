// N-API helpers shared by the addon's source files (declared in napi-util.h).
#define _GNU_SOURCE
#include "napi-util.h"
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

napi_value make_errno_error(napi_env env, int err, const char *syscall, const char *path) {
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
  return e;
}

napi_value throw_errno(napi_env env, int err, const char *syscall, const char *path) {
  napi_throw(env, make_errno_error(env, err, syscall, path));
  return NULL;
}

int get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
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
int get_str(napi_env env, napi_value v, char *buf, size_t len) {
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

int get_i32(napi_env env, napi_value v, int32_t *out) {
  if (napi_get_value_int32(env, v, out) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected an integer");
    return 0;
  }
  return 1;
}

int get_i64(napi_env env, napi_value v, int64_t *out) {
  if (napi_get_value_int64(env, v, out) != napi_ok) {
    napi_throw_type_error(env, NULL, "expected an integer");
    return 0;
  }
  return 1;
}

napi_value make_i32(napi_env env, int32_t v) {
  napi_value r;
  napi_create_int32(env, v, &r);
  return r;
}

// Byte data of a Buffer or any Uint8Array.
int get_bytes(napi_env env, napi_value v, uint8_t **data, size_t *len) {
  bool is_ta = false;
  if (napi_is_typedarray(env, v, &is_ta) == napi_ok && is_ta) {
    napi_typedarray_type type;
    void *p;
    if (napi_get_typedarray_info(env, v, &type, len, &p, NULL, NULL) == napi_ok && type == napi_uint8_array) {
      *data = p;
      return 1;
    }
  }
  napi_throw_type_error(env, NULL, "expected a Buffer or Uint8Array");
  return 0;
}

void export_fn(napi_env env, napi_value exports, const char *name, napi_callback cb) {
  napi_value fn;
  napi_create_function(env, name, NAPI_AUTO_LENGTH, cb, NULL, &fn);
  napi_set_named_property(env, exports, name, fn);
}

void export_int(napi_env env, napi_value obj, const char *name, int32_t v) {
  napi_set_named_property(env, obj, name, make_i32(env, v));
}

