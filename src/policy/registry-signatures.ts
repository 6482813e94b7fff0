/**
 * Signatures of an image in a registry (containers/image docker/docker_image_src.go
 * GetSignaturesWithFormat):
 *
 * - lookaside (GPG simple signing): `signature-1`, `signature-2`, … under the
 *   lookaside URL from registries.d, until the first one that does not exist
 *   (file: ENOENT, http(s): 404); each at most 4 MiB (iolimits.MaxSignatureBodySize);
 * - sigstore attachments: the OCI manifest at tag `sha256-<hex>.sig` in the
 *   same repository (none when the tag does not exist), each layer's blob
 *   fetched and verified against its descriptor.
 *
 * `ref` is the repository the image is actually read from (after a mirror
 * rewrite, as containers/image uses its physical reference).
 * Unlike containers/image, sigstore attachments are read whenever the policy
 * asks for sigstoreSigned, even if registries.d does not set
 * `use-sigstore-attachments` (that setting mainly controls writing them): a
 * policy requiring them could not otherwise be satisfied.
 */
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { OcisnapError, UntrustedInputError, describeError } from '../errors.js';
import { isDigest } from '../oci/digest.js';
import { MediaType } from '../oci/mediatypes.js';
import { formatReference } from '../oci/reference.js';
import type { Descriptor, Digest, ImageReference } from '../oci/types.js';
import { DistributionClient } from '../registry/distribution.js';
import { RegistryHttpError } from '../registry/errors.js';
import type { SourceOptions } from '../registry/types.js';
import { lookasideBaseFor, lookasideSignatureUrl, type RegistriesD } from './registries-d.js';
import { isPlainObject, parseStrictJson } from './simple-signing.js';
import { sigstoreSignatureTag, type SigstoreAttachment } from './sigstore.js';
import type { Policy } from './policy-json.js';
import { checkPolicy, type SignatureSource, type VerificationResult } from './verify.js';

import { maxSignatureBytes, maxSignatures } from './signature-limits.js';

export { maxSignatureBytes, maxSignatures };

export class SignatureFetchError extends OcisnapError {}

export interface RegistrySignatureOptions {
  ref: ImageReference;
  manifestDigest: Digest;
  registriesD: RegistriesD;
  /** How to reach the registry (credentials, insecure, retries) for sigstore attachments. */
  source?: SourceOptions;
}

export interface ClosableSignatureSource extends SignatureSource {
  close(): Promise<void>;
}

/** Reads one lookaside signature; undefined when it does not exist. */
async function readLookaside(url: URL, signal: AbortSignal | undefined): Promise<Buffer | undefined> {
  if (url.protocol === 'file:') {
    try {
      const data = await readFile(fileURLToPath(url));
      if (data.length > maxSignatureBytes) throw new UntrustedInputError(`signature ${url.href} is larger than ${maxSignatureBytes} bytes`);
      return data;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new SignatureFetchError(`unsupported scheme when reading signature from ${url.href}`);
  }
  const res = await request(url, { method: 'GET', headersTimeout: 30_000, bodyTimeout: 30_000, signal: signal ?? null });
  if (res.statusCode === 404) {
    await res.body.dump();
    return undefined;
  }
  if (res.statusCode !== 200) {
    await res.body.dump();
    throw new SignatureFetchError(`reading signature from ${url.href}: status ${res.statusCode}`);
  }
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const c of res.body as AsyncIterable<Buffer>) {
    total += c.length;
    if (total > maxSignatureBytes) {
      res.body.destroy();
      throw new UntrustedInputError(`signature ${url.href} is larger than ${maxSignatureBytes} bytes`);
    }
    chunks.push(c);
  }
  return Buffer.concat(chunks);
}

