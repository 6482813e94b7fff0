/**
 * Layer IDs and records as podman writes them when it pulls from a real
 * registry (docker-registry on 127.0.0.1), compared with what ocisnap computes
 * and reads.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { createBtrfs, type BtrfsFixture } from '../support/btrfs.js';
import { requireCommands } from '../support/host.js';
import { compressionCode, imageDigests, layerIdsFor, Store } from '../../src/store/index.js';
import type { Digest } from '../../src/oci/types.js';
import { makeLayerTar, makeWorkDir, podmanFor, storeImage } from './store-support.js';

let fs: BtrfsFixture;
let work: string;
let registry: ResultPromise | undefined;
let registryHost: string;

async function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => resolvePort(typeof addr === 'object' && addr ? addr.port : 0));
    });
  });
}

beforeAll(async () => {
  await requireCommands('podman', 'buildah', 'docker-registry');
  fs = await createBtrfs({ sizeMiB: 512 });
  work = await makeWorkDir();
  const port = await freePort();
  registryHost = `127.0.0.1:${port}`;
  const config = join(work, 'registry.yml');
  await writeFile(
    config,
    `version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: ${join(work, 'registry')}\nhttp:\n  addr: ${registryHost}\n`,
  );
  registry = execa('docker-registry', ['serve', config], { reject: false, stdin: 'ignore' });
  for (let i = 0; i < 100; i++) {
    const ok = await fetch(`http://${registryHost}/v2/`).then((r) => r.ok, () => false);
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('docker-registry did not start');
});

afterAll(async () => {
  registry?.kill();
  await registry;
  await fs?.dispose();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('podman pull into the store', () => {
  it('gives layers the IDs layerIdsFor computes, and ocisnap reads what the pull wrote', async () => {
    // Build a 2-layer image in one store and push it.
    const buildGraph = join(fs.mountpoint, 'build');
    const run = join(work, 'run-build');
    const build = podmanFor(buildGraph, run);
    const base = await makeLayerTar(work, 'base', { 'etc/os-release': 'ID=pulled\n' });
    await build('import', base.path, 'localhost/pull/base:1');
    const ctx = join(work, 'ctx');
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, 'extra'), 'extra\n');
    await writeFile(join(ctx, 'Containerfile'), 'FROM localhost/pull/base:1\nCOPY extra /extra\n');
    await execa('buildah', ['--root', buildGraph, '--runroot', run, '--storage-driver', 'btrfs', 'bud', '-q', '-t', 'localhost/pull/app:1', ctx], {
      stdin: 'ignore',
    });
    await build('push', '--tls-verify=false', 'localhost/pull/app:1', `docker://${registryHost}/pull/app:1`);

    // Pull it into a fresh store with podman.
    const graph = join(fs.mountpoint, 'graph');
    const podman = podmanFor(graph, join(work, 'run'));
    await podman('pull', '-q', '--tls-verify=false', `docker://${registryHost}/pull/app:1`);
    const [inspect] = JSON.parse(await podman('image', 'inspect', `${registryHost}/pull/app:1`)) as Array<{
      Id: string;
      Digest: Digest;
      RootFS: { Layers: Digest[] };
    }>;

    const store = await Store.open(graph);
    const image = await store.findImage(`${registryHost}/pull/app:1`);
    expect(image?.id).toBe(inspect!.Id);
    expect(imageDigests(image!)).toContain(inspect!.Digest);
    expect((await store.findImage(inspect!.Digest))?.id).toBe(inspect!.Id);

    const ids = layerIdsFor(inspect!.RootFS.Layers);
    expect(image!.layer).toBe(ids[1]);
    const layers = await store.listLayers();
    expect(layers.map((l) => l.id).sort()).toEqual([...ids].sort());
    const top = layers.find((l) => l.id === ids[1])!;
    expect(top.parent).toBe(ids[0]);
    expect(top['diff-digest']).toBe(inspect!.RootFS.Layers[1]);
    // Pushed layers are gzip-compressed; containers/storage records pkg/archive's Gzip value.
    expect(top.compression).toBe(compressionCode.gzip);
    expect(top['compressed-diff-digest']).toMatch(/^sha256:[a-f0-9]{64}$/);
    expect(top['compressed-diff-digest']).not.toBe(top['diff-digest']);

    // An image ocisnap stores on top of the pulled base shares its layer.
    const extra = await makeLayerTar(work, 'ocisnap-extra', { 'opt/o': 'o\n' });
    const mine = await storeImage(
      store,
      [{ path: base.path, diffId: inspect!.RootFS.Layers[0]!, size: base.size }, extra],
      ['localhost/ocisnap/on-pulled:1'],
    );
    expect(mine.layerIds[0]).toBe(ids[0]);
    const removed = await store.removeImage(`${registryHost}/pull/app:1`);
    expect(removed.removedLayers).toEqual([ids[1]]);
    const names = (JSON.parse(await podman('images', '--format', 'json')) as Array<{ Names?: string[] }>).map((i) => i.Names?.[0]);
    expect(names).toEqual(['localhost/ocisnap/on-pulled:1']);
  });
});
