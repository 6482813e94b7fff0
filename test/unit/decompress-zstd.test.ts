/**
 * zstd layer decompression on libuv's thread pool (native/zstd.c through
 * decompressStream('zstd')): real data compressed by the zstd CLI, fed in
 * chunks of every size; frame boundaries, skippable frames, truncation,
 * corruption, the window limit, and bounded memory on a "zstd bomb".
 */
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable, type Transform } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { pipeline } from 'node:stream/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CorruptLayerDataError, decompressStream } from '../../src/layers/index.js';
import { sys, type ZstdDone } from '../../src/sys/native.js';
import { requireCommands } from '../support/host.js';

const MiB = 1024 * 1024;

/** The zstd CLI's compression of `input` (with `args`, e.g. a level). */
function zstdCli(input: Buffer, ...args: string[]): Buffer {
  return execFileSync('zstd', ['-q', '-c', ...args], { input, maxBuffer: 64 * MiB });
}

/** A skippable frame (RFC 8878 section 3.1.2): magic 0x184D2A5?, size, payload. */
function skippable(payload: Buffer, nibble = 0): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt32LE(0x184d2a50 + nibble, 0);
  h.writeUInt32LE(payload.length, 4);
  return Buffer.concat([h, payload]);
}

function chunked(input: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < input.length; i += size) out.push(input.subarray(i, i + size));
  return out;
}

async function decompress(chunks: Buffer[]): Promise<Buffer> {
  const d = decompressStream('zstd');
  const [out] = await Promise.all([buffer(d), pipeline(Readable.from(chunks), d)]);
  return out;
}

async function failure(chunks: Buffer[]): Promise<Error> {
  const err = await decompress(chunks).then(
    () => new Error('no error'),
    (e: unknown) => e as Error,
  );
  expect(err).toBeInstanceOf(CorruptLayerDataError);
  expect(err.message).toMatch(/^corrupt or truncated zstd data: /);
  return err;
}

function nativeCall(ctx: ReturnType<typeof sys.zstdCreate>, input: Uint8Array, targets: Uint8Array[]) {
  return new Promise<Parameters<ZstdDone>>((resolve) => {
    sys.zstdDecompress(ctx, input, targets, (...args) => resolve(args));
  });
}

// Text that compresses about 4:1, so frames span many blocks and chunks.
const data = Buffer.from(
  Array.from({ length: 40_000 }, (_, i) => `${i} ${(i * 2654435761) % 1000003} lorem ipsum\n`).join(''),
);
let frame: Buffer;
let work: string;
let zerosFrame: Buffer;

beforeAll(async () => {
  await requireCommands('zstd', 'head');
  frame = zstdCli(data, '-3');
  work = await mkdtemp(join(tmpdir(), 'ocisnap-zstd-'));
  // 1 GiB of zeros in one frame of about 40 KB.
  const zeros = join(work, 'zeros.zst');
  execFileSync('sh', ['-c', `head -c ${1024 * MiB} /dev/zero | zstd -q -1 -c > ${zeros}`]);
  zerosFrame = await readFile(zeros);
});

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe('zstd decompression', () => {
  it('round-trips CLI-compressed data in chunks of any size', async () => {
    expect(frame.length).toBeGreaterThan(100_000);
    for (const size of [frame.length, 65_536, 4096, 1000, 7]) {
      expect((await decompress(chunked(frame, size))).equals(data), `chunks of ${size}`).toBe(true);
    }
    // One byte at a time: every call returns early, inside a frame.
    const small = data.subarray(0, 20_000);
    expect((await decompress(chunked(zstdCli(small), 1))).equals(small)).toBe(true);
  });

  it('ignores empty chunks and decodes an empty stream to nothing', async () => {
    const empty = Buffer.alloc(0);
    expect((await decompress([empty, frame.subarray(0, 10), empty, frame.subarray(10), empty])).equals(data)).toBe(true);
    expect((await decompress([])).length).toBe(0);
    expect((await decompress([empty])).length).toBe(0);
  });

  it('decodes concatenated frames, skippable frames and an empty frame', async () => {
    const second = zstdCli(Buffer.from('second frame\n'), '--no-check');
    const emptyFrame = zstdCli(Buffer.alloc(0));
    const stream = Buffer.concat([
      skippable(Buffer.from('metadata')),
      frame,
      skippable(Buffer.alloc(0), 15),
      emptyFrame,
      second,
      skippable(Buffer.from('trailer'), 3),
    ]);
    const want = Buffer.concat([data, Buffer.from('second frame\n')]);
    for (const size of [stream.length, 4096, 5]) {
      expect((await decompress(chunked(stream, size))).equals(want), `chunks of ${size}`).toBe(true);
    }
    // Only skippable frames: valid, and empty.
    expect((await decompress([skippable(Buffer.from('x'))])).length).toBe(0);
  });

  it('fails on a stream cut inside a frame, wherever the cut is', async () => {
    const two = Buffer.concat([frame, skippable(Buffer.from('skip me')), frame]);
    const cuts = [1, 4, 5, 20, 1000, frame.length - 1, frame.length + 3, frame.length + 10, two.length - 1];
    for (const cut of cuts) {
      const err = await failure(chunked(two.subarray(0, cut), 4096));
      expect(err.message, `cut at ${cut}`).toBe('corrupt or truncated zstd data: the data ends inside a frame');
    }
    // A cut at a frame boundary is a shorter valid stream (the layer digest catches that).
    expect((await decompress([two.subarray(0, frame.length)])).equals(data)).toBe(true);
  });

  it('fails on corrupt data and on data that is not zstd', async () => {
    for (const at of [0, 5, 100, Math.floor(frame.length / 2), frame.length - 2]) {
      const bad = Buffer.from(frame);
      bad[at] = bad[at]! ^ 0x5a;
      await failure(chunked(bad, 65_536));
    }
    const err = await failure([data]);
    expect(err.message).toMatch(/Unknown frame descriptor/);
  });

  it('refuses a frame whose window exceeds the 128 MiB limit, with a clear message', async () => {
    // Streamed input: the CLI keeps the 2 GiB window of --long=31.
    const long = execFileSync('sh', ['-c', 'head -c 100000 /dev/urandom | zstd -q --long=31 -c'], { maxBuffer: MiB });
    const err = await failure([long]);
    expect(err.message).toMatch(/requires too much memory .*window larger than the 128 MiB limit/);
  });

  it('decodes 1 GiB of zeros from 40 KB with bounded memory, at the pace of its consumer', async () => {
    expect(zerosFrame.length).toBeLessThan(100_000);
    const before = process.memoryUsage();
    let total = 0;
    let maxRss = before.rss;
    let maxArrayBuffers = before.arrayBuffers;
    let chunks = 0;
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        total += chunk.length;
        if (++chunks % 32 === 0) {
          const m = process.memoryUsage();
          maxRss = Math.max(maxRss, m.rss);
          maxArrayBuffers = Math.max(maxArrayBuffers, m.arrayBuffers);
        }
        setImmediate(cb); // a consumer slower than the decoder
      },
    });
    await pipeline(Readable.from([zerosFrame]), decompressStream('zstd'), sink);
    expect(total).toBe(1024 * MiB);
    // zstd-napi grew by the whole 1 GiB here.
    expect(maxRss - before.rss).toBeLessThan(100 * MiB);
    expect(maxArrayBuffers - before.arrayBuffers).toBeLessThan(100 * MiB);
  });

  it('stops decoding when nobody reads', async () => {
    const d: Transform = decompressStream('zstd');
    d.write(zerosFrame);
    await new Promise((r) => setTimeout(r, 300));
    // The decode-ahead (4 MiB) and one more native call's output (512 KiB) at most wait in the buffer.
    expect(d.readableLength).toBeGreaterThan(0);
    expect(d.readableLength).toBeLessThanOrEqual(4 * MiB + MiB / 2);
    d.destroy();
  });

  it('stays quiet when destroyed while a decompression runs', async () => {
    const d = decompressStream('zstd');
    const events: string[] = [];
    d.on('data', () => events.push('data'));
    d.on('error', (e) => events.push(`error ${e.message}`));
    d.write(frame);
    d.destroy();
    await new Promise((r) => setTimeout(r, 200));
    expect(events).toEqual([]);
    expect(d.destroyed).toBe(true);
  });
});

