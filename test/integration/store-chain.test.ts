/**
 * buildLayerChain (pull/layer-chain.ts) on a real btrfs store: each layer a
 * snapshot of the one below, recorded while the next one fills, bottom up,
 * with its data on disk before its record says it is complete; and on a
 * failure, nothing left but the layers recorded before it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { createBtrfs, type BtrfsFixture } from '../support/btrfs.js';
import { requireCommands } from '../support/host.js';
import { showSubvolume } from '../../src/btrfs/index.js';
import { buildLayerChain, type ChainLayer } from '../../src/pull/layer-chain.js';
import { isIncomplete, Store, StoreOperationError, type FillResult, type LayerRecord } from '../../src/store/index.js';
import type { Digest } from '../../src/oci/types.js';

let fs: BtrfsFixture;

beforeAll(async () => {
  await requireCommands('filefrag');
  fs = await createBtrfs({ sizeMiB: 512 });
});

afterAll(async () => {
  await fs?.dispose();
});

const hex = (s: string) => createHash('sha256').update(s).digest('hex');
const digest = (s: string): Digest => `sha256:${hex(s)}`;

/** A chain of `n` layers of test `name`; layer k writes `layer-k` (1 MiB) and checks it sees the files below. */
function chainOf(name: string, n: number, during: (k: number, dir: string) => Promise<void> = async () => {}): ChainLayer[] {
  const ids = Array.from({ length: n }, (_, k) => hex(`${name}-${k}`));
  return ids.map((id, k) => ({
    spec: { id, ...(k > 0 && { parent: ids[k - 1] }) },
    fill: async (dir: string): Promise<FillResult> => {
      for (let below = 0; below < k; below++) {
        expect(await readFile(join(dir, `layer-${below}`)).then((b) => b.length)).toBe(1024 * 1024);
      }
      await writeFile(join(dir, `layer-${k}`), randomBytes(1024 * 1024));
      await during(k, dir);
      return { diffDigest: digest(`${name}-${k}`), diffSize: 1024 };
    },
  }));
}

async function stagingLeftovers(store: Store): Promise<string[]> {
  return readdir(store.layout.staging).catch(() => []);
}

/** Extents of `file` btrfs has not written yet (filefrag's "delalloc" flag). */
async function unwrittenExtents(file: string): Promise<number> {
  const { stdout } = await execa('filefrag', ['-v', file]);
  return stdout.split('\n').filter((line) => /\bdelalloc\b/.test(line)).length;
}

async function waitFor(what: string, check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('buildLayerChain', () => {
  it('builds each layer as a snapshot of the one below, records it by the time the next has filled, data on disk first', async () => {
    const store = await Store.open(join(fs.mountpoint, 'ok'));
    const recorded: LayerRecord[] = [];
    const chain = chainOf('ok', 3, async (k) => {
      // Layer 0 is recorded by the time layer 1 has filled, not only at the
      // end of the chain (which would never get past this).
      if (k === 1) await waitFor('layer 0 recorded', async () => recorded.length === 1);
    });
    await store.lock(() => buildLayerChain(store, chain, (r) => recorded.push(r)));

    expect(recorded.map((r) => r.id)).toEqual(chain.map((l) => l.spec.id));
    const subvolumes = [];
    for (const [k, layer] of chain.entries()) {
      const record = await store.getLayer(layer.spec.id);
      expect(record && !isIncomplete(record)).toBe(true);
      expect(record?.parent).toBe(layer.spec.parent);
      const path = store.layerPath(layer.spec.id);
      const info = await showSubvolume(path);
      expect(info.readonly).toBe(true);
      subvolumes.push(info);
      if (k > 0) expect(info.parentUuid).toBe(subvolumes[k - 1]!.uuid);
      expect(await unwrittenExtents(join(path, `layer-${k}`))).toBe(0);
    }
    expect(await stagingLeftovers(store)).toEqual([]);
  });

  it('keeps the layers recorded before a fill fails, and discards the rest', async () => {
    const store = await Store.open(join(fs.mountpoint, 'fill-fails'));
    const recorded: string[] = [];
    const chain = chainOf('fill-fails', 3, async (k) => {
      if (k === 2) throw new Error('layer 2 is corrupt');
    });
    await expect(store.lock(() => buildLayerChain(store, chain, (r) => recorded.push(r.id)))).rejects.toThrow(
      'layer 2 is corrupt',
    );
    expect(recorded).toEqual([chain[0]!.spec.id, chain[1]!.spec.id]);
    expect(await store.getLayer(chain[2]!.spec.id)).toBeUndefined();
    expect(await stagingLeftovers(store)).toEqual([]);
  });

  it('stops at a layer that cannot be recorded, and discards it and every layer above', async () => {
    const store = await Store.open(join(fs.mountpoint, 'record-fails'));
    const recorded: string[] = [];
    const chain = chainOf('record-fails', 3);
    const fill1 = chain[1]!.fill;
    // A tar-split that describes another stream: commitLayer refuses it.
    chain[1]!.fill = async (dir) => ({
      ...(await fill1(dir)),
      tarSplit: { gz: Buffer.alloc(0), tarDigest: digest('another'), tarSize: 1 },
    });
    await expect(store.lock(() => buildLayerChain(store, chain, (r) => recorded.push(r.id)))).rejects.toThrow(
      StoreOperationError,
    );
    expect(recorded).toEqual([chain[0]!.spec.id]);
    for (const layer of chain.slice(1)) expect(await store.getLayer(layer.spec.id)).toBeUndefined();
    expect(await stagingLeftovers(store)).toEqual([]);
  });
});
