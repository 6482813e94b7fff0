import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { StreamHasher } from '../../src/layers/index.js';

describe('StreamHasher', () => {
  it('hashes chunks of every size in order on the thread pool, matching node:crypto', async () => {
    const data = randomBytes(3 * 1024 * 1024 + 17);
    const h = new StreamHasher();
    let off = 0;
    // Sizes from 0 up to 256 KiB, so that many chunks queue up behind a running job.
    for (let i = 0; off < data.length; i++) {
      const n = Math.min(data.length - off, (i * 7919) % (256 * 1024));
      h.update(data.subarray(off, off + n));
      off += n;
    }
    expect(h.size).toBe(data.length);
    expect(await h.digest()).toBe(`sha256:${createHash('sha256').update(data).digest('hex')}`);
  });

  it('asks the producer to wait past its bound and still gets every byte', async () => {
    const chunk = randomBytes(1024 * 1024);
    const h = new StreamHasher();
    const ref = createHash('sha256');
    let waited = 0;
    for (let i = 0; i < 40; i++) {
      h.update(chunk);
      ref.update(chunk);
      if (h.saturated) {
        waited++;
        await h.ready();
        expect(h.saturated).toBe(false);
      }
    }
    expect(waited).toBeGreaterThan(0);
    expect(await h.digest()).toBe(`sha256:${ref.digest('hex')}`);
  });

  it('gives the digest of nothing when nothing was hashed', async () => {
    expect(await new StreamHasher().digest()).toBe(`sha256:${createHash('sha256').digest('hex')}`);
  });
});
