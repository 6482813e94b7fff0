/**
 * Sigstore (cosign) signatures with public keys, as containers/image verifies
 * them (signature/policy_eval_sigstore.go, signature/internal/sigstore_payload.go
 * VerifySigstorePayload; sigstore/sigstore pkg/signature LoadVerifier):
 *
 * - an attachment is one layer of the OCI manifest at tag `sha256-<hex>.sig`;
 *   its media type must be application/vnd.dev.cosign.simplesigning.v1+json,
 *   the payload is the layer blob, the signature is the base64
 *   `dev.cosignproject.cosign/signature` annotation;
 * - the signature is checked over the payload bytes exactly as stored (never
 *   re-serialized): ECDSA (any curve) with SHA-256 and an ASN.1 DER signature,
 *   RSA PKCS#1 v1.5 with SHA-256, Ed25519 (pure);
 * - only then is the payload parsed ("cosign container image signature") and
 *   its manifest digest and identity checked.
 */
import { createHash, createPublicKey, verify, constants, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { describeError } from '../errors.js';
import type { KeySource } from './policy-json.js';
import { InvalidSignatureError, parseSimpleSigningPayload, type SimpleSigningPayload } from './simple-signing.js';

export const cosignSignatureMediaType = 'application/vnd.dev.cosign.simplesigning.v1+json';
export const cosignSignatureAnnotation = 'dev.cosignproject.cosign/signature';

/** One sigstore attachment (a layer of the `.sig` manifest, or a sigstore-json signature of a dir: copy). */
export interface SigstoreAttachment {
  mediaType: string;
  payload: Buffer;
  annotations: Record<string, string>;
}

export interface SigstorePublicKey {
  key: KeyObject;
  /** "sha256:<hex of the DER SubjectPublicKeyInfo>", for reports. */
  id: string;
  /** "ECDSA P-256", "RSA 3072", "Ed25519". */
  description: string;
}

/** The `sha256-<hex>.sig` tag cosign uses for the signatures of a manifest digest. */
export function sigstoreSignatureTag(manifestDigest: string): string {
  return `${manifestDigest.replace(':', '-')}.sig`;
}

/** A key id for reports: sha256 of the DER SubjectPublicKeyInfo. */
export function publicKeyId(key: KeyObject): string {
  return `sha256:${createHash('sha256').update(key.export({ type: 'spki', format: 'der' })).digest('hex')}`;
}

function describeKey(key: KeyObject): string | undefined {
  const d = key.asymmetricKeyDetails;
  switch (key.asymmetricKeyType) {
    case 'ec': {
      const curve = d?.namedCurve;
      const name = curve === 'prime256v1' ? 'P-256' : curve === 'secp384r1' ? 'P-384' : curve === 'secp521r1' ? 'P-521' : curve;
      return `ECDSA ${name ?? 'unknown curve'}`;
    }
    case 'rsa':
      return `RSA ${d?.modulusLength ?? '?'}`;
    case 'ed25519':
      return 'Ed25519';
    default:
      return undefined;
  }
}

/**
 * Public keys from PEM data: every "PUBLIC KEY" block (SubjectPublicKeyInfo).
 * `what` names the origin ("keyPath /etc/pki/os.pub").
 */
export function parsePublicKeys(data: Buffer, what: string): SigstorePublicKey[] {
  const text = data.toString('utf8');
  const blocks = text.match(/-----BEGIN PUBLIC KEY-----[\s\S]*?-----END PUBLIC KEY-----/g) ?? [];
  if (blocks.length === 0) throw new InvalidSignatureError(`${what}: no PEM "PUBLIC KEY" block`);
  return blocks.map((pem) => {
    let key: KeyObject;
    try {
      key = createPublicKey({ key: pem, format: 'pem' });
    } catch (err) {
      throw new InvalidSignatureError(`${what}: invalid public key: ${describeError(err)}`);
    }
    const description = describeKey(key);
    if (description === undefined) {
      throw new InvalidSignatureError(`${what}: unsupported key type ${key.asymmetricKeyType ?? '?'} (ECDSA, RSA or Ed25519 expected)`);
    }
    return { key, id: publicKeyId(key), description };
  });
}

/** Reads the keys a sigstoreSigned requirement names. */
export async function loadSigstoreKeys(keys: KeySource): Promise<SigstorePublicKey[]> {
  if (keys.kind === 'data') return keys.data.flatMap((d, i) => parsePublicKeys(d, `keyData${keys.data.length > 1 ? `[${i}]` : ''}`));
  const out: SigstorePublicKey[] = [];
  for (const path of keys.paths) {
    let data: Buffer;
    try {
      data = await readFile(path);
    } catch (err) {
      throw new InvalidSignatureError(`cannot read public key ${path}: ${describeError(err)}`);
    }
    out.push(...parsePublicKeys(data, `public key ${path}`));
  }
  return out;
}

/** Go's base64.StdEncoding.DecodeString: padding required, no other characters. */
function decodeStdBase64(s: string): Buffer | undefined {
  if (s.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(s)) return undefined;
  return Buffer.from(s, 'base64');
}

/** Whether `signature` over `payload` verifies with `pub`, per sigstore's LoadVerifier(key, SHA256). */
export function verifyRaw(pub: SigstorePublicKey, payload: Buffer, signature: Buffer): boolean {
  try {
    switch (pub.key.asymmetricKeyType) {
      case 'ec':
        return verify('sha256', payload, { key: pub.key, dsaEncoding: 'der' }, signature);
      case 'rsa':
        return verify('sha256', payload, { key: pub.key, padding: constants.RSA_PKCS1_PADDING }, signature);
      case 'ed25519':
        return verify(null, payload, pub.key, signature);
      default:
        return false;
    }
  } catch {
    // Malformed signatures (bad DER, wrong length) are "does not verify".
    return false;
  }
}

export interface SigstoreRules {
  /** Checks the signed manifest digest; returns a reason when it does not match. */
  checkDigest(signedDigest: string): string | undefined;
  /** Checks the signed identity; returns a reason when it is not accepted. */
  checkIdentity(signedReference: string): string | undefined;
}

export type SigstoreOutcome =
  | { accepted: true; key: SigstorePublicKey; payload: SimpleSigningPayload }
  | { accepted: false; reason: string };

/** prSigstoreSigned.isSignatureAccepted for key-based verification. */
export function verifySigstoreAttachment(
  keys: SigstorePublicKey[],
  attachment: SigstoreAttachment,
  rules: SigstoreRules,
  what: string,
): SigstoreOutcome {
  if (attachment.mediaType !== cosignSignatureMediaType) {
    return { accepted: false, reason: `unexpected media type ${JSON.stringify(attachment.mediaType)} for a sigstore signature` };
  }
  const b64 = attachment.annotations[cosignSignatureAnnotation];
  if (b64 === undefined) return { accepted: false, reason: `missing ${cosignSignatureAnnotation} annotation` };
  const signature = decodeStdBase64(b64);
  if (signature === undefined) return { accepted: false, reason: `${cosignSignatureAnnotation} is not valid base64` };
  const key = keys.find((k) => verifyRaw(k, attachment.payload, signature));
  if (key === undefined) {
    return {
      accepted: false,
      reason: `cryptographic signature verification failed (not signed by ${keys.length === 1 ? 'the trusted key' : `any of the ${keys.length} trusted keys`})`,
    };
  }
  let payload: SimpleSigningPayload;
  try {
    payload = parseSimpleSigningPayload(attachment.payload, 'cosign', what);
  } catch (err) {
    return { accepted: false, reason: describeError(err) };
  }
  const badDigest = rules.checkDigest(payload.dockerManifestDigest);
  if (badDigest !== undefined) return { accepted: false, reason: badDigest };
  const badIdentity = rules.checkIdentity(payload.dockerReference);
  if (badIdentity !== undefined) return { accepted: false, reason: badIdentity };
  return { accepted: true, key, payload };
}
