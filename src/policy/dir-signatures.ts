/**
 * Signatures of a skopeo `dir:` copy (containers/image directory/dir_src.go,
 * dir_transport.go signaturePath; internal/signature/signature.go FromBlob):
 * files `signature-1`, `signature-2`, … next to `manifest.json`, until the
 * first missing one. Each file is either
 *
 * - a raw OpenPGP message (GPG simple signing; the historical format, told
 *   apart by its first byte being an OpenPGP packet tag), or
 * - `\0` + format name + `\n` + data, with format "simple-signing" (raw
 *   OpenPGP follows) or "sigstore-json" (a JSON object
 *   {"mimeType": …, "payload": base64, "annotations": {…}}).
 */
import { readFile, realpath } from 'node:fs/promises';
import { join } from 'node:path';
import { UntrustedInputError, describeError } from '../errors.js';
import { sha256Digest } from '../oci/digest.js';
import type { Digest } from '../oci/types.js';
import { maxSignatureBytes, maxSignatures } from './signature-limits.js';
import { isPlainObject, parseStrictJson } from './simple-signing.js';
import type { SigstoreAttachment } from './sigstore.js';
import type { Policy } from './policy-json.js';
import { checkPolicy, type SignatureSource, type VerificationResult } from './verify.js';

/** First bytes of an OpenPGP message that FromBlob takes as simple signing. */
const openPgpFirstBytes = new Set([
  0xa0, 0xa1, 0xa2, 0xa3, 0xc8, // compressed data packet
  0x90, 0x91, 0x92, 0x3d, 0xc4, // one-pass signature packet
  0x88, 0x89, 0x8a, 0x8b, 0xc2, // signature packet
]);

export type DirSignature = { kind: 'simple-signing'; blob: Buffer } | { kind: 'sigstore'; attachment: SigstoreAttachment };

/** Parses the contents of one `signature-N` file (FromBlob). */
export function parseSignatureBlob(blob: Buffer, what: string): DirSignature {
  const fail: (reason: string) => never = (reason) => {
    throw new UntrustedInputError(`${what}: ${reason}`);
  };
  if (blob.length === 0) return fail('empty signature');
  const first = blob[0] as number;
  if (openPgpFirstBytes.has(first)) return { kind: 'simple-signing', blob };
  if (first !== 0) return fail(`unrecognized signature format, starting with byte 0x${first.toString(16)}`);
  const nl = blob.indexOf(0x0a, 1);
  if (nl === -1) return fail('invalid signature format, missing newline');
  const format = blob.subarray(1, nl);
  if (format.some((b) => b < 32 || b >= 0x7f)) return fail('invalid signature format, non-ASCII format name');
  const name = format.toString('ascii');
  const data = blob.subarray(nl + 1);
  if (name === 'simple-signing') return { kind: 'simple-signing', blob: Buffer.from(data) };
  if (name !== 'sigstore-json') return fail(`unrecognized signature format ${JSON.stringify(name)}`);
  const doc = parseStrictJson(data.toString('utf8'), (r) => fail(`sigstore-json: ${r}`));
  if (!isPlainObject(doc)) return fail('sigstore-json: not a JSON object');
  for (const k of Object.keys(doc)) {
    if (!['mimeType', 'payload', 'annotations'].includes(k)) fail(`sigstore-json: unknown field ${JSON.stringify(k)}`);
  }
  const { mimeType, payload, annotations } = doc;
  if (typeof mimeType !== 'string') return fail('sigstore-json: mimeType is not a string');
  if (typeof payload !== 'string' || payload.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(payload)) {
    return fail('sigstore-json: payload is not base64');
  }
  const ann: Record<string, string> = {};
  if (annotations !== undefined && annotations !== null) {
    if (!isPlainObject(annotations)) return fail('sigstore-json: annotations is not an object');
    for (const [k, v] of Object.entries(annotations)) {
      if (typeof v !== 'string') fail(`sigstore-json: annotation ${k} is not a string`);
      ann[k] = v as string;
    }
  }
  return { kind: 'sigstore', attachment: { mediaType: mimeType, payload: Buffer.from(payload, 'base64'), annotations: ann } };
}

/** Writes a sigstore signature in the `dir:` format (Blob): for tests and for exporting. */
export function sigstoreSignatureBlob(a: SigstoreAttachment): Buffer {
  const json = JSON.stringify({ mimeType: a.mediaType, payload: a.payload.toString('base64'), annotations: a.annotations });
  return Buffer.concat([Buffer.from('\0sigstore-json\n', 'latin1'), Buffer.from(json, 'utf8')]);
}

/** Reads all `signature-N` files of a dir: copy. */
export async function readDirSignatures(dir: string): Promise<DirSignature[]> {
  const out: DirSignature[] = [];
  for (let i = 1; ; i++) {
    const file = join(dir, `signature-${i}`);
    let blob: Buffer;
    try {
      blob = await readFile(file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return out;
      throw new UntrustedInputError(`cannot read ${file}: ${describeError(err)}`);
    }
    if (i > maxSignatures) throw new UntrustedInputError(`${dir}: more than ${maxSignatures} signatures`);
    if (blob.length > maxSignatureBytes) throw new UntrustedInputError(`${file}: larger than ${maxSignatureBytes} bytes`);
    out.push(parseSignatureBlob(blob, file));
  }
}

/** The SignatureSource of a dir: copy. */
export function dirSignatureSource(dir: string): SignatureSource {
  let all: Promise<DirSignature[]> | undefined;
  const load = (): Promise<DirSignature[]> => (all ??= readDirSignatures(dir));
  return {
    async *lookasideSignatures() {
      for (const s of await load()) if (s.kind === 'simple-signing') yield s.blob;
    },
    async sigstoreAttachments() {
      return (await load()).flatMap((s) => (s.kind === 'sigstore' ? [s.attachment] : []));
    },
  };
}

/** The policy scope name of a dir: copy: its absolute path without symlinks (ResolvePathToFullyExplicit). */
export async function dirPolicyReference(dir: string): Promise<string> {
  return realpath(dir);
}

/** The digest of a dir: copy's top-level `manifest.json` (what its signatures sign). */
export async function dirManifestDigest(dir: string): Promise<Digest> {
  const file = join(dir, 'manifest.json');
  try {
    return sha256Digest(await readFile(file));
  } catch (err) {
    throw new UntrustedInputError(`cannot read ${file}: ${describeError(err)}`);
  }
}

/**
 * Checks a `dir:` copy against the policy (scope: its real path and parents).
 * `dockerReference` is the name it is known as, for signedIdentity rules; without
 * it only exactReference/exactRepository identities can match, as in containers/image.
 */
export async function checkDirImage(
  policy: Policy,
  dir: string,
  opts: { dockerReference?: string } = {},
): Promise<VerificationResult> {
  return checkPolicy(
    policy,
    {
      transport: 'dir',
      reference: await dirPolicyReference(dir),
      manifestDigest: await dirManifestDigest(dir),
      ...(opts.dockerReference !== undefined && { dockerReference: opts.dockerReference }),
    },
    dirSignatureSource(dir),
  );
}
