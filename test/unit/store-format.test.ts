import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { bigDataFileName, storeLayout } from '../../src/store/layout.js';
import { layerIdsFor } from '../../src/store/layer-id.js';
import { newLastWriterId } from '../../src/store/lockfile.js';
import { imageDigests, parseImages, parseLayers, StoreCorruptError, type ImageRecord, type LayerRecord } from '../../src/store/records.js';
import { AmbiguousImageError, lookupImage } from '../../src/store/images.js';
import { layersToRemove } from '../../src/store/store.js';
import { parseSubvolumeList, parseSubvolumeShow } from '../../src/btrfs/subvolume.js';
import type { Digest } from '../../src/oci/types.js';

const h = (s: string): string => createHash('sha256').update(s).digest('hex');
const d = (s: string): Digest => `sha256:${h(s)}`;

describe('store layout', () => {
  it('names big-data files like containers/storage makeBigDataBaseName', () => {
    expect(bigDataFileName('manifest')).toBe('manifest');
    expect(bigDataFileName('a.b9')).toBe('a.b9');
    // Seen on disk after `podman import`: the config key sha256:<id>.
    const key = 'sha256:b560bc32e663f0b06b793c6691fc439372ae1225c99412297da3814ee0b2dbf8';
    expect(bigDataFileName(key)).toBe('=c2hhMjU2OmI1NjBiYzMyZTY2M2YwYjA2Yjc5M2M2NjkxZmM0MzkzNzJhZTEyMjVjOTk0MTIyOTdkYTM4MTRlZTBiMmRiZjg=');
    expect(bigDataFileName('Manifest')).toBe(`=${Buffer.from('Manifest').toString('base64')}`);
    expect(bigDataFileName('mänifest')).toMatch(/^=/);
  });

  it('places the btrfs driver files where podman does', () => {
    const l = storeLayout('/g', '/r');
    expect(l.subvolumes).toBe('/g/btrfs/subvolumes');
    expect(l.layersJson).toBe('/g/btrfs-layers/layers.json');
    expect(l.imagesLock).toBe('/g/btrfs-images/images.lock');
    expect(l.mountpointsJson).toBe('/r/btrfs-layers/mountpoints.json');
    expect(l.staging.startsWith(l.driverHome + '/')).toBe(true);
  });
});

describe('layerIdsFor', () => {
  it('chains IDs as containers/image storage_dest.go does', () => {
    // Values observed in a podman-pulled store (layers.json) on this machine.
    const ids = layerIdsFor([
      'sha256:5da1dcafde116e3ab8433293fc3c3f6104fdfdd8f578d11a1a154b9dab5d1a11',
      'sha256:5b6a06b7453f77255d7450310f1331e04b169f6fb330fe0ee5ec58953cd5b7dd',
    ]);
    expect(ids).toEqual([
      '5da1dcafde116e3ab8433293fc3c3f6104fdfdd8f578d11a1a154b9dab5d1a11',
      '1fbe62cc9d0da7bf53ec3943697090b7d89621714686ca52ed7e231f5ff7fba9',
    ]);
    expect(layerIdsFor([])).toEqual([]);
  });
});

describe('records', () => {
  it('keeps unknown fields when round-tripping layers.json', () => {
    const text = JSON.stringify([{ id: h('a'), 'diff-digest': d('a'), uidmap: [{ container_id: 0 }], future: 1 }]);
    const layers = parseLayers('layers.json', text);
    expect(JSON.parse(JSON.stringify(layers))).toEqual(JSON.parse(text));
  });

  it('treats an empty file as an empty store and refuses garbage', () => {
    expect(parseLayers('layers.json', '')).toEqual([]);
    expect(() => parseLayers('layers.json', '{')).toThrow(StoreCorruptError);
    expect(() => parseLayers('layers.json', '{}')).toThrow(/not a JSON array/);
    expect(() => parseLayers('layers.json', '[{"id":"../x"}]')).toThrow(/not a valid ID/);
    expect(() => parseImages('images.json', '[{"id":"aa","names":"x"}]')).toThrow(/names/);
  });

  it('finds image digests as images.go recomputeDigests does', () => {
    const img: ImageRecord = { id: 'x', digest: d('m'), 'big-data-digests': { manifest: d('m'), 'manifest-sha256:z': d('i'), 'sha256:c': d('c') } };
    expect(imageDigests(img).sort()).toEqual([d('m'), d('i')].sort());
  });
});

