/**
 * StreamHasher (sys/stream-hasher.ts: sha256 on libuv's pool) and the protocol
 * by which a stream hands the digest of what it emitted to its consumer.
 */
import type { Digest } from '../oci/types.js';

export { StreamHasher } from '../sys/stream-hasher.js';

/**
 * A stream that hashes exactly the bytes it emits can hand that digest to
 * its consumer (applyLayer), which then does not hash the same bytes again.
 * Resolves after the stream has ended.
 */
export const emittedDigest: unique symbol = Symbol('ocisnap.emittedDigest');

export interface DigestingStream {
  [emittedDigest](): Promise<{ digest: Digest; size: number }>;
}

export function isDigestingStream(s: object): s is DigestingStream {
  return typeof (s as Partial<DigestingStream>)[emittedDigest] === 'function';
}
