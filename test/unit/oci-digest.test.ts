import { createHash, randomBytes } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { DigestMismatchError, UntrustedInputError } from '../../src/errors.js';
import { createVerifier } from '../../src/oci/digest.js';
import type { Digest } from '../../src/oci/types.js';

const digestOf = (b: Buffer): Digest => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** Feeds `data` in chunks of `chunk` bytes through a verifier; returns the bytes that came out. */
async function run(data: Buffer, target: { digest: Digest; size?: number }, chunk = 64 * 1024): Promise<Buffer> {
  const parts: Buffer[] = [];
  for (let o = 0; o < data.length; o += chunk) parts.push(data.subarray(o, o + chunk));
  const out: Buffer[] = [];
  await pipeline(
    Readable.from(parts),
    createVerifier(target, 'blob x'),
    new Writable({
      write(c: Buffer, _e, cb) {
        out.push(c);
        cb();
      },
    }),
  );
  return Buffer.concat(out);
}

describe('createVerifier', () => {
  it('passes every byte through unchanged when size and digest match (more than the hasher bound)', async () => {
    const data = randomBytes(40 * 1024 * 1024 + 3);
    const out = await run(data, { digest: digestOf(data), size: data.length }, 1024 * 1024);
    expect(out.equals(data)).toBe(true);
  });

  it('fails with DigestMismatchError at the end when the content differs', async () => {
    const data = randomBytes(300_000);
    const other = Buffer.from(data);
    other[1000]! ^= 1;
    await expect(run(other, { digest: digestOf(data), size: data.length })).rejects.toBeInstanceOf(DigestMismatchError);
  });

  it('fails as soon as more than the announced size arrives', async () => {
    const data = randomBytes(1024 * 1024);
    let emitted = 0;
    const parts = [data.subarray(0, 100), data.subarray(100, 300), data.subarray(300)];
    const v = createVerifier({ digest: digestOf(data), size: 200 }, 'blob y');
    v.on('data', (c: Buffer) => (emitted += c.length));
    const err = await pipeline(Readable.from(parts), v).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UntrustedInputError);
    expect(String((err as Error).message)).toMatch(/blob y: more data than the announced 200 bytes/);
    expect(emitted).toBeLessThanOrEqual(100);
  });

  it('fails on a short body with a size error, and checks only the digest without a size', async () => {
    const data = randomBytes(5000);
    await expect(run(data.subarray(0, 4000), { digest: digestOf(data), size: 5000 })).rejects.toThrow(/size mismatch: expected 5000 bytes, got 4000/);
    expect((await run(data, { digest: digestOf(data) })).equals(data)).toBe(true);
    await expect(run(data.subarray(1), { digest: digestOf(data) })).rejects.toBeInstanceOf(DigestMismatchError);
  });
});
