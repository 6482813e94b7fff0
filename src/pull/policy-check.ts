/**
 * The signature policy applied to an image source, as containers/image's
 * copy does it (copy/copy.go: policyContext.IsRunningImageAllowed on the
 * unparsed top-level image, before anything else is copied):
 *
 * - the signed digest is the top-level manifest's (the index for a
 *   multi-platform image), and only that manifest and the signatures are read;
 * - the scope is chosen by the name the user asked for (docker: the fully
 *   qualified reference, short name resolved, before any mirror rewrite;
 *   dir: the copy's real path; oci:/oci-archive: real path[:image]);
 * - registry signatures are read from the endpoint that served the manifest
 *   (containers/image reads the lookaside and sigstore attachments through
 *   its physical reference), with that endpoint's credentials;
 * - dir: copies carry `signature-N` files; oci: layouts and archives carry
 *   none (containers/image oci/ has no signatures), so only a requirement
 *   that needs no signature can accept them (containers-policy.json(5)).
 *
 * Signatures are read only for a scope with a signature requirement
 * (signedBy, sigstoreSigned): `insecureAcceptAnything` alone accepts and
 * `reject` refuses without reading any (decideWithoutSignatures).
 *
 * verifyStoredImage re-checks an image already in the layer store before it
 * is deployed: the digest is known from the store, the signatures are read
 * again, so a policy tightened (or a signature withdrawn) since the pull
 * counts; a scope that needs no signature is decided without the registry.
 */
import { createHash } from 'node:crypto';
import { readFile, realpath } from 'node:fs/promises';
import { OcisnapError, UsageError, describeError } from '../errors.js';
import { formatReference, parseReference } from '../oci/reference.js';
import type { Digest, ImageReference } from '../oci/types.js';
import { dirSignatureSource } from '../policy/dir-signatures.js';
import { defaultPolicyPath, describeScope, loadPolicy, requirementsFor, type Policy } from '../policy/policy-json.js';
import { defaultRegistriesDPath, loadRegistriesD, type RegistriesD } from '../policy/registries-d.js';
import type { ClosableSignatureSource } from '../policy/registry-signatures.js';
import { PolicyRejectedError, checkPolicy, imageDisplayName, noSignatures, type ImageToCheck, type VerificationResult } from '../policy/verify.js';
import { imageDigests, type ImageRecord, type Store } from '../store/index.js';
import type { OpenedSource, RegistryEndpoint, SourceConfig } from './source-config.js';
import { readImageVerifications, type ImageVerification } from './verification-record.js';
import { isoTime } from '../iso-time.js';

export type { ImageVerification } from './verification-record.js';

// The registry client (undici) is loaded only when a check needs the network:
// a policy that needs no signature is decided without it (deploy --no-pull).
const openConfiguredSource: typeof import('./source-config.js').openConfiguredSource = async (...args) =>
  (await import('./source-config.js')).openConfiguredSource(...args);

export interface PolicyConfig {
  policy: Policy;
  registriesD: RegistriesD;
  /** policyFingerprint(policy): tells whether a recorded verification was made under the same trust. */
  fingerprint: string;
}

export interface PolicyFiles {
  /** containers-policy.json(5) file (default /etc/containers/policy.json; a missing file is an error, as in podman). */
  signaturePolicy?: string;
  /** containers-registries.d(5) directory (default /etc/containers/registries.d; a missing directory is empty). */
  registriesD?: string;
}

/** Registry access settings used to read signatures (the rest comes from the endpoint). */
export type SignatureFetchConfig = Pick<SourceConfig, 'retries' | 'retryBaseDelayMs' | 'signal'>;

export async function loadPolicyConfig(files: PolicyFiles = {}): Promise<PolicyConfig> {
  const policy = await loadPolicy(files.signaturePolicy ?? defaultPolicyPath);
  const registriesD = await loadRegistriesD(files.registriesD ?? defaultRegistriesDPath);
  return policyConfig(policy, registriesD);
}

export async function policyConfig(policy: Policy, registriesD: RegistriesD): Promise<PolicyConfig> {
  return { policy, registriesD, fingerprint: await policyFingerprint(policy) };
}

/**
 * sha256 over the parsed policy (every scope and requirement) and the
 * contents of every key file it names: equal fingerprints mean the same
 * images are trusted by the same keys.
 */
