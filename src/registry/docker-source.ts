/** `docker://REF`: an image in a registry, through the distribution API. */
import type { Readable } from 'node:stream';
import { formatReference } from '../oci/reference.js';
import type { Descriptor, Digest, ImageReference } from '../oci/types.js';
import { DistributionClient } from './distribution.js';
import { shortDigest } from './errors.js';
import { blobKind, type BlobOptions, type ImageSource, type ManifestBlob, type SourceOptions } from './types.js';

export class DockerSource implements ImageSource {
  readonly name: string;
  private readonly client: DistributionClient;

  constructor(
    readonly ref: ImageReference,
    opts: SourceOptions = {},
  ) {
    const image = formatReference(ref);
    this.name = `docker://${image}`;
    this.client = new DistributionClient({
      registry: ref.registry,
      repository: ref.repository,
      image,
      retry: {
        ...(opts.retries !== undefined && { retries: opts.retries }),
        ...(opts.retryBaseDelayMs !== undefined && { baseDelayMs: opts.retryBaseDelayMs }),
      },
      credentials: opts.credentials,
      insecure: opts.insecure,
      userAgent: opts.userAgent,
      signal: opts.signal,
      caFile: opts.caFile,
    });
  }

  /** A digest in the reference wins over its tag (containers/image does the same). */
  getManifest(digest?: Digest): Promise<ManifestBlob> {
    const reference = digest ?? this.ref.digest ?? this.ref.tag ?? 'latest';
    return this.client.getManifest(reference);
  }

  getBlob(desc: Descriptor, opts?: BlobOptions): Promise<Readable> {
    return this.client.getBlob(desc, `${blobKind(desc)} ${shortDigest(desc.digest)}`, opts);
  }

  close(): Promise<void> {
    return this.client.close();
  }
}
