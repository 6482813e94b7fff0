/**
 * The signature policy enforced by `ocisnap pull` and `ocisnap policy check`,
 * against a real registry (behind a logging proxy, to see what was fetched),
 * cosign-format sigstore signatures and GPG signatures made by skopeo:
 *
 * - a signed image pulls, and the verification is recorded with the image
 *   (podman still lists and inspects it);
 * - unsigned, foreign-key, wrong-identity and wrong-digest images are refused
 *   with one line naming image, scope and reason; the store is unchanged and
 *   no layer or config blob was requested;
 * - GPG signedBy from a registry lookaside and from a dir: copy;
 * - `policy check` output and exit codes, reading no layer;
 * - a policy that does not parse, or asks for what ocisnap lacks, is an error;
 * - verifyStoredImage re-checks a stored image (and its offline fallback);
 *   a scope that needs no signature is decided without the registry.
 */
import { lstat, mkdir, mkdtemp, realpath, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { publicKeyId } from '../../src/policy/sigstore.js';
import { PolicyRejectedError } from '../../src/policy/verify.js';
import { ReverifyUnavailableError, loadPolicyConfig, verifyStoredImage } from '../../src/pull/policy-check.js';
import { readImageVerifications } from '../../src/pull/verification-record.js';
import { Store } from '../../src/store/index.js';
import { createBtrfs, type BtrfsFixture } from '../support/btrfs.js';
import { ocisnap } from '../support/cli.js';
import { cosignPayload, generateTestKey, pushCosignSignatures, signPayload, type TestKey } from '../support/cosign.js';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js';
import { requireCommands } from '../support/host.js';
import { buildImage, buildMultiPlatformImage, copyImage, fakePlatformImage, hostPlatform, pushLayout, type BuiltImage } from '../support/image-factory.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';
import { storeState as storeStateOf } from '../support/store-state.js';

let fs: BtrfsFixture;
let work: string;
let store: string;
let registry: TestRegistry;
let proxy: FaultProxy;
let layout: string;
let image: BuiltImage;
let digest: string;
let gnupgHome: string;
let trusted: string;
let foreign: string;
let dirsScope: string;
let registriesD: string;
let policyFile: string;
let acceptFile: string;
const key = generateTestKey('ecdsa-p256');
const stranger = generateTestKey('ecdsa-p256');

const P = () => proxy.host;
/** Flags every registry pull here uses. */
const common = () => ['--tls-verify=false', '--signature-policy', policyFile, '--registries-d', registriesD];

const storeState = () => storeStateOf(store);

/** Requests for the image's config or layer blobs (the content a verified pull would fetch). */
function contentRequests(from: number): string[] {
  const blobs = [image.configDigest, ...image.layers.map((l) => l.digest)];
  return proxy.requests.slice(from).map((r) => r.path).filter((p) => blobs.some((b) => p.includes(b)));
}

async function refusedPull(args: string[]): Promise<string> {
  const before = await storeState();
  const from = proxy.requests.length;
  const r = await ocisnap(['--storage-root', store, 'pull', '--progress', 'plain', ...args]);
  const stderr = String(r.stderr).trim();
  expect(r.exitCode, stderr).not.toBe(0);
  expect(stderr.split('\n'), 'one line').toHaveLength(1);
  expect(stderr).not.toMatch(/internal error|\n\s+at /);
  expect(await storeState(), 'store unchanged').toBe(before);
  expect(contentRequests(from), 'no config or layer blob requested').toEqual([]);
  return stderr;
}

const cosign = (k: TestKey, identity: string, d = digest) => {
  const payload = cosignPayload(identity, d);
  return { payload, signature: signPayload(k, payload) };
};

async function genKey(name: string): Promise<string> {
  const env = { GNUPGHOME: gnupgHome };
  await execa('gpg', ['--batch', '--pinentry-mode', 'loopback', '--passphrase', '', '--quick-gen-key', `${name} <${name}@example.com>`, 'ed25519', 'sign', 'never'], { env });
  const { stdout } = await execa('gpg', ['--with-colons', '--list-keys', `${name}@example.com`], { env });
  const fpr = stdout.split('\n').find((l) => l.startsWith('fpr:'))?.split(':')[9];
  if (fpr === undefined) throw new Error('no fingerprint');
  return fpr;
}

/** skopeo copy of the test image, GPG-signed by `signBy` for identity `identity`. */
async function skopeoSigned(dest: string, signBy: string, identity: string): Promise<void> {
  await execa(
    'skopeo',
    ['--registries.d', registriesD, '--insecure-policy', 'copy', '--quiet', '--dest-tls-verify=false', '--preserve-digests',
      '--sign-by', signBy, '--sign-identity', identity, `oci:${layout}:v1`, dest],
    { env: { GNUPGHOME: gnupgHome } },
  );
}

beforeAll(async () => {
  await requireCommands('docker-registry', 'skopeo', 'gpg', 'gpgconf', 'podman');
  fs = await createBtrfs({ sizeMiB: 1024 });
  work = await mkdtemp(join(tmpdir(), 'ocisnap-pull-policy-'));
  store = join(fs.mountpoint, 'store');
  registry = await startRegistry();
  proxy = await startFaultProxy(registry.host);

  layout = join(work, 'layout');
  image = await buildImage(layout, 'v1', {
    layers: [
      { entries: [{ type: 'file', path: 'etc/os-release', content: 'ID=policy-test\n' }] },
      { entries: [{ type: 'file', path: 'usr/bin/tool', content: 'x'.repeat(5000), mode: 0o755 }] },
    ],
  });
  digest = image.manifestDigest;

  // Sigstore (cosign format) signatures beside the image, for the names it is pulled by (through the proxy).
  const push = async (repo: string, layers: ReturnType<typeof cosign>[]) => {
    await pushLayout(layout, 'v1', `docker://${registry.host}/${repo}:1`);
    if (layers.length > 0) await pushCosignSignatures(registry.host, repo, digest, layers);
  };
  await push('signed/os', [cosign(key, `${P()}/signed/os:1`)]);
  await push('unsigned/os', []);
  await push('other/os', [cosign(stranger, `${P()}/other/os:1`)]);
  await push('moved/os', [cosign(key, `${P()}/signed/os:1`)]);
  await push('wrongdigest/os', [cosign(key, `${P()}/wrongdigest/os:1`, `sha256:${'0'.repeat(64)}`)]);
  await writeFile(join(work, 'cosign.pub'), key.publicPem);

  // GPG simple signing (skopeo --sign-by), lookaside directory from registries.d.
  gnupgHome = join(work, 'gnupg');
  await mkdir(gnupgHome, { mode: 0o700 });
  trusted = await genKey('trusted');
  foreign = await genKey('foreign');
  const { stdout: pub } = await execa('gpg', ['--armor', '--export', trusted], { env: { GNUPGHOME: gnupgHome } });
  await writeFile(join(work, 'trusted.asc'), `${pub}\n`);
  registriesD = join(work, 'registries.d');
  await mkdir(registriesD);
  await writeFile(join(registriesD, 'default.yaml'), `default-docker:\n  lookaside: file://${join(work, 'lookaside')}\n`);
  await skopeoSigned(`docker://${registry.host}/gpg/os:1`, trusted, `${P()}/gpg/os:1`);
  await skopeoSigned(`docker://${registry.host}/gpg/foreign:1`, foreign, `${P()}/gpg/foreign:1`);
  dirsScope = join(await realpath(work), 'dirs');
  await mkdir(dirsScope);
  await skopeoSigned(`dir:${join(dirsScope, 'copy')}`, trusted, `${P()}/gpg/os:1`);
  await skopeoSigned(`dir:${join(dirsScope, 'foreign')}`, foreign, `${P()}/gpg/os:1`);

  const gpgReq = (extra: object = {}) => ({ type: 'signedBy', keyType: 'GPGKeys', keyPath: join(work, 'trusted.asc'), ...extra });
  policyFile = join(work, 'policy.json');
  await writeFile(
    policyFile,
    JSON.stringify({
      default: [{ type: 'reject' }],
      transports: {
        docker: {
          [P()]: [{ type: 'sigstoreSigned', keyPath: join(work, 'cosign.pub') }],
          [`${P()}/gpg`]: [gpgReq()],
        },
        // dir: copies have no docker reference: the identity is named in the policy.
        dir: { [dirsScope]: [gpgReq({ signedIdentity: { type: 'exactReference', dockerReference: `${P()}/gpg/os:1` } })] },
      },
    }),
  );
  acceptFile = join(work, 'accept.json');
  await writeFile(acceptFile, JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));

  // A non-empty store, so "unchanged" means something; its layers are not the test image's.
  const other = join(work, 'other');
  await buildImage(other, 'o', { layers: [{ entries: [{ type: 'file', path: 'etc/other', content: 'other\n' }] }] });
  const r = await ocisnap(['--storage-root', store, 'pull', '--progress', 'none', '--signature-policy', acceptFile, `oci:${other}:o`]);
  expect(r.exitCode, String(r.stderr)).toBe(0);
});

