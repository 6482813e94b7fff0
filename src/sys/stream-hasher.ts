/**
 * sha256 of a layer stream computed on libuv's thread pool by the native
 * addon (OpenSSL's SHA-256, native/ocisnap_sys.c), so hashing (the largest
 * CPU cost of applying a layer after decompression) runs beside the
 * extraction on another core, as Podman's digesting goroutines do. Chunks are
 * hashed in order and by reference, never copied: a chunk handed to update()
 * must not be modified afterwards (stream chunks never are). The bytes in
 * flight are bounded; past the bound, `saturated` says to wait for ready().
 */
import { sys, type Sha256Context } from './native.js';

/** The same shape as oci/types Digest, without depending on oci. */
type Sha256Digest = `sha256:${string}`;

/**
 * By default, above this many bytes queued and not yet hashed, callers should
 * wait for ready(). Each pull runs a hasher per download and one for the tar
 * being applied; 2 MiB each (5 ms of hashing) keeps the peak RSS down (16 MiB
 * each added ~40 MiB to it, 4 MiB ~8 MiB).
 */
const defaultMaxInFlight = 2 * 1024 * 1024;
/** A job starts once this much is queued (or at digest()): every job wakes a pool thread. */
const minBatch = 1024 * 1024;

export class StreamHasher {
  /**
   * @param maxInFlight bytes queued before `saturated`: more lets the producer
   * run further ahead of a hasher whose next job waits for a busy main thread.
   */
  constructor(private readonly maxInFlight = defaultMaxInFlight) {}

  private readonly ctx: Sha256Context = sys.sha256Create();
  /** Chunks waiting for the next job: all of them go in one job. */
  private queue: Uint8Array[] = [];
  private running = false;
  private inFlight = 0;
  /** Bytes in `queue`. */
  private queued = 0;
  /** Set by digest(): from then on, hash whatever is queued, however little. */
  private flushing = false;
  private failure: Error | undefined;
  private waiters: Array<() => void> = [];
  /** Bytes given to update() so far. */
  size = 0;

  /** Queues `chunk` for hashing; it must stay unchanged from now on. */
  update(chunk: Uint8Array): void {
    if (this.failure) throw this.failure;
    if (chunk.length === 0) return;
    this.size += chunk.length;
    this.inFlight += chunk.length;
    this.queue.push(chunk);
    this.queued += chunk.length;
    if (!this.running && this.queued >= minBatch) this.next();
  }

  /** True when enough bytes are queued that the producer should wait for ready(). */
  get saturated(): boolean {
    return this.inFlight > this.maxInFlight;
  }

  /** Resolves once the queue is below the bound (at once if it is). */
  async ready(): Promise<void> {
    while (this.inFlight > this.maxInFlight / 2 && !this.failure) {
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    if (this.failure) throw this.failure;
  }

  /** The sha256 of every byte given so far, once all of it is hashed. */
  async digest(): Promise<Sha256Digest> {
    this.flushing = true;
    if (!this.running) this.next();
    while (this.inFlight > 0 && !this.failure) {
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
    if (this.failure) throw this.failure;
    return `sha256:${sys.sha256Digest(this.ctx).toString('hex')}`;
  }

  private next(): void {
    const batch = this.queue;
    if (batch.length === 0) {
      this.running = false;
      this.wake();
      return;
    }
    const bytes = this.queued;
    this.queue = [];
    this.queued = 0;
    this.running = true;
    sys.sha256Update(this.ctx, batch, (err) => {
      this.inFlight -= bytes;
      if (err) {
        this.failure = err;
        this.queue = [];
        this.queued = 0;
        this.running = false;
        this.wake();
        return;
      }
      if (this.inFlight <= this.maxInFlight / 2) this.wake();
      if (this.queued >= minBatch || this.flushing) this.next();
      else this.running = false;
    });
  }

  private wake(): void {
    const w = this.waiters;
    if (w.length === 0) return;
    this.waiters = [];
    for (const f of w) f();
  }
}