/** Validates the `.sig` manifest enough to fetch its layers (OCI image manifest only). */
export function parseSignatureManifest(bytes: Buffer, mediaType: string, what: string): Descriptor[] {
  const fail: (reason: string) => never = (reason) => {
    throw new UntrustedInputError(`${what}: ${reason}`);
  };
  const doc = parseStrictJson(bytes.toString('utf8'), fail);
  if (!isPlainObject(doc)) return fail('not a JSON object');
  const type = typeof doc['mediaType'] === 'string' ? doc['mediaType'] : mediaType;
  if (type !== MediaType.ociManifest) fail(`unexpected media type ${JSON.stringify(type)} for a sigstore attachment manifest`);
  if (doc['schemaVersion'] !== 2) fail('schemaVersion is not 2');
  const layers = doc['layers'];
  if (!Array.isArray(layers)) return fail('"layers" is not a list');
  if (layers.length > maxSignatures) fail(`more than ${maxSignatures} sigstore attachments`);
  return layers.map((l, i) => {
    if (!isPlainObject(l)) return fail(`layer ${i} is not an object`);
    const { mediaType: mt, digest, size, annotations } = l;
    if (typeof mt !== 'string') fail(`layer ${i}: mediaType is not a string`);
    if (!isDigest(digest)) fail(`layer ${i}: digest is not sha256:<hex>`);
    if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) fail(`layer ${i}: invalid size`);
    const ann: Record<string, string> = {};
    if (annotations !== undefined) {
      if (!isPlainObject(annotations)) fail(`layer ${i}: annotations is not an object`);
      for (const [k, v] of Object.entries(annotations as Record<string, unknown>)) {
        if (typeof v !== 'string') fail(`layer ${i}: annotation ${k} is not a string`);
        ann[k] = v as string;
      }
    }
    return { mediaType: mt as string, digest: digest as Digest, size: size as number, annotations: ann };
  });
}

export function registrySignatureSource(opts: RegistrySignatureOptions): ClosableSignatureSource {
  const image = formatReference(opts.ref);
  let client: DistributionClient | undefined;
  const getClient = (): DistributionClient => {
    const s = opts.source ?? {};
    client ??= new DistributionClient({
      registry: opts.ref.registry,
      repository: opts.ref.repository,
      image,
      credentials: s.credentials,
      insecure: s.insecure,
      userAgent: s.userAgent,
      signal: s.signal,
      caFile: s.caFile,
      retry: {
        ...(s.retries !== undefined && { retries: s.retries }),
        ...(s.retryBaseDelayMs !== undefined && { baseDelayMs: s.retryBaseDelayMs }),
      },
    });
    return client;
  };

  return {
    async *lookasideSignatures() {
      const base = lookasideBaseFor(opts.registriesD, opts.ref);
      for (let i = 1; ; i++) {
        if (i > maxSignatures) throw new SignatureFetchError(`${image}: more than ${maxSignatures} lookaside signatures`);
        const url = lookasideSignatureUrl(base, opts.manifestDigest, i);
        let sig: Buffer | undefined;
        try {
          sig = await readLookaside(url, opts.source?.signal);
        } catch (err) {
          if (err instanceof OcisnapError) throw err;
          throw new SignatureFetchError(`${image}: reading signature ${url.href}: ${describeError(err)}`, { cause: err });
        }
        if (sig === undefined) return;
        yield sig;
      }
    },

    async sigstoreAttachments(): Promise<SigstoreAttachment[]> {
      const c = getClient();
      const tag = sigstoreSignatureTag(opts.manifestDigest);
      let manifest;
      try {
        manifest = await c.getManifest(tag);
      } catch (err) {
        if (err instanceof RegistryHttpError && err.status === 404) return [];
        throw err;
      }
      const layers = parseSignatureManifest(manifest.bytes, manifest.mediaType, `${image}: sigstore attachment manifest ${tag}`);
      const out: SigstoreAttachment[] = [];
      for (const [i, layer] of layers.entries()) {
        if (layer.size > maxSignatureBytes) {
          throw new UntrustedInputError(`${image}: sigstore attachment ${i + 1} is larger than ${maxSignatureBytes} bytes`);
        }
        const stream = await c.getBlob(layer, `sigstore attachment ${i + 1}`);
        const chunks: Buffer[] = [];
        for await (const chunk of stream as AsyncIterable<Buffer>) chunks.push(chunk);
        out.push({ mediaType: layer.mediaType, payload: Buffer.concat(chunks), annotations: layer.annotations ?? {} });
      }
      return out;
    },

    async close() {
      await client?.close();
    },
  };
}

/**
 * Checks an image in a registry against the policy: the scope is chosen by
 * `reference` (the name the user asked for, "host/repo:tag" or "…@digest"),
 * signatures are read for `opts.ref` (where the image is actually read from,
 * e.g. a mirror) and `opts.manifestDigest` (the top-level manifest or index
 * as pulled). Only the manifest digest and the signatures are needed.
 */
export async function checkRegistryImage(
  policy: Policy,
  reference: string,
  opts: RegistrySignatureOptions,
): Promise<VerificationResult> {
  const sigs = registrySignatureSource(opts);
  try {
    return await checkPolicy(policy, { transport: 'docker', reference, manifestDigest: opts.manifestDigest }, sigs);
  } finally {
    await sigs.close();
  }
}
