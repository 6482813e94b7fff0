/**
 * Pull: resolve an image at its source, fetch the layers the store lacks,
 * apply them in order as btrfs subvolumes (each a snapshot of its parent),
 * check every diffID against the image config, then register the image.
 * The first layer to apply streams from the source straight into its
 * (staged) subvolume; the others download meanwhile, concurrently, each
 * verified against its digest while it streams to a temporary file. Nothing
 * becomes visible in the store before it is complete and verified.
 */
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describeError, DigestMismatchError, OcisnapError, UntrustedInputError } from '../errors.js';
import { digestHex } from '../oci/digest.js';
import { layerCompressionOf, type Compression } from '../oci/mediatypes.js';
import { formatReference } from '../oci/reference.js';
import { hostPlatform } from '../oci/platform.js';
import type { Descriptor, Digest, ImageReference, Platform } from '../oci/types.js';
import { applyLayer, decompressStream } from '../layers/index.js';
import { resolveImage, type ImageSource, type ResolvedImage } from '../registry/source.js';
import { layerIdsFor, TarSplitRecorder, type ImageRecord, type Store } from '../store/index.js';
import { noProgress, type ProgressSink } from './progress.js';
import {
  mergeVerifications,
  readImageVerifications,
  serializeVerifications,
  verificationsKey,
  type ImageVerification,
} from './verification-record.js';

export interface PullOptions {
  platform?: Platform;
  /** How many layer downloads run at once (default 3). */
  concurrency?: number;
  progress?: ProgressSink;
  signal?: AbortSignal;
  /**
   * The signature policy check (policy-check.ts pullVerifier), given the
   * top-level manifest's digest (the index's, for a multi-platform image).
   * Called after only that manifest has been read: before the config, any
   * layer or the store is touched; it throws to refuse the image. Its result
   * is returned and recorded with the image (verification-record.ts).
   * Without it no policy is applied: every caller acting for a user passes one.
   */
  verify?: (topDigest: Digest) => Promise<ImageVerification>;
}

export interface PullResult {
  image: ImageRecord;
  resolved: ResolvedImage;
  /** What the policy said (when `verify` was given). */
  verification?: ImageVerification;
  /** Layers fetched and applied by this pull. */
  fetched: number;
  /** Layers that were already in the store. */
  reused: number;
}

export class UnsupportedLayerError extends UntrustedInputError {}

interface LayerPlan {
  index: number;
  descriptor: Descriptor;
  compression: Compression;
  diffId: Digest;
  id: string;
  parent: string | undefined;
}

/**
 * Pulls the image `source` points at into `store`. `reference` (for registry
 * sources) names the image in the store; without it the image gets no name.
 */