afterAll(async () => {
  await proxy?.stop();
  await registry?.stop();
  if (gnupgHome !== undefined) await execa('gpgconf', ['--kill', 'all'], { env: { GNUPGHOME: gnupgHome }, reject: false });
  await fs?.dispose();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('refused before anything is fetched or stored', () => {
  const cases: Array<[string, string, RegExp]> = [
    ['unsigned', 'unsigned/os', /a signature was required, but no signature exists/],
    ['signed by another key', 'other/os', /cryptographic signature verification failed \(not signed by the trusted key\)/],
    ['signed for another repository (identity mismatch)', 'moved/os', /signature for identity ".*\/signed\/os:1" is not accepted by signedIdentity matchRepoDigestOrExact/],
    ['whose signature names another digest', 'wrongdigest/os', /signature is for manifest sha256:0{64}, not sha256:/],
  ];
  for (const [name, repo, reason] of cases) {
    test(`an image ${name}`, async () => {
      const msg = await refusedPull([...common(), `${P()}/${repo}:1`]);
      const scope = `transports.docker[${JSON.stringify(P())}]`;
      expect(msg).toContain(`ocisnap: docker://${P()}/${repo}:1: rejected by policy scope ${scope} (sigstoreSigned): `);
      expect(msg).toMatch(reason);
    });
  }

  test('a GPG signature by a foreign key (registry lookaside)', async () => {
    const msg = await refusedPull([...common(), `${P()}/gpg/foreign:1`]);
    expect(msg).toMatch(new RegExp(`rejected by policy scope transports\\.docker\\[".*/gpg"\\] \\(signedBy\\): signed by an untrusted key`));
  });

  test('a dir: copy signed by a foreign key, and one outside every dir scope', async () => {
    expect(await refusedPull([...common(), `dir:${join(dirsScope, 'foreign')}`])).toMatch(
      /^ocisnap: dir:\/.*\/dirs\/foreign: rejected by policy scope transports\.dir\[".*\/dirs"\] \(signedBy\): signed by an untrusted key/,
    );
    const outside = join(work, 'outside');
    await copyImage(`oci:${layout}:v1`, `dir:${outside}`);
    expect(await refusedPull([...common(), `dir:${outside}`])).toMatch(/rejected by policy scope default \(reject\): the policy rejects every image/);
  });

  test('a policy that does not parse, or that asks for keyless sigstore, is an error and never an accept', async () => {
    const broken = join(work, 'broken.json');
    await writeFile(broken, '{"default": [{"type": "insecureAcceptAnything"}]');
    const from = proxy.requests.length;
    const msg = await refusedPull(['--tls-verify=false', '--signature-policy', broken, `${P()}/signed/os:1`]);
    expect(msg).toMatch(/^ocisnap: invalid signature policy .*broken\.json: /);
    expect(proxy.requests.length, 'nothing asked of the registry').toBe(from);

    const keyless = join(work, 'keyless.json');
    await writeFile(keyless, JSON.stringify({ default: [{ type: 'sigstoreSigned', fulcio: { caPath: '/x' } }] }));
    expect(await refusedPull(['--tls-verify=false', '--signature-policy', keyless, `${P()}/signed/os:1`])).toMatch(
      /invalid signature policy .*keyless\.json: .*fulcio.*not supported/,
    );
    const unknown = join(work, 'unknown.json');
    await writeFile(unknown, JSON.stringify({ default: [{ type: 'acceptIfTuesday' }] }));
    expect(await refusedPull(['--tls-verify=false', '--signature-policy', unknown, `${P()}/signed/os:1`])).toMatch(
      /unknown policy requirement type "acceptIfTuesday"/,
    );
    const missing = await refusedPull(['--tls-verify=false', '--signature-policy', join(work, 'nope.json'), `${P()}/signed/os:1`]);
    expect(missing).toMatch(/invalid signature policy .*nope\.json: cannot read/);
  });
});

describe('ocisnap policy check', () => {
  const check = (...args: string[]) => ocisnap(['policy', 'check', ...args]);

  test('explains an accepted sigstore signature (exit 0) and a rejection (exit 1), reading no layer', async () => {
    const from = proxy.requests.length;
    const ok = await check(...common(), `${P()}/signed/os:1`);
    expect(ok.exitCode, String(ok.stderr)).toBe(0);
    expect(String(ok.stdout)).toContain(`Image: docker://${P()}/signed/os:1\nManifest: ${digest}\nPolicy: ${policyFile}\n`);
    expect(String(ok.stdout)).toContain(`Scope: transports.docker[${JSON.stringify(P())}]\nRequirement: sigstoreSigned\nKey: ${publicKeyId(key.publicKey)}\n`);
    expect(String(ok.stdout)).toMatch(/Result: accepted: allowed by policy scope .*sigstoreSigned: signature 1 by ECDSA P-256 key sha256:[0-9a-f]{64}/);

    const bad = await check(...common(), `${P()}/other/os:1`);
    expect(bad.exitCode).toBe(1);
    expect(String(bad.stdout)).toContain('Requirement: sigstoreSigned\nResult: rejected: ');
    expect(String(bad.stderr).trim()).toMatch(new RegExp(`^ocisnap: docker://${P()}/other/os:1: rejected by policy scope`));
    expect(contentRequests(from)).toEqual([]);
  });

  test('reads no signature when the scope needs none', async () => {
    const from = proxy.requests.length;
    const ok = await check('--tls-verify=false', '--signature-policy', acceptFile, '--registries-d', registriesD, `${P()}/signed/os:1`);
    expect(ok.exitCode, String(ok.stderr)).toBe(0);
    expect(String(ok.stdout)).toContain(`Manifest: ${digest}\nPolicy: ${acceptFile}\nScope: default\nRequirement: insecureAcceptAnything\n`);
    const paths = proxy.requests.slice(from).map((r) => r.path);
    expect(paths.some((p) => p.includes('/manifests/')), 'the manifest is read for its digest').toBe(true);
    expect(paths.filter((p) => p.includes('.sig')), 'no sigstore attachment read').toEqual([]);
  });

  test('checks a dir: copy from its manifest and signatures alone', async () => {
    // A copy without its blobs: an admin can check what they were handed before deploying it.
    const bare = join(dirsScope, 'bare');
    await skopeoSigned(`dir:${bare}`, trusted, `${P()}/gpg/os:1`);
    for (const b of [image.configDigest, ...image.layers.map((l) => l.digest)]) await unlink(join(bare, b.slice('sha256:'.length)));
    const ok = await check('--signature-policy', policyFile, `dir:${bare}`);
    expect(ok.exitCode, String(ok.stderr)).toBe(0);
    expect(String(ok.stdout)).toContain(`Requirement: signedBy\nKey: ${trusted}\n`);
  });

  test('an oci: layout (no signatures) is judged by the oci transport scopes', async () => {
    const rejected = await check('--signature-policy', policyFile, `oci:${layout}:v1`);
    expect(rejected.exitCode).toBe(1);
    expect(String(rejected.stdout)).toContain('Scope: default\nRequirement: reject\nResult: rejected: the policy rejects every image in this scope');
    const ociPolicy = join(work, 'oci-policy.json');
    const scope = `${await realpath(layout)}:v1`;
    await writeFile(ociPolicy, JSON.stringify({ default: [{ type: 'reject' }], transports: { oci: { [scope]: [{ type: 'insecureAcceptAnything' }] } } }));
    const ok = await check('--signature-policy', ociPolicy, `oci:${layout}:v1`);
    expect(ok.exitCode, String(ok.stderr)).toBe(0);
    expect(String(ok.stdout)).toContain(`Scope: transports.oci[${JSON.stringify(scope)}]\nRequirement: insecureAcceptAnything\n`);
  });

  test('a broken policy is a usage error (exit 2)', async () => {
    const broken = join(work, 'broken2.json');
    await writeFile(broken, '[]');
    const r = await check('--signature-policy', broken, `${P()}/signed/os:1`);
    expect(r.exitCode).toBe(2);
    expect(String(r.stderr)).toMatch(/invalid signature policy .*broken2\.json: the top level is not a JSON object/);
    expect(String(r.stdout)).toBe('');
  });
});

describe('accepted pulls', () => {
  test('a sigstore-signed image pulls, its verification is recorded, and podman still reads the store', async () => {
    const r = await ocisnap(['--storage-root', store, 'pull', '--progress', 'json', ...common(), `${P()}/signed/os:1`]);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    const events = String(r.stderr).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    const verified = events.find((e) => e['type'] === 'verified');
    expect(verified).toMatchObject({ digest, requirement: 'sigstoreSigned', keyId: publicKeyId(key.publicKey) });
    // Verified before anything else happened.
    expect(events.findIndex((e) => e['type'] === 'verified')).toBeLessThan(events.findIndex((e) => e['type'] === 'resolved'));

    const id = String(r.stdout).trim();
    const s = await Store.open(store);
    const rec = (await s.findImage(id))!;
    expect(await readImageVerifications(s, rec)).toMatchObject([
      { transport: 'docker', reference: `${P()}/signed/os:1`, signedDigest: digest, requirement: 'sigstoreSigned', keyId: publicKeyId(key.publicKey), policy: policyFile },
    ]);

    const podman = (...args: string[]) => execa('podman', ['--root', store, '--runroot', join(work, 'run'), '--storage-driver', 'btrfs', ...args]);
    const listed = JSON.parse((await podman('images', '--format', 'json')).stdout) as Array<{ Id: string; Names?: string[] }>;
    expect(listed.find((i) => i.Id === id)?.Names).toContain(`${P()}/signed/os:1`);
    const inspected = JSON.parse((await podman('image', 'inspect', id)).stdout) as Array<{ Digest: string }>;
    expect(inspected[0]?.Digest).toBe(digest);
  });

  test('GPG signedBy from the registry lookaside and from a dir: copy', async () => {
    const r = await ocisnap(['--storage-root', store, 'pull', '--progress', 'plain', ...common(), `${P()}/gpg/os:1`]);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    expect(String(r.stderr)).toContain(`signedBy: signature 1 by GPG key ${trusted} for ${P()}/gpg/os:1`);
    const d = await ocisnap(['--storage-root', store, 'pull', '--progress', 'plain', '--signature-policy', policyFile, `dir:${join(dirsScope, 'copy')}`]);
    expect(d.exitCode, String(d.stderr)).toBe(0);
    expect(String(d.stderr)).toMatch(/dir:\/.*\/dirs\/copy: allowed by policy scope transports\.dir\[".*\/dirs"\]: signedBy: signature 1 by GPG key/);
    const s = await Store.open(store);
    const rec = (await s.findImage(String(d.stdout).trim()))!;
    const kinds = (await readImageVerifications(s, rec)).map((v) => `${v.transport} ${v.keyId ?? ''}`);
    expect(kinds).toEqual(expect.arrayContaining([`dir ${trusted}`, `docker ${trusted}`, `docker ${publicKeyId(key.publicKey)}`]));
  });

  test('a multi-platform image is verified by its index digest, which the store records', async () => {
    const dir = join(work, 'multi');
    const host = hostPlatform();
    const built = await buildMultiPlatformImage(dir, 'm', [
      { platform: host, layers: [{ entries: [{ type: 'file', path: 'etc/multi', content: 'host\n' }] }] },
      fakePlatformImage(host.architecture === 'arm64' ? { os: 'linux', architecture: 'amd64' } : { os: 'linux', architecture: 'arm64' }),
    ]);
    const instance = built.images[0]!.manifestDigest;
    await pushLayout(dir, 'm', `docker://${registry.host}/multi/os:1`, { all: true });
    await pushLayout(dir, 'm', `docker://${registry.host}/instance/os:1`, { all: true });
    // Only the platform manifest signed: containers/image checks the top-level index, so this is refused.
    await pushCosignSignatures(registry.host, 'instance/os', instance, [cosign(key, `${P()}/instance/os:1`, instance)]);
    expect(await refusedPull([...common(), `${P()}/instance/os:1`])).toMatch(/\(sigstoreSigned\): a signature was required, but no signature exists/);

    await pushCosignSignatures(registry.host, 'multi/os', built.indexDigest, [cosign(key, `${P()}/multi/os:1`, built.indexDigest)]);
    const r = await ocisnap(['--storage-root', store, 'pull', '--progress', 'none', ...common(), `${P()}/multi/os:1`]);
    expect(r.exitCode, String(r.stderr)).toBe(0);
    const s = await Store.open(store);
    const rec = (await s.findImage(String(r.stdout).trim()))!;
    expect(rec.digest).toBe(built.indexDigest);
    expect(rec['big-data-names']).toEqual(expect.arrayContaining([`manifest-${built.indexDigest}`, `manifest-${instance}`]));
    expect((await readImageVerifications(s, rec))[0]?.signedDigest).toBe(built.indexDigest);
    const config = await loadPolicyConfig({ signaturePolicy: policyFile, registriesD });
    expect(await verifyStoredImage(s, rec, rec.id, { config, sourceConfig: { tlsVerify: false, retries: 0 } })).toMatchObject({
      signedDigest: built.indexDigest,
      reference: `${P()}/multi/os:1`,
      fromRecord: false,
    });
  });

  test('short-name resolution is told on stderr (plain) and as a JSON event', async () => {
    const conf = join(work, 'registries.conf');
    await writeFile(conf, `short-name-mode = "enforcing"\n[aliases]\n"policy-os" = "${P()}/signed/os"\n`);
    const plain = await ocisnap(['--storage-root', store, 'pull', '--progress', 'plain', '--registries-conf', conf, ...common(), 'policy-os:1']);
    expect(plain.exitCode, String(plain.stderr)).toBe(0);
    expect(String(plain.stderr)).toMatch(/^Resolved "policy-os" as an alias \(.*registries\.conf/m);
    const json = await ocisnap(['--storage-root', store, 'pull', '--progress', 'json', '--registries-conf', conf, ...common(), 'policy-os:1']);
    const note = String(json.stderr).trim().split('\n').map((l) => JSON.parse(l) as { type: string; message?: string }).find((e) => e.type === 'note');
    expect(note?.message).toMatch(/^Resolved "policy-os" as an alias/);
  });
});

describe('verifyStoredImage (deploy-time re-verification)', () => {
  test('re-reads the signatures of a stored image; a stricter policy refuses it; offline it trusts only an unchanged policy', async () => {
    const s = await Store.open(store);
    const rec = (await s.findImage(`${P()}/signed/os:1`))!;
    const config = await loadPolicyConfig({ signaturePolicy: policyFile, registriesD });
    const sourceConfig = { tlsVerify: false, retries: 0 };
    const from = proxy.requests.length;
    const ok = await verifyStoredImage(s, rec, `${P()}/signed/os:1`, { config, sourceConfig });
    expect(ok).toMatchObject({ fromRecord: false, keyId: publicKeyId(key.publicKey), signedDigest: digest });
    expect(proxy.requests.slice(from).some((r) => r.path.includes(`sha256-${digest.slice(7)}.sig`)), 'signatures read again').toBe(true);
    // By image ID: the name it was verified as is used.
    expect((await verifyStoredImage(s, rec, rec.id, { config, sourceConfig })).reference).toBe(`${P()}/signed/os:1`);

    const strict = join(work, 'strict.json');
    await writeFile(join(work, 'stranger.pub'), stranger.publicPem);
    await writeFile(strict, JSON.stringify({ default: [{ type: 'sigstoreSigned', keyPath: join(work, 'stranger.pub') }] }));
    const strictConfig = await loadPolicyConfig({ signaturePolicy: strict, registriesD });
    await expect(verifyStoredImage(s, rec, `${P()}/signed/os:1`, { config: strictConfig, sourceConfig })).rejects.toBeInstanceOf(PolicyRejectedError);

    proxy.addRule({ match: () => true, action: { kind: 'status', status: 503 } });
    try {
      await expect(verifyStoredImage(s, rec, `${P()}/signed/os:1`, { config, sourceConfig })).rejects.toBeInstanceOf(ReverifyUnavailableError);
      const offline = await verifyStoredImage(s, rec, `${P()}/signed/os:1`, { config, sourceConfig, trustRecordedWhenOffline: true });
      expect(offline).toMatchObject({ fromRecord: true, keyId: publicKeyId(key.publicKey) });
      // A changed policy (here: another key file) makes the record worthless.
      await expect(
        verifyStoredImage(s, rec, `${P()}/signed/os:1`, { config: strictConfig, sourceConfig, trustRecordedWhenOffline: true }),
      ).rejects.toBeInstanceOf(ReverifyUnavailableError);
    } finally {
      proxy.clearRules();
    }
  });

  test('a scope that needs no signature is decided without contacting the registry', async () => {
    const s = await Store.open(store);
    const rec = (await s.findImage(`${P()}/signed/os:1`))!;
    const sourceConfig = { tlsVerify: false, retries: 0 };
    const from = proxy.requests.length;
    const accept = await loadPolicyConfig({ signaturePolicy: acceptFile, registriesD });
    expect(await verifyStoredImage(s, rec, `${P()}/signed/os:1`, { config: accept, sourceConfig })).toMatchObject({
      requirement: 'insecureAcceptAnything',
      scope: 'default',
      signedDigest: digest,
      fromRecord: false,
    });
    // reject refuses, even listed after a signature requirement (all must hold), before any signature is read.
    const rejectFile = join(work, 'reject-after-sigstore.json');
    await writeFile(rejectFile, JSON.stringify({ default: [{ type: 'sigstoreSigned', keyPath: join(work, 'cosign.pub') }, { type: 'reject' }] }));
    const reject = await loadPolicyConfig({ signaturePolicy: rejectFile, registriesD });
    const refused = verifyStoredImage(s, rec, `${P()}/signed/os:1`, { config: reject, sourceConfig });
    await expect(refused).rejects.toBeInstanceOf(PolicyRejectedError);
    await expect(refused).rejects.toMatchObject({ requirement: 'reject', scope: 'default' });
    expect(proxy.requests.slice(from).map((r) => r.path), 'nothing asked of the registry').toEqual([]);
  });

  test('a dir: copy is checked again, and must still be the copy the image came from', async () => {
    const s = await Store.open(store);
    const config = await loadPolicyConfig({ signaturePolicy: policyFile, registriesD });
    const rec = (await s.findImage(`${P()}/gpg/os:1`))!;
    const v = await verifyStoredImage(s, rec, `dir:${join(dirsScope, 'copy')}`, { config });
    expect(v).toMatchObject({ transport: 'dir', keyId: trusted, fromRecord: false });
    await unlink(join(dirsScope, 'copy', 'signature-1'));
    await expect(verifyStoredImage(s, rec, `dir:${join(dirsScope, 'copy')}`, { config })).rejects.toThrow(
      /rejected by policy scope .*\(signedBy\): a signature was required, but no signature exists/,
    );
  });
});

test('podman removes an image carrying ocisnap\'s verification record, record included', async () => {
  const s = await Store.open(store);
  const rec = (await s.findImage(`${P()}/signed/os:1`))!;
  expect(rec['big-data-names']).toContain('ocisnap.verifications');
  await execa('podman', ['--root', store, '--runroot', join(work, 'run'), '--storage-driver', 'btrfs', 'rmi', '--force', rec.id]);
  expect(await (await Store.open(store)).findImage(rec.id)).toBeUndefined();
  await expect(lstat(join(store, 'btrfs-images', rec.id))).rejects.toThrow(/ENOENT/);
});
