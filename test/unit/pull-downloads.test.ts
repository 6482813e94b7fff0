/**
 * Layer downloads (src/pull/downloads.ts): a layer's file is read while it
 * still downloads, the read ends only with the whole verified blob, a failed
 * download fails its readers (and the others, with that first error), and
 * downloads run in layer order, a bounded number at once. The network is a
 * stream per blob that the test writes to, so it decides when bytes arrive;
 * the real registry path is covered by test/integration/registry-pull and
 * pull-faults.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Descriptor, Digest } from '../../src/oci/types.js';
import { startDownloads } from '../../src/pull/downloads.js';
import type { ImageSource } from '../../src/registry/source.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ocisnap-downloads-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function blob(content: Buffer): Descriptor {
  const digest = `sha256:${createHash('sha256').update(content).digest('hex')}` as Digest;
  return { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest, size: content.length };
}

/** A source whose blobs arrive when the test writes them; it records the order and the overlap of requests. */
function network() {
  const streams = new Map<string, PassThrough>();
  const requested: string[] = [];
  let open = 0;
  let maxOpen = 0;
  const source: ImageSource = {
    name: 'test://image',
    getManifest: () => Promise.reject(new Error('not used')),
    close: () => Promise.resolve(),
    getBlob: (desc: Descriptor) => {
      requested.push(desc.digest);
      maxOpen = Math.max(maxOpen, ++open);
      const s = new PassThrough();
      s.once('close', () => open--);
      streams.set(desc.digest, s);
      return Promise.resolve(s);
    },
  };
  /** The blob's stream, once the download asked for it. */
  const stream = async (desc: Descriptor): Promise<PassThrough> => {
    for (let i = 0; i < 1000 && !streams.has(desc.digest); i++) await tick(10);
    const s = streams.get(desc.digest);
    if (!s) throw new Error(`${desc.digest} was never requested`);
    return s;
  };
  return { source, stream, requested, maxOpen: () => maxOpen };
}

const tick = (ms = 20) => new Promise((r) => setTimeout(r, ms));

/** Waits until `cond` holds (a busy CI machine may take a while), for at most 10 s. */
async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 1000 && !cond(); i++) await tick(10);
}

/** Collects a stream's data as it comes; `ended` and `error` say how it stopped. */
function collect(r: Readable) {
  const state = { chunks: [] as Buffer[], ended: false, error: undefined as Error | undefined };
  r.on('data', (c: Buffer) => state.chunks.push(c));
  r.on('end', () => (state.ended = true));
  r.on('error', (e) => (state.error = e));
  return { state, bytes: () => Buffer.concat(state.chunks) };
}

const noProgress = () => {};

describe('layer downloads', () => {
  it('reads a layer while it downloads, and ends only when the download has', async () => {
    const content = randomBytes(3 * 1024 * 1024 + 17);
    const desc = blob(content);
    const net = network();
    const downloads = startDownloads(net.source, [desc], dir, { concurrency: 2, progress: noProgress });
    const reading = collect(downloads.get(desc).open());
    const s = await net.stream(desc);

    s.write(content.subarray(0, 1_000_000));
    await until(() => reading.bytes().length >= 1_000_000);
    expect(reading.bytes().equals(content.subarray(0, 1_000_000))).toBe(true);
    expect(reading.state.ended).toBe(false);

    s.write(content.subarray(1_000_000));
    await until(() => reading.bytes().length >= content.length);
    await tick(100);
    expect(reading.bytes().length).toBe(content.length);
    // Every byte is in, but the source has not said the blob is complete (verified).
    expect(reading.state.ended).toBe(false);

    s.end();
    await until(() => reading.state.ended);
    expect(reading.state.ended).toBe(true);
    expect(reading.bytes().equals(content)).toBe(true);
    await downloads.settled();
  });

  it('fails the readers with the download error, every layer with the first one', async () => {
    const a = blob(randomBytes(100_000));
    const b = blob(randomBytes(100_000));
    const c = blob(randomBytes(100_000));
    const net = network();
    const downloads = startDownloads(net.source, [a, b, c], dir, { concurrency: 2, progress: noProgress });
    const readers = [a, b, c].map((d) => collect(downloads.get(d).open()));
    const sa = await net.stream(a);
    sa.write(randomBytes(1000));
    await until(() => readers[0]!.bytes().length >= 1000);
    expect(readers[0]!.bytes().length).toBe(1000);
    const mismatch = new Error('layer sha256:… digest mismatch');
    sa.destroy(mismatch);
    await until(() => readers.every((r) => r.state.error !== undefined));
    for (const r of readers) expect(r.state.error).toBe(mismatch);
    await downloads.settled();
    // c never started: the first failure stopped the queue.
    expect(net.requested).not.toContain(c.digest);
  });

  it('downloads in the order given, a bounded number at once, each blob once', async () => {
    const blobs = Array.from({ length: 5 }, () => randomBytes(50_000));
    const descs = blobs.map(blob);
    const net = network();
    // The third layer uses the first one's blob again.
    const order = [descs[0]!, descs[1]!, descs[0]!, descs[2]!, descs[3]!, descs[4]!];
    const downloads = startDownloads(net.source, order, dir, { concurrency: 2, progress: noProgress });
    const readers = order.map((d) => readAll(downloads.get(d).open()));
    // Two run at once (which of them asks first is up to the file system);
    // each one that ends lets the next blob of the queue start, and no other.
    await net.stream(descs[0]!);
    await net.stream(descs[1]!);
    await tick(50);
    expect(new Set(net.requested)).toEqual(new Set([descs[0]!.digest, descs[1]!.digest]));
    for (const [i, d] of descs.entries()) {
      (await net.stream(d)).end(blobs[i]);
      const next = descs[i + 2];
      if (next) await net.stream(next);
      await tick(50);
      const started = descs.slice(0, Math.min(i + 3, descs.length)).map((x) => x.digest);
      expect(new Set(net.requested)).toEqual(new Set(started));
      expect(net.requested).toHaveLength(started.length);
    }
    const contents = await Promise.all(readers);
    for (const [i, d] of order.entries()) expect(contents[i]!.equals(blobs[descs.indexOf(d)]!)).toBe(true);
    await downloads.settled();
    expect(net.requested.slice(2)).toEqual(descs.slice(2).map((d) => d.digest));
    expect(net.maxOpen()).toBe(2);
    expect((await readdir(dir)).length).toBe(5);
  });

  it('stops what still runs once the caller is done', async () => {
    const a = blob(randomBytes(100_000));
    const net = network();
    const downloads = startDownloads(net.source, [a], dir, { concurrency: 1, progress: noProgress });
    const s = await net.stream(a);
    s.write(randomBytes(10));
    await downloads.settled();
    expect(s.destroyed).toBe(true);
  });
});

async function readAll(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}
