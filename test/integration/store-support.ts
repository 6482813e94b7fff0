/**
 * Shared helpers of the store integration tests: podman on a given graph root,
 * layer tarballs made with tar(1), and images assembled through Store.
 * (Not a test file itself: vitest only collects *.test.ts.)
 */
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { execa } from 'execa';
import type { Digest } from '../../src/oci/types.js';
import { createReadStream } from 'node:fs';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { layerIdsFor, TarSplitRecorder, type Store } from '../../src/store/index.js';

export function podmanFor(graphRoot: string, runRoot: string) {
  return async (...args: string[]) => {
    const r = await execa('podman', ['--root', graphRoot, '--runroot', runRoot, '--storage-driver', 'btrfs', ...args], {
      reject: false,
      stdin: 'ignore',
    });
    if (r.exitCode !== 0) throw new Error(`podman ${args.join(' ')} failed (${r.exitCode}): ${r.stderr}`);
    return r.stdout;
  };
}

export interface LayerTar {
  path: string;
  diffId: Digest;
  size: number;
}

/** A layer tarball holding `files` (path → content), made by tar(1) as root-owned entries. */
export async function makeLayerTar(workDir: string, name: string, files: Record<string, string>): Promise<LayerTar> {
  const src = await mkdtemp(join(workDir, `src-${name}-`));
  for (const [path, content] of Object.entries(files)) {
    await mkdir(dirname(join(src, path)), { recursive: true });
    await writeFile(join(src, path), content);
  }
  const path = join(workDir, `${name}.tar`);
  await execa('tar', ['--numeric-owner', '--owner=0', '--group=0', '--sort=name', '-C', src, '-cf', path, '.']);
  await rm(src, { recursive: true });
  const data = await readFile(path);
  return { path, diffId: `sha256:${createHash('sha256').update(data).digest('hex')}`, size: data.length };
}

export interface BuiltImage {
  id: string;
  manifestDigest: Digest;
  diffIds: Digest[];
  layerIds: string[];
}

/** Stores an image of `layers` through Store: createLayer (tar -x as the fill) + putImage. */
export async function storeImage(store: Store, layers: LayerTar[], names: string[], created = new Date('2026-01-02T03:04:05Z')): Promise<BuiltImage> {
  const diffIds = layers.map((l) => l.diffId);
  const layerIds = layerIdsFor(diffIds);
  for (const [i, layer] of layers.entries()) {
    const parent = i > 0 ? layerIds[i - 1] : undefined;
    await store.createLayer({ id: layerIds[i]!, ...(parent ? { parent } : {}), compression: 'none' }, async (dir) => {
      await execa('tar', ['--numeric-owner', '-xpf', layer.path, '-C', dir]);
      // Stand-in for the real pipeline: the tar stream passes through a TarSplitRecorder.
      const recorder = new TarSplitRecorder();
      await pipeline(createReadStream(layer.path), recorder, new Writable({ write: (_c, _e, cb) => cb() }));
      const tarSplit = recorder.result();
      return { diffDigest: layer.diffId, diffSize: layer.size, uids: [0], gids: [0], ...(tarSplit ? { tarSplit } : {}) };
    });
  }
  const configBytes = Buffer.from(
    JSON.stringify({
      created: created.toISOString(),
      architecture: 'amd64',
      os: 'linux',
      config: { Cmd: ['/bin/sh'] },
      rootfs: { type: 'layers', diff_ids: diffIds },
      history: diffIds.map(() => ({ created: created.toISOString(), created_by: 'ocisnap test' })),
    }),
  );
  const configDigest: Digest = `sha256:${createHash('sha256').update(configBytes).digest('hex')}`;
  const manifestBytes = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: configBytes.length },
      layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: l.diffId, size: l.size })),
    }),
  );
  const manifestDigest: Digest = `sha256:${createHash('sha256').update(manifestBytes).digest('hex')}`;
  const id = configDigest.slice('sha256:'.length);
  await store.putImage({ id, manifestDigest, manifestBytes, configBytes, topLayer: layerIds.at(-1)!, names, created });
  return { id, manifestDigest, diffIds, layerIds };
}

export async function makeWorkDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'ocisnap-store-'));
}
