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
  /** The manifest the reference names, once fetched (containers/image ensureManifestIsLoaded). */
  private top: ManifestBlob | undefined;

  /**
   * `ref` is where the image is read from; `logical` the reference the user
   * asked for, when a registries.conf mirror or location serves it. The
   * source is named after `logical`; messages also name the endpoint.
   */
  constructor(
    readonly ref: ImageReference,
    opts: SourceOptions = {},
    readonly logical: ImageReference = ref,
  ) {
    const wanted = formatReference(logical);
    this.name = `docker://${wanted}`;
    const place = `${ref.registry}/${ref.repository}`;
    const image = place === `${logical.registry}/${logical.repository}` ? wanted : `${wanted} via ${place}`;
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

  /**
   * A digest in the reference wins over its tag (containers/image does the
   * same). The top manifest is fetched once: a tag moving during a pull must
   * not make the signatures checked and the image pulled disagree.
   */
  async getManifest(digest?: Digest): Promise<ManifestBlob> {
    if (digest === undefined) {
      this.top ??= await this.client.getManifest(this.ref.digest ?? this.ref.tag ?? 'latest');
      return this.top;
    }
    if (digest === this.top?.digest) return this.top;
    return this.client.getManifest(digest);
  }

  getBlob(desc: Descriptor, opts?: BlobOptions): Promise<Readable> {
    return this.client.getBlob(desc, `${blobKind(desc)} ${shortDigest(desc.digest)}`, opts);
  }

  close(): Promise<void> {
    return this.client.close();
  }
}
