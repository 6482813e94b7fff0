/**
 * What the signature policy said when an image was pulled, kept with the
 * image so status output can show whether and by which key it was verified,
 * and so a deploy without a registry can fall back on it (policy-check.ts
 * verifyStoredImage, only when asked and only under an unchanged policy).
 *
 * Stored as the image's big-data item "ocisnap.verifications" in the layer
 * store (`btrfs-images/<image-id>/ocisnap.verifications`, listed in the
 * image's big-data-names): containers/storage keeps big-data keys it does not
 * know (images.go only interprets keys starting with "manifest"), podman
 * lists, inspects and removes such images (tested in pull-policy.test.ts),
 * and the record goes away with the image. One entry per (transport,
 * reference) the image was pulled as, newest first.
 */
import { isDigest } from '../oci/digest.js';
import type { Digest } from '../oci/types.js';
import type { PolicyTransport } from '../policy/verify.js';
import type { ImageRecord, Store } from '../store/index.js';

export const verificationsKey = 'ocisnap.verifications';
/** Entries kept per image (one per name it was pulled as). */
const maxEntries = 16;

export interface ImageVerification {
  transport: PolicyTransport;
  /** The name the policy scope was chosen by: "host/os:1", "/srv/copy", "/srv/layout:tag". */
  reference: string;
  /** The top-level manifest (or index) digest the signatures were checked for. */
  signedDigest: Digest;
  /** Requirement types satisfied, joined with "+" ("sigstoreSigned", "insecureAcceptAnything"). */
  requirement: string;
  /** `transports.docker["host/ns"]`, `default`, … */
  scope: string;
  /** "sha256:<spki hex>" (sigstore) or a GPG fingerprint; absent when no signature was required. */
  keyId?: string;
  /** One line, as `ocisnap policy check` prints it. */
  details: string;
  /** The policy file. */
  policy: string;
  /** policyFingerprint() of that policy when it was checked (policy and key files). */
  policyFingerprint: string;
  /** ISO 8601 time of the check. */
  time: string;
}

const transports = new Set<string>(['docker', 'dir', 'oci', 'oci-archive']);

function parseEntry(v: unknown): ImageVerification | undefined {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  const o = v as Record<string, unknown>;
  const str = (k: string): string | undefined => (typeof o[k] === 'string' ? (o[k] as string) : undefined);
  const transport = str('transport');
  const signedDigest = o['signedDigest'];
  const fields = ['reference', 'requirement', 'scope', 'details', 'policy', 'policyFingerprint', 'time'] as const;
  if (transport === undefined || !transports.has(transport) || !isDigest(signedDigest)) return undefined;
  if (fields.some((k) => str(k) === undefined)) return undefined;
  if (o['keyId'] !== undefined && str('keyId') === undefined) return undefined;
  const out: ImageVerification = {
    transport: transport as PolicyTransport,
    reference: str('reference')!,
    signedDigest: signedDigest as Digest,
    requirement: str('requirement')!,
    scope: str('scope')!,
    details: str('details')!,
    policy: str('policy')!,
    policyFingerprint: str('policyFingerprint')!,
    time: str('time')!,
  };
  const keyId = str('keyId');
  if (keyId !== undefined) out.keyId = keyId;
  return out;
}

/** Parses a stored record; entries that do not have the expected shape are dropped (never trusted). */
export function parseVerifications(bytes: Buffer): ImageVerification[] {
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch {
    return [];
  }
  const list = (doc as { verifications?: unknown } | null)?.verifications;
  if (!Array.isArray(list)) return [];
  return list.flatMap((v) => parseEntry(v) ?? []);
}

export function serializeVerifications(list: ImageVerification[]): Buffer {
  return Buffer.from(`${JSON.stringify({ version: 1, verifications: list }, null, 2)}\n`);
}

/** `v` first, replacing an older entry for the same transport and reference. */
export function mergeVerifications(existing: ImageVerification[], v: ImageVerification): ImageVerification[] {
  return [v, ...existing.filter((e) => e.transport !== v.transport || e.reference !== v.reference)].slice(0, maxEntries);
}

/** The verifications recorded for a stored image, newest first ([] when none). */
export async function readImageVerifications(store: Store, image: ImageRecord): Promise<ImageVerification[]> {
  if (!(image['big-data-names'] ?? []).includes(verificationsKey)) return [];
  try {
    return parseVerifications(await store.imageBigData(image.id, verificationsKey));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

/** "sigstoreSigned by key sha256:…" / "insecureAcceptAnything (no signature required)", for status lines. */
export function describeVerification(v: Pick<ImageVerification, 'requirement' | 'keyId'>): string {
  return v.keyId !== undefined ? `${v.requirement} by key ${v.keyId}` : `${v.requirement} (no signature checked)`;
}
