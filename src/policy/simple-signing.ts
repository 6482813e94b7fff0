/**
 * The "simple signing" payload both signature kinds carry
 * (containers/image docs/containers-signature.5.md; signature/simple.go and
 * signature/internal/sigstore_payload.go strictUnmarshalJSON):
 *
 *   {"critical": {"type": T,
 *                 "image": {"docker-manifest-digest": D},
 *                 "identity": {"docker-reference": R}},
 *    "optional": {"creator": S?, "timestamp": INT?, ...}}
 *
 * T is "atomic container signature" for GPG simple signing and
 * "cosign container image signature" for sigstore (cosign writes
 * `"optional": null`). Parsing is as paranoid as containers/image's
 * ParanoidUnmarshalJSONObject: exact field sets, no duplicate keys, strict
 * types. Nothing in the payload is trusted until the caller checked the
 * cryptographic signature over these exact bytes.
 */
import { UntrustedInputError } from '../errors.js';

export const atomicSignatureType = 'atomic container signature';
export const cosignSignatureType = 'cosign container image signature';

export type PayloadKind = 'atomic' | 'cosign';

/** A signature (or its payload) is malformed or does not verify. */
export class InvalidSignatureError extends UntrustedInputError {}

export interface SimpleSigningPayload {
  /** As written in the payload; compared as a string with the manifest digest (MatchesDigest). */
  dockerManifestDigest: string;
  /** As written in the payload; parsed by the identity rules (identity.ts). */
  dockerReference: string;
  creator?: string;
  timestamp?: number;
}

/**
 * The name of a key that occurs twice in one object of `text`, if any.
 * `text` must already be valid JSON (JSON.parse silently keeps the last
 * duplicate; Go's paranoid parser refuses them, and so do we: two parsers
 * reading different values from one signed blob is a classic forgery).
 */
export function findDuplicateKey(text: string): string | undefined {
  const stack: Array<{ keys: Set<string> | undefined; expectKey: boolean }> = [];
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let j = i + 1;
      while (text[j] !== '"') j += text[j] === '\\' ? 2 : 1;
      const top = stack.at(-1);
      if (top?.keys !== undefined && top.expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string;
        if (top.keys.has(key)) return key;
        top.keys.add(key);
        top.expectKey = false;
      }
      i = j;
    } else if (c === '{') stack.push({ keys: new Set(), expectKey: true });
    else if (c === '[') stack.push({ keys: undefined, expectKey: false });
    else if (c === '}' || c === ']') stack.pop();
    else if (c === ',') {
      const top = stack.at(-1);
      if (top?.keys !== undefined) top.expectKey = true;
    }
  }
  return undefined;
}

/** JSON.parse that also refuses duplicate object keys; `fail` gets a one-line reason. */
export function parseStrictJson(text: string, fail: (reason: string) => never): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    fail(`not valid JSON: ${err instanceof Error ? err.message : String(err)}`);
  }
  const dup = findDuplicateKey(text);
  if (dup !== undefined) fail(`duplicate key ${JSON.stringify(dup)}`);
  return value;
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** An object with exactly the keys `fields` (ParanoidUnmarshalJSONObjectExactFields). */
function exactObject(v: unknown, fields: string[], what: string, fail: (r: string) => never): Record<string, unknown> {
  if (!isPlainObject(v)) fail(`${what} is not a JSON object`);
  for (const k of Object.keys(v)) if (!fields.includes(k)) fail(`${what} has unknown field ${JSON.stringify(k)}`);
  for (const f of fields) if (!(f in v)) fail(`${what} is missing field ${JSON.stringify(f)}`);
  return v;
}

function stringField(v: unknown, what: string, fail: (r: string) => never): string {
  if (typeof v !== 'string') fail(`${what} is not a string`);
  return v;
}

/**
 * Parses a payload of the given kind. `what` names the signature in errors
 * ("signature 2 of docker://host/os:1").
 */
export function parseSimpleSigningPayload(bytes: Uint8Array, kind: PayloadKind, what: string): SimpleSigningPayload {
  const fail: (reason: string) => never = (reason) => {
    throw new InvalidSignatureError(`${what}: invalid signature payload: ${reason}`);
  };
  // Go's encoding/json replaces invalid UTF-8 with U+FFFD; TextDecoder does the same.
  const text = new TextDecoder('utf-8').decode(bytes);
  const top = exactObject(parseStrictJson(text, fail), ['critical', 'optional'], 'the payload', fail);

  const result: SimpleSigningPayload = { dockerManifestDigest: '', dockerReference: '' };
  const optional = top['optional'];
  // signature/internal/sigstore_payload.go: cosign writes "optional": null.
  if (!(kind === 'cosign' && optional === null)) {
    if (!isPlainObject(optional)) fail('"optional" is not a JSON object');
    if ('creator' in optional) result.creator = stringField(optional['creator'], 'optional.creator', fail);
    if ('timestamp' in optional) {
      const t = optional['timestamp'];
      if (typeof t !== 'number' || !Number.isSafeInteger(t)) fail('optional.timestamp is not an integer');
      result.timestamp = t;
    }
  }

  const critical = exactObject(top['critical'], ['type', 'image', 'identity'], '"critical"', fail);
  const type = stringField(critical['type'], 'critical.type', fail);
  const wantType = kind === 'atomic' ? atomicSignatureType : cosignSignatureType;
  if (type !== wantType) fail(`unrecognized signature type ${JSON.stringify(type)} (expected ${JSON.stringify(wantType)})`);
  const image = exactObject(critical['image'], ['docker-manifest-digest'], 'critical.image', fail);
  result.dockerManifestDigest = stringField(image['docker-manifest-digest'], 'critical.image.docker-manifest-digest', fail);
  const identity = exactObject(critical['identity'], ['docker-reference'], 'critical.identity', fail);
  result.dockerReference = stringField(identity['docker-reference'], 'critical.identity.docker-reference', fail);
  return result;
}