describe('native zstdDecompress', () => {
  it('fills only the targets it is given and says when to call again', async () => {
    const ctx = sys.zstdCreate();
    let input: Uint8Array = zerosFrame;
    let total = 0;
    let calls = 0;
    for (;;) {
      // Targets of odd sizes, one of them empty.
      const targets = [Buffer.alloc(3 * MiB + 5, 1), Buffer.alloc(0), Buffer.alloc(MiB + 3, 1)];
      const [err, written, consumed, more, frameEnded] = await nativeCall(ctx, input, targets);
      expect(err).toBeNull();
      expect(written).toBeLessThanOrEqual(4 * MiB + 8);
      // Filled in order: zeros up to `written`, the 1s after untouched.
      let left = written;
      for (const t of targets) {
        const n = Math.min(left, t.length);
        expect(t.indexOf(1)).toBe(n === t.length ? -1 : n);
        left -= n;
      }
      total += written;
      calls++;
      input = input.subarray(consumed);
      if (!more) {
        expect(input.length).toBe(0);
        expect(frameEnded).toBe(true);
        break;
      }
      expect(written).toBe(4 * MiB + 8);
      expect(frameEnded).toBe(false);
    }
    expect(total).toBe(1024 * MiB);
    expect(calls).toBe(256);
  });

  it('reports frame ends and refuses a second call while one runs', async () => {
    const ctx = sys.zstdCreate();
    const out = Buffer.alloc(data.length + 100);
    const first = nativeCall(ctx, frame.subarray(0, 1000), [out]);
    expect(() => sys.zstdDecompress(ctx, frame, [Buffer.alloc(10)], () => {})).toThrow(/busy/);
    const [err1, written1, consumed1, more1, ended1] = await first;
    expect([err1, consumed1, more1, ended1]).toEqual([null, 1000, false, false]);
    const [err2, written2, consumed2, more2, ended2] = await nativeCall(ctx, frame.subarray(1000), [out.subarray(written1)]);
    expect([err2, consumed2, more2, ended2]).toEqual([null, frame.length - 1000, false, true]);
    expect(out.subarray(0, written1 + written2).equals(data)).toBe(true);
    expect(() => sys.zstdDecompress({} as never, frame, [out], () => {})).toThrow(/expected a zstd context/);
    expect(() => sys.zstdDecompress(ctx, frame, [], () => {})).toThrow(/1 to 16 Uint8Arrays/);
  });

  it('frees a decoder on request, not while it runs, and refuses to use it after', async () => {
    const ctx = sys.zstdCreate();
    const running = nativeCall(ctx, frame, [Buffer.alloc(data.length)]);
    expect(() => sys.zstdFree(ctx)).toThrow(/busy/);
    expect((await running)[0]).toBeNull();
    sys.zstdFree(ctx);
    expect(() => sys.zstdDecompress(ctx, frame, [Buffer.alloc(10)], () => {})).toThrow(/freed/);
    expect(() => sys.zstdFree(ctx)).toThrow(/freed/);
  });
});
