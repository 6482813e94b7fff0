/**
 * The layer and image store: a containers/storage graph root with the btrfs
 * driver, shared with podman. Podman sees what ocisnap stores and the other
 * way round.
 *
 * Concurrency follows containers/storage: layers.json and images.json are read
 * and replaced only under their fcntl lock files (taken in podman's order:
 * layers, images, containers), held for a read-modify-write and no longer, so
 * podman readers are never blocked by a long layer fill. A layer is filled in a
 * staging subvolume under `btrfs/ocisnap-staging/` and only moved to
 * `btrfs/subvolumes/<id>` and recorded once complete: podman deletes layers it
 * finds with `flags.incomplete` whenever it loads the store for writing
 * (layers.go Load), so a record of an unfinished layer would not survive a
 * concurrent `podman pull`. `lock()` serializes whole ocisnap operations with
 * a separate lock file podman does not know about.
 */
import { chmod, mkdir, readdir, rename, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import {
  createSubvolume,
  deleteSubvolume,
  isBtrfs,
  isSubvolume,
  nearestExisting,
  NotBtrfsError,
  setReadonly,
  snapshotSubvolume,
  syncFilesystem,
} from '../btrfs/index.js';
import { DigestMismatchError, describeError, OcisnapError, UsageError } from '../errors.js';
import { digestHex, sha256Digest } from '../oci/digest.js';
import type { Digest } from '../oci/types.js';
import { atomicWriteFile, removeStaleTempFiles } from './atomic.js';
import { readImageBigData, writeImageBigData } from './bigdata.js';
import {
  ImageConflictError,
  ImageInUseError,
  ImageUnknownError,
  LayerMountedError,
  LayerUnknownError,
  StoreOperationError,
} from './errors.js';
import { lookupImage, readContainers, readImages, readMountpoints, writeImages } from './images.js';
import { imageDataDir, isStorageId, layerSubvolume, storeLayout, tarSplitPath, type StoreLayout } from './layout.js';
import { deleteLayerFiles, readLayers, readVolatileLayers, writeLayers } from './layers.js';
import { LockFile, type LockOptions } from './lockfile.js';
import type { TarSplit } from './tar-split.js';
import {
  compressionCode,
  formatTime,
  isIncomplete,
  type ImageRecord,
  type LayerCompression,
  type LayerRecord,
} from './records.js';

export interface StoreOptions {
  /** Podman's run root for this graph root; lets ocisnap see podman's layer mounts. */
  runRoot?: string;
}

export interface LayerSpec {
  id: string;
  parent?: string;
  compressedDigest?: Digest;
  compressedSize?: number;
  compression?: LayerCompression;
}

/** A layer being filled in the staging area (Store.stageLayer); not in the store until committed. */
export interface StagedLayer {
  readonly spec: LayerSpec;
  /** The writable subvolume to fill. */
  readonly dir: string;
}

export interface FillResult {
  /** DiffID: sha256 of the uncompressed layer tar. */
  diffDigest: Digest;
  /** Size of the uncompressed layer tar. */
  diffSize: number;
  /** UIDs/GIDs of the tar's entries (layers.go records them as uidset/gidset); omitted when unknown. */
  uids?: number[];
  gids?: number[];
  /**
   * The layer tar recorded by a TarSplitRecorder (tar-split.ts); stored as
   * `<id>.tar-split.gz` so podman push/save can rebuild the exact tar. Must
   * describe the same stream as diffDigest/diffSize.
   */
  tarSplit?: TarSplit;
}

export interface ImageSpec {
  /** Config digest hex (containers/image's image ID); must match configBytes. */
  id: string;
  manifestDigest: Digest;
  manifestBytes: Buffer;
  configBytes: Buffer;
  topLayer: string;
  /** Fully qualified names, e.g. "localhost:5000/os:1"; a name another image holds moves here. */
  names: string[];
  /** The image's creation time (from its config); default now. */
  created?: Date;
  /** The index (manifest list) the manifest was selected from, stored as podman does. */
  index?: { digest: Digest; bytes: Buffer };
  /**
   * Extra big-data items of ocisnap's own, written with the image record (e.g.
   * "ocisnap.verifications"); keys must start with "ocisnap." so they never
   * collide with containers/image's (containers/storage keeps unknown keys).
   */
  bigData?: Record<string, Buffer>;
}

const incompleteFlag = 'incomplete';
/** Mode of a new base layer's root (drivers/btrfs/btrfs.go defaultPerms). */
const baseLayerMode = 0o555;

export class Store {
  private readonly ocisnapLock: LockFile;
  private readonly layersLock: LockFile;
  private readonly imagesLock: LockFile;
  private readonly containersLock: LockFile;
  /** Staged layers a snapshot was taken of: their data is on disk already. */
  private readonly flushed = new WeakSet<StagedLayer>();

  private constructor(readonly layout: StoreLayout) {
    this.ocisnapLock = LockFile.for(layout.ocisnapLock);
    this.layersLock = LockFile.for(layout.layersLock);
    this.imagesLock = LockFile.for(layout.imagesLock);
    this.containersLock = LockFile.for(layout.containersLock);
  }

  get graphRoot(): string {
    return this.layout.graphRoot;
  }

  /**
   * Opens (creating if missing) the store at `graphRoot`, which must be on btrfs,
   * and cleans what interrupted runs left: incomplete layers (podman's or
   * ocisnap's), temp files, ocisnap staging subvolumes, image data without a record.
   */
  static async open(graphRoot: string, opts: StoreOptions = {}): Promise<Store> {
    const root = resolve(graphRoot);
    const existing = await nearestExisting(root);
    if (!(await isBtrfs(existing))) throw new NotBtrfsError(root, 'store graph root');
    const layout = storeLayout(root, opts.runRoot === undefined ? undefined : resolve(opts.runRoot));
    for (const dir of [root, layout.driverHome, layout.subvolumes, layout.layersDir, layout.imagesDir, layout.containersDir]) {
      await mkdir(dir, { recursive: true, mode: 0o700 });
    }
    if (!(await isBtrfs(root))) throw new NotBtrfsError(root, 'store graph root');
    const store = new Store(layout);
    await store.cleanup();
    return store;
  }

  /** Runs `fn` holding ocisnap's store-wide lock (other ocisnap processes wait; podman does not). */
  async lock<T>(fn: () => Promise<T>, opts: LockOptions = {}): Promise<T> {
    return this.ocisnapLock.with('write', fn, opts);
  }

  layerPath(id: string): string {
    return layerSubvolume(this.layout, id);
  }

  async listLayers(): Promise<LayerRecord[]> {
    return this.layersLock.with('read', () => readLayers(this.layout));
  }

  async listImages(): Promise<ImageRecord[]> {
    return this.imagesLock.with('read', () => readImages(this.layout));
  }

  async getLayer(id: string): Promise<LayerRecord | undefined> {
    return (await this.listLayers()).find((l) => l.id === id);
  }

  async findImage(nameOrId: string): Promise<ImageRecord | undefined> {
    return lookupImage(await this.listImages(), nameOrId);
  }

  /** A big-data item of an image, e.g. "manifest" or "sha256:<config hex>". */
  async imageBigData(imageId: string, key: string): Promise<Buffer> {
    return this.imagesLock.with('read', () => readImageBigData(this.layout, imageId, key));
  }

  /**
   * Creates layer `spec.id`: stageLayer(), `fill(dir)` (`dir` is the staging
   * path; do not keep it), then commitLayer(). Returns the existing record
   * without calling `fill` when the layer is already complete. On failure
   * nothing is left behind. Callers run it inside lock() so two ocisnap
   * processes do not fill the same layer.
   */
  async createLayer(spec: LayerSpec, fill: (dir: string) => Promise<FillResult>): Promise<LayerRecord> {
    checkLayerIds(spec);
    const ready = await this.layersLock.with('write', async (lock) => {
      const layers = await readLayers(this.layout);
      const found = layers.find((l) => l.id === spec.id);
      if (found && !isIncomplete(found)) return found;
      if (found) {
        // Podman holds layers.lock for all of its layer creation, so under the lock an
        // incomplete record is a leftover of a killed process.
        await this.dropLayers(lock, layers, [found.id]);
      }
      return undefined;
    });
    if (ready) return ready;
    const staged = await this.stageLayer(spec);
    let result: FillResult;
    try {
      result = await fill(staged.dir);
    } catch (err) {
      await this.discardLayer(staged);
      throw err;
    }
    return this.commitLayer(staged, result);
  }

  /**
   * Starts layer `spec.id` in the staging area: a writable snapshot of its
   * parent (or a new, empty subvolume), to be filled and then given to
   * commitLayer() or discardLayer(). The parent is a complete layer of the
   * store, or `below`: the parent still staged, so a pull can fill a layer
   * while the one below it is being recorded. Callers run it inside lock().
   */
  async stageLayer(spec: LayerSpec, below?: StagedLayer): Promise<StagedLayer> {
    checkLayerIds(spec);
    if (below !== undefined && below.spec.id !== spec.parent) {
      throw new UsageError(`staged layer ${below.spec.id} is not the parent of layer ${spec.id}`);
    }
    if (spec.parent !== undefined && below === undefined) {
      const parent = spec.parent;
      await this.layersLock.with('read', async () => this.requireComplete(await readLayers(this.layout), parent, spec.id));
    }
    await mkdir(this.layout.staging, { recursive: true, mode: 0o700 });
    const dir = join(this.layout.staging, `${spec.id}-${process.pid}-${Date.now().toString(36)}`);
    try {
      if (below !== undefined) {
        await snapshotSubvolume(below.dir, dir);
        // btrfs writes a subvolume's data out before it snapshots it (fs/btrfs/ioctl.c
        // btrfs_mksnapshot: start delalloc, wait for ordered extents; the snapshot is committed).
        this.flushed.add(below);
      } else if (spec.parent !== undefined) {
        await snapshotSubvolume(this.layerPath(spec.parent), dir);
      } else {
        await createSubvolume(dir);
        await chmod(dir, baseLayerMode);
      }
    } catch (err) {
      await this.discardStaged(dir);
      throw err;
    }
    return { spec, dir };
  }

  /** Throws a staged layer away. */
  async discardLayer(staged: StagedLayer): Promise<void> {
    await this.discardStaged(staged.dir);
  }

  /**
   * Records a filled staged layer: its data is made durable (unless a snapshot
   * of it already did that), then it is moved to layerPath(id), made read-only
   * and recorded. Its parent must be complete by now. On failure the staged
   * layer is discarded.
   */
  async commitLayer(staged: StagedLayer, result: FillResult): Promise<LayerRecord> {
    const { spec, dir } = staged;
    try {
      const ts = result.tarSplit;
      if (ts && (ts.tarDigest !== result.diffDigest || ts.tarSize !== result.diffSize)) {
        throw new StoreOperationError(
          `layer ${spec.id}: the tar-split describes ${ts.tarDigest} (${ts.tarSize} bytes), not the layer's ${result.diffDigest} (${result.diffSize} bytes)`,
        );
      }
      // A complete record must never point at data a crash could still lose.
      if (!this.flushed.has(staged)) await syncFilesystem(dir);
      return await this.layersLock.with('write', async (lock) => {
        const layers = await readLayers(this.layout);
        const raced = layers.find((l) => l.id === spec.id && !isIncomplete(l));
        if (raced) {
          await this.discardStaged(dir);
          return raced;
        }
        if (spec.parent !== undefined) this.requireComplete(layers, spec.parent, spec.id);
        const stale = layers.filter((l) => l.id === spec.id).map((l) => l.id);
        const kept = stale.length > 0 ? await this.dropLayers(lock, layers, stale) : layers;
        const record = this.layerRecord(spec, result);
        // Same protocol as layers.go Put: record as incomplete, put the data in place,
        // then clear the flag; a crash in between leaves a record the next load deletes.
        record.flags = { [incompleteFlag]: true };
        kept.push(record);
        await writeLayers(this.layout, lock, kept);
        try {
          if (result.tarSplit) await atomicWriteFile(tarSplitPath(this.layout, spec.id), result.tarSplit.gz, 0o600);
          const target = this.layerPath(spec.id);
          // A subvolume without a record (seen under the lock) is a leftover: podman records first.
          if (await isSubvolume(target)) await deleteSubvolume(target, { recursive: true });
          await rename(dir, target);
          // Read-only only now: renaming a read-only subvolume fails with EROFS (its ".." changes).
          await setReadonly(target, true);
          delete record.flags;
          await writeLayers(this.layout, lock, kept);
          return record;
        } catch (err) {
          await this.dropLayers(lock, kept, [spec.id]).catch(() => undefined);
          throw err;
        }
      });
    } catch (err) {
      await this.discardStaged(dir);
      if (err instanceof OcisnapError) throw err;
      throw new StoreOperationError(`cannot record layer ${spec.id}: ${describeError(err)}`, { cause: err });
    }
  }


  /**
   * Records an image (images.json entry + big data as containers/image's storage
   * destination writes them) whose top layer exists. Putting an existing image
   * again adds the names; a name held by another image moves to this one.
   */
  async putImage(spec: ImageSpec): Promise<ImageRecord> {
    const configDigest = sha256Digest(spec.configBytes);
    if (!isStorageId(spec.id) || digestHex(configDigest) !== spec.id) {
      throw new DigestMismatchError(`config of image ${spec.names[0] ?? spec.id}`, `sha256:${spec.id}`, configDigest);
    }
    const manifestDigest = sha256Digest(spec.manifestBytes);
    if (manifestDigest !== spec.manifestDigest) {
      throw new DigestMismatchError(`manifest of image ${spec.names[0] ?? spec.id}`, spec.manifestDigest, manifestDigest);
    }
    if (spec.index && sha256Digest(spec.index.bytes) !== spec.index.digest) {
      throw new DigestMismatchError(`index of image ${spec.names[0] ?? spec.id}`, spec.index.digest, sha256Digest(spec.index.bytes));
    }
    // Lock order of containers/storage store.go CreateImage: layers, then images.
    return this.layersLock.with('read', async () => {
      const layers = await readLayers(this.layout);
      this.requireComplete(layers, spec.topLayer, `image ${spec.id}`);
      return this.imagesLock.with('write', async (lock) => {
        const images = await readImages(this.layout);
        let image = images.find((i) => i.id === spec.id);
        if (image && image.layer !== spec.topLayer) {
          throw new ImageConflictError(spec.id, image.layer ?? '', spec.topLayer);
        }
        if (!image) {
          // Field order of images.go Image, as encoding/json writes it.
          image = {
            id: spec.id,
            // The first manifest-like big data item stored sets it (images.go recomputeDigests):
            // containers/image stores the top-level index before the instance manifest.
            digest: spec.index?.digest ?? spec.manifestDigest,
            names: [],
            layer: spec.topLayer,
            metadata: JSON.stringify({ 'signatures-sizes': { [spec.manifestDigest]: [] } }),
            'big-data-names': [],
            'big-data-sizes': {},
            'big-data-digests': {},
            created: formatTime(spec.created ?? new Date()),
          };
          images.push(image);
        }
        // Keys and order of containers/image storage_dest.go Commit.
        const items: Array<[string, Buffer]> = [[`sha256:${spec.id}`, spec.configBytes]];
        if (spec.index) items.push([`manifest-${spec.index.digest}`, spec.index.bytes]);
        items.push([`manifest-${spec.manifestDigest}`, spec.manifestBytes]);
        items.push(['manifest', spec.manifestBytes]);
        items.push([`signature-${digestHex(spec.manifestDigest)}`, Buffer.alloc(0)]);
        for (const [key, data] of Object.entries(spec.bigData ?? {})) {
          if (!key.startsWith('ocisnap.')) throw new UsageError(`image big-data key ${JSON.stringify(key)} does not start with "ocisnap."`);
          items.push([key, data]);
        }
        await writeImageBigData(this.layout, spec.id, items);
        for (const [key, data] of items) {
          const names = (image['big-data-names'] ??= []);
          if (!names.includes(key)) names.push(key);
          (image['big-data-sizes'] ??= {})[key] = data.length;
          // Manifests are digested as manifests (the same as sha256 for schema2/OCI); the rest plainly.
          (image['big-data-digests'] ??= {})[key] = sha256Digest(data);
        }
        addNames(images, image, spec.names);
        await writeImages(this.layout, lock, images);
        return image;
      });
    });
  }

  /**
   * Removes an image and the layers only it used (containers/storage store.go
   * DeleteImage): walking down from its top layer, stop at a layer that is
   * another image's top layer, a container's layer, or a parent of a layer that
   * stays. Refuses when a container uses the image or podman has a layer mounted.
   */
  async removeImage(nameOrId: string): Promise<{ image: ImageRecord; removedLayers: string[] }> {
    return this.layersLock.with('write', (layersLock) =>
      this.imagesLock.with('write', (imagesLock) =>
        this.containersLock.with('read', async () => {
          const images = await readImages(this.layout);
          const image = lookupImage(images, nameOrId);
          if (!image) throw new ImageUnknownError(nameOrId);
          const containers = await readContainers(this.layout);
          const user = containers.find((c) => c.image === image.id);
          if (user) throw new ImageInUseError(image.id, user.id);

          const layers = await readLayers(this.layout);
          const toRemove = layersToRemove(image, images, layers, await readVolatileLayers(this.layout), containers.map((c) => c.layer));
          await this.requireUnmounted(image.id, toRemove);

          await writeImages(
            this.layout,
            imagesLock,
            images.filter((i) => i.id !== image.id),
          );
          await rm(imageDataDir(this.layout, image.id), { recursive: true, force: true });
          if (toRemove.length > 0) await this.dropLayers(layersLock, layers, toRemove);
          return { image, removedLayers: toRemove };
        }),
      ),
    );
  }

  /**
   * Removes the given layers unless something still needs them: an image
   * whose chain includes them, a container, or a child layer outside `ids`.
   * A failed pull uses it to take back the layers it created, so the store is
   * as it was. Returns the IDs removed.
   */
  async removeUnusedLayers(ids: string[]): Promise<string[]> {
    if (ids.length === 0) return [];
    return this.layersLock.with('write', (layersLock) =>
      this.imagesLock.with('read', () =>
        this.containersLock.with('read', async () => {
          const layers = await readLayers(this.layout);
          const byId = new Map(layers.map((l) => [l.id, l]));
          const needed = new Set<string>((await readContainers(this.layout)).map((c) => c.layer));
          for (const image of await readImages(this.layout)) {
            for (let id = image.layer; id !== undefined && !needed.has(id); id = byId.get(id)?.parent) needed.add(id);
          }
          const candidates = new Set(ids.filter((id) => byId.has(id) && !needed.has(id)));
          // A candidate with a child that stays must stay too (repeat until stable).
          for (let changed = true; changed; ) {
            changed = false;
            for (const layer of layers) {
              if (layer.parent && candidates.has(layer.parent) && !candidates.has(layer.id)) {
                candidates.delete(layer.parent);
                changed = true;
              }
            }
          }
          const remove = [...candidates];
          if (remove.length > 0) await this.dropLayers(layersLock, layers, remove);
          return remove;
        }),
      ),
    );
  }

  private layerRecord(spec: LayerSpec, result: FillResult): LayerRecord {
    const compression = spec.compression ?? 'none';
    // Field order of layers.go Layer, as encoding/json writes it; zero values omitted (omitempty).
    const record: LayerRecord = { id: spec.id };
    if (spec.parent !== undefined) record.parent = spec.parent;
    record.created = formatTime(new Date());
    // Podman records an uncompressed blob's own digest as its compressed digest.
    record['compressed-diff-digest'] = spec.compressedDigest ?? (compression === 'none' ? result.diffDigest : undefined);
    if (record['compressed-diff-digest'] === undefined) delete record['compressed-diff-digest'];
    const compressedSize = spec.compressedSize ?? (compression === 'none' ? result.diffSize : undefined);
    if (compressedSize) record['compressed-size'] = compressedSize;
    record['diff-digest'] = result.diffDigest;
    if (result.diffSize) record['diff-size'] = result.diffSize;
    if (compressionCode[compression] !== 0) record.compression = compressionCode[compression];
    if (result.uids?.length) record.uidset = [...new Set(result.uids)].sort((a, b) => a - b);
    if (result.gids?.length) record.gidset = [...new Set(result.gids)].sort((a, b) => a - b);
    return record;
  }

  private requireComplete(layers: LayerRecord[], id: string, forWhat: string): void {
    const layer = layers.find((l) => l.id === id);
    if (!layer) throw new LayerUnknownError(id, `(needed by ${forWhat}) is not in the store`);
    if (isIncomplete(layer)) throw new LayerUnknownError(id, `(needed by ${forWhat}) is incomplete`);
  }

  private async requireUnmounted(imageId: string, layerIds: string[]): Promise<void> {
    if (this.layout.mountpointsLock === undefined || layerIds.length === 0) return;
    const mounts = await LockFile.for(this.layout.mountpointsLock).with('read', () => readMountpoints(this.layout));
    const mounted = mounts.find((m) => m.count > 0 && layerIds.includes(m.id));
    if (mounted) throw new LayerMountedError(imageId, mounted.id);
  }

  /**
   * Deletes layers the way layers.go deleteInternal does: first mark them
   * incomplete (so a crash midway is finished by the next load), then delete
   * their files, then drop the records. `lock` is layers.lock, held for writing.
   * Returns the remaining records (also written).
   */
  private async dropLayers(lock: LockFile, layers: LayerRecord[], ids: string[]): Promise<LayerRecord[]> {
    for (const layer of layers) {
      if (ids.includes(layer.id)) layer.flags = { ...layer.flags, [incompleteFlag]: true };
    }
    await writeLayers(this.layout, lock, layers);
    for (const id of ids) await deleteLayerFiles(this.layout, id);
    const kept = layers.filter((l) => !ids.includes(l.id));
    await writeLayers(this.layout, lock, kept);
    return kept;
  }

  private async discardStaged(staged: string): Promise<void> {
    try {
      if (await isSubvolume(staged)) await deleteSubvolume(staged, { recursive: true });
      else await rm(staged, { recursive: true, force: true });
    } catch {
      // Best effort: the next open() removes staging leftovers.
    }
  }

  private async cleanup(): Promise<void> {
    // Staging subvolumes belong to a running ocisnap while it holds the ocisnap lock.
    await this.ocisnapLock.tryWith('write', async () => {
      let names: string[] = [];
      try {
        names = await readdir(this.layout.staging);
      } catch {
        return;
      }
      for (const name of names) await this.discardStaged(join(this.layout.staging, name));
    });
    await this.layersLock.with('write', async (lock) => {
      await removeStaleTempFiles(this.layout.layersDir);
      const layers = await readLayers(this.layout);
      const incomplete = layers.filter(isIncomplete).map((l) => l.id);
      if (incomplete.length > 0) await this.dropLayers(lock, layers, incomplete);
    });
    await this.imagesLock.with('write', async () => {
      await removeStaleTempFiles(this.layout.imagesDir);
      const images = await readImages(this.layout);
      const known = new Set(images.map((i) => i.id));
      for (const name of await readdir(this.layout.imagesDir)) {
        const dir = join(this.layout.imagesDir, name);
        // ocisnap writes big data before the record, both under images.lock; podman records first.
        if (isStorageId(name) && !known.has(name)) await rm(dir, { recursive: true, force: true });
        else if (known.has(name)) await removeStaleTempFiles(dir);
      }
    });
  }
}

/** images.go updateNames(addNames) + removeName on the previous holders, with names-history. */
function checkLayerIds(spec: LayerSpec): void {
  if (!isStorageId(spec.id)) throw new UsageError(`layer ID ${JSON.stringify(spec.id)} is not 64 hex digits`);
  if (spec.parent !== undefined && !isStorageId(spec.parent)) {
    throw new UsageError(`parent layer ID ${JSON.stringify(spec.parent)} is not 64 hex digits`);
  }
}

function addNames(images: ImageRecord[], image: ImageRecord, names: string[]): void {
  if (names.length === 0) return;
  for (const other of images) {
    if (other !== image && other.names?.some((n) => names.includes(n))) {
      other.names = other.names.filter((n) => !names.includes(n));
    }
  }
  image.names = [...new Set([...names, ...(image.names ?? [])])];
  let history = image['names-history'] ?? [];
  for (const name of names) history = [...new Set([name, ...history])];
  image['names-history'] = history;
}

/** The layer walk of containers/storage store.go DeleteImage. */
export function layersToRemove(
  image: ImageRecord,
  images: ImageRecord[],
  layers: LayerRecord[],
  volatileLayers: LayerRecord[],
  containerLayers: string[],
): string[] {
  const children = new Map<string, string[]>();
  for (const layer of [...layers, ...volatileLayers]) {
    if (layer.parent) children.set(layer.parent, [...(children.get(layer.parent) ?? []), layer.id]);
  }
  const otherTops = new Set<string>();
  for (const other of images) {
    if (other.id === image.id) continue;
    if (other.layer) otherTops.add(other.layer);
    for (const mapped of other['mapped-layers'] ?? []) otherTops.add(mapped);
  }
  const containers = new Set(containerLayers);
  const remove: string[] = [...(image['mapped-layers'] ?? [])];
  const removing = new Set(remove);
  let current = image.layer;
  while (current) {
    if (containers.has(current) || otherTops.has(current)) break;
    const layer = layers.find((l) => l.id === current);
    const check = current === image.layer ? [current, ...(image['mapped-layers'] ?? [])] : [current];
    if (check.some((id) => (children.get(id) ?? []).some((child) => !removing.has(child)))) break;
    if (layer) {
      remove.push(current);
      removing.add(current);
    }
    current = layer?.parent;
  }
  return remove;
}

