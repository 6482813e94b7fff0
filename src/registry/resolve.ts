/**
 * From a source to a verified, parsed image for one platform: manifest →
 * (index → the platform's manifest, by digest) → config blob → checks that
 * manifest and config agree. Nothing from the source is trusted before it has
 * been verified against a digest and parsed.
 */
import type { Readable } from 'node:stream';
import { UntrustedInputError } from '../errors.js';
import { maxConfigBytes, parseImageConfig, parseManifestDocument } from '../oci/manifest.js';
import { MediaType, layerCompressionOf } from '../oci/mediatypes.js';
import { formatPlatform, selectManifest } from '../oci/platform.js';
import type { Digest, ImageConfig, ImageManifest, Platform } from '../oci/types.js';
import { DocumentTooLargeError, ImageMismatchError, shortDigest } from './errors.js';
import type { ImageSource } from './types.js';

export interface ResolvedImage {
  manifest: ImageManifest;
  manifestBytes: Buffer;
  manifestDigest: Digest;
  manifestMediaType: string;
  config: ImageConfig;
  configBytes: Buffer;
  configDigest: Digest;
  /** The index (manifest list) the manifest was chosen from, when there was one. */
  indexDigest?: Digest;
  /** That index's bytes (stored beside the manifest, as containers/image does). */
  indexBytes?: Buffer;
}

const configTypes = new Set<string>([MediaType.ociConfig, MediaType.dockerConfig]);

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks);
}

export async function resolveImage(source: ImageSource, platform: Platform): Promise<ResolvedImage> {
  const top = await source.getManifest();
  const topDoc = parseManifestDocument(top.bytes, top.mediaType, `${source.name}: manifest ${shortDigest(top.digest)}`);

  let blob = top;
  let manifest: ImageManifest;
  let indexDigest: Digest | undefined;
  if (topDoc.kind === 'index') {
    indexDigest = top.digest;
    const desc = selectManifest(topDoc, platform, source.name);
    const what = `${source.name}: manifest ${shortDigest(desc.digest)} for ${formatPlatform(platform)}`;
    blob = await source.getManifest(desc.digest);
    if (blob.bytes.length !== desc.size) {
      throw new UntrustedInputError(`${what}: size mismatch: the index says ${desc.size} bytes, got ${blob.bytes.length}`);
    }
    const doc = parseManifestDocument(blob.bytes, blob.mediaType, what);
    if (doc.kind !== 'manifest') throw new UntrustedInputError(`${what}: an index inside an index is not supported`);
    manifest = doc;
  } else {
    manifest = topDoc;
  }

  const what = `${source.name}: manifest ${shortDigest(blob.digest)}`;
  if (!configTypes.has(manifest.config.mediaType)) {
    throw new ImageMismatchError(`${what}: not a container image: config media type is "${manifest.config.mediaType}"`);
  }
  manifest.layers.forEach((layer, i) => {
    if (layerCompressionOf(layer.mediaType) === undefined) {
      throw new ImageMismatchError(
        `${what}: layer ${i + 1} (${shortDigest(layer.digest)}) has unsupported media type "${layer.mediaType}"`,
      );
    }
  });

  const configWhat = `${source.name}: config ${shortDigest(manifest.config.digest)}`;
  if (manifest.config.size > maxConfigBytes) throw new DocumentTooLargeError(configWhat, maxConfigBytes);
  // getBlob verifies size and digest, and the size is bounded above.
  const configBytes = await readAll(await source.getBlob(manifest.config));
  const config = parseImageConfig(configBytes, configWhat);

  // config.md: diff_ids has one entry per layer of the manifest, in order
  // (history entries with empty_layer have no layer and no diff_id).
  if (config.rootfs.diff_ids.length !== manifest.layers.length) {
    throw new ImageMismatchError(
      `${what}: the manifest lists ${manifest.layers.length} layers but the config has ${config.rootfs.diff_ids.length} diff_ids`,
    );
  }
  if (config.os !== platform.os || config.architecture !== platform.architecture) {
    const got = formatPlatform({ os: config.os, architecture: config.architecture, ...(config.variant && { variant: config.variant }) });
    throw new ImageMismatchError(`${what}: the image is for ${got}, not ${formatPlatform(platform)}`);
  }

  const resolved: ResolvedImage = {
    manifest,
    manifestBytes: blob.bytes,
    manifestDigest: blob.digest,
    manifestMediaType: manifest.mediaType,
    config,
    configBytes,
    configDigest: manifest.config.digest,
  };
  if (indexDigest !== undefined) {
    resolved.indexDigest = indexDigest;
    resolved.indexBytes = top.bytes;
  }
  return resolved;
}
