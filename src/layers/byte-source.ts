/**
 * Pulls bytes from a Readable on demand (so backpressure is natural: nothing is
 * read ahead of what the tar parser asks for) and hashes every byte that comes
 * through, including what follows the tar's end-of-archive marker, so the
 * digest is the layer's diffID (image-spec config.md: "rootfs.diff_ids").
 * When the stream already hashes what it emits (a DigestingStream, e.g. the
 * tar-split recorder in front of the applier), its digest is used instead of
 * hashing every byte twice.
 */
import type { Readable } from 'node:stream';
import type { Digest } from '../oci/types.js';
import { StreamHasher, isDigestingStream, emittedDigest, type DigestingStream } from './hasher.js';

const empty = Buffer.alloc(0);

/** The stream ended before the data the parser needed. */
export class TruncatedInputError extends Error {}

/** The input stream itself failed (decompression, download, verification); `cause` is its error. */
export class InputStreamError extends Error {}

export class ByteSource {
  /** Our own hasher, unless the stream reports the digest of what it emitted. */
  private readonly hash: StreamHasher | undefined;
  private readonly upstream: DigestingStream | undefined;
  private readonly iterator: AsyncIterator<unknown>;
  private chunk: Buffer = empty;
  private pos = 0;
  private ended = false;
  /** Bytes pulled from the stream so far. */
  bytes = 0;

  constructor(stream: Readable) {
    if (isDigestingStream(stream)) this.upstream = stream;
    else this.hash = new StreamHasher();
    this.iterator = stream[Symbol.asyncIterator]();
  }

  /** Bytes buffered and not yet consumed. */
  private get available(): number {
    return this.chunk.length - this.pos;
  }

  private async fill(): Promise<boolean> {
    if (this.ended) return false;
    let r: IteratorResult<unknown>;
    try {
      r = await this.iterator.next();
    } catch (err) {
      this.ended = true;
      throw new InputStreamError('reading the layer failed', { cause: err });
    }
    if (r.done) {
      this.ended = true;
      return false;
    }
    const value = r.value;
    const buf = Buffer.isBuffer(value) ? value : Buffer.from(value as Uint8Array);
    if (this.hash) {
      this.hash.update(buf);
      if (this.hash.saturated) await this.hash.ready();
    }
    this.bytes += buf.length;
    // Callers only fill once the current chunk is used up.
    this.chunk = buf;
    this.pos = 0;
    return true;
  }

  /**
   * Exactly `n` bytes, or null when the stream ends before the first of them.
   * Ending in the middle throws TruncatedInputError. The result may share
   * memory with the stream's chunk: read it before the next call.
   */
  async read(n: number): Promise<Buffer | null> {
    if (this.available === 0 && !(await this.fill())) return null;
    if (this.available >= n) {
      const out = this.chunk.subarray(this.pos, this.pos + n);
      this.pos += n;
      return out;
    }
    // The bytes straddle chunks: copy just these n bytes together.
    const out = Buffer.allocUnsafe(n);
    let got = 0;
    while (got < n) {
      if (this.available === 0 && !(await this.fill())) {
        throw new TruncatedInputError(`unexpected end of tar data (wanted ${n} bytes, got ${got})`);
      }
      const take = Math.min(n - got, this.available);
      this.chunk.copy(out, got, this.pos, this.pos + take);
      this.pos += take;
      got += take;
    }
    return out;
  }

  /** Like read() but the end of the stream is always an error. */
  async readExact(n: number): Promise<Buffer> {
    const b = await this.read(n);
    if (b === null) throw new TruncatedInputError('unexpected end of tar data');
    return b;
  }

  /**
   * Hands the next `n` bytes to `sink` chunk by chunk, without copying; a
   * sink that returns a promise is waited for (backpressure).
   */
  async forEach(n: number, sink: (chunk: Buffer) => void | Promise<void>): Promise<void> {
    let left = n;
    while (left > 0) {
      if (this.available === 0 && !(await this.fill())) {
        throw new TruncatedInputError(`unexpected end of tar data (${left} bytes of file content missing)`);
      }
      const take = Math.min(left, this.available);
      const part = this.chunk.subarray(this.pos, this.pos + take);
      this.pos += take;
      left -= take;
      const wait = sink(part);
      if (wait) await wait;
    }
  }

  async skip(n: number): Promise<void> {
    await this.forEach(n, () => {});
  }

  /** Reads (and hashes) everything left in the stream. */
  async drain(): Promise<void> {
    this.pos = this.chunk.length;
    while (await this.fill()) this.pos = this.chunk.length;
  }

  /** The sha256 of every byte read; call once, after drain(). */
  async digest(): Promise<Digest> {
    if (this.hash) return this.hash.digest();
    const { digest, size } = await this.upstream![emittedDigest]();
    // The stream must have hashed exactly what came through here.
    if (size !== this.bytes) throw new Error(`the layer stream hashed ${size} bytes but emitted ${this.bytes}`);
    return digest;
  }

  /** Unless the stream ended, stops reading and destroys it. */
  async close(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    await this.iterator.return?.();
  }
}
