/** The interface every image source implements (registry, OCI layout, OCI archive). */
import type { Readable } from 'node:stream';
import { MediaType } from '../oci/mediatypes.js';
import type { Descriptor, Digest } from '../oci/types.js';
import type { Credentials } from '../policy/auth-file.js';

export interface ManifestBlob {
  bytes: Buffer;
  /** From the Content-Type header or the document's own mediaType; parseManifestDocument checks both. */
  mediaType: string;
  /** sha256 of `bytes`. */
  digest: Digest;
}

export interface BlobOptions {
  signal?: AbortSignal;
  /** Called with the cumulative number of bytes received so far. */
  onProgress?: (receivedBytes: number) => void;
}

export interface ImageSource {
  /** For messages: "docker://localhost:5000/os:1", "oci:/dir:tag". */
  readonly name: string;
  /**
   * Without a digest: the manifest the source names (tag or digest). With
   * one: that manifest. Verified against the digest when one is known; at
   * most maxManifestBytes.
   */
  getManifest(digest?: Digest): Promise<ManifestBlob>;
  /** Streamed and verified (size and digest): the stream errors on a mismatch. */
  getBlob(desc: Descriptor, opts?: BlobOptions): Promise<Readable>;
  close(): Promise<void>;
}

export interface SourceOptions {
  credentials?: Credentials;
  /** Allow plain http and skip TLS verification. */
  insecure?: boolean;
  userAgent?: string;
  /** Retries after the first attempt for one request (default 5). */
  retries?: number;
  /** First backoff delay in ms (default 250); it doubles each retry. Mostly for tests. */
  retryBaseDelayMs?: number;
  signal?: AbortSignal;
  /** PEM file of extra CA certificates for TLS. */
  caFile?: string;
}

const manifestTypes = new Set<string>([
  MediaType.ociManifest,
  MediaType.ociIndex,
  MediaType.dockerManifest,
  MediaType.dockerManifestList,
]);

/**
 * The media type to report for manifest bytes: a Content-Type naming a
 * manifest type wins; otherwise (absent, application/json, …) the document's
 * own `mediaType`; otherwise whatever the header said, or "".
 */
export function manifestMediaType(contentType: string | undefined, bytes: Uint8Array): string {
  const header = contentType?.split(';')[0]?.trim().toLowerCase();
  if (header !== undefined && manifestTypes.has(header)) return header;
  try {
    const doc = JSON.parse(Buffer.from(bytes).toString('utf8')) as { mediaType?: unknown };
    if (typeof doc.mediaType === 'string' && doc.mediaType !== '') return doc.mediaType;
  } catch {
    // Not JSON: parseManifestDocument will say so.
  }
  return header ?? '';
}

/** "layer sha256:abcd…" / "config sha256:…": how a blob is named in messages, from its media type. */
export function blobKind(desc: Descriptor): string {
  const t = desc.mediaType;
  if (t === MediaType.ociConfig || t === MediaType.dockerConfig) return 'config';
  if (manifestTypes.has(t)) return 'manifest';
  if (/layer|rootfs/.test(t)) return 'layer';
  return 'blob';
}
