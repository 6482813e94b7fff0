/**
 * Paths of a containers/storage graph root using the btrfs driver
 * (containers/storage store.go load()/LayerStore(), drivers/btrfs/btrfs.go,
 * layers.go, images.go, containers.go). The driver prefix is "btrfs-".
 */
import { join } from 'node:path';

export interface StoreLayout {
  graphRoot: string;
  runRoot: string | undefined;
  /** The btrfs driver's home; podman bind-mounts it onto itself (mount.MakePrivate). */
  driverHome: string;
  subvolumes: string;
  /** ocisnap's staging area for layers being filled; inside driverHome so rename(2) never crosses a mount. */
  staging: string;
  layersDir: string;
  layersJson: string;
  layersLock: string;
  imagesDir: string;
  imagesJson: string;
  imagesLock: string;
  containersDir: string;
  containersJson: string;
  containersLock: string;
  storageLock: string;
  /** ocisnap's own whole-operation lock; no containers/storage code takes it. */
  ocisnapLock: string;
  /** `<runRoot>/btrfs-layers/mountpoints.json` and its lock, when the run root is known. */
  mountpointsJson: string | undefined;
  mountpointsLock: string | undefined;
}

export function storeLayout(graphRoot: string, runRoot?: string): StoreLayout {
  const driverHome = join(graphRoot, 'btrfs');
  const layersDir = join(graphRoot, 'btrfs-layers');
  const imagesDir = join(graphRoot, 'btrfs-images');
  const containersDir = join(graphRoot, 'btrfs-containers');
  return {
    graphRoot,
    runRoot,
    driverHome,
    subvolumes: join(driverHome, 'subvolumes'),
    staging: join(driverHome, 'ocisnap-staging'),
    layersDir,
    layersJson: join(layersDir, 'layers.json'),
    layersLock: join(layersDir, 'layers.lock'),
    imagesDir,
    imagesJson: join(imagesDir, 'images.json'),
    imagesLock: join(imagesDir, 'images.lock'),
    containersDir,
    containersJson: join(containersDir, 'containers.json'),
    containersLock: join(containersDir, 'containers.lock'),
    storageLock: join(graphRoot, 'storage.lock'),
    ocisnapLock: join(graphRoot, 'ocisnap.lock'),
    mountpointsJson: runRoot === undefined ? undefined : join(runRoot, 'btrfs-layers', 'mountpoints.json'),
    mountpointsLock: runRoot === undefined ? undefined : join(runRoot, 'btrfs-layers', 'mountpoints.lock'),
  };
}

export function layerSubvolume(layout: StoreLayout, id: string): string {
  return join(layout.subvolumes, id);
}

/** The tar-split file podman writes for layers it creates (layers.go tspath). */
export function tarSplitPath(layout: StoreLayout, id: string): string {
  return join(layout.layersDir, `${id}.tar-split.gz`);
}

/** Per-layer big-data directory (layers.go datadir). */
export function layerDataDir(layout: StoreLayout, id: string): string {
  return join(layout.layersDir, id);
}

/** Per-image big-data directory (images.go datadir). */
export function imageDataDir(layout: StoreLayout, id: string): string {
  return join(layout.imagesDir, id);
}

/**
 * File name of a big-data item (store.go makeBigDataBaseName): a key made only
 * of [a-z0-9.] is its own name; any other key is "=" + standard base64 of it.
 */
export function bigDataFileName(key: string): string {
  if (key === '') throw new Error('empty big-data key');
  return /^[a-z0-9.]+$/.test(key) ? key : `=${Buffer.from(key, 'utf8').toString('base64')}`;
}

/** Layer, image and container IDs are 64 lowercase hex digits (stringid). */
export function isStorageId(value: string): boolean {
  return /^[a-f0-9]{64}$/.test(value);
}
