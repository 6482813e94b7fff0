/**
 * The layer downloads of a pull. Every blob goes to a temporary file, in
 * layer order, at most `concurrency` at once, and a layer is read back from
 * its file while the file still grows: the apply of a layer follows its
 * download instead of waiting for it to end. The read stream ends only once
 * the whole blob is in and its size and digest verified (by the source's
 * blob stream), and fails with the download's error otherwise.
 *
 * Why: the layers are applied one after another, and applying is slower than
 * downloading from a registry nearby. Downloads in parallel split the
 * bandwidth, so the layer applied first arrived at a third of it and its
 * apply waited for the network (1-2 s of a 10 s cold pull of the benchmark
 * image); a layer applied only once its whole file was in waited too.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { digestHex } from '../oci/digest.js';
import type { Descriptor } from '../oci/types.js';
import type { ImageSource } from '../registry/source.js';
import type { ProgressSink } from './progress.js';

/**
 * Chunk size for reading a layer file back: every read is a thread-pool
 * round trip, and the 64 KiB default made thousands of them per layer.
 */
const readChunk = 1024 * 1024;

export interface DownloadsOptions {
  /** How many downloads run at once. */
  concurrency: number;
  signal?: AbortSignal;
  progress: ProgressSink;
}

/** One blob on its way to a temporary file, readable while it downloads. */
export class LayerDownload {
  /** Bytes written to the file so far. */
  #written = 0;
  #state: 'waiting' | 'running' | 'done' | 'failed' = 'waiting';
  #error: unknown;
  #waiters: Array<() => void> = [];

  constructor(
    readonly descriptor: Descriptor,
    readonly file: string,
  ) {}

  /** The blob's bytes as they arrive; the stream ends when the blob is complete and verified. */
  open(): Readable {
    return new FollowingReader(this);
  }

  /** @internal for FollowingReader */
  get written(): number {
    return this.#written;
  }

  /** @internal for FollowingReader */
  get state(): 'waiting' | 'running' | 'done' | 'failed' {
    return this.#state;
  }

  /** @internal for FollowingReader */
  get error(): unknown {
    return this.#error;
  }

  /** @internal for FollowingReader: resolves at the next change (bytes written, started, ended). */
  changed(): Promise<void> {
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  /**
   * Downloads the blob into the file. On an error it rejects, and the caller
   * decides with which error the readers fail (fail()).
   */
  async run(source: ImageSource, signal: AbortSignal, progress: ProgressSink): Promise<void> {
    const { digest, size } = this.descriptor;
    const started = performance.now();
    signal.throwIfAborted();
    const handle = await open(this.file, 'w');
    this.#state = 'running';
    this.#notify();
    try {
      progress({ type: 'layer-download-start', digest, size });
      const blob = await source.getBlob(this.descriptor, {
        signal,
        onProgress: (bytes) => progress({ type: 'layer-download-progress', digest, bytes, size }),
      });
      await pipeline(blob, new FileAppender(handle, (n) => this.#wrote(n)), { signal });
    } finally {
      await handle.close();
    }
    this.#state = 'done';
    this.#notify();
    progress({ type: 'layer-downloaded', digest, size, seconds: (performance.now() - started) / 1000 });
  }

  /** Ends the download with `err`: every reader fails with it. */
  fail(err: unknown): void {
    this.#state = 'failed';
    this.#error = err;
    this.#notify();
  }

  #wrote(n: number): void {
    this.#written += n;
    this.#notify();
  }

  #notify(): void {
    const w = this.#waiters;
    if (w.length === 0) return;
    this.#waiters = [];
    for (const f of w) f();
  }
}

/** Appends to a file, reporting each write once it is done (so a reader never reads past it). */
class FileAppender extends Writable {
  constructor(
    private readonly handle: FileHandle,
    private readonly wrote: (n: number) => void,
  ) {
    // Network chunks are small: gather up to 1 MiB per write (one pool round trip).
    super({ highWaterMark: readChunk });
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (error?: Error | null) => void): void {
    this.#writeAll([chunk]).then(() => cb(), cb);
  }

  override _writev(chunks: Array<{ chunk: Buffer }>, cb: (error?: Error | null) => void): void {
    this.#writeAll(chunks.map((c) => c.chunk)).then(() => cb(), cb);
  }

