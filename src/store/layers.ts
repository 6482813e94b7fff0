/**
 * layers.json (containers/storage layers.go): read and written only while
 * holding layers.lock; every write is atomic and followed by a touch of the
 * lock file so other processes reload (layers.go saveLayers: `defer r.Touch()`).
 */
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { deleteSubvolume, isSubvolume } from '../btrfs/index.js';
import { atomicWriteFile } from './atomic.js';
import { readOptional } from './json-file.js';
import { layerDataDir, layerSubvolume, tarSplitPath, type StoreLayout } from './layout.js';
import type { LockFile } from './lockfile.js';
import { parseLayers, serializeLayers, type LayerRecord } from './records.js';

export async function readLayers(layout: StoreLayout): Promise<LayerRecord[]> {
  return parseLayers(layout.layersJson, await readOptional(layout.layersJson));
}

/**
 * Layers newer containers/storage (>= 1.45) keeps in the run root for volatile
 * containers (`<runroot>/btrfs-layers/volatile-layers.json`). Podman 4.3 has
 * none; ocisnap only reads it to not delete a parent of such a layer.
 */
export async function readVolatileLayers(layout: StoreLayout): Promise<LayerRecord[]> {
  if (layout.runRoot === undefined) return [];
  const file = join(layout.runRoot, 'btrfs-layers', 'volatile-layers.json');
  return parseLayers(file, await readOptional(file));
}

/** Writes layers.json (mode 0600 as layers.go) and touches layers.lock; `lock` must be held for writing. */
export async function writeLayers(layout: StoreLayout, lock: LockFile, layers: LayerRecord[]): Promise<void> {
  await atomicWriteFile(layout.layersJson, serializeLayers(layers), 0o600);
  await lock.touch();
}

/** Removes a layer's subvolume, tar-split and big-data directory (layers.go deleteInternal). */
export async function deleteLayerFiles(layout: StoreLayout, id: string): Promise<void> {
  const subvolume = layerSubvolume(layout, id);
  if (await isSubvolume(subvolume)) await deleteSubvolume(subvolume, { recursive: true });
  else await rm(subvolume, { recursive: true, force: true });
  await rm(tarSplitPath(layout, id), { force: true });
  await rm(layerDataDir(layout, id), { recursive: true, force: true });
}
