/**
 * An image in an OCI image layout (image-spec image-layout.md), whatever holds
 * the files: a directory (oci-layout.ts) or an uncompressed tar of one
 * (oci-archive.ts). The image is picked from index.json by the
 * `org.opencontainers.image.ref.name` annotation, or is the only entry when
 * no tag is given (containers/image oci/layout/oci_src.go does the same).
 */
import { Transform, addAbortSignal, pipeline, type Readable } from 'node:stream';
import { createVerifier, digestHex, sha256Digest } from '../oci/digest.js';
import { maxManifestBytes, parseManifestDocument } from '../oci/manifest.js';
import { DigestMismatchError } from '../errors.js';
import { MediaType } from '../oci/mediatypes.js';
import type { Descriptor, Digest } from '../oci/types.js';
import { DocumentTooLargeError, LayoutError, shortDigest } from './errors.js';
import { blobKind, manifestMediaType, type BlobOptions, type ImageSource, type ManifestBlob } from './types.js';

/** Where the files of a layout come from. Paths are relative, `/`-separated. */
export interface LayoutStorage {
  /** "oci:/dir", "oci-archive:/file.tar": for messages. */
  readonly name: string;
  /** A regular file's content and size; undefined when it does not exist. */
  open(path: string): Promise<{ stream: Readable; size: number } | undefined>;
  close(): Promise<void>;
}

export const refNameAnnotation = 'org.opencontainers.image.ref.name';
const maxIndexBytes = maxManifestBytes;

/** Reads a whole small file, refusing it if larger than `limit`. */
export async function readSmall(storage: LayoutStorage, path: string, limit: number, what: string): Promise<Buffer | undefined> {
  const f = await storage.open(path);
  if (f === undefined) return undefined;
  if (f.size > limit) {
    f.stream.destroy();
    throw new DocumentTooLargeError(what, limit);
  }
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of f.stream as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > limit) {
      f.stream.destroy();
      throw new DocumentTooLargeError(what, limit);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total);
}

export function blobPath(digest: Digest): string {
  return `blobs/sha256/${digestHex(digest)}`;
}

export class LayoutSource implements ImageSource {
  readonly name: string;
  private top: Promise<Descriptor> | undefined;

  constructor(
    private readonly storage: LayoutStorage,
    private readonly tag: string | undefined,
  ) {
    this.name = tag === undefined ? storage.name : `${storage.name}:${tag}`;
  }

  /** Checks `oci-layout` and finds the index.json entry for the tag. */
  private async topDescriptor(): Promise<Descriptor> {
    const layoutBytes = await readSmall(this.storage, 'oci-layout', 64 * 1024, `${this.storage.name}: oci-layout`);
    if (layoutBytes === undefined) {
      throw new LayoutError(`${this.storage.name}: not an OCI image layout: no oci-layout file`);
    }
    let version: unknown;
    try {
      version = (JSON.parse(layoutBytes.toString('utf8')) as { imageLayoutVersion?: unknown }).imageLayoutVersion;
    } catch {
      throw new LayoutError(`${this.storage.name}: oci-layout is not JSON`);
    }
    if (version !== '1.0.0') {
      throw new LayoutError(`${this.storage.name}: unsupported imageLayoutVersion ${JSON.stringify(version)}`);
    }
    const what = `${this.storage.name}: index.json`;
    const indexBytes = await readSmall(this.storage, 'index.json', maxIndexBytes, what);
    if (indexBytes === undefined) throw new LayoutError(`${what}: missing`);
    const index = parseManifestDocument(indexBytes, MediaType.ociIndex, what);
    if (index.kind !== 'index') throw new LayoutError(`${what}: not an image index`);

    if (this.tag === undefined) {
      if (index.manifests.length === 1) return index.manifests[0] as Descriptor;
      throw new LayoutError(
        `${this.storage.name}: ${index.manifests.length} images in index.json; name one with :TAG (${tagList(index.manifests)})`,
      );
    }
    const matches = index.manifests.filter((d) => d.annotations?.[refNameAnnotation] === this.tag);
    if (matches.length === 1) return matches[0] as Descriptor;
    if (matches.length === 0) {
      throw new LayoutError(`${this.storage.name}: no image tagged "${this.tag}" (available: ${tagList(index.manifests)})`);
    }
    throw new LayoutError(`${this.storage.name}: ${matches.length} index.json entries are tagged "${this.tag}"`);
  }

  async getManifest(digest?: Digest): Promise<ManifestBlob> {
    let target: { digest: Digest; size?: number; mediaType?: string };
    if (digest !== undefined) {
      target = { digest };
    } else {
      this.top ??= this.topDescriptor();
      target = await this.top;
    }
    const what = `${this.name}: manifest ${shortDigest(target.digest)}`;
    const bytes = await readSmall(this.storage, blobPath(target.digest), maxManifestBytes, what);
    if (bytes === undefined) throw new LayoutError(`${what}: blob not found in the layout`);
    if (target.size !== undefined && bytes.length !== target.size) {
      throw new LayoutError(`${what}: size mismatch: expected ${target.size} bytes, got ${bytes.length}`);
    }
    const actual = sha256Digest(bytes);
    if (actual !== target.digest) throw new DigestMismatchError(what, target.digest, actual);
    return { bytes, digest: actual, mediaType: manifestMediaType(target.mediaType, bytes) };
  }

  getBlob(desc: Descriptor, opts: BlobOptions = {}): Promise<Readable> {
    return readVerifiedBlob(this.storage, blobPath(desc.digest), desc, `${this.name}: ${blobKind(desc)} ${shortDigest(desc.digest)}`, opts);
  }

  close(): Promise<void> {
    return this.storage.close();
  }
}

/**
 * The file at `path` as a stream that errors unless it has exactly the
 * descriptor's size and digest. `what` names the blob in messages.
 */
export async function readVerifiedBlob(
  storage: LayoutStorage,
  path: string,
  desc: Descriptor,
  what: string,
  opts: BlobOptions = {},
): Promise<Readable> {
  const f = await storage.open(path);
  if (f === undefined) throw new LayoutError(`${what}: blob not found`);
  if (f.size !== desc.size) {
    f.stream.destroy();
    throw new LayoutError(`${what}: size mismatch: expected ${desc.size} bytes, the file has ${f.size}`);
  }
  const verifier = createVerifier({ digest: desc.digest, size: desc.size }, what);
  const onProgress = opts.onProgress;
  const stages: Array<Readable | Transform> = [f.stream];
  if (onProgress !== undefined) {
    let received = 0;
    stages.push(
      new Transform({
        transform(chunk: Buffer, _enc, cb) {
          received += chunk.length;
          onProgress(received);
          cb(null, chunk);
        },
      }),
    );
  }
  // pipeline() destroys every stage on error, and the file stream when the consumer destroys the verifier.
  pipeline([...stages, verifier], () => {});
  if (opts.signal !== undefined) addAbortSignal(opts.signal, verifier);
  return verifier;
}

function tagList(manifests: Descriptor[]): string {
  const tags = manifests.map((d) => d.annotations?.[refNameAnnotation]).filter((t): t is string => t !== undefined);
  return tags.length > 0 ? tags.map((t) => JSON.stringify(t)).join(', ') : 'none tagged';
}
