/**
 * Digests (image-spec descriptor.md#digests) and the streaming verifier every
 * byte from outside passes through: it counts and hashes while data flows, and
 * fails the stream if the size is exceeded or the digest does not match at
 * the end. Nothing is buffered.
 */
import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { DigestMismatchError, UntrustedInputError } from '../errors.js';
import { StreamHasher } from '../sys/stream-hasher.js';
import type { Digest } from './types.js';

const sha256Pattern = /^sha256:[a-f0-9]{64}$/;

/** Validates a digest string from outside. Only sha256 is accepted. */
export function parseDigest(value: unknown, what = 'digest'): Digest {
  if (typeof value !== 'string' || !sha256Pattern.test(value)) {
    const shown = typeof value === 'string' ? JSON.stringify(value.slice(0, 80)) : typeof value;
    throw new UntrustedInputError(`${what}: not a sha256 digest: ${shown}`);
  }
  return value as Digest;
}

export function isDigest(value: unknown): value is Digest {
  return typeof value === 'string' && sha256Pattern.test(value);
}

/** The 64 hex characters of a digest. */
export function digestHex(d: Digest): string {
  return d.slice('sha256:'.length);
}

export function sha256Digest(data: Uint8Array | string): Digest {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** An incremental sha256 that also counts bytes. */
export class DigestCounter {
  private readonly hash: Hash = createHash('sha256');
  bytes = 0;

  update(chunk: Uint8Array): void {
    this.hash.update(chunk);
    this.bytes += chunk.length;
  }

  /** Can be called once. */
  digest(): Digest {
    return `sha256:${this.hash.digest('hex')}`;
  }
}

export interface VerifyTarget {
  digest: Digest;
  /** Expected size in bytes; undefined when unknown (then only the digest is checked). */
  size?: number;
}

/**
 * A pass-through stream that fails with UntrustedInputError as soon as more than
 * `target.size` bytes arrive, and with DigestMismatchError (or a size error) at
 * the end if the content is not exactly what was announced. `what` names the
 * content in errors ("layer sha256:… of docker.io/library/debian:12").
 */
export function createVerifier(target: VerifyTarget, what: string): Transform {
  // Hashed on libuv's pool (sys/stream-hasher.ts), beside the main thread's
  // work; chunks pass on by reference and no stage after this one changes them.
  const hasher = new StreamHasher();
  return new Transform({
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      try {
        hasher.update(chunk);
      } catch (err) {
        cb(err as Error);
        return;
      }
      if (target.size !== undefined && hasher.size > target.size) {
        cb(new UntrustedInputError(`${what}: more data than the announced ${target.size} bytes`));
        return;
      }
      if (hasher.saturated) hasher.ready().then(() => cb(null, chunk), cb);
      else cb(null, chunk);
    },
    flush(cb: TransformCallback) {
      if (target.size !== undefined && hasher.size !== target.size) {
        cb(new UntrustedInputError(`${what}: size mismatch: expected ${target.size} bytes, got ${hasher.size}`));
        return;
      }
      hasher.digest().then((actual) => {
        if (actual !== target.digest) cb(new DigestMismatchError(what, target.digest, actual));
        else cb();
      }, cb);
    },
  });
}

/** Verifies an in-memory body (manifests, configs) against its descriptor. */
export function verifyBytes(data: Uint8Array, target: VerifyTarget, what: string): void {
  if (target.size !== undefined && data.length !== target.size) {
    throw new UntrustedInputError(`${what}: size mismatch: expected ${target.size} bytes, got ${data.length}`);
  }
  const actual = sha256Digest(data);
  if (actual !== target.digest) throw new DigestMismatchError(what, target.digest, actual);
}
