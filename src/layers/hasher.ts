/**
 * sha256 of a layer stream computed on a worker thread, so hashing (about a
 * third of the CPU time of applying a layer) runs beside the extraction on
 * another core, as Podman's digesting goroutines do. Chunks are copied and
 * transferred in order; the number of bytes in flight is bounded.
 */
import { Worker } from 'node:worker_threads';
import type { Digest } from '../oci/types.js';

const workerSource = `
const { parentPort } = require('node:worker_threads');
const hash = require('node:crypto').createHash('sha256');
parentPort.on('message', (m) => {
  if (m === null) parentPort.postMessage({ digest: hash.digest('hex') });
  else { hash.update(m); parentPort.postMessage({ done: m.byteLength }); }
});
`;

/** Above this many bytes not yet hashed, update() waits for the worker. */
const maxInFlight = 32 * 1024 * 1024;
/** Chunks (16 KiB from zlib) are gathered into batches this big: a message costs far more than a copy. */
const batchSize = 1024 * 1024;

export class WorkerHasher {
  private readonly worker = new Worker(workerSource, { eval: true });
  private inFlight = 0;
  private batch = new Uint8Array(batchSize);
  private batchLength = 0;
  private failure: Error | undefined;
  private waiter: (() => void) | undefined;
  private digestWaiter: ((hex: string) => void) | undefined;

  constructor() {
    this.worker.on('message', (m: { done?: number; digest?: string }) => {
      if (m.done !== undefined) {
        this.inFlight -= m.done;
        if (this.inFlight <= maxInFlight / 2) this.wake();
      } else if (m.digest !== undefined) this.digestWaiter?.(m.digest);
    });
    this.worker.on('error', (err: Error) => {
      this.failure = err;
      this.wake();
    });
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = undefined;
    w?.();
  }

  async update(chunk: Uint8Array): Promise<void> {
    if (this.failure) throw this.failure;
    let off = 0;
    while (off < chunk.length) {
      const take = Math.min(chunk.length - off, batchSize - this.batchLength);
      this.batch.set(chunk.subarray(off, off + take), this.batchLength);
      this.batchLength += take;
      off += take;
      if (this.batchLength === batchSize) this.send();
    }
    while (this.inFlight > maxInFlight && !this.failure) {
      await new Promise<void>((resolve) => (this.waiter = resolve));
    }
    if (this.failure) throw this.failure;
  }

  /** Transfers the batch (no copy) and starts a new one. */
  private send(): void {
    const full = this.batchLength === this.batch.length ? this.batch : this.batch.slice(0, this.batchLength);
    this.inFlight += full.byteLength;
    this.worker.postMessage(full, [full.buffer]);
    this.batch = new Uint8Array(batchSize);
    this.batchLength = 0;
  }

  /** Call once, after the last update(). */
  async digest(): Promise<Digest> {
    if (this.failure) throw this.failure;
    if (this.batchLength > 0) this.send();
    const hex = await new Promise<string>((resolve, reject) => {
      this.digestWaiter = resolve;
      this.worker.once('error', reject);
      this.worker.postMessage(null);
    });
    return `sha256:${hex}`;
  }

  close(): void {
    void this.worker.terminate();
  }
}