export async function policyFingerprint(policy: Policy): Promise<string> {
  const files = new Map<string, string>();
  const reqs = [policy.default, ...[...policy.transports.values()].flatMap((m) => [...m.values()])].flat();
  for (const r of reqs) {
    if ((r.type === 'signedBy' || r.type === 'sigstoreSigned') && r.keys.kind === 'paths') {
      for (const p of r.keys.paths) {
        if (files.has(p)) continue;
        try {
          files.set(p, createHash('sha256').update(await readFile(p)).digest('hex'));
        } catch (err) {
          files.set(p, `unreadable: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
        }
      }
    }
  }
  const canonical = JSON.stringify({
    default: policy.default,
    transports: [...policy.transports.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([t, scopes]) => [t, [...scopes.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))]),
    keyFiles: [...files.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
  });
  return `sha256:${createHash('sha256').update(canonical).digest('hex')}`;
}

/** The name an opened source is checked under. */
export async function policyImageOf(opened: OpenedSource, topDigest: Digest): Promise<ImageToCheck> {
  switch (opened.transport) {
    case 'docker': {
      if (opened.reference === undefined) throw new OcisnapError(`${opened.source.name}: no reference to check the signature policy for`);
      return { transport: 'docker', reference: formatReference(opened.reference), manifestDigest: topDigest };
    }
    case 'dir':
    case 'oci':
    case 'oci-archive': {
      // containers/image ResolvePathToFullyExplicit: absolute, symlinks resolved.
      const path = await realpath(opened.path ?? '');
      const reference = opened.transport !== 'dir' && opened.tag !== undefined ? `${path}:${opened.tag}` : path;
      return { transport: opened.transport, reference, manifestDigest: topDigest };
    }
  }
}

async function registrySignatures(
  endpoint: RegistryEndpoint,
  digest: Digest,
  config: PolicyConfig,
  fetch: SignatureFetchConfig,
): Promise<ClosableSignatureSource> {
  const { registrySignatureSource } = await import('../policy/registry-signatures.js');
  return registrySignatureSource({
    ref: { ...endpoint.reference, digest },
    manifestDigest: digest,
    registriesD: config.registriesD,
    source: {
      insecure: endpoint.insecure,
      ...(endpoint.credentials !== undefined && { credentials: endpoint.credentials }),
      ...(fetch.retries !== undefined && { retries: fetch.retries }),
      ...(fetch.retryBaseDelayMs !== undefined && { retryBaseDelayMs: fetch.retryBaseDelayMs }),
      ...(fetch.signal !== undefined && { signal: fetch.signal }),
    },
  });
}

/** Where the signatures of an opened source are read from. */
export async function signatureSourceOf(
  opened: OpenedSource,
  topDigest: Digest,
  config: PolicyConfig,
  fetch: SignatureFetchConfig = {},
): Promise<ClosableSignatureSource> {
  switch (opened.transport) {
    case 'docker':
      if (opened.endpoint === undefined) throw new OcisnapError(`${opened.source.name}: no registry endpoint to read signatures from`);
      return registrySignatures(opened.endpoint, topDigest, config, fetch);
    case 'dir':
      return { ...dirSignatureSource(opened.path ?? ''), close: async () => {} };
    case 'oci':
    case 'oci-archive':
      return { ...noSignatures, close: async () => {} };
  }
}

function verificationOf(image: ImageToCheck, r: VerificationResult, config: PolicyConfig): ImageVerification {
  return {
    transport: image.transport,
    reference: image.reference,
    signedDigest: image.manifestDigest,
    requirement: r.requirement,
    scope: r.scope,
    ...(r.keyId !== undefined && { keyId: r.keyId }),
    details: r.details,
    policy: config.policy.source,
    policyFingerprint: config.fingerprint,
    time: isoTime(),
  };
}

/**
 * The policy's answer when the scope's requirements need no signature, so
 * nothing has to be read (containers-policy.json(5): every requirement of
 * the scope must hold): any `reject` refuses (before a signature requirement
 * listed ahead of it could send for signatures), only
 * `insecureAcceptAnything` accepts. undefined: a signature is needed.
 * Throws PolicyRejectedError for a rejection.
 */
export async function decideWithoutSignatures(image: ImageToCheck, config: PolicyConfig): Promise<ImageVerification | undefined> {
  const match = requirementsFor(config.policy, image.transport, image.reference);
  const reqs = match.requirements;
  if (reqs.some((r) => r.type === 'reject')) {
    // Same words as verify.ts evaluate('reject').
    throw new PolicyRejectedError(imageDisplayName(image), describeScope(match), 'reject', 'the policy rejects every image in this scope');
  }
  if (!reqs.every((r) => r.type === 'insecureAcceptAnything')) return undefined;
  return verificationOf(image, await checkPolicy(config.policy, image, noSignatures), config);
}

async function check(image: ImageToCheck, sigs: ClosableSignatureSource, config: PolicyConfig): Promise<ImageVerification> {
  try {
    return (await decideWithoutSignatures(image, config)) ?? verificationOf(image, await checkPolicy(config.policy, image, sigs), config);
  } finally {
    await sigs.close();
  }
}

/**
 * Checks an opened source whose top-level manifest has `topDigest`. Throws
 * PolicyRejectedError ("IMAGE: rejected by policy scope SCOPE (REQ): REASON").
 */
export async function verifyOpenedSource(
  opened: OpenedSource,
  topDigest: Digest,
  config: PolicyConfig,
  fetch: SignatureFetchConfig = {},
): Promise<ImageVerification> {
  return check(await policyImageOf(opened, topDigest), await signatureSourceOf(opened, topDigest, config, fetch), config);
}

/** PullOptions.verify for an opened source: `pullImage(src, ref, store, { verify: pullVerifier(opened, config) })`. */
export function pullVerifier(
  opened: OpenedSource,
  config: PolicyConfig,
  fetch: SignatureFetchConfig = {},
): (topDigest: Digest) => Promise<ImageVerification> {
  return (topDigest) => verifyOpenedSource(opened, topDigest, config, fetch);
}

export interface PolicyCheckReport {
  /** "docker://host/os:1", "dir:/srv/copy" */
  image: string;
  /** The top-level manifest digest checked. */
  digest: Digest;
  /** The policy file. */
  policy: string;
  /** Short-name resolution or mirror, when there was one. */
  notes: string[];
  result: { accepted: true; verification: ImageVerification } | { accepted: false; error: PolicyRejectedError };
}

/**
 * `ocisnap policy check`: opens `spec`, reads its top-level manifest (for
 * the digest) and, only when the scope requires a signature, its signatures
 * (never a layer or the config), and reports what the policy says.
 * A rejection is a result; configuration and registry errors are thrown.
 */
export async function checkImagePolicy(spec: string, config: PolicyConfig, sourceConfig: SourceConfig = {}): Promise<PolicyCheckReport> {
  const notes: string[] = [];
  const outer = sourceConfig.onNote;
  const opened = await openConfiguredSource(spec, {
    ...sourceConfig,
    onNote: (m) => {
      notes.push(m);
      outer?.(m);
    },
  });
  try {
    const top = await opened.source.getManifest();
    const image = await policyImageOf(opened, top.digest);
    const base = { image: imageDisplayName(image), digest: top.digest, policy: config.policy.source, notes };
    try {
      const verification = await verifyOpenedSource(opened, top.digest, config, sourceConfig);
      return { ...base, result: { accepted: true, verification } };
    } catch (err) {
      if (err instanceof PolicyRejectedError) return { ...base, result: { accepted: false, error: err } };
      throw err;
    }
  } finally {
    await opened.source.close();
  }
}

// ------------------------------------------------------------ stored images

export interface StoredImageCheck {
  config: PolicyConfig;
  /** registries.conf, auth.json, TLS: how to reach the registry for the signatures. */
  sourceConfig?: SourceConfig;
  /**
   * When the registry cannot be reached at all (no endpoint answers for the
   * stored digest), accept the verification recorded when the image was
   * pulled, for the same name and digest, if it was made under the same
   * policy (same policyFingerprint: policy and key files unchanged). Default
   * false: without the registry, a registry image whose scope needs a
   * signature is not re-verified and so not deployed (a scope that needs
   * none is decided without the registry). A registry that answers but
   * whose signatures no longer verify is always a rejection.
   */
  trustRecordedWhenOffline?: boolean;
}

export interface StoredVerification extends ImageVerification {
  /** true when the result is the recorded one (registry unreachable, trustRecordedWhenOffline). */
  fromRecord: boolean;
}

/** The stored image is not the image `spec` names now (dir:/oci: copy changed), or cannot be named. */
export class StoredImageMismatchError extends OcisnapError {}

/** The registry could not be reached to re-read the signatures of a stored image. */
export class ReverifyUnavailableError extends OcisnapError {}

const localPrefixes = ['dir:', 'oci:', 'oci-archive:'];

/** Is the first component of a reference a registry host (as parseReference decides)? */
function isQualified(name: string): boolean {
  const slash = name.indexOf('/');
  if (slash === -1) return false;
  const first = name.slice(0, slash);
  return /[.:]/.test(first) || first === 'localhost';
}

/**
 * The docker reference a stored image is checked under: `spec` when it is a
 * qualified reference; else (a short name, an image ID) the name it was last
 * verified as, or one of its names that ends like `spec`, or its first name.
 */
function storedReference(image: ImageRecord, spec: string, recorded: ImageVerification[]): ImageReference {
  const bare = spec.startsWith('docker://') ? spec.slice('docker://'.length) : spec;
  if (isQualified(bare)) return parseReference(bare);
  const known = [...recorded.filter((v) => v.transport === 'docker').map((v) => v.reference), ...(image.names ?? [])];
  const suffix = bare.includes(':') || bare.includes('@') ? `/${bare}` : `/${bare}:latest`;
  const name = known.find((n) => n.endsWith(suffix)) ?? known[0];
  if (name === undefined) {
    throw new StoredImageMismatchError(`image ${spec} (${image.id}) has no registry name to check the signature policy for; deploy it by name`);
  }
  return parseReference(name);
}

/**
 * Re-verifies a stored image before it is deployed. `spec` is what the user
 * named it by: a registry reference (qualified, short, docker://…), an image
 * ID, or the dir:/oci:/oci-archive: copy it came from.
 *
 * - registry images: the signed digest is the reference's digest, else the
 *   digest recorded at pull for that name, else the image's digest in the
 *   store (the index digest for a multi-platform pull); signatures are read
 *   again from the endpoint that serves that digest now (mirrors,
 *   credentials and TLS per registries.conf / auth.json);
 *   when the scope needs no signature (only insecureAcceptAnything, or a
 *   reject), the registry is not contacted at all;
 * - local copies: the copy's top-level manifest must be one the stored image
 *   was pulled from; its signatures are read again (when the scope needs them).
 *
 * Throws PolicyRejectedError when the policy refuses the image.
 */
export async function verifyStoredImage(store: Store, image: ImageRecord, spec: string, opts: StoredImageCheck): Promise<StoredVerification> {
  const sourceConfig = opts.sourceConfig ?? {};
  const digests = imageDigests(image);
  if (localPrefixes.some((p) => spec.startsWith(p))) {
    const opened = await openConfiguredSource(spec, sourceConfig);
    try {
      const top = await opened.source.getManifest();
      if (!digests.includes(top.digest)) {
        throw new StoredImageMismatchError(
          `${spec}: its manifest ${top.digest} is not the one stored image ${image.id} was pulled from (${digests.join(', ')})`,
        );
      }
      return { ...(await verifyOpenedSource(opened, top.digest, opts.config, sourceConfig)), fromRecord: false };
    } finally {
      await opened.source.close();
    }
  }

  const recorded = await readImageVerifications(store, image);
  const ref = storedReference(image, spec, recorded);
  const reference = formatReference(ref);
  const signedDigest =
    ref.digest ??
    recorded.find((v) => v.transport === 'docker' && v.reference === reference && digests.includes(v.signedDigest))?.signedDigest ??
    (image.digest as Digest | undefined);
  if (signedDigest === undefined || !digests.includes(signedDigest)) {
    throw new StoredImageMismatchError(`${reference}: stored image ${image.id} has no manifest digest ${signedDigest ?? ''} to check signatures for`);
  }

  // A scope that needs no signature is decided here, without the registry:
  // an insecure or unreachable registry must not stop an image the policy
  // accepts anyway, nor be asked about one it refuses anyway.
  const toCheck: ImageToCheck = { transport: 'docker', reference, manifestDigest: signedDigest };
  const decided = await decideWithoutSignatures(toCheck, opts.config);
  if (decided !== undefined) return { ...decided, fromRecord: false };

  let opened: OpenedSource;
  try {
    // The endpoint serving that exact digest now; the tag may have moved on.
    opened = await openConfiguredSource(`docker://${formatReference({ ...ref, tag: undefined, digest: signedDigest })}`, sourceConfig);
  } catch (err) {
    if (err instanceof UsageError || sourceConfig.signal?.aborted) throw err;
    const rec = opts.trustRecordedWhenOffline ? usableRecord(recorded, reference, signedDigest, opts.config) : undefined;
    if (rec !== undefined) return { ...rec, fromRecord: true };
    throw new ReverifyUnavailableError(
      `${reference}: cannot re-verify the signatures of stored image ${image.id} (${signedDigest}): ${describeError(err)}`,
      { cause: err },
    );
  }
  try {
    const sigs = await signatureSourceOf(opened, signedDigest, opts.config, sourceConfig);
    return { ...(await check(toCheck, sigs, opts.config)), fromRecord: false };
  } finally {
    await opened.source.close();
  }
}

/** A recorded verification that still stands: same name, digest, policy fingerprint and scope. */
function usableRecord(recorded: ImageVerification[], reference: string, digest: Digest, config: PolicyConfig): ImageVerification | undefined {
  const scope = describeScope(requirementsFor(config.policy, 'docker', reference));
  return recorded.find(
    (v) =>
      v.transport === 'docker' &&
      v.reference === reference &&
      v.signedDigest === digest &&
      v.policyFingerprint === config.fingerprint &&
      v.scope === scope,
  );
}