  async #writeAll(buffers: Buffer[]): Promise<void> {
    let left = buffers;
    while (left.length > 0) {
      // A short write (e.g. a disk filling up) writes the rest again, to fail with its errno.
      const { bytesWritten } = await this.handle.writev(left);
      this.wrote(bytesWritten);
      left = skipBytes(left, bytesWritten);
    }
  }
}

function skipBytes(buffers: Buffer[], n: number): Buffer[] {
  let i = 0;
  while (i < buffers.length && n >= buffers[i]!.length) n -= buffers[i++]!.length;
  const rest = buffers.slice(i);
  if (n > 0) rest[0] = rest[0]!.subarray(n);
  return rest;
}

/** Reads a download's file up to what has been written, waiting for more until the download ends. */
class FollowingReader extends Readable {
  #handle: FileHandle | undefined;
  #pos = 0;

  constructor(private readonly download: LayerDownload) {
    super({ highWaterMark: readChunk });
  }

  override _construct(cb: (error?: Error | null) => void): void {
    this.#openWhenStarted().then(() => cb(), cb);
  }

  async #openWhenStarted(): Promise<void> {
    const d = this.download;
    while (d.state === 'waiting') await d.changed();
    if (d.state === 'failed') throw d.error;
    this.#handle = await open(d.file, 'r');
  }

  override _read(): void {
    this.#next().then(
      (chunk) => this.push(chunk),
      (err: Error) => this.destroy(err),
    );
  }

  /** The next chunk of the file, or null at the end of a complete download. */
  async #next(): Promise<Buffer | null> {
    const d = this.download;
    for (;;) {
      // Read the state before `written`: a download that is done has written everything.
      const state = d.state;
      if (state === 'failed') throw d.error;
      const available = d.written - this.#pos;
      if (available > 0) {
        const buf = Buffer.allocUnsafe(Math.min(available, readChunk));
        const { bytesRead } = await this.#handle!.read(buf, 0, buf.length, this.#pos);
        if (bytesRead === 0) throw new Error(`${d.file}: ended at ${this.#pos} bytes, ${d.written} were written`);
        this.#pos += bytesRead;
        return bytesRead === buf.length ? buf : buf.subarray(0, bytesRead);
      }
      if (state === 'done') return null;
      await d.changed();
    }
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    const handle = this.#handle;
    this.#handle = undefined;
    if (handle) handle.close().then(() => cb(err), () => cb(err));
    else cb(err);
  }
}

export interface Downloads {
  /** The download of a blob that was given to startDownloads. */
  get(desc: Descriptor): LayerDownload;
  /** Stops what still runs and resolves when no download is running any more. */
  settled(): Promise<void>;
}

/**
 * Starts every download, at most `concurrency` at once, in the order given
 * (the order the layers are applied in), into files in `dir`. The first
 * failure stops the others, and every reader of a stopped download sees that
 * first failure rather than the abort it caused.
 */
export function startDownloads(source: ImageSource, blobs: Descriptor[], dir: string, opts: DownloadsOptions): Downloads {
  const controller = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, controller.signal]) : controller.signal;
  const downloads = new Map<string, LayerDownload>();
  const queue: LayerDownload[] = [];
  for (const d of blobs) {
    // An image may use the same blob for several layers: it downloads once.
    if (downloads.has(d.digest)) continue;
    const download = new LayerDownload(d, join(dir, digestHex(d.digest)));
    downloads.set(d.digest, download);
    queue.push(download);
  }
  const runs: Promise<void>[] = [];
  let firstError: unknown;
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < queue.length) {
      const download = queue[next++]!;
      try {
        await download.run(source, signal, opts.progress);
      } catch (err) {
        if (firstError === undefined) {
          firstError = err;
          controller.abort();
        }
        download.fail(firstError);
      }
    }
  };
  for (let i = 0; i < Math.max(1, opts.concurrency); i++) runs.push(worker());
  return {
    get(desc) {
      const d = downloads.get(desc.digest);
      if (!d) throw new Error(`no download of ${desc.digest} was started`);
      return d;
    },
    settled: async () => {
      controller.abort(); // nothing left to wait for once the caller stops applying
      await Promise.all(runs);
    },
  };
}
