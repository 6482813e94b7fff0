/**
 * containers/storage lock files (pkg/lockfile/lockfile_unix.go): a whole-file
 * fcntl(2) record lock on `*.lock`, read (shared) or write (exclusive). A writer
 * "touches" the file after changing the data it guards: it writes a fresh
 * 64-byte last-writer ID at offset 0 (LE uint64 time ns, LE uint64 counter,
 * LE uint32 pid, random padding), and other processes reload their cached
 * state when that ID differs from the one they saw.
 *
 * fcntl locks belong to the process, not to the file descriptor, and closing
 * ANY descriptor of the file drops them. So there is exactly one LockFile per
 * path per process (like containers/storage's own lockfiles map), serialized
 * in-process by an async mutex, and its descriptor stays open while locked.
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { mkdir, open, type FileHandle } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { OcisnapError } from '../errors.js';
import { sys } from '../sys/native.js';

export type LockMode = 'read' | 'write';

/** Waiting for a lock was aborted or timed out. */
export class LockTimeoutError extends OcisnapError {
  constructor(
    readonly path: string,
    why: string,
  ) {
    super(`lock ${path}: ${why}`);
  }
}

export interface LockOptions {
  signal?: AbortSignal;
  /** Give up after this long (default: wait forever). */
  timeoutMs?: number;
}

const lastWriterIdSize = 64;
let lastWriterCounter = 0n;

/** A new last-writer ID, unique across processes (lockfile_unix.go newLastWriterID). */
export function newLastWriterId(): Buffer {
  const id = Buffer.alloc(lastWriterIdSize);
  const nowNs = BigInt(Date.now()) * 1_000_000n + (process.hrtime.bigint() % 1_000_000n);
  lastWriterCounter += 1n;
  id.writeBigUInt64LE(nowNs, 0);
  id.writeBigUInt64LE(lastWriterCounter, 8);
  id.writeUInt32LE(process.pid, 16);
  randomBytes(lastWriterIdSize - 20).copy(id, 20);
  return id;
}

// One instance per lock file path in this process; see the header comment.
const instances = new Map<string, LockFile>();

export class LockFile {
  private handle: FileHandle | undefined;
  private mode: LockMode | undefined;
  /** Tail of the in-process queue: resolves when the previous holder releases. */
  private queue: Promise<void> = Promise.resolve();

  private constructor(readonly path: string) {}

  static for(path: string): LockFile {
    const key = resolve(path);
    let lock = instances.get(key);
    if (!lock) {
      lock = new LockFile(key);
      instances.set(key, lock);
    }
    return lock;
  }

  /** Runs `fn` holding the lock; releases it however `fn` ends. */
  async with<T>(mode: LockMode, fn: (lock: LockFile) => Promise<T>, opts: LockOptions = {}): Promise<T> {
    let release!: () => void;
    const previous = this.queue;
    this.queue = new Promise<void>((r) => (release = r));
    let ourTurn = false;
    try {
      await waitInProcess(previous, this.path, opts);
      ourTurn = true;
      await this.acquire(mode, opts);
      try {
        return await fn(this);
      } finally {
        await this.release();
      }
    } finally {
      // A waiter that gave up must not let the next one in before the current holder is done.
      if (ourTurn) release();
      else void previous.then(release);
    }
  }

  /** Tries once, without waiting: runs `fn` and returns true, or returns false when held elsewhere. */
  async tryWith(mode: LockMode, fn: (lock: LockFile) => Promise<void>): Promise<boolean> {
    if (this.handle !== undefined) return false;
    let acquired = false;
    await this.with(
      mode,
      async () => {
        acquired = true;
        await fn(this);
      },
      { timeoutMs: 0 },
    ).catch((err: unknown) => {
      if (!(err instanceof LockTimeoutError) || acquired) throw err;
    });
    return acquired;
  }

  /** Records a new last-writer ID; only while holding the write lock. */
  async touch(): Promise<void> {
    if (this.handle === undefined || this.mode !== 'write') {
      throw new Error(`touch of ${this.path} without holding its write lock`);
    }
    const id = newLastWriterId();
    const { bytesWritten } = await this.handle.write(id, 0, id.length, 0);
    if (bytesWritten !== id.length) throw new OcisnapError(`lock ${this.path}: short write of the last-writer ID`);
  }

  /** The current last-writer ID (empty when never touched). */
  async lastWriter(): Promise<Buffer> {
    if (this.handle === undefined) throw new Error(`read of ${this.path} without holding its lock`);
    const buf = Buffer.alloc(lastWriterIdSize);
    const { bytesRead } = await this.handle.read(buf, 0, buf.length, 0);
    return buf.subarray(0, bytesRead);
  }

  private async acquire(mode: LockMode, opts: LockOptions): Promise<void> {
    await mkdir(dirname(this.path), { recursive: true, mode: 0o700 });
    // Same flags as lockfile_unix.go openLock: read-write, created 0644, never truncated.
    const handle = await open(this.path, constants.O_RDWR | constants.O_CREAT, 0o644);
    const deadline = opts.timeoutMs === undefined ? Infinity : Date.now() + opts.timeoutMs;
    let delay = 2;
    try {
      while (!sys.setlk(handle.fd, mode === 'read' ? 0 : 1)) {
        if (opts.signal?.aborted) throw new LockTimeoutError(this.path, 'aborted while waiting');
        if (Date.now() >= deadline) throw new LockTimeoutError(this.path, 'held by another process');
        await sleep(Math.min(delay, Math.max(0, deadline - Date.now())));
        delay = Math.min(delay * 2, 50);
      }
    } catch (err) {
      await handle.close();
      throw err;
    }
    this.handle = handle;
    this.mode = mode;
  }

  private async release(): Promise<void> {
    const handle = this.handle;
    this.handle = undefined;
    this.mode = undefined;
    if (handle === undefined) return;
    try {
      sys.setlk(handle.fd, 2);
    } finally {
      await handle.close();
    }
  }
}

async function waitInProcess(previous: Promise<void>, path: string, opts: LockOptions): Promise<void> {
  if (opts.timeoutMs === undefined && opts.signal === undefined) return previous;
  const waiters: Array<Promise<void>> = [previous];
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  if (opts.timeoutMs !== undefined) {
    const ms = opts.timeoutMs;
    waiters.push(new Promise((_, reject) => (timer = setTimeout(() => reject(new LockTimeoutError(path, 'held in this process')), ms))));
  }
  if (opts.signal !== undefined) {
    const signal = opts.signal;
    waiters.push(
      new Promise((_, reject) => {
        onAbort = () => reject(new LockTimeoutError(path, 'aborted while waiting'));
        if (signal.aborted) onAbort();
        else signal.addEventListener('abort', onAbort, { once: true });
      }),
    );
  }
  try {
    await Promise.race(waiters);
  } finally {
    if (timer) clearTimeout(timer);
    if (onAbort) opts.signal?.removeEventListener('abort', onAbort);
  }
}
