/**
 * GPG simple signing made by the real tool: `skopeo copy --sign-by` with a key
 * generated here, signatures in a lookaside directory configured by a test
 * registries.d (registry) and as `signature-N` files (dir:), verified by ocisnap.
 */
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseReference } from '../../src/oci/reference.js';
import type { Digest } from '../../src/oci/types.js';
import { checkDirImage, dirManifestDigest, dirPolicyReference, dirSignatureSource } from '../../src/policy/dir-signatures.js';
import { parsePolicy, type Policy } from '../../src/policy/policy-json.js';
import { loadRegistriesD, parseRegistriesDFile, type RegistriesD } from '../../src/policy/registries-d.js';
import { registrySignatureSource } from '../../src/policy/registry-signatures.js';
import { PolicyRejectedError, checkPolicy, type SignatureSource } from '../../src/policy/verify.js';
import { requireCommands } from '../support/host.js';
import { buildImage } from '../support/image-factory.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';

let registry: TestRegistry;
let work: string;
let gnupgHome: string;
let registriesDDir: string;
let registriesD: RegistriesD;
let sigDir: string;
let layout: string;
let digest: Digest;
let trusted: string;
let foreign: string;
let policy: Policy;

async function genKey(name: string): Promise<string> {
  await execa('gpg', ['--batch', '--pinentry-mode', 'loopback', '--passphrase', '', '--quick-gen-key', `${name} <${name}@example.com>`, 'ed25519', 'sign', 'never'], {
    env: { GNUPGHOME: gnupgHome },
  });
  const { stdout } = await execa('gpg', ['--with-colons', '--list-keys', `${name}@example.com`], { env: { GNUPGHOME: gnupgHome } });
  const fpr = stdout.split('\n').find((l) => l.startsWith('fpr:'))?.split(':')[9];
  if (fpr === undefined) throw new Error('no fingerprint');
  return fpr;
}

async function skopeoCopy(dest: string, signBy: string, extra: string[] = []): Promise<void> {
  await execa(
    'skopeo',
    ['--registries.d', registriesDDir, '--insecure-policy', 'copy', '--quiet', '--dest-tls-verify=false', '--preserve-digests', '--sign-by', signBy, ...extra, `oci:${layout}:v1`, dest],
    { env: { GNUPGHOME: gnupgHome } },
  );
}

function fromRegistry(repoTag: string): { image: Parameters<typeof checkPolicy>[1]; sigs: SignatureSource & { close(): Promise<void> } } {
  const reference = `${registry.host}/${repoTag}`;
  return {
    image: { transport: 'docker', reference, manifestDigest: digest },
    sigs: registrySignatureSource({ ref: parseReference(reference), manifestDigest: digest, registriesD, source: { insecure: true, retries: 0 } }),
  };
}

async function checkRegistry(repoTag: string) {
  const { image, sigs } = fromRegistry(repoTag);
  try {
    return await checkPolicy(policy, image, sigs);
  } finally {
    await sigs.close();
  }
}