export async function pullImage(
  source: ImageSource,
  reference: ImageReference | undefined,
  store: Store,
  opts: PullOptions = {},
): Promise<PullResult> {
  const started = performance.now();
  const progress = opts.progress ?? noProgress;
  // containers/image copy.go: the policy is evaluated on the unparsed top-level image first.
  const top = await source.getManifest();
  let verification: ImageVerification | undefined;
  if (opts.verify) {
    verification = await opts.verify(top.digest);
    progress({
      type: 'verified',
      image: source.name,
      digest: top.digest,
      requirement: verification.requirement,
      scope: verification.scope,
      ...(verification.keyId !== undefined && { keyId: verification.keyId }),
      details: verification.details,
    });
  }
  const resolved = await resolveImage(source, opts.platform ?? hostPlatform());
  // Sources return the top manifest they read first; a different one now would not be the verified image.
  const resolvedTop = resolved.indexDigest ?? resolved.manifestDigest;
  if (resolvedTop !== top.digest) {
    throw new UntrustedInputError(`${source.name}: the top-level manifest changed during the pull (${top.digest}, then ${resolvedTop})`);
  }
  const plan = planLayers(source.name, resolved);

  return store.lock(async () => {
    const missing: LayerPlan[] = [];
    for (const layer of plan) {
      if (await store.getLayer(layer.id)) progress({ type: 'layer-reused', digest: layer.descriptor.digest, layerId: layer.id });
      else missing.push(layer);
    }
    progress({
      type: 'resolved',
      image: source.name,
      manifestDigest: resolved.manifestDigest,
      layers: plan.length,
      missing: missing.length,
    });

    // Inside the store's staging area: same filesystem, and Store.open() removes leftovers.
    const tmpDir = join(store.layout.staging, `downloads-${process.pid}-${Date.now().toString(36)}`);
    await mkdir(tmpDir, { recursive: true });
    const created: string[] = [];
    let image: ImageRecord;
    try {
      // The first layer streams straight into its subvolume: no temporary
      // file to write and read back, and its extraction starts with its first
      // bytes. The rest download meanwhile (one slot fewer, so the streamed
      // layer keeps its share of the connection).
      const [first, ...rest] = missing;
      const downloads = downloadAll(source, rest, tmpDir, opts, progress, 1);
      try {
        if (first !== undefined) {
          await applyOne(store, source.name, first, () => streamLayer(source, first, opts.signal, progress), opts, progress);
          created.push(first.id);
        }
        for (const layer of rest) {
          const file = await downloads.files.get(layer.index)!;
          await applyOne(store, source.name, layer, async () => createReadStream(file, { highWaterMark: readChunk }), opts, progress);
          created.push(layer.id);
          await rm(file, { force: true });
        }
      } finally {
        await downloads.settled();
      }
      const id = digestHex(resolved.configDigest);
      const bigData: Record<string, Buffer> = {};
      if (verification !== undefined) {
        const existing = await store.findImage(id);
        const previous = existing?.id === id ? await readImageVerifications(store, existing) : [];
        bigData[verificationsKey] = serializeVerifications(mergeVerifications(previous, verification));
      }
      image = await store.putImage({
        id,
        manifestDigest: resolved.manifestDigest,
        manifestBytes: resolved.manifestBytes,
        configBytes: resolved.configBytes,
        topLayer: plan.at(-1)!.id,
        names: reference?.tag !== undefined ? [formatReference({ ...reference, digest: undefined })] : [],
        created: resolved.config.created ? new Date(resolved.config.created) : undefined,
        ...(resolved.indexDigest !== undefined &&
          resolved.indexBytes !== undefined && { index: { digest: resolved.indexDigest, bytes: resolved.indexBytes } }),
        bigData,
      });
    } catch (err) {
      // Take back the layers this pull made, so a failed pull leaves the store as it was.
      await store.removeUnusedLayers(created.reverse()).catch(() => {});
      throw err;
    } finally {
      await rm(tmpDir, { recursive: true, force: true });
    }
    progress({ type: 'done', image: source.name, imageId: image.id, seconds: (performance.now() - started) / 1000 });
    return {
      image,
      resolved,
      ...(verification !== undefined && { verification }),
      fetched: missing.length,
      reused: plan.length - missing.length,
    };
  });
}

function planLayers(imageName: string, resolved: ResolvedImage): LayerPlan[] {
  const diffIds = resolved.config.rootfs.diff_ids;
  const layers = resolved.manifest.layers;
  if (diffIds.length !== layers.length) {
    throw new UntrustedInputError(
      `${imageName}: the manifest lists ${layers.length} layers but the config ${diffIds.length} diff_ids`,
    );
  }
  if (layers.length === 0) throw new UntrustedInputError(`${imageName}: the image has no layers`);
  const ids = layerIdsFor(diffIds);
  return layers.map((descriptor, index) => {
    const compression = layerCompressionOf(descriptor.mediaType);
    if (compression === undefined) {
      throw new UnsupportedLayerError(
        `${imageName}: layer ${descriptor.digest}: unsupported media type "${descriptor.mediaType}"`,
      );
    }
    return { index, descriptor, compression, diffId: diffIds[index]!, id: ids[index]!, parent: ids[index - 1] };
  });
}

interface Downloads {
  /** Per layer index, the file holding the verified blob. */
  files: Map<number, Promise<string>>;
  /** Resolves when no download is running any more. */
  settled(): Promise<void>;
}

/**
 * Starts every download, at most `concurrency` at once, in layer order so the
 * next layer to apply is always among the first fetched. The first failure
 * stops the others, and every layer awaiting a stopped download sees that
 * first failure rather than the abort it caused.
 */