describe('lookupImage', () => {
  const a: ImageRecord = { id: h('a'), digest: d('ma'), names: ['localhost/os:1', 'quay.io/x/os:latest'] };
  const b: ImageRecord = { id: h('b'), digest: d('mb'), names: ['localhost:5000/os:2'] };
  const images = [a, b];
  it('finds by id, name, prefix, digest and short name', () => {
    expect(lookupImage(images, a.id)).toBe(a);
    expect(lookupImage(images, `sha256:${b.id}`)).toBe(b);
    expect(lookupImage(images, 'localhost/os:1')).toBe(a);
    expect(lookupImage(images, 'quay.io/x/os')).toBe(a);
    expect(lookupImage(images, 'os:2')).toBe(b);
    expect(lookupImage(images, d('mb'))).toBe(b);
    expect(lookupImage(images, `localhost:5000/os@${d('mb')}`)).toBe(b);
    expect(lookupImage(images, b.id.slice(0, 6))).toBe(b);
    expect(lookupImage(images, 'nothere:1')).toBeUndefined();
    expect(lookupImage(images, '')).toBeUndefined();
  });
  it('reports ambiguous short names', () => {
    const c: ImageRecord = { id: h('c'), names: ['example.com/os:1'] };
    expect(() => lookupImage([a, c], 'os:1')).toThrow(AmbiguousImageError);
  });
});

describe('layersToRemove', () => {
  const L = (id: string, parent?: string): LayerRecord => (parent ? { id, parent } : { id });
  it('walks down from the top and stops at shared layers', () => {
    const layers = [L('l1'), L('l2', 'l1'), L('l3', 'l2'), L('m3', 'l2'), L('c1', 'l3')];
    const img1: ImageRecord = { id: 'i1', layer: 'l3' };
    const img2: ImageRecord = { id: 'i2', layer: 'm3' };
    expect(layersToRemove(img2, [img1, img2], layers, [], [])).toEqual(['m3']);
    // l3 has a child (a container layer) that stays.
    expect(layersToRemove(img1, [img1, img2], layers, [], ['c1'])).toEqual([]);
    const noContainer = layers.filter((l) => l.id !== 'c1');
    expect(layersToRemove(img1, [img1], noContainer.filter((l) => l.id !== 'm3'), [], [])).toEqual(['l3', 'l2', 'l1']);
    expect(layersToRemove(img1, [img1, { id: 'i3', layer: 'l2' }], noContainer, [], [])).toEqual(['l3']);
  });
});

describe('lock file last-writer ID', () => {
  it('is 64 bytes with time, counter and pid, and unique', () => {
    const a = newLastWriterId();
    const b = newLastWriterId();
    expect(a.length).toBe(64);
    expect(a.readUInt32LE(16)).toBe(process.pid);
    expect(b.readBigUInt64LE(8)).toBe(a.readBigUInt64LE(8) + 1n);
    const ns = Number(a.readBigUInt64LE(0) / 1_000_000n);
    expect(Math.abs(ns - Date.now())).toBeLessThan(5000);
    expect(a.equals(b)).toBe(false);
  });
});

describe('btrfs-progs output parsing', () => {
  it('parses subvolume show', () => {
    const out = `a/b
\tName: \t\t\tb
\tUUID: \t\t\tfe837361-4dbe-ca41-ad8c-be570454a225
\tParent UUID: \t\t07299981-70d3-784c-bab0-c34e710e694d
\tReceived UUID: \t\t-
\tCreation time: \t\t2026-11-21 23:30:07 +0000
\tSubvolume ID: \t\t262
\tGeneration: \t\t11
\tGen at creation: \t11
\tParent ID: \t\t261
\tTop level ID: \t\t261
\tFlags: \t\t\treadonly
\tSnapshot(s):
`;
    expect(parseSubvolumeShow(out, 'a/b')).toEqual({
      fsPath: 'a/b',
      name: 'b',
      id: 262,
      uuid: 'fe837361-4dbe-ca41-ad8c-be570454a225',
      parentUuid: '07299981-70d3-784c-bab0-c34e710e694d',
      generation: 11,
      topLevelId: 261,
      readonly: true,
    });
  });
  it('parses subvolume list', () => {
    expect(parseSubvolumeList('ID 262 gen 11 top level 261 path a/b\nID 263 gen 12 top level 261 path a/d c\n')).toEqual([
      { id: 262, generation: 11, topLevelId: 261, fsPath: 'a/b' },
      { id: 263, generation: 12, topLevelId: 261, fsPath: 'a/d c' },
    ]);
  });
});
