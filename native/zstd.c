// zstd decompression on libuv's thread pool: the main thread hands over the
// input and the Buffers to fill, so decoding overlaps with extraction.
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#define ZSTD_STATIC_LINKING_ONLY  // ZSTD_WINDOWLOG_LIMIT_DEFAULT
#include <zstd.h>
#include <zstd_errors.h>
#include "napi-util.h"

// The output goes into Buffers that JS allocated (ordinary Node memory, which
// V8's GC accounts for); native blocks wrapped as external buffers were not
// counted and held 20-60 MiB more RSS until a GC came by.
#define MAX_TARGETS 16

typedef struct {
  ZSTD_DStream *ds;
  bool busy;
  // The last call that moved data returned 0: the input so far ends at a
  // frame boundary (also true before any input).
  bool frame_ended;
} zstd_ctx;

typedef struct {
  zstd_ctx *ctx;
  const uint8_t *in;
  size_t in_len, consumed, written;
  struct {
    uint8_t *p;
    size_t n;
  } targets[MAX_TARGETS];
  uint32_t ntargets;
  bool more;    // every target is full: call again
  size_t zerr;  // a zstd error code (ZSTD_isError), or 0
  napi_ref in_ref, targets_ref, ctx_ref, cb_ref;
  napi_async_work work;
} zstd_job;

static void zstd_finalize(napi_env env, void *data, void *hint) {
  zstd_ctx *ctx = data;
  ZSTD_freeDStream(ctx->ds); // NULL after zstdFree: a no-op
  free(ctx);
}

static zstd_ctx *get_zstd(napi_env env, napi_value v) {
  void *p = NULL;
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external || napi_get_value_external(env, v, &p) != napi_ok ||
      p == NULL) {
    napi_throw_type_error(env, NULL, "expected a zstd context");
    return NULL;
  }
  zstd_ctx *ctx = p;
  if (ctx->busy) {
    napi_throw_error(env, NULL, "zstd context is busy (a decompression is running)");
    return NULL;
  }
  if (!ctx->ds) {
    napi_throw_error(env, NULL, "zstd context was freed");
    return NULL;
  }
  return ctx;
}

// zstdFree(context): releases the decoder (its window buffer, megabytes) now,
// rather than whenever the garbage collector finalizes the context.
static napi_value js_zstd_free(napi_env env, napi_callback_info info) {
  napi_value a[1];
  if (!get_args(env, info, 1, a)) return NULL;
  zstd_ctx *ctx = get_zstd(env, a[0]);
  if (!ctx) return NULL;
  ZSTD_freeDStream(ctx->ds);
  ctx->ds = NULL;
  return NULL;
}

// zstdCreate() -> context. libzstd's default window limit stays (ZSTD_d_windowLogMax
// 27, 128 MiB): a frame that needs more fails, which bounds the decoder's memory.
static napi_value js_zstd_create(napi_env env, napi_callback_info info) {
  zstd_ctx *ctx = calloc(1, sizeof *ctx);
  if (ctx) ctx->ds = ZSTD_createDStream();
  if (!ctx || !ctx->ds || ZSTD_isError(ZSTD_initDStream(ctx->ds))) {
    if (ctx) ZSTD_freeDStream(ctx->ds);
    free(ctx);
    napi_throw_error(env, NULL, "cannot create a zstd decompression context");
    return NULL;
  }
  ctx->frame_ended = true;
  napi_value out;
  napi_create_external(env, ctx, zstd_finalize, NULL, &out);
  return out;
}

static void zstd_execute(napi_env env, void *data) {
  zstd_job *job = data;
  zstd_ctx *ctx = job->ctx;
  ZSTD_inBuffer in = {job->in, job->in_len, 0};
  uint32_t t = 0;
  ZSTD_outBuffer out = {NULL, 0, 0};
  for (;;) {
    if (out.pos == out.size) {
      // Skip to the next target with room; a full last one may leave more to flush.
      while (t < job->ntargets && job->targets[t].n == 0) t++;
      if (t == job->ntargets) {
        job->more = true;
        break;
      }
      out = (ZSTD_outBuffer){job->targets[t].p, job->targets[t].n, 0};
      t++;
    }
    size_t in_before = in.pos, out_before = out.pos;
    size_t ret = ZSTD_decompressStream(ctx->ds, &out, &in);
    if (ZSTD_isError(ret)) {
      job->zerr = ret;
      break;
    }
    job->written += out.pos - out_before;
    // An empty call with nothing left to flush returns a size hint, not 0;
    // only calls that moved data say where the stream stands.
    if (in.pos != in_before || out.pos != out_before) ctx->frame_ended = ret == 0;
    // Output room left: libzstd stopped because the input ran out (or a frame
    // ended, and the next one starts in the rest of the input).
    if (out.pos < out.size && in.pos == in.size) break;
  }
  job->consumed = in.pos;
}