function downloadAll(
  source: ImageSource,
  layers: LayerPlan[],
  tmpDir: string,
  opts: PullOptions,
  progress: ProgressSink,
  reserved: number,
): Downloads {
  const limit = Math.max(1, (opts.concurrency ?? 3) - reserved);
  const files = new Map<number, Promise<string>>();
  const controller = new AbortController();
  const signal = opts.signal ? AbortSignal.any([opts.signal, controller.signal]) : controller.signal;
  let firstError: unknown;
  let running = 0;
  const waiters: Array<() => void> = [];
  const slot = async () => {
    while (running >= limit) await new Promise<void>((r) => waiters.push(r));
    running++;
  };
  const release = () => {
    running--;
    waiters.shift()?.();
  };
  for (const layer of layers) {
    const file = (async () => {
      await slot();
      try {
        signal.throwIfAborted();
        return await downloadOne(source, layer, tmpDir, signal, progress);
      } catch (err) {
        if (firstError === undefined) {
          firstError = err;
          controller.abort();
        }
        throw firstError;
      } finally {
        release();
      }
    })();
    file.catch(() => {}); // observed where it is awaited, or by settled()
    files.set(layer.index, file);
  }
  return {
    files,
    settled: async () => {
      controller.abort(); // nothing left to wait for once the caller stops applying
      await Promise.allSettled(files.values());
    },
  };
}

/**
 * Chunk size for reading a downloaded layer back: every read is a thread-pool
 * round trip, and the 64 KiB default made thousands of them per layer.
 */
const readChunk = 1024 * 1024;

/** The verified blob stream of a layer (its digest and size are checked as it ends), with progress events. */
async function streamLayer(source: ImageSource, layer: LayerPlan, signal: AbortSignal | undefined, progress: ProgressSink): Promise<Readable> {
  const { digest, size } = layer.descriptor;
  const started = performance.now();
  progress({ type: 'layer-download-start', digest, size });
  const blob = await source.getBlob(layer.descriptor, {
    ...(signal !== undefined && { signal }),
    onProgress: (bytes) => progress({ type: 'layer-download-progress', digest, bytes, size }),
  });
  blob.once('end', () => progress({ type: 'layer-downloaded', digest, size, seconds: (performance.now() - started) / 1000 }));
  return blob;
}

async function downloadOne(
  source: ImageSource,
  layer: LayerPlan,
  tmpDir: string,
  signal: AbortSignal,
  progress: ProgressSink,
): Promise<string> {
  const { digest, size } = layer.descriptor;
  const started = performance.now();
  progress({ type: 'layer-download-start', digest, size });
  const file = join(tmpDir, digestHex(digest));
  const blob = await source.getBlob(layer.descriptor, {
    signal,
    onProgress: (bytes) => progress({ type: 'layer-download-progress', digest, bytes, size }),
  });
  await pipeline(blob, createWriteStream(file), { signal });
  progress({ type: 'layer-downloaded', digest, size, seconds: (performance.now() - started) / 1000 });
  return file;
}

async function applyOne(
  store: Store,
  imageName: string,
  layer: LayerPlan,
  open: () => Promise<Readable>,
  opts: PullOptions,
  progress: ProgressSink,
): Promise<void> {
  const digest = layer.descriptor.digest;
  const what = `${imageName}: layer ${digest}`;
  const started = performance.now();
  progress({ type: 'layer-apply-start', digest, layerId: layer.id });
  let entries = 0;
  const record = await store.createLayer(
    {
      id: layer.id,
      parent: layer.parent,
      compressedDigest: digest,
      compressedSize: layer.descriptor.size,
      compression: layer.compression,
    },
    async (dir) => {
      // tar-split lets podman rebuild the exact layer tar (podman save/push).
      const tar = new TarSplitRecorder();
      const feed = pipeline(await open(), decompressStream(layer.compression), tar);
      let result;
      try {
        result = await applyLayer(tar, dir, { what, signal: opts.signal });
        await feed;
      } catch (err) {
        tar.destroy();
        await feed.catch(() => {});
        if (err instanceof OcisnapError) throw err;
        throw new UntrustedInputError(`${what}: ${describeError(err)}`, { cause: err });
      }
      if (result.diffId !== layer.diffId) {
        throw new DigestMismatchError(`${what}: uncompressed content (diffID)`, layer.diffId, result.diffId);
      }
      entries = result.entries;
      return { diffDigest: result.diffId, diffSize: result.size, tarSplit: tar.result() };
    },
  );
  progress({
    type: 'layer-applied',
    digest,
    layerId: record.id,
    diffSize: layer.descriptor.size,
    entries,
    seconds: (performance.now() - started) / 1000,
  });
}
