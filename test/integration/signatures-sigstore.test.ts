/**
 * Sigstore signatures in cosign's exact format (made here with node:crypto:
 * Debian's skopeo/podman have sigstore disabled), pushed beside images in a
 * real docker-registry and verified through the registry client; and the same
 * signatures in a skopeo `dir:` copy.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseReference } from '../../src/oci/reference.js';
import type { Digest } from '../../src/oci/types.js';
import {
  dirManifestDigest,
  dirPolicyReference,
  dirSignatureSource,
  sigstoreSignatureBlob,
} from '../../src/policy/dir-signatures.js';
import { parsePolicy, type Policy } from '../../src/policy/policy-json.js';
import { checkRegistryImage } from '../../src/policy/registry-signatures.js';
import { PolicyRejectedError, checkPolicy, type VerificationResult } from '../../src/policy/verify.js';
import { cosignPayload, generateTestKey, pushCosignSignatures, signPayload, type TestKey } from '../support/cosign.js';
import { requireCommands } from '../support/host.js';
import { buildImage, copyImage, pushLayout } from '../support/image-factory.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';

let registry: TestRegistry;
let work: string;
let digest: Digest;
let policy: Policy;
const keys = {
  p256: generateTestKey('ecdsa-p256'),
  rsa: generateTestKey('rsa'),
  ed25519: generateTestKey('ed25519'),
  stranger: generateTestKey('ecdsa-p256'),
};

const cosignLayer = (key: TestKey, identity: string, d: string = digest) => {
  const payload = cosignPayload(identity, d);
  return { payload, signature: signPayload(key, payload) };
};

async function check(repoTag: string, p: Policy = policy): Promise<VerificationResult> {
  const reference = `${registry.host}/${repoTag}`;
  const ref = parseReference(reference);
  return checkRegistryImage(p, reference, {
    ref,
    manifestDigest: digest,
    registriesD: { docker: new Map(), files: [] },
    source: { insecure: true, retries: 0 },
  });
}

beforeAll(async () => {
  await requireCommands('docker-registry', 'skopeo');
  work = await mkdtemp(join(tmpdir(), 'ocisnap-sigstore-'));
  registry = await startRegistry();
  const img = await buildImage(join(work, 'layout'), 'v1', {
    layers: [{ entries: [{ type: 'file', path: 'etc/os-release', content: 'ID=ocisnap-test\n' }] }],
  });
  digest = img.manifestDigest as Digest;
  const repos = ['os', 'rsa', 'ed', 'unsigned', 'retagged', 'stranger', 'otherdigest', 'reformatted'];
  for (const repo of repos) await pushLayout(join(work, 'layout'), 'v1', `docker://${registry.host}/${repo}:1`);

  const h = registry.host;
  await pushCosignSignatures(h, 'os', digest, [cosignLayer(keys.p256, `${h}/os`)]);
  await pushCosignSignatures(h, 'rsa', digest, [cosignLayer(keys.rsa, `${h}/rsa`)]);
  await pushCosignSignatures(h, 'ed', digest, [cosignLayer(keys.ed25519, `${h}/ed`)]);
  // The os signature copied next to the same image in another repository (as `cosign copy` would).
  await pushCosignSignatures(h, 'retagged', digest, [cosignLayer(keys.p256, `${h}/os`)]);
  await pushCosignSignatures(h, 'stranger', digest, [cosignLayer(keys.stranger, `${h}/stranger`)]);
  await pushCosignSignatures(h, 'otherdigest', digest, [
    cosignLayer(keys.p256, `${h}/otherdigest`, `sha256:${'e'.repeat(64)}`),
  ]);
  // Same content, other bytes: key order and spacing as another cosign version might write them.
  const odd = Buffer.from(
    `{ "optional": {"creator": "cosign"},\n  "critical": {"type": "cosign container image signature", "image": {"docker-manifest-digest": "${digest}"}, "identity": {"docker-reference": "${h}/reformatted"}}}`,
  );
  await pushCosignSignatures(h, 'reformatted', digest, [{ payload: odd, signature: signPayload(keys.p256, odd) }]);

  const keyFiles: string[] = [];
  for (const [name, k] of Object.entries(keys)) {
    if (name === 'stranger') continue;
    const f = join(work, `${name}.pub`);
    await writeFile(f, k.publicPem);
    keyFiles.push(f);
  }
  policy = parsePolicy(
    JSON.stringify({
      default: [{ type: 'reject' }],
      transports: {
        docker: {
          [h]: [{ type: 'sigstoreSigned', keyPaths: keyFiles, signedIdentity: { type: 'matchRepository' } }],
        },
        dir: { [await dirPolicyReference(work)]: [{ type: 'sigstoreSigned', keyPath: keyFiles[0], signedIdentity: { type: 'matchRepository' } }] },
      },
    }),
    join(work, 'policy.json'),
  );
});

afterAll(async () => {
  await registry?.stop();
  if (work !== undefined) await rm(work, { recursive: true, force: true });
});

describe('sigstore signatures from a registry', () => {
  it('accepts ECDSA P-256, RSA and Ed25519 cosign signatures', async () => {
    const p = await check('os:1');
    expect(p).toMatchObject({ allowed: true, requirement: 'sigstoreSigned', scope: `transports.docker[${JSON.stringify(registry.host)}]` });
    expect(p.details).toMatch(/ECDSA P-256 key sha256:/);
    expect((await check('rsa:1')).details).toMatch(/RSA 2048 key/);
    expect((await check('ed:1')).details).toMatch(/Ed25519 key/);
    expect(new Set([p.keyId, (await check('rsa:1')).keyId, (await check('ed:1')).keyId]).size).toBe(3);
  });

  it('verifies the payload bytes as stored, not a re-serialization', async () => {
    expect((await check('reformatted:1')).allowed).toBe(true);
  });

  const refusals: Array<[string, string, RegExp]> = [
    ['an unsigned image', 'unsigned:1', /a signature was required, but no signature exists/],
    ['a signature by another key', 'stranger:1', /cryptographic signature verification failed \(not signed by any of the 3 trusted keys\)/],
    ['an image re-tagged to another repository', 'retagged:1', /signature for identity "127\.0\.0\.1:\d+\/os" is not accepted by signedIdentity matchRepository/],
    ['a payload naming another digest', 'otherdigest:1', /signature is for manifest sha256:eeee/],
  ];
  for (const [name, repoTag, reason] of refusals) {
    it(`refuses ${name}, naming the image, the scope and the reason`, async () => {
      const err = await check(repoTag).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(PolicyRejectedError);
      const msg = (err as Error).message;
      expect(msg).toContain(`docker://${registry.host}/${repoTag}: rejected by policy scope transports.docker["${registry.host}"] (sigstoreSigned): `);
      expect(msg).toMatch(reason);
    });
  }

  it('refuses everything outside the configured scope by the default', async () => {
    const other = parsePolicy(JSON.stringify({ default: [{ type: 'reject' }] }), '/p.json');
    await expect(check('os:1', other)).rejects.toThrow(/rejected by policy scope default \(reject\)/);
  });
});

describe('sigstore signatures from a registry that needs credentials', () => {
  it('fetches the .sig manifest with the credentials given, and fails closed without them', async () => {
    const secured = await startRegistry({ kind: 'htpasswd', username: 'ci', password: 'hunter2' });
    try {
      await secured.push(`oci:${join(work, 'layout')}:v1`, 'os:1');
      const h = secured.host;
      await pushCosignSignatures(h, 'os', digest, [cosignLayer(keys.ed25519, `${h}/os`)], 'ci:hunter2');
      const p = parsePolicy(
        JSON.stringify({ default: [{ type: 'sigstoreSigned', keyData: Buffer.from(keys.ed25519.publicPem).toString('base64'), signedIdentity: { type: 'matchRepository' } }] }),
        '/p.json',
      );
      const opts = (credentials?: { username: string; password: string }) => ({
        ref: parseReference(`${h}/os:1`),
        manifestDigest: digest,
        registriesD: { docker: new Map(), files: [] },
        source: { insecure: true, retries: 0, ...(credentials !== undefined && { credentials }) },
      });
      const ok = await checkRegistryImage(p, `${h}/os:1`, opts({ username: 'ci', password: 'hunter2' }));
      expect(ok.details).toMatch(/Ed25519 key/);
      await expect(checkRegistryImage(p, `${h}/os:1`, opts())).rejects.toThrow(
        new RegExp(`docker://${h}/os:1: rejected by policy scope default \\(sigstoreSigned\\): .*(401|auth|credentials)`, 'i'),
      );
    } finally {
      await secured.stop();
    }
  });
});

describe('sigstore signatures in a dir: copy', () => {
  it('reads sigstore-json signature files and checks them under the dir scope', async () => {
    const dir = join(work, 'copy');
    await copyImage(`oci:${join(work, 'layout')}:v1`, `dir:${dir}`);
    const d = await dirManifestDigest(dir);
    expect(d).toBe(digest);
    const layer = cosignLayer(keys.p256, `${registry.host}/os`);
    await writeFile(
      join(dir, 'signature-1'),
      sigstoreSignatureBlob({
        mediaType: 'application/vnd.dev.cosign.simplesigning.v1+json',
        payload: layer.payload,
        annotations: { 'dev.cosignproject.cosign/signature': layer.signature },
      }),
    );
    const image = {
      transport: 'dir' as const,
      reference: await dirPolicyReference(dir),
      manifestDigest: d,
      dockerReference: `${registry.host}/os:1`,
    };
    const ok = await checkPolicy(policy, image, dirSignatureSource(dir));
    expect(ok.scope).toBe(`transports.dir[${JSON.stringify(await dirPolicyReference(work))}]`);
    // Without a docker reference the identity cannot match (as in containers/image).
    const { dockerReference: _, ...anonymous } = image;
    await expect(checkPolicy(policy, anonymous, dirSignatureSource(dir))).rejects.toThrow(/the image has no docker reference to match/);
    // Under another name, the signature does not apply.
    await expect(checkPolicy(policy, { ...image, dockerReference: `${registry.host}/evil:1` }, dirSignatureSource(dir))).rejects.toThrow(
      /is not accepted by signedIdentity matchRepository/,
    );
  });
});