static void zstd_complete(napi_env env, napi_status status, void *data) {
  zstd_job *job = data;
  zstd_ctx *ctx = job->ctx;
  ctx->busy = false;
  napi_value cb, global, args[5];
  napi_get_reference_value(env, job->cb_ref, &cb);
  napi_get_global(env, &global);
  int nargs;
  if (status != napi_ok || job->zerr) {
    char msg[256];
    if (status != napi_ok)
      snprintf(msg, sizeof msg, "zstd decompression did not run");
    else if (ZSTD_getErrorCode(job->zerr) == ZSTD_error_frameParameter_windowTooLarge)
      snprintf(msg, sizeof msg, "%s (the frame needs a window larger than the %d MiB limit)",
               ZSTD_getErrorName(job->zerr), (1 << ZSTD_WINDOWLOG_LIMIT_DEFAULT) >> 20);
    else
      snprintf(msg, sizeof msg, "%s", ZSTD_getErrorName(job->zerr));
    // A failed frame leaves the decoder in an undefined place; start over so a
    // reuse cannot continue mid-frame.
    ZSTD_DCtx_reset(ctx->ds, ZSTD_reset_session_only);
    ctx->frame_ended = true;
    napi_value m;
    napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &m);
    napi_create_error(env, NULL, m, &args[0]);
    nargs = 1;
  } else {
    napi_get_null(env, &args[0]);
    napi_create_double(env, (double)job->written, &args[1]);
    napi_create_double(env, (double)job->consumed, &args[2]);
    napi_get_boolean(env, job->more, &args[3]);
    napi_get_boolean(env, !job->more && ctx->frame_ended, &args[4]);
    nargs = 5;
  }
  napi_delete_reference(env, job->in_ref);
  napi_delete_reference(env, job->targets_ref);
  napi_delete_reference(env, job->ctx_ref);
  napi_delete_reference(env, job->cb_ref);
  napi_delete_async_work(env, job->work);
  free(job);
  napi_call_function(env, global, cb, nargs, args, NULL);
}

// zstdDecompress(context, input: Uint8Array, targets: Uint8Array[],
// callback(err, written, consumed, more, frameEnded)): decodes `input` on the
// thread pool into `targets`, filled in order (`written` bytes in all). When
// they are all full, `more` is set: call again with input.subarray(consumed)
// (even when that is empty) and fresh targets. `frameEnded`: everything so far
// ends exactly at the end of a frame.
static napi_value js_zstd_decompress(napi_env env, napi_callback_info info) {
  napi_value a[4];
  if (!get_args(env, info, 4, a)) return NULL;
  zstd_ctx *ctx = get_zstd(env, a[0]);
  if (!ctx) return NULL;
  uint8_t *p;
  size_t n;
  if (!get_bytes(env, a[1], &p, &n)) return NULL;
  bool is_array = false;
  uint32_t count = 0;
  if (napi_is_array(env, a[2], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, a[2], &count) != napi_ok || count == 0 || count > MAX_TARGETS) {
    napi_throw_type_error(env, NULL, "expected an array of 1 to 16 Uint8Arrays to decode into");
    return NULL;
  }
  napi_valuetype t;
  if (napi_typeof(env, a[3], &t) != napi_ok || t != napi_function) {
    napi_throw_type_error(env, NULL, "expected a callback");
    return NULL;
  }
  zstd_job *job = calloc(1, sizeof *job);
  if (!job) return throw_errno(env, ENOMEM, "zstdDecompress", NULL);
  for (uint32_t i = 0; i < count; i++) {
    napi_value el;
    if (napi_get_element(env, a[2], i, &el) != napi_ok || !get_bytes(env, el, &job->targets[i].p, &job->targets[i].n)) {
      free(job);
      return NULL;
    }
  }
  job->ntargets = count;
  job->ctx = ctx;
  job->in = p;
  job->in_len = n;
  napi_value name;
  napi_create_string_utf8(env, "ocisnap:zstd", NAPI_AUTO_LENGTH, &name);
  // The input and the targets stay referenced (and must not be touched) until the callback.
  if (napi_create_reference(env, a[1], 1, &job->in_ref) != napi_ok ||
      napi_create_reference(env, a[2], 1, &job->targets_ref) != napi_ok ||
      napi_create_reference(env, a[0], 1, &job->ctx_ref) != napi_ok ||
      napi_create_reference(env, a[3], 1, &job->cb_ref) != napi_ok ||
      napi_create_async_work(env, NULL, name, zstd_execute, zstd_complete, job, &job->work) != napi_ok ||
      napi_queue_async_work(env, job->work) != napi_ok) {
    // Leaks the references made so far; only reachable when N-API itself fails.
    free(job);
    napi_throw_error(env, NULL, "cannot queue a zstd decompression");
    return NULL;
  }
  ctx->busy = true;
  return NULL;
}

void register_zstd(napi_env env, napi_value exports) {
  export_fn(env, exports, "zstdCreate", js_zstd_create);
  export_fn(env, exports, "zstdDecompress", js_zstd_decompress);
  export_fn(env, exports, "zstdFree", js_zstd_free);
}
