/**
 * The store against real podman on a real btrfs: what ocisnap stores podman
 * lists, inspects, mounts and removes; what podman stores ocisnap finds.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import { access, mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { rm } from 'node:fs/promises';
import { execa } from 'execa';
import { createBtrfs, type BtrfsFixture } from '../support/btrfs.js';
import { requireCommands } from '../support/host.js';
import { createSubvolume, isSubvolume, showSubvolume } from '../../src/btrfs/index.js';
import { NotBtrfsError } from '../../src/btrfs/errors.js';
import { layerIdsFor, LayerMountedError, Store, type LayerRecord } from '../../src/store/index.js';
import type { Digest } from '../../src/oci/types.js';
import { sha256Digest } from '../../src/oci/digest.js';
import { DigestMismatchError } from '../../src/errors.js';
import { makeLayerTar, makeWorkDir, podmanFor, storeImage, type LayerTar } from './store-support.js';

let fs: BtrfsFixture;
let work: string;
let graph: string;
let run: string;
let podman: ReturnType<typeof podmanFor>;
let base: LayerTar;
let app: LayerTar;
let other: LayerTar;

beforeAll(async () => {
  await requireCommands('podman', 'buildah', 'tar');
  fs = await createBtrfs({ sizeMiB: 512 });
  work = await makeWorkDir();
  graph = join(fs.mountpoint, 'graph');
  run = join(work, 'run');
  podman = podmanFor(graph, run);
  base = await makeLayerTar(work, 'base', { 'etc/os-release': 'ID=ocisnap-test\n', 'usr/bin/tool': '#!/bin/sh\necho tool\n' });
  app = await makeLayerTar(work, 'app', { 'opt/app/hello': 'hello from layer 2\n', 'etc/motd': 'motd\n' });
  other = await makeLayerTar(work, 'other', { 'srv/other': 'other image\n' });
});

afterAll(async () => {
  await fs?.dispose();
  if (work) await rm(work, { recursive: true, force: true });
});

interface PodmanImage {
  Id: string;
  Names?: string[];
  Digest: string;
}

async function podmanImages(): Promise<PodmanImage[]> {
  return JSON.parse(await podman('images', '--format', 'json')) as PodmanImage[];
}

describe('Store with podman', () => {
  it('refuses a graph root that is not on btrfs', async () => {
    await expect(Store.open(join(work, 'not-btrfs'))).rejects.toThrow(NotBtrfsError);
    await expect(Store.open(join(work, 'not-btrfs'))).rejects.toThrow(/is not on a btrfs filesystem/);
  });

  it('stores a 2-layer image that podman lists, inspects, mounts and removes', async () => {
    const store = await Store.open(graph, { runRoot: run });
    const img = await store.lock(() => storeImage(store, [base, app], ['localhost/ocisnap/two:1']));

    // The second layer is a snapshot of the first.
    const [l1, l2] = await Promise.all(img.layerIds.map((id) => showSubvolume(store.layerPath(id))));
    expect(l2!.parentUuid).toBe(l1!.uuid);
    expect(l1!.readonly && l2!.readonly).toBe(true);

    const listed = (await podmanImages()).find((i) => i.Id === img.id);
    expect(listed).toBeDefined();
    expect(listed!.Names).toEqual(['localhost/ocisnap/two:1']);
    expect(listed!.Digest).toBe(img.manifestDigest);

    const [inspect] = JSON.parse(await podman('image', 'inspect', 'localhost/ocisnap/two:1')) as Array<{
      Id: string;
      Digest: string;
      RootFS: { Layers: string[] };
      Created: string;
    }>;
    expect(inspect!.Id).toBe(img.id);
    expect(inspect!.RootFS.Layers).toEqual(img.diffIds);
    expect(new Date(inspect!.Created).toISOString()).toBe('2026-01-02T03:04:05.000Z');

    const mountpoint = (await podman('image', 'mount', 'localhost/ocisnap/two:1')).trim();
    expect(mountpoint).toBe(store.layerPath(img.layerIds[1]!));
    expect(await readFile(join(mountpoint, 'opt/app/hello'), 'utf8')).toBe('hello from layer 2\n');
    expect(await readFile(join(mountpoint, 'etc/os-release'), 'utf8')).toBe('ID=ocisnap-test\n');
    // While podman has it mounted, ocisnap refuses to remove it.
    await expect(store.removeImage('localhost/ocisnap/two:1')).rejects.toThrow(LayerMountedError);
    await podman('image', 'umount', 'localhost/ocisnap/two:1');

    // With the tar-split files podman rebuilds the exact layer tars: `podman save` reproduces the DiffIDs.
    const archive = join(work, 'two.oci.tar');
    await podman('save', '--format', 'oci-archive', '-o', archive, 'localhost/ocisnap/two:1');
    const saved = join(work, 'two.oci');
    await mkdir(saved);
    await execa('tar', ['-xf', archive, '-C', saved]);
    const index = JSON.parse(await readFile(join(saved, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> };
    const savedManifest = JSON.parse(
      await readFile(join(saved, 'blobs/sha256', index.manifests[0]!.digest.slice('sha256:'.length)), 'utf8'),
    ) as { layers: Array<{ digest: string }> };
    // podman compresses on save; the uncompressed layers are exactly the recorded ones.
    const savedDiffIds = await Promise.all(
      savedManifest.layers.map(async (l) => {
        const blob = await readFile(join(saved, 'blobs/sha256', l.digest.slice('sha256:'.length)));
        return sha256Digest(gunzipSync(blob));
      }),
    );
    expect(savedDiffIds).toEqual(img.diffIds);

    await podman('rmi', 'localhost/ocisnap/two:1');
    expect(await store.findImage(img.id)).toBeUndefined();
    for (const id of img.layerIds) {
      expect(await store.getLayer(id)).toBeUndefined();
      expect(await isSubvolume(store.layerPath(id))).toBe(false);
    }
  });

  it('finds images podman created and computes the layer IDs containers/image gives them', async () => {
    // podman import: one layer; buildah bud with COPY: a second one, committed through
    // containers/image's storage destination like a pull.
    await podman('import', base.path, 'localhost/podman/base:1');
    const ctx = join(work, 'ctx');
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, 'extra'), 'extra\n');
    await writeFile(join(ctx, 'Containerfile'), 'FROM localhost/podman/base:1\nCOPY extra /extra\n');
    await execa('buildah', ['--root', graph, '--runroot', run, '--storage-driver', 'btrfs', 'bud', '-q', '-t', 'localhost/podman/built:1', ctx], {
      stdin: 'ignore',
    });

    const store = await Store.open(graph, { runRoot: run });
    const [inspect] = JSON.parse(await podman('image', 'inspect', 'localhost/podman/built:1')) as Array<{
      Id: string;
      RootFS: { Layers: Digest[] };
    }>;
    const diffIds = inspect!.RootFS.Layers;
    expect(diffIds.length).toBe(2);

    const found = await store.findImage('localhost/podman/built:1');
    expect(found?.id).toBe(inspect!.Id);
    expect((await store.findImage('built:1'))?.id).toBe(inspect!.Id);
    expect((await store.findImage(inspect!.Id.slice(0, 10)))?.id).toBe(inspect!.Id);
    expect((await store.listImages()).map((i) => i.names?.[0])).toEqual(
      expect.arrayContaining(['localhost/podman/base:1', 'localhost/podman/built:1']),
    );

    const ids = layerIdsFor(diffIds);
    expect(found!.layer).toBe(ids[1]);
    const top = await store.getLayer(ids[1]!);
    expect(top?.parent).toBe(ids[0]);
    expect(top?.['diff-digest']).toBe(diffIds[1]);
    // The config is stored under its digest, as podman stores it.
    const config = JSON.parse((await store.imageBigData(found!.id, `sha256:${found!.id}`)).toString('utf8')) as {
      rootfs: { diff_ids: string[] };
    };
    expect(config.rootfs.diff_ids).toEqual(diffIds);

    // Sharing: ocisnap storing an image whose first layer is podman's base reuses that layer.
    let filled = 0;
    const layer = await store.createLayer({ id: ids[0]! }, async () => {
      filled++;
      return { diffDigest: base.diffId, diffSize: base.size };
    });
    expect(filled).toBe(0);
    expect(layer.id).toBe(ids[0]);

    // ocisnap removes what podman made; podman agrees.
    const removed = await store.removeImage('localhost/podman/built:1');
    expect(removed.removedLayers).toEqual([ids[1]]);
    expect((await podmanImages()).map((i) => i.Names?.[0])).toEqual(['localhost/podman/base:1']);
    await podman('rmi', 'localhost/podman/base:1');
  });

  it('cleans an interrupted createLayer, and incomplete layers left by a killed process', async () => {
    const store = await Store.open(graph, { runRoot: run });
    const [id] = layerIdsFor([base.diffId]);
    await expect(
      store.createLayer({ id: id! }, async (dir) => {
        await writeFile(join(dir, 'partial'), 'x');
        throw new Error('network went away');
      }),
    ).rejects.toThrow('network went away');
    expect(await store.getLayer(id!)).toBeUndefined();
    expect(await isSubvolume(store.layerPath(id!))).toBe(false);
    expect(await readdir(store.layout.staging)).toEqual([]);

    // A killed process: an incomplete record with its subvolume, a staging leftover, a temp file.
    const deadId = 'd'.repeat(64);
    await createSubvolume(store.layerPath(deadId));
    await writeFile(join(store.layerPath(deadId), 'half'), 'written');
    await createSubvolume(join(store.layout.staging, `${'e'.repeat(64)}-1-x`));
    await writeFile(join(store.layout.layersDir, '.tmp-layers.json123'), '[');
    const layersJson = store.layout.layersJson;
    const before = JSON.parse(await readFile(layersJson, 'utf8').catch(() => '[]')) as LayerRecord[];
    await writeFile(layersJson, JSON.stringify([...before, { id: deadId, created: new Date().toISOString(), flags: { incomplete: true } }]));

    const reopened = await Store.open(graph, { runRoot: run });
    expect(await reopened.getLayer(deadId)).toBeUndefined();
    expect(await isSubvolume(reopened.layerPath(deadId))).toBe(false);
    expect(await readdir(reopened.layout.staging)).toEqual([]);
    await expect(access(join(store.layout.layersDir, '.tmp-layers.json123'))).rejects.toThrow();

    // Podman still works with the store, and a new image goes in fine.
    const img = await reopened.lock(() => storeImage(reopened, [base], ['localhost/ocisnap/after-crash:1']));
    expect((await podmanImages()).some((i) => i.Id === img.id)).toBe(true);
    await reopened.removeImage(img.id);
    expect(await podmanImages()).toEqual([]);
  });

  it('removeImage keeps layers shared with another image', async () => {
    const store = await Store.open(graph, { runRoot: run });
    const one = await storeImage(store, [base, app], ['localhost/ocisnap/one:1']);
    const two = await storeImage(store, [base, other], ['localhost/ocisnap/two:1']);
    expect(two.layerIds[0]).toBe(one.layerIds[0]);

    const r1 = await store.removeImage('one:1');
    expect(r1.image.id).toBe(one.id);
    expect(r1.removedLayers).toEqual([one.layerIds[1]]);
    expect(await isSubvolume(store.layerPath(one.layerIds[0]!))).toBe(true);
    expect(await isSubvolume(store.layerPath(one.layerIds[1]!))).toBe(false);

    const mountpoint = (await podman('image', 'mount', 'localhost/ocisnap/two:1')).trim();
    expect(await readFile(join(mountpoint, 'srv/other'), 'utf8')).toBe('other image\n');
    expect(await readFile(join(mountpoint, 'usr/bin/tool'), 'utf8')).toContain('echo tool');
    await podman('image', 'umount', 'localhost/ocisnap/two:1');

    const r2 = await store.removeImage(two.id.slice(0, 12));
    expect(r2.removedLayers).toEqual([two.layerIds[1], two.layerIds[0]]);
    expect(await store.listLayers()).toEqual([]);
    expect(await podmanImages()).toEqual([]);
  });

  it('lets buildah build on an ocisnap image, and then keeps the shared layer', async () => {
    const store = await Store.open(graph, { runRoot: run });
    const mine = await storeImage(store, [base], ['localhost/ocisnap/base:1']);
    const ctx = join(work, 'ctx-on-ocisnap');
    await mkdir(ctx, { recursive: true });
    await writeFile(join(ctx, 'added'), 'added by buildah\n');
    await writeFile(join(ctx, 'Containerfile'), 'FROM localhost/ocisnap/base:1\nCOPY added /added\n');
    await execa('buildah', ['--root', graph, '--runroot', run, '--storage-driver', 'btrfs', 'bud', '-q', '-t', 'localhost/podman/child:1', ctx], {
      stdin: 'ignore',
    });
    const child = await store.findImage('localhost/podman/child:1');
    expect((await store.getLayer(child!.layer!))?.parent).toBe(mine.layerIds[0]);
    const mountpoint = (await podman('image', 'mount', 'localhost/podman/child:1')).trim();
    expect(await readFile(join(mountpoint, 'added'), 'utf8')).toBe('added by buildah\n');
    expect(await readFile(join(mountpoint, 'etc/os-release'), 'utf8')).toBe('ID=ocisnap-test\n');
    await podman('image', 'umount', 'localhost/podman/child:1');

    // The base layer is the parent of podman's layer: removing ocisnap's image keeps it.
    const removed = await store.removeImage('localhost/ocisnap/base:1');
    expect(removed.removedLayers).toEqual([]);
    expect(await isSubvolume(store.layerPath(mine.layerIds[0]!))).toBe(true);
    await podman('rmi', 'localhost/podman/child:1');
    expect(await store.listLayers()).toEqual([]);
  });

  it('records the index digest as the image digest when the manifest came from an index', async () => {
    const store = await Store.open(graph, { runRoot: run });
    const [layerId] = layerIdsFor([base.diffId]);
    await store.createLayer({ id: layerId! }, async (dir) => {
      await execa('tar', ['-xpf', base.path, '-C', dir]);
      return { diffDigest: base.diffId, diffSize: base.size };
    });
    const configBytes = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [base.diffId] } }));
    const id = createHash('sha256').update(configBytes).digest('hex');
    const manifestBytes = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${id}`, size: configBytes.length },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: base.diffId, size: base.size }],
      }),
    );
    const manifestDigest = sha256Digest(manifestBytes);
    const indexBytes = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.index.v1+json',
        manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: manifestDigest, size: manifestBytes.length, platform: { os: 'linux', architecture: 'amd64' } }],
      }),
    );
    const indexDigest = sha256Digest(indexBytes);
    await expect(
      store.putImage({ id, manifestDigest, manifestBytes: Buffer.from('{}'), configBytes, topLayer: layerId!, names: [] }),
    ).rejects.toThrow(DigestMismatchError);
    const image = await store.putImage({
      id,
      manifestDigest,
      manifestBytes,
      configBytes,
      topLayer: layerId!,
      names: ['localhost/ocisnap/indexed:1'],
      index: { digest: indexDigest, bytes: indexBytes },
    });
    expect(image.digest).toBe(indexDigest);
    expect((await store.findImage(manifestDigest))?.id).toBe(id);
    expect((await store.findImage(`localhost/ocisnap/indexed@${indexDigest}`))?.id).toBe(id);
    const [inspect] = JSON.parse(await podman('image', 'inspect', 'localhost/ocisnap/indexed:1')) as Array<{ Digest: string; RepoDigests: string[] }>;
    expect(inspect!.Digest).toBe(indexDigest);
    expect(inspect!.RepoDigests).toEqual(expect.arrayContaining([`localhost/ocisnap/indexed@${indexDigest}`, `localhost/ocisnap/indexed@${manifestDigest}`]));
    await podman('rmi', 'localhost/ocisnap/indexed:1');
    expect(await store.listImages()).toEqual([]);
  });

  it('moves a name to the newer image and keeps names and digests on re-put', async () => {
    const store = await Store.open(graph, { runRoot: run });
    const v1 = await storeImage(store, [base], ['localhost/ocisnap/os:latest', 'localhost/ocisnap/os:1']);
    const v2 = await storeImage(store, [base, app], ['localhost/ocisnap/os:latest', 'localhost/ocisnap/os:2']);
    expect((await store.findImage(v1.id))?.names).toEqual(['localhost/ocisnap/os:1']);
    expect((await store.findImage('localhost/ocisnap/os'))?.id).toBe(v2.id);
    const again = await storeImage(store, [base], ['localhost/ocisnap/os:1.0']);
    expect(again.id).toBe(v1.id);
    expect((await store.findImage(v1.id))?.names).toEqual(['localhost/ocisnap/os:1.0', 'localhost/ocisnap/os:1']);
    const listed = await podmanImages();
    expect(listed.find((i) => i.Id === v2.id)?.Names?.sort()).toEqual(['localhost/ocisnap/os:2', 'localhost/ocisnap/os:latest']);
    expect(listed.find((i) => i.Id === v1.id)?.Names?.sort()).toEqual(['localhost/ocisnap/os:1', 'localhost/ocisnap/os:1.0']);
    await store.removeImage(v2.id);
    await store.removeImage(v1.id);
    expect(await store.listLayers()).toEqual([]);
  });
});