beforeAll(async () => {
  await requireCommands('docker-registry', 'skopeo', 'gpg', 'gpgconf');
  work = await mkdtemp(join(tmpdir(), 'ocisnap-gpg-test-'));
  gnupgHome = join(work, 'gnupg');
  await mkdir(gnupgHome, { mode: 0o700 });
  trusted = await genKey('trusted');
  foreign = await genKey('foreign');
  const { stdout: pub } = await execa('gpg', ['--armor', '--export', trusted], { env: { GNUPGHOME: gnupgHome } });
  await writeFile(join(work, 'trusted.asc'), `${pub}\n`);

  registry = await startRegistry();
  layout = join(work, 'layout');
  const img = await buildImage(layout, 'v1', { layers: [{ entries: [{ type: 'file', path: 'etc/hostname', content: 'gpg\n' }] }] });
  digest = img.manifestDigest as Digest;

  sigDir = join(work, 'lookaside');
  registriesDDir = join(work, 'registries.d');
  await mkdir(registriesDDir);
  await writeFile(join(registriesDDir, 'test.yaml'), `docker:\n  ${registry.host}:\n    lookaside: file://${sigDir}\n`);
  registriesD = await loadRegistriesD(registriesDDir);

  await skopeoCopy(`docker://${registry.host}/os:1`, trusted);
  await skopeoCopy(`docker://${registry.host}/foreign:1`, foreign);
  await skopeoCopy(`docker://${registry.host}/tampered:1`, trusted);
  // Flip one byte inside the signed message of the tampered image's signature.
  const tamperedSig = join(sigDir, `tampered@sha256=${digest.slice(7)}`, 'signature-1');
  const blob = await readFile(tamperedSig);
  blob[Math.floor(blob.length / 2)] = (blob[Math.floor(blob.length / 2)] as number) ^ 0x20;
  await writeFile(tamperedSig, blob);
  // The os signature copied to another repository (identity mismatch).
  await skopeoCopy(`docker://${registry.host}/moved:1`, trusted, ['--sign-identity', `${registry.host}/os:1`]);

  policy = parsePolicy(
    JSON.stringify({
      default: [{ type: 'reject' }],
      transports: {
        docker: { [registry.host]: [{ type: 'signedBy', keyType: 'GPGKeys', keyPath: join(work, 'trusted.asc') }] },
        dir: { [await dirPolicyReference(work)]: [{ type: 'signedBy', keyType: 'GPGKeys', keyPath: join(work, 'trusted.asc') }] },
      },
    }),
    join(work, 'policy.json'),
  );
});

afterAll(async () => {
  await registry?.stop();
  if (gnupgHome !== undefined) await execa('gpgconf', ['--kill', 'all'], { env: { GNUPGHOME: gnupgHome }, reject: false });
  if (work !== undefined) await rm(work, { recursive: true, force: true });
});

describe('GPG simple signing from a registry with a lookaside directory', () => {
  it('skopeo wrote the signature where registries.d says, and ocisnap accepts it', async () => {
    expect(await readdir(join(sigDir, `os@sha256=${digest.slice(7)}`))).toEqual(['signature-1']);
    const r = await checkRegistry('os:1');
    expect(r).toMatchObject({ allowed: true, requirement: 'signedBy', keyId: trusted, scope: `transports.docker[${JSON.stringify(registry.host)}]` });
    expect(r.details).toContain(`signedBy: signature 1 by GPG key ${trusted} for ${registry.host}/os:1`);
  });

  const refusals: Array<[string, string, RegExp]> = [
    ['a signature by a foreign key', 'foreign:1', /signed by an untrusted key/],
    // Where the flipped byte lands decides gpg's complaint; every one of them is a refusal.
    ['a corrupted signature', 'tampered:1', /not a valid signed message|bad signature|signed by an untrusted key|signature not valid/],
    ['a signature for another repository', 'moved:1', /signature for identity "127\.0\.0\.1:\d+\/os:1" is not accepted by signedIdentity matchRepoDigestOrExact/],
    ['an image without signatures', 'os:2', /a signature was required, but no signature exists/],
  ];
  for (const [name, repoTag, reason] of refusals) {
    it(`refuses ${name}`, async () => {
      if (repoTag === 'os:2') await execa('skopeo', ['copy', '--quiet', '--insecure-policy', '--dest-tls-verify=false', '--preserve-digests', `oci:${layout}:v1`, `docker://${registry.host}/unsigned:1`]);
      const err = await checkRegistry(repoTag === 'os:2' ? 'unsigned:1' : repoTag).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(PolicyRejectedError);
      expect((err as Error).message).toMatch(/rejected by policy scope transports\.docker\[".*"\] \(signedBy\): /);
      expect((err as Error).message).toMatch(reason);
    });
  }
});

