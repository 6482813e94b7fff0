/**
 * ocisnap pull against the real thing: a real docker-registry on 127.0.0.1,
 * the feature-rich fixture images (whiteouts, opaque dirs, hardlinks, setuid,
 * capabilities, devices, FIFOs, sparse, long and non-ASCII names) in gzip and
 * zstd, and Podman pulling the same images into its own btrfs store. Both
 * trees must be identical, and Podman must read ocisnap's store.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createBtrfs, type BtrfsFixture } from '../support/btrfs.js';
import { ocisnap } from '../support/cli.js';
import { buildFeatureImage, buildUpdateImage } from '../support/fixture-images.js';
import { requireCommands } from '../support/host.js';
import { pushLayout, type BuiltImage } from '../support/image-factory.js';
import { diffManifests, treeManifest } from '../support/mtree.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';

let fs: BtrfsFixture;
let registry: TestRegistry;
let work: string;
const built: Partial<Record<'gzip' | 'zstd' | 'update', BuiltImage>> = {};

// Podman limits the run root's length; one short run root per store.
const runRoots = new Map<string, string>();
const runRoot = (root: string) => {
  if (!runRoots.has(root)) runRoots.set(root, join(work, `r${runRoots.size}`));
  return runRoots.get(root)!;
};
const podmanArgs = (root: string) => ['--root', root, '--runroot', runRoot(root), '--storage-driver', 'btrfs'];
const podman = (root: string, ...args: string[]) => execa('podman', [...podmanArgs(root), ...args]);

beforeAll(async () => {
  await requireCommands('podman', 'skopeo', 'docker-registry');
  fs = await createBtrfs({ sizeMiB: 2048 });
  work = await mkdtemp(join(tmpdir(), 'ocisnap-pull-'));
  registry = await startRegistry();
  for (const compression of ['gzip', 'zstd'] as const) {
    const layout = join(work, `layout-${compression}`);
    built[compression] = await buildFeatureImage(layout, { compression });
    await pushLayout(layout, 'feature', `docker://${registry.host}/fixtures/feature:${compression}`);
  }
  const updateLayout = join(work, 'layout-update');
  built.update = await buildUpdateImage(updateLayout, { compression: 'gzip' });
  await pushLayout(updateLayout, 'update', `docker://${registry.host}/fixtures/feature:update`);
});

afterAll(async () => {
  await registry?.stop();
  if (fs) {
    // podman image mount leaves mounts inside the stores.
    await execa('sh', ['-c', `grep -o ' ${fs.mountpoint}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l`], { reject: false });
    await fs.dispose();
  }
  if (work) await rm(work, { recursive: true, force: true });
});

async function mounted(root: string, image: string): Promise<string> {
  const { stdout } = await podman(root, 'image', 'mount', image);
  return stdout.trim();
}

describe.each(['gzip', 'zstd'] as const)('%s image', (compression) => {
  test('ocisnap and podman pull identical trees, and podman reads ocisnap\'s store', async () => {
    const ref = `${registry.host}/fixtures/feature:${compression}`;
    const ours = join(fs.mountpoint, `ocisnap-${compression}`);
    const theirs = join(fs.mountpoint, `podman-${compression}`);

    const pulled = await ocisnap(['--storage-root', ours, 'pull', '--tls-verify=false', '--progress', 'json', ref]);
    expect(pulled.stderr).not.toMatch(/error/i);
    expect(pulled.exitCode).toBe(0);
    const imageId = String(pulled.stdout).trim();
    expect(`sha256:${imageId}`).toBe(built[compression]!.configDigest);
    const events = String(pulled.stderr).trim().split('\n').map((l) => JSON.parse(l) as { type: string });
    expect(events.map((e) => e.type)).toContain('layer-applied');
    expect(events.at(-1)?.type).toBe('done');

    await podman(theirs, 'pull', '-q', '--tls-verify=false', ref);

    // Podman lists and inspects what ocisnap stored.
    const listed = JSON.parse((await podman(ours, 'images', '--format', 'json')).stdout) as Array<{ Id: string; Names: string[] }>;
    expect(listed.map((i) => i.Id)).toEqual([imageId]);
    expect(listed[0]!.Names).toEqual([`${registry.host}/fixtures/feature:${compression}`]);
    const inspected = JSON.parse((await podman(ours, 'image', 'inspect', imageId)).stdout) as Array<{
      RootFS: { Layers: string[] };
      Digest: string;
    }>;
    expect(inspected[0]!.RootFS.Layers).toEqual(built[compression]!.layers.map((l) => l.diffId));
    expect(inspected[0]!.Digest).toBe(built[compression]!.manifestDigest);

    const ourTree = await treeManifest(await mounted(ours, imageId));
    const theirTree = await treeManifest(await mounted(theirs, imageId));
    expect(diffManifests(ourTree, theirTree, ['ocisnap', 'podman'])).toEqual([]);

    // ocisnap lists it too, with its size.
    const images = await ocisnap(['--storage-root', ours, 'images', '--json']);
    const summaries = JSON.parse(String(images.stdout)) as Array<{ id: string; names: string[]; size: number }>;
    expect(summaries).toHaveLength(1);
    expect(summaries[0]!.size).toBe(built[compression]!.layers.reduce((s, l) => s + l.tarSize, 0));
  });
});

test('an update pull fetches only the changed layer, and rmi keeps shared layers', async () => {
  const root = join(fs.mountpoint, 'ocisnap-update');
  const base = await ocisnap(['--storage-root', root, 'pull', '--tls-verify=false', '--progress', 'json', `${registry.host}/fixtures/feature:gzip`]);
  expect(base.exitCode).toBe(0);
  const update = await ocisnap(['--storage-root', root, 'pull', '--tls-verify=false', '--progress', 'json', `${registry.host}/fixtures/feature:update`]);
  expect(update.exitCode).toBe(0);
  const resolved = String(update.stderr)
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { type: string; layers?: number; missing?: number })
    .find((e) => e.type === 'resolved');
  expect(resolved).toMatchObject({ layers: built.update!.layers.length, missing: 1 });

  const layersBefore = JSON.parse((await podman(root, 'images', '--format', 'json')).stdout) as unknown[];
  expect(layersBefore).toHaveLength(2);
  const removed = await ocisnap(['--storage-root', root, 'rmi', `${registry.host}/fixtures/feature:gzip`]);
  expect(removed.exitCode).toBe(0);
  expect(String(removed.stdout)).toMatch(/\(1 layers freed\)/);
  // The update image still mounts with its shared base layers intact.
  const path = await mounted(root, built.update!.configDigest.slice('sha256:'.length));
  expect((await treeManifest(path)).length).toBeGreaterThan(0);
});

test('an image Podman pulled into the store is listed by ocisnap', async () => {
  const root = join(fs.mountpoint, 'shared-store');
  await podman(root, 'pull', '-q', '--tls-verify=false', `${registry.host}/fixtures/feature:zstd`);
  const images = await ocisnap(['--storage-root', root, 'images']);
  expect(images.exitCode).toBe(0);
  expect(String(images.stdout)).toContain(`${registry.host}/fixtures/feature`);
  expect(String(images.stdout)).toContain(built.zstd!.configDigest.slice('sha256:'.length, 'sha256:'.length + 12));
});
