/**
 * Bad input never damages the store: every broken image, hostile layer or
 * misbehaving registry ends the pull with one clear line naming the image
 * (and the layer or entry) and a non-zero exit, and the store is exactly as
 * it was. A dropped connection is resumed instead.
 */
import { randomBytes } from 'node:crypto';
import { lstat, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { compress as zstdCompress } from 'zstd-napi';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createBtrfs, type BtrfsFixture } from '../support/btrfs.js';
import { ocisnap } from '../support/cli.js';
import { requireCommands } from '../support/host.js';
import { buildImage, buildLayerTar, pushLayout, type BuiltImage, type ImageSpec, type LayerEntry } from '../support/image-factory.js';
import { corruptBlob, editImage, readBlob, writeBlob } from '../support/layout-edit.js';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';
import { storeState as storeStateOf } from '../support/store-state.js';

let fs: BtrfsFixture;
let work: string;
let store: string;
let registry: TestRegistry;
let authRegistry: TestRegistry;
let proxy: FaultProxy;
let goodLayout: string;
let goodImage: BuiltImage;
let n = 0;

const baseSpec = (compression: 'gzip' | 'zstd' = 'gzip'): ImageSpec => ({
  compression,
  layers: [
    { entries: [{ type: 'file', path: 'etc/os-release', content: 'ID=base\n' }, { type: 'dir', path: 'usr/bin' }] },
    { entries: [{ type: 'file', path: 'usr/bin/tool', content: randomBytes(300_000), mode: 0o755 }] },
  ],
});

const storeState = () => storeStateOf(store);

/** A new image; its layers are new to the store (a unique file in the first), so they are fetched. */
async function newLayout(spec: ImageSpec = baseSpec()): Promise<string> {
  const dir = join(work, `layout-${++n}`);
  spec.layers[0]!.entries.push({ type: 'file', path: `etc/unique-${n}`, content: String(n) });
  await buildImage(dir, 'img', spec);
  return dir;
}

/** Runs a pull that must fail and leave the store untouched; returns its error line. */
async function failingPull(args: string[]): Promise<string> {
  const before = await storeState();
  const r = await ocisnap(['--storage-root', store, 'pull', '--progress', 'none', ...args]);
  const stderr = String(r.stderr).trim();
  expect(r.exitCode, stderr).not.toBe(0);
  expect(stderr.split('\n'), 'one line').toHaveLength(1);
  expect(stderr).toMatch(/^ocisnap: /);
  expect(stderr).not.toMatch(/internal error|\n\s+at /);
  expect(await storeState()).toBe(before);
  return stderr;
}

beforeAll(async () => {
  await requireCommands('skopeo', 'docker-registry', 'htpasswd');
  fs = await createBtrfs({ sizeMiB: 1024 });
  work = await mkdtemp(join(tmpdir(), 'ocisnap-faults-'));
  store = join(fs.mountpoint, 'store');
  registry = await startRegistry();
  authRegistry = await startRegistry({ kind: 'htpasswd', username: 'alice', password: 'secret' });
  proxy = await startFaultProxy(registry.host);
  goodLayout = join(work, 'good');
  goodImage = await buildImage(goodLayout, 'img', baseSpec());
  await pushLayout(goodLayout, 'img', `docker://${registry.host}/faults/good:1`);
  // A non-empty store, so "unchanged" means something.
  const r = await ocisnap(['--storage-root', store, 'pull', '--progress', 'none', `oci:${goodLayout}:img`]);
  expect(r.exitCode, String(r.stderr)).toBe(0);
});

