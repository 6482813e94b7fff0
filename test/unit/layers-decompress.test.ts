import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { pipeline } from 'node:stream/promises';
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { compress } from 'zstd-napi';
import { CorruptLayerDataError, decompressStream } from '../../src/layers/index.js';

// Compressible but not trivially so: the compressed forms are well over one chunk.
const data = Buffer.from(Array.from({ length: 60_000 }, (_, i) => `line ${i} ${(i * 7919) % 10007}\n`).join(''));

async function run(compression: 'none' | 'gzip' | 'zstd', input: Buffer): Promise<Buffer> {
  const d = decompressStream(compression);
  // An empty chunk in the middle, as a network stream may deliver.
  const chunks = [input.subarray(0, 1000), Buffer.alloc(0), input.subarray(1000)];
  const [out] = await Promise.all([buffer(d), pipeline(Readable.from(chunks), d)]);
  return out;
}

describe('decompressStream', () => {
  it('passes uncompressed data through', async () => {
    expect((await run('none', data)).equals(data)).toBe(true);
  });

  it('gunzips', async () => {
    expect((await run('gzip', gzipSync(data))).equals(data)).toBe(true);
  });

  it('decompresses zstd', async () => {
    expect((await run('zstd', compress(data))).equals(data)).toBe(true);
  });

  it('fails on truncated gzip with a clear error', async () => {
    const gz = gzipSync(data);
    const err = await run('gzip', gz.subarray(0, gz.length - 10)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorruptLayerDataError);
    expect((err as Error).message).toMatch(/^corrupt or truncated gzip data: unexpected end of file/);
  });

  it('fails on corrupt gzip', async () => {
    const gz = gzipSync(data);
    gz.fill(0xff, 20, 30);
    const err = await run('gzip', gz).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorruptLayerDataError);
  });

  it('fails on truncated zstd', async () => {
    const z = compress(data);
    const err = await run('zstd', z.subarray(0, z.length - 5)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorruptLayerDataError);
    expect((err as Error).message).toMatch(/^corrupt or truncated zstd data/);
  });

  it('fails on corrupt zstd', async () => {
    const z = Buffer.from(compress(data));
    z.fill(0x41, 6, 40);
    const err = await run('zstd', z).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorruptLayerDataError);
    expect((err as Error).message).toMatch(/^corrupt or truncated zstd data: /);
  });

  it('fails on input that is not zstd at all', async () => {
    const err = await run('zstd', data).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CorruptLayerDataError);
  });
});
