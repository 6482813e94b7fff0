/**
 * The content writes of a layer's larger files, on libuv's thread pool, so
 * the main thread goes on parsing the tar and creating the next files while
 * data is copied into the page cache. Synchronous write(2) was a quarter of
 * the main thread's time in a cold pull, and the main thread is the pull's
 * critical path (bench/RESULTS.md).
 *
 * Bounded: at most `maxBytes` submitted and not yet written (the chunks are
 * views of the decoder's buffers, kept alive until written) and at most
 * `maxFiles` files open and unfinished. A file is finished (owner, mode,
 * times, close: one native call) on the main thread once its last write is
 * done. The first failure is kept and thrown to the applier at its next step.
 */
import * as fs from 'node:fs';

/** Writing a file's content failed; `entry` names the tar entry. */
export class FileWriteError extends Error {
  constructor(
    readonly entry: string,
    options: { cause: unknown },
  ) {
    super(`writing ${entry} failed`, options);
  }
}

export interface FileWritesLimits {
  maxBytes: number;
  maxFiles: number;
}

const defaultLimits: FileWritesLimits = { maxBytes: 8 * 1024 * 1024, maxFiles: 64 };

export class FileWrites {
  #bytes = 0;
  #files = 0;
  #error: FileWriteError | undefined;
  /** Resolved (and cleared) whenever a write or a file completes. */
  #waiters: Array<() => void> = [];

  constructor(private readonly limits: FileWritesLimits = defaultLimits) {}

  /** Bytes submitted and not yet written. */
  get pendingBytes(): number {
    return this.#bytes;
  }

  /** Files open and not yet finished. */
  get openFiles(): number {
    return this.#files;
  }

  /** Throws the first failure, if any. */
  check(): void {
    if (this.#error) throw this.#error;
  }

  /**
   * Starts writing the file open as `fd` (for tar entry `entry`). `finish`
   * runs once every write is done and must close the fd, even when it fails;
   * after a failure the fd is just closed.
   */
  async open(fd: number, entry: string, finish: (fd: number) => void): Promise<PendingFile> {
    await this.#until(() => this.#files < this.limits.maxFiles);
    this.#files++;
    return new PendingFile(this, fd, entry, finish);
  }

  /** Waits until every file is written and finished, then throws the first failure, if any. */
  async drain(): Promise<void> {
    await this.#until(() => this.#files === 0, false);
    this.check();
  }

  /** @internal for PendingFile */
  async reserve(n: number): Promise<void> {
    // One chunk larger than the bound still goes, alone.
    await this.#until(() => this.#bytes === 0 || this.#bytes + n <= this.limits.maxBytes);
    this.#bytes += n;
  }

  /** @internal for PendingFile */
  written(n: number): void {
    this.#bytes -= n;
    this.#wake();
  }

  /** @internal for PendingFile */
  fileDone(error: FileWriteError | undefined): void {
    this.#files--;
    if (error && !this.#error) this.#error = error;
    this.#wake();
  }

  async #until(ready: () => boolean, failFast = true): Promise<void> {
    for (;;) {
      if (failFast) this.check();
      if (ready()) return;
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
  }

  #wake(): void {
    const w = this.#waiters;
    this.#waiters = [];
    for (const f of w) f();
  }
}

/** One file's writes: issued at increasing offsets (pwrite), so several may be in flight. */
export class PendingFile {
  #offset = 0;
  #inFlight = 0;
  #ended = false;
  #done = false;
  #error: FileWriteError | undefined;

  constructor(
    private readonly writes: FileWrites,
    private readonly fd: number,
    private readonly entry: string,
    private readonly finish: (fd: number) => void,
  ) {}

  /** Queues `chunk` (kept unchanged until written) as the file's next bytes; resolves once it fits the bound. */
  async write(chunk: Buffer): Promise<void> {
    await this.writes.reserve(chunk.length);
    const position = this.#offset;
    this.#offset += chunk.length;
    this.#inFlight++;
    this.#writeAt(chunk, position, chunk.length);
  }

  /** No more writes: the file is finished once the ones in flight are done. */
  end(): void {
    this.#ended = true;
    this.#maybeFinish();
  }

  /** Gives up on the file (the layer failed before its content was complete). */
  abandon(): void {
    this.#error ??= new FileWriteError(this.entry, { cause: new Error('abandoned') });
    this.end();
  }

  #writeAt(chunk: Buffer, position: number, reserved: number): void {
    fs.write(this.fd, chunk, 0, chunk.length, position, (err, n) => {
      if (!err && n < chunk.length && n > 0) {
        // A short write: the rest goes again (and fails with its errno if the disk is full).
        this.#writeAt(chunk.subarray(n), position + n, reserved);
        return;
      }
      if (err || n === 0) {
        this.#error ??= new FileWriteError(this.entry, { cause: err ?? new Error('write(2) wrote nothing') });
      }
      this.#inFlight--;
      this.writes.written(reserved);
      this.#maybeFinish();
    });
  }

  #maybeFinish(): void {
    if (!this.#ended || this.#inFlight > 0 || this.#done) return;
    this.#done = true;
    if (this.#error) {
      try {
        fs.closeSync(this.fd);
      } catch {
        // The write error is the one to report.
      }
    } else {
      try {
        this.finish(this.fd);
      } catch (err) {
        this.#error = new FileWriteError(this.entry, { cause: err });
      }
    }
    this.writes.fileDone(this.#error);
  }
}