afterAll(async () => {
  await proxy?.stop();
  await registry?.stop();
  await authRegistry?.stop();
  await fs?.dispose();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('broken images', () => {
  test('a layer blob that does not match its digest', async () => {
    const dir = await newLayout(baseSpec());
    await editImage(dir, 'img', async ({ manifest }) => {
      const layer = manifest.layers[1]!;
      const bytes = await readBlob(dir, layer.digest);
      bytes.writeUInt8(bytes.readUInt8(bytes.length >> 1) ^ 0xff, bytes.length >> 1);
      await corruptBlob(dir, layer.digest, bytes);
    });
    expect(await failingPull([`oci:${dir}:img`])).toMatch(/layer sha256:[0-9a-f]+.*digest mismatch/);
  });

  test('a layer whose size is announced wrong', async () => {
    const dir = await newLayout();
    await editImage(dir, 'img', ({ manifest }) => {
      manifest.layers[1]!.size -= 10;
    });
    expect(await failingPull([`oci:${dir}:img`])).toMatch(/sha256:[0-9a-f]+.*(size|more data)/);
  });

  test('an unknown layer media type', async () => {
    const dir = await newLayout();
    await editImage(dir, 'img', ({ manifest }) => {
      manifest.layers[1]!.mediaType = 'application/vnd.example.unknown';
    });
    expect(await failingPull([`oci:${dir}:img`])).toMatch(/application\/vnd\.example\.unknown/);
  });

  test('a truncated gzip layer (with a matching digest)', async () => {
    const dir = await newLayout();
    await editImage(dir, 'img', async ({ manifest }) => {
      const layer = manifest.layers[1]!;
      const bytes = await readBlob(dir, layer.digest);
      Object.assign(layer, await writeBlob(dir, bytes.subarray(0, bytes.length - 100)));
    });
    expect(await failingPull([`oci:${dir}:img`])).toMatch(/layer sha256:[0-9a-f]+/);
  });

  test('a corrupt zstd layer (with a matching digest)', async () => {
    const dir = await newLayout(baseSpec('zstd'));
    await editImage(dir, 'img', async ({ manifest }) => {
      const layer = manifest.layers[1]!;
      const bytes = Buffer.from(await readBlob(dir, layer.digest));
      for (let i = 20; i < Math.min(bytes.length, 60); i++) bytes.writeUInt8(bytes.readUInt8(i) ^ 0x5a, i);
      Object.assign(layer, await writeBlob(dir, bytes));
    });
    expect(await failingPull([`oci:${dir}:img`])).toMatch(/layer sha256:[0-9a-f]+/);
  });

  test('a layer whose content does not match the config diff_ids', async () => {
    const dir = await newLayout();
    await editImage(dir, 'img', async ({ manifest, config }) => {
      const other = gzipSync(buildLayerTar({ entries: [{ type: 'file', path: 'other', content: 'other' }] }));
      Object.assign(manifest.layers[1]!, await writeBlob(dir, other));
      expect(config.rootfs.diff_ids).toHaveLength(2);
    });
    expect(await failingPull([`oci:${dir}:img`])).toMatch(/diffID.*digest mismatch/);
  });

  test('a manifest over 4 MiB', async () => {
    const dir = await newLayout();
    await editImage(dir, 'img', ({ manifest }) => {
      manifest.annotations = { padding: 'x'.repeat(4 * 1024 * 1024 + 1) };
    });
    const line = await failingPull([`oci:${dir}:img`]);
    expect(line).toMatch(/manifest sha256:[0-9a-f]+.*larger than the 4194304-byte limit/);
  });

  test('no image for the requested platform', async () => {
    expect(await failingPull(['--platform', 'linux/s390x', `oci:${goodLayout}:img`])).toMatch(/s390x/);
  });
});

describe('hostile layers', () => {
  const hostile: Array<[string, LayerEntry[]]> = [
    ['a symlink to outside, then a file through it', [
      { type: 'symlink', path: 'escape', target: '/' },
      { type: 'raw-file', name: 'escape/../../../../outside-file', content: 'pwned' },
    ]],
    ['a bare .wh. whiteout', [{ type: 'raw-file', name: 'etc/.wh.', content: '' }]],
  ];

  test.each(hostile)('%s', async (_name, entries) => {
    const spec = baseSpec();
    spec.layers.push({ entries, autoParents: false });
    const dir = await newLayout(spec);
    const line = await failingPull([`oci:${dir}:img`]);
    expect(line).toMatch(/layer sha256:[0-9a-f]+.*entry/);
    await expect(lstat(join(fs.mountpoint, 'outside-file'))).rejects.toThrow();
  });

  test('a layer with a zstd frame where gzip was announced', async () => {
    const dir = await newLayout();
    await editImage(dir, 'img', async ({ manifest }) => {
      const tar = buildLayerTar({ entries: [{ type: 'file', path: 'f', content: 'f' }] });
      Object.assign(manifest.layers[1]!, await writeBlob(dir, Buffer.from(zstdCompress(tar))));
    });
    expect(await failingPull([`oci:${dir}:img`])).toMatch(/layer sha256:[0-9a-f]+/);
  });
});

describe('registries that misbehave', () => {
  test('401 without credentials names the registry', async () => {
    await pushLayoutWithCreds();
    const line = await failingPull(['--tls-verify=false', `${authRegistry.host}/faults/private:1`]);
    expect(line).toMatch(/authentication required/);
    expect(line).toContain(authRegistry.host);
  });

  test('404 for an unknown tag', async () => {
    expect(await failingPull(['--tls-verify=false', `${registry.host}/faults/good:nope`])).toMatch(/404/);
  });

  test('500 on every blob request, after bounded retries', async () => {
    proxy.addRule({ match: (r) => r.path.includes('/blobs/'), action: { kind: 'status', status: 500 } });
    try {
      expect(await failingPull(['--tls-verify=false', `${proxy.host}/faults/good:1`])).toMatch(/500/);
    } finally {
      proxy.clearRules();
    }
  });

  test('a connection dropped mid-blob is resumed with Range', async () => {
    const fresh = join(fs.mountpoint, 'resume-store');
    proxy.requests.length = 0;
    const big = goodImage.layers[1]!.digest;
    proxy.addRule({ match: (r) => r.path.endsWith(big) && !r.headers.range, times: 1, action: { kind: 'drop-after', bytes: 1000 } });
    try {
      const r = await ocisnap(['--storage-root', fresh, 'pull', '--progress', 'none', '--tls-verify=false', `${proxy.host}/faults/good:1`]);
      expect(r.exitCode, String(r.stderr)).toBe(0);
      const ranges = proxy.requests.map((q) => `${q.path} ${q.fault ?? ''} ${q.headers.range ?? ''}`);
      expect(proxy.requests.some((q) => String(q.headers.range ?? '').startsWith('bytes=1000-')), ranges.join('\n')).toBe(true);
    } finally {
      proxy.clearRules();
    }
  });
});

async function pushLayoutWithCreds(): Promise<void> {
  const { execa } = await import('execa');
  await execa('skopeo', [
    'copy', '-q', '--dest-tls-verify=false', '--dest-creds', 'alice:secret',
    `oci:${goodLayout}:img`, `docker://${authRegistry.host}/faults/private:1`,
  ]);
}
