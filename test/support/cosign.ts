/**
 * Cosign-format signatures made in the test with node:crypto (Debian's
 * skopeo/podman have sigstore disabled), in the exact layout `cosign sign`
 * writes (sigstore/cosign pkg/oci/static, pkg/cosign/payload; sigstore/sigstore
 * pkg/signature/payload):
 *
 * - payload: {"critical":{"identity":{"docker-reference":REPO},"image":{"docker-manifest-digest":D},
 *   "type":"cosign container image signature"},"optional":null} (Go struct field order);
 * - signature: base64 of ECDSA-SHA256 (DER) / RSA PKCS#1 v1.5 SHA-256 / Ed25519 over the payload bytes;
 * - an OCI manifest at tag `sha256-<hex>.sig`, one layer per signature with media type
 *   application/vnd.dev.cosign.simplesigning.v1+json and the
 *   `dev.cosignproject.cosign/signature` annotation; config is go-containerregistry's
 *   empty image config with the payload digests as diff_ids.
 *
 * Pushed with plain distribution-spec requests (monolithic blob upload, manifest PUT).
 */
import { createHash, generateKeyPairSync, sign, constants, type KeyObject } from 'node:crypto';

export interface TestKey {
  kind: 'ecdsa-p256' | 'rsa' | 'ed25519';
  privateKey: KeyObject;
  publicKey: KeyObject;
  publicPem: string;
}

export function generateTestKey(kind: TestKey['kind']): TestKey {
  const pair =
    kind === 'ecdsa-p256'
      ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
      : kind === 'rsa'
        ? generateKeyPairSync('rsa', { modulusLength: 2048 })
        : generateKeyPairSync('ed25519');
  return {
    kind,
    privateKey: pair.privateKey,
    publicKey: pair.publicKey,
    publicPem: pair.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
  };
}

export function cosignPayload(dockerReference: string, manifestDigest: string, optional: Record<string, unknown> | null = null): Buffer {
  return Buffer.from(
    JSON.stringify({
      critical: {
        identity: { 'docker-reference': dockerReference },
        image: { 'docker-manifest-digest': manifestDigest },
        type: 'cosign container image signature',
      },
      optional,
    }),
  );
}

export function signPayload(key: TestKey, payload: Buffer): string {
  const sig =
    key.kind === 'ecdsa-p256'
      ? sign('sha256', payload, { key: key.privateKey, dsaEncoding: 'der' })
      : key.kind === 'rsa'
        ? sign('sha256', payload, { key: key.privateKey, padding: constants.RSA_PKCS1_PADDING })
        : sign(null, payload, key.privateKey);
  return sig.toString('base64');
}

export interface CosignLayer {
  payload: Buffer;
  /** base64 signature; omitted = no annotation. */
  signature?: string;
  mediaType?: string;
}

const sha256 = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** The `.sig` manifest and its blobs. */
export function cosignManifest(layers: CosignLayer[]): { manifest: Buffer; blobs: Buffer[] } {
  const config = Buffer.from(
    JSON.stringify({
      architecture: '',
      created: '0001-01-01T00:00:00Z',
      history: [{ created: '0001-01-01T00:00:00Z' }],
      os: '',
      rootfs: { type: 'layers', diff_ids: layers.map((l) => sha256(l.payload)) },
      config: {},
    }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', size: config.length, digest: sha256(config) },
      layers: layers.map((l) => ({
        mediaType: l.mediaType ?? 'application/vnd.dev.cosign.simplesigning.v1+json',
        size: l.payload.length,
        digest: sha256(l.payload),
        ...(l.signature !== undefined && { annotations: { 'dev.cosignproject.cosign/signature': l.signature } }),
      })),
    }),
  );
  return { manifest, blobs: [config, ...layers.map((l) => l.payload)] };
}

/** `user:password` for registries with htpasswd (Basic) auth. */
type Auth = string | undefined;
const authHeaders = (auth: Auth): Record<string, string> =>
  auth === undefined ? {} : { authorization: `Basic ${Buffer.from(auth).toString('base64')}` };

async function pushBlob(host: string, repo: string, blob: Buffer, auth: Auth): Promise<void> {
  const start = await fetch(`http://${host}/v2/${repo}/blobs/uploads/`, { method: 'POST', headers: authHeaders(auth) });
  if (start.status !== 202) throw new Error(`blob upload start: ${start.status}`);
  const location = new URL(start.headers.get('location') ?? '', `http://${host}`);
  location.searchParams.set('digest', sha256(blob));
  const put = await fetch(location, {
    method: 'PUT',
    headers: { 'content-type': 'application/octet-stream', ...authHeaders(auth) },
    body: blob,
  });
  if (put.status !== 201) throw new Error(`blob upload: ${put.status} ${await put.text()}`);
}

/** Pushes cosign signature layers for `manifestDigest` to `host/repo` under tag `sha256-<hex>.sig`. */
export async function pushCosignSignatures(
  host: string,
  repo: string,
  manifestDigest: string,
  layers: CosignLayer[],
  auth?: string,
): Promise<void> {
  const { manifest, blobs } = cosignManifest(layers);
  for (const b of blobs) await pushBlob(host, repo, b, auth);
  const tag = `${manifestDigest.replace(':', '-')}.sig`;
  const res = await fetch(`http://${host}/v2/${repo}/manifests/${tag}`, {
    method: 'PUT',
    headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json', ...authHeaders(auth) },
    body: manifest,
  });
  if (res.status !== 201) throw new Error(`manifest push: ${res.status} ${await res.text()}`);
}
