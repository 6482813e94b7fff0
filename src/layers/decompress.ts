/**
 * Decompression of layer blobs (image-spec layer.md: tar, tar+gzip, tar+zstd).
 * Corrupt or truncated input fails the stream with CorruptLayerDataError, so a
 * cut-off download never looks like a complete (shorter) layer.
 */
import { PassThrough, Transform, type TransformCallback } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { OcisnapError, UntrustedInputError, describeError } from '../errors.js';
import type { Compression } from '../oci/mediatypes.js';
import { sys, type ZstdContext } from '../sys/native.js';

/** The compressed layer data is corrupt or truncated. */
export class CorruptLayerDataError extends UntrustedInputError {}

/**
 * zlib's output chunk size (default 16 KiB). Every chunk costs a thread-pool
 * round trip and a pass through each stream stage: 256 KiB chunks cut the
 * CPU time of a gzip layer pull by about a fifth; 1 MiB chunks save a few
 * percent more of the decompress+hash time (a third fewer chunks).
 */
const outputChunk = 1024 * 1024;

export function decompressStream(compression: Compression): Transform {
  switch (compression) {
    case 'none':
      return new PassThrough();
    case 'gzip':
      // zlib's default finishFlush (Z_FINISH) reports "unexpected end of file"
      // when the input stops before the gzip trailer.
      return withClearErrors(createGunzip({ chunkSize: outputChunk }), 'gzip');
    case 'zstd':
      return withClearErrors(new ZstdDecompress(), 'zstd');
  }
}

/**
 * Both decoders report failures through destroy(err); map the error there so
 * every consumer sees one clear, typed message. Errors that are already ours
 * (e.g. from an upstream verifier) pass unchanged.
 */
function withClearErrors(decoder: Transform, kind: string): Transform {
  const original = decoder._destroy.bind(decoder);
  decoder._destroy = (err: Error | null, cb: (error?: Error | null) => void) => {
    original(err, (e?: Error | null) => {
      if (e && !(e instanceof OcisnapError)) {
        cb(new CorruptLayerDataError(`corrupt or truncated ${kind} data: ${describeError(e)}`, { cause: e }));
      } else cb(e);
    });
  };
  return decoder;
}

/**
 * Output blocks of 128 KiB; one native call fills up to 512 KiB of them.
 * Twice that (256 KiB, 1 MiB) cost 10 MiB more peak RSS in a pull.
 */
const zstdBlock = 128 * 1024;
const zstdCallOutput = 512 * 1024;
/**
 * Output decoded ahead of the consumer. Each step is a pool round trip whose
 * callback waits for the main thread; decoding only once the consumer asked
 * (16 KiB, the stream default) left the main thread waiting for the decoder
 * two thirds of the time on the benchmark's largest layer.
 */
const zstdDecodeAhead = 4 * 1024 * 1024;
/** A block's rest smaller than this is dropped rather than pushed as a sliver. */
const zstdMinTarget = 16 * 1024;

/**
 * zstd decoding on libuv's thread pool (native/zstd.c), so it overlaps with
 * the main thread's tar parsing and file writes (2 cores). zstd-napi decoded
 * on the main thread: 1.5-1.9 s of it for the benchmark image; a worker
 * thread cost 0.2 s more CPU and 40-50 MiB more peak RSS, `zstd -dc` in a
 * child 0.4 s more CPU. The native side fills Buffers allocated here, at
 * most 512 KiB per call: a chunk that expands more (a zstd bomb) is decoded in
 * steps that wait for the consumer.
 */
class ZstdDecompress extends Transform {
  readonly #ctx: ZstdContext = sys.zstdCreate();
  /** Room to decode into: the unwritten rest of the last block, then fresh blocks. */
  #targets: Buffer[] = [];
  /** The input so far ends at a frame boundary (true for no input: an empty layer stays empty). */
  #frameEnded = true;
  /** Outputs pushed right after the next step (the next call, or the chunk's callback) started. */
  #pending: Buffer[] | null = null;
  /** The rest of a chunk, decoded once the behind consumer has read (backpressure). */
  #resume: (() => void) | null = null;

  constructor() {
    super({ readableHighWaterMark: zstdDecodeAhead });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (chunk.length === 0) cb();
    else this.#decode(chunk, cb);
  }

  #decode(input: Buffer, cb: TransformCallback): void {
    let room = this.#targets.reduce((n, b) => n + b.length, 0);
    for (; room < zstdCallOutput; room += zstdBlock) this.#targets.push(Buffer.allocUnsafeSlow(zstdBlock));
    sys.zstdDecompress(this.#ctx, input, [...this.#targets], (err, written, consumed, more, frameEnded) => {
      if (this.destroyed) return;
      if (err) return cb(err);
      this.#frameEnded = frameEnded;
      const outputs = this.#take(written);
      const chunkDone = !more && consumed === input.length;
      const next = chunkDone ? () => cb() : () => this.#decode(input.subarray(consumed), cb);
      if (this.readableLength < this.readableHighWaterMark) {
        // The consumer keeps up: start the next step on the pool (the rest of
        // this chunk, or the next chunk, which Transform hands over at once
        // since nothing was pushed yet) before it works on these outputs.
        this.#pending = outputs;
        next();
        this.#pushPending();
      } else if (this.#pushAll(outputs) || chunkDone) {
        // At a chunk's end Transform itself holds the next chunk until the consumer reads.
        next();
      } else {
        this.#resume = next;
      }
    });
  }

  /** The first `written` bytes of the targets, as outputs; the targets keep the rest. */
  #take(written: number): Buffer[] {
    const outputs: Buffer[] = [];
    while (written > 0) {
      const t = this.#targets[0]!;
      const n = Math.min(written, t.length);
      outputs.push(n === t.length ? t : t.subarray(0, n));
      written -= n;
      if (n === t.length || t.length - n < zstdMinTarget) this.#targets.shift();
      else this.#targets[0] = t.subarray(n);
    }
    return outputs;
  }

  override _read(size: number): void {
    const resume = this.#resume;
    if (resume) {
      this.#resume = null;
      resume();
    } else super._read(size);
  }

  override _flush(cb: TransformCallback): void {
    this.#pushPending();
    this.#targets = [];
    // Megabytes of window buffer; a pull decodes one layer after another.
    sys.zstdFree(this.#ctx);
    if (this.#frameEnded) cb();
    else cb(new Error('the data ends inside a frame'));
  }

  #pushPending(): void {
    const pending = this.#pending;
    this.#pending = null;
    if (pending && !this.destroyed) this.#pushAll(pending);
  }

  #pushAll(outputs: Buffer[]): boolean {
    let ok = true;
    for (const b of outputs) ok = this.push(b);
    return ok;
  }
}