describe('GPG simple signing in a dir: copy', () => {
  it('accepts signature-N files written by skopeo and refuses a foreign one', async () => {
    const dir = join(work, 'dircopy');
    await skopeoCopy(`dir:${dir}`, trusted, ['--sign-identity', `${registry.host}/os:1`]);
    expect((await readdir(dir)).filter((n) => n.startsWith('signature-'))).toEqual(['signature-1']);
    const image = {
      transport: 'dir' as const,
      reference: await dirPolicyReference(dir),
      manifestDigest: await dirManifestDigest(dir),
      dockerReference: `${registry.host}/os:1`,
    };
    expect(image.manifestDigest).toBe(digest);
    const ok = await checkDirImage(policy, dir, { dockerReference: `${registry.host}/os:1` });
    expect(ok).toMatchObject({ requirement: 'signedBy', keyId: trusted });
    // Under another name (default identity rule: exact tag) it is refused.
    await expect(checkDirImage(policy, dir, { dockerReference: `${registry.host}/os:2` })).rejects.toThrow(
      /signature for identity ".*\/os:1" is not accepted by signedIdentity matchRepoDigestOrExact for .*\/os:2/,
    );

    const foreignDir = join(work, 'foreigncopy');
    await skopeoCopy(`dir:${foreignDir}`, foreign, ['--sign-identity', `${registry.host}/os:1`]);
    await expect(
      checkPolicy(policy, { ...image, reference: await dirPolicyReference(foreignDir) }, dirSignatureSource(foreignDir)),
    ).rejects.toThrow(/^dir:\/.*foreigncopy: rejected by policy scope transports\.dir\[".*"\] \(signedBy\): signed by an untrusted key/);
  });

  it('refuses a signature whose signed content was altered (BADSIG)', async () => {
    const dir = join(work, 'altered');
    await skopeoCopy(`dir:${dir}`, trusted, ['--sign-identity', `${registry.host}/os:1`]);
    // skopeo's message is compressed; re-sign the same payload uncompressed so the
    // literal data can be edited in place, then change one byte of it.
    const env = { GNUPGHOME: gnupgHome };
    const { stdout: payload } = await execa('gpg', ['--batch', '--decrypt', join(dir, 'signature-1')], { env, encoding: 'buffer', stripFinalNewline: false });
    const { stdout: plain } = await execa('gpg', ['--batch', '--compress-algo', 'none', '--local-user', trusted, '--sign'], { env, input: payload, encoding: 'buffer', stripFinalNewline: false });
    const image = {
      transport: 'dir' as const,
      reference: await dirPolicyReference(dir),
      manifestDigest: digest,
      dockerReference: `${registry.host}/os:1`,
    };
    await writeFile(join(dir, 'signature-1'), plain);
    expect((await checkPolicy(policy, image, dirSignatureSource(dir))).keyId).toBe(trusted);
    const altered = Buffer.from(plain);
    const at = altered.indexOf(Buffer.from('/os:1'));
    expect(at).toBeGreaterThan(0);
    altered[at + 4] = '2'.charCodeAt(0);
    await writeFile(join(dir, 'signature-1'), altered);
    await expect(checkPolicy(policy, image, dirSignatureSource(dir))).rejects.toThrow(/\(signedBy\): bad signature \(content altered\)/);
  });

  it('reads lookaside signatures over http, stopping at the first 404', async () => {
    const requests: string[] = [];
    const server = createServer((req, res) => {
      requests.push(req.url ?? '');
      readFile(join(sigDir, decodeURIComponent(req.url ?? '/')))
        .then((body) => res.end(body))
        .catch(() => {
          res.statusCode = 404;
          res.end();
        });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    try {
      const conf = parseRegistriesDFile(`default-docker:\n  lookaside: http://127.0.0.1:${port}\n`, 'http.yaml');
      const reference = `${registry.host}/os:1`;
      const sigs = registrySignatureSource({ ref: parseReference(reference), manifestDigest: digest, registriesD: conf, source: { insecure: true } });
      const r = await checkPolicy(policy, { transport: 'docker', reference, manifestDigest: digest }, sigs);
      await sigs.close();
      expect(r.keyId).toBe(trusted);
      expect(requests).toEqual([`/os@sha256=${digest.slice(7)}/signature-1`, `/os@sha256=${digest.slice(7)}/signature-2`]);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });

  it('a signedBy key file without a key is an error, not an accept', async () => {
    await writeFile(join(work, 'empty.asc'), 'not a key\n');
    const p = parsePolicy(JSON.stringify({ default: [{ type: 'signedBy', keyType: 'GPGKeys', keyPath: join(work, 'empty.asc') }] }), '/p.json');
    const { image, sigs } = fromRegistry('os:1');
    try {
      await expect(checkPolicy(p, image, sigs)).rejects.toThrow(/\(signedBy\): no GPG public key could be imported from .*empty\.asc/);
    } finally {
      await sigs.close();
    }
  });
});
