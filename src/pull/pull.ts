/**
 * Pull: resolve an image at its source, fetch the layers the store lacks,
 * apply them in order as btrfs subvolumes (each a snapshot of its parent),
 * check every diffID against the image config, then register the image.
 * The layers download in order to temporary files (downloads.ts), each
 * verified against its digest, and each is applied from its file while it
 * still downloads. Nothing becomes visible in the store before it is complete
 * and verified.
 */
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
import { layerIdsFor, TarSplitRecorder, type FillResult, type ImageRecord, type Store } from '../store/index.js';
import { buildLayerChain } from './layer-chain.js';
import { startDownloads } from './downloads.js';
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
  /** How many layer downloads run at once (default 2). */
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
      const downloads = startDownloads(
        source,
        missing.map((l) => l.descriptor),
        tmpDir,
        { concurrency: opts.concurrency ?? defaultConcurrency, progress, ...(opts.signal && { signal: opts.signal }) },
      );
      // A blob some later layer uses again stays until that layer is applied.
      const lastUse = new Map(missing.map((l) => [l.descriptor.digest, l.index]));
      const chain = missing.map((layer) => ({
        spec: {
          id: layer.id,
          parent: layer.parent,
          compressedDigest: layer.descriptor.digest,
          compressedSize: layer.descriptor.size,
          compression: layer.compression,
        },
        fill: async (dir: string) => {
          const download = downloads.get(layer.descriptor);
          const result = await fillLayer(dir, source.name, layer, () => download.open(), opts, progress);
          if (lastUse.get(layer.descriptor.digest) === layer.index) await rm(download.file, { force: true });
          return result;
        },
      }));
      try {
        await buildLayerChain(store, chain, (record) => created.push(record.id));
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

/**
 * Two downloads at once: the layer being applied gets at least half the
 * bandwidth, and a second connection hides a distant registry's latency.
 */
const defaultConcurrency = 2;

/** Applies one layer's tar to the staged directory `dir`, checking its diffID. */
async function fillLayer(
  dir: string,
  imageName: string,
  layer: LayerPlan,
  open: () => Readable,
  opts: PullOptions,
  progress: ProgressSink,
): Promise<FillResult> {
  const digest = layer.descriptor.digest;
  const what = `${imageName}: layer ${digest}`;
  const started = performance.now();
  progress({ type: 'layer-apply-start', digest, layerId: layer.id });
  // tar-split lets podman rebuild the exact layer tar (podman save/push).
  const tar = new TarSplitRecorder();
  const feed = pipeline(open(), decompressStream(layer.compression), tar);
  // A failure of the feed reaches applyLayer through `tar` and is awaited
  // below; until then it must not count as an unhandled rejection.
  feed.catch(() => {});
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
  progress({
    type: 'layer-applied',
    digest,
    layerId: layer.id,
    diffSize: layer.descriptor.size,
    entries: result.entries,
    seconds: (performance.now() - started) / 1000,
  });
  return { diffDigest: result.diffId, diffSize: result.size, tarSplit: tar.result() };
}
