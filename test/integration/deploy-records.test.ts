/**
 * What the deploy commands record and show, through the built CLI on a real
 * btrfs sysroot, a real registry and a GPG-signed dir: copy made by skopeo:
 *
 * - pull, images, inspect and rmi use the sysroot's layer store with
 *   --sysroot, and an explicit --storage-root / OCISNAP_STORAGE_ROOT wins;
 * - each deployment records whether and by which key its image was verified;
 *   status and status --json (validated against docs/status-schema.json)
 *   show it;
 * - deploy --no-pull with the registry down: a scope that needs no
 *   signature (insecureAcceptAnything, reject) is decided without it; one
 *   that needs a signature fails closed, unless --trust-recorded-when-offline
 *   accepts the verification recorded at pull;
 * - deploy --no-pull by ID of an image pulled from a dir: copy (no registry
 *   name) re-checks that copy's signatures, and is refused when it is gone;
 * - rollbacks are recorded (by whom, from, to, why) and shown by status.
 */
import { mkdir, readFile, realpath, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import Ajv2020Module from 'ajv/dist/2020.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rollback } from '../../src/deploy/rollback.js';
import { publicKeyId } from '../../src/policy/sigstore.js';
import { readState } from '../../src/deploy/state.js';
import type { SystemStatus } from '../../src/deploy/status.js';
import { Store } from '../../src/store/index.js';
import { ocisnap as ocisnapWithEnv } from '../support/cli.js';
import { cosignPayload, generateTestKey, pushCosignSignatures, signPayload } from '../support/cosign.js';
import { requireCommands } from '../support/host.js';
import { pushLayout, type BuiltImage } from '../support/image-factory.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';
import { buildOsImage, cli, makeSysroot, makeWorkDir, removeDir, type TestSysroot } from './deploy-support.js';

const Ajv2020 = Ajv2020Module as unknown as typeof Ajv2020Module.default;

let sys: TestSysroot;
let work: string;
let layout: string;
let registry: TestRegistry | undefined;
let registryHost: string;
let policy: string;
let signedCopy: string;
let fingerprint: string;
let validate: ((data: unknown) => boolean) & { errors?: unknown };
const images: Record<string, BuiltImage> = {};
const cosignKey = generateTestKey('ecdsa-p256');

async function ocisnap(...args: string[]) {
  return cli(['--sysroot', sys.paths.root, ...args]);
}

async function status(): Promise<SystemStatus> {
  const r = await ocisnap('status', '--json');
  expect(r.exitCode, r.stderr).toBe(0);
  const json: unknown = JSON.parse(r.stdout);
  expect(validate(json), JSON.stringify(validate.errors)).toBe(true);
  return json as SystemStatus;
}

beforeAll(async () => {
  await requireCommands('docker-registry', 'skopeo', 'gpg', 'gpgconf');
  const schema = JSON.parse(await readFile(new URL('../../docs/status-schema.json', import.meta.url), 'utf8')) as object;
  validate = new Ajv2020({ allErrors: true, strict: true }).compile(schema);
  sys = await makeSysroot({ sizeMiB: 512 });
  work = await realpath(await makeWorkDir());
  layout = join(work, 'layout');
  for (const version of ['1', '2']) images[version] = await buildOsImage(layout, `v${version}`, { version, bigSize: 64 << 10 });

  registry = await startRegistry();
  registryHost = registry.host;
  await pushLayout(layout, 'v1', `docker://${registryHost}/os/test:1`);
  // The same image under a name whose scope requires a sigstore signature (cosign format).
  await pushLayout(layout, 'v1', `docker://${registryHost}/os/signed:1`);
  const payload = cosignPayload(`${registryHost}/os/signed:1`, images['1']!.manifestDigest);
  await pushCosignSignatures(registryHost, 'os/signed', images['1']!.manifestDigest, [{ payload, signature: signPayload(cosignKey, payload) }]);
  await writeFile(join(work, 'cosign.pub'), cosignKey.publicPem);

  // A dir: copy of v2, GPG-signed by skopeo (simple signing, signature-1 beside the manifest).
  const gnupgHome = join(work, 'gnupg');
  await mkdir(gnupgHome, { mode: 0o700 });
  const env = { GNUPGHOME: gnupgHome };
  await execa('gpg', ['--batch', '--pinentry-mode', 'loopback', '--passphrase', '', '--quick-gen-key', 'ops <ops@example.com>', 'ed25519', 'sign', 'never'], { env });
  const listed = (await execa('gpg', ['--with-colons', '--list-keys', 'ops@example.com'], { env })).stdout;
  fingerprint = listed.split('\n').find((l) => l.startsWith('fpr:'))!.split(':')[9]!;
  await writeFile(join(work, 'ops.asc'), (await execa('gpg', ['--armor', '--export', fingerprint], { env })).stdout);
  const dirs = join(work, 'dirs');
  await mkdir(dirs);
  signedCopy = join(dirs, 'os2');
  await execa(
    'skopeo',
    ['--insecure-policy', 'copy', '--quiet', '--preserve-digests', '--sign-by', fingerprint, '--sign-identity', 'example.com/os:2', `oci:${layout}:v2`, `dir:${signedCopy}`],
    { env },
  );
  await execa('gpgconf', ['--kill', 'all'], { env, reject: false });

  policy = join(work, 'policy.json');
  await writeFile(
    policy,
    JSON.stringify({
      default: [{ type: 'insecureAcceptAnything' }],
      transports: {
        docker: { [`${registryHost}/os/signed`]: [{ type: 'sigstoreSigned', keyPath: join(work, 'cosign.pub') }] },
        dir: {
          [dirs]: [{ type: 'signedBy', keyType: 'GPGKeys', keyPath: join(work, 'ops.asc'), signedIdentity: { type: 'exactReference', dockerReference: 'example.com/os:2' } }],
        },
      },
    }),
  );
});

afterAll(async () => {
  await registry?.stop();
  await sys?.dispose();
  if (work) await removeDir(work);
});

describe('the store rule, verification records, rollback history', () => {
  it('pull, images, inspect and rmi use the sysroot\'s store unless --storage-root says otherwise', async () => {
    const pulled = await ocisnap('pull', '-q', '--signature-policy', policy, `oci:${layout}:v1`);
    expect(pulled.exitCode, pulled.stderr).toBe(0);
    const id = pulled.stdout.trim();
    expect(id).toBe(images['1']!.configDigest.replace('sha256:', ''));
    expect((await (await Store.open(sys.paths.storageRoot)).findImage(id))?.id).toBe(id);

    const listed = await ocisnap('images', '--json');
    expect(listed.exitCode, listed.stderr).toBe(0);
    expect((JSON.parse(listed.stdout) as { id: string }[]).map((i) => i.id)).toEqual([id]);
    const inspected = await ocisnap('inspect', id.slice(0, 12));
    expect(inspected.exitCode, inspected.stderr).toBe(0);
    expect((JSON.parse(inspected.stdout) as { id: string }).id).toBe(id);

    // An explicit store wins over the sysroot's, by option or by environment.
    const other = join(sys.paths.root, 'other-store');
    const elsewhere = await ocisnap('--storage-root', other, 'pull', '-q', '--signature-policy', policy, `oci:${layout}:v2`);
    expect(elsewhere.exitCode, elsewhere.stderr).toBe(0);
    const byEnv = await ocisnapWithEnv(['--sysroot', sys.paths.root, 'images', '--json'], { env: { OCISNAP_STORAGE_ROOT: other } });
    expect((JSON.parse(String(byEnv.stdout)) as { id: string }[]).map((i) => i.id)).toEqual([elsewhere.stdout.trim()]);
    const removed = await ocisnap('--storage-root', other, 'rmi', elsewhere.stdout.trim());
    expect(removed.exitCode, removed.stderr).toBe(0);
    expect((JSON.parse((await ocisnap('--storage-root', other, 'images', '--json')).stdout) as unknown[]).length).toBe(0);
    // The sysroot's store is untouched.
    expect((JSON.parse((await ocisnap('images', '--json')).stdout) as { id: string }[]).map((i) => i.id)).toEqual([id]);
  });

  it('a deployment records by which key its image was verified; status shows it', async () => {
    const signed = await ocisnap('deploy', '--progress', 'none', '--signature-policy', policy, `dir:${signedCopy}`);
    expect(signed.exitCode, signed.stderr).toBe(0);
    expect(signed.stdout).toContain(`Signature: verified: signedBy by key ${fingerprint}, policy scope transports.dir["${join(work, 'dirs')}"]`);
    const unsigned = await ocisnap('deploy', '--progress', 'none', '--no-pull', '--signature-policy', policy, `oci:${layout}:v1`);
    expect(unsigned.exitCode, unsigned.stderr).toBe(0);

    const s = await status();
    expect(s.snapshots.map((x) => [x.number, x.verification?.requirement, x.verification?.keyId])).toEqual([
      [1, 'signedBy', fingerprint],
      [2, 'insecureAcceptAnything', null],
    ]);
    expect(s.snapshots[0]!.verification).toMatchObject({ scope: `transports.dir["${join(work, 'dirs')}"]`, fromRecord: false });
    const state = await readState(sys.paths.root);
    expect(state.deployments[0]!.verification).toMatchObject({ requirement: 'signedBy', keyId: fingerprint });
    expect(Date.parse(state.deployments[0]!.verification!.at)).toBeGreaterThan(Date.now() - 10 * 60_000);

    const human = (await ocisnap('status')).stdout;
    expect(human).toMatch(new RegExp(`^ {10}verified: signedBy by key ${fingerprint}, policy scope transports\\.dir\\[".*"\\], at \\S+Z$`, 'm'));
    expect(human).toMatch(/^ {10}not verified: insecureAcceptAnything \(no signature checked\), policy scope default, at \S+Z$/m);
  });

  it('deploy --no-pull with the registry down: decided without it when no signature is needed, else refused unless --trust-recorded-when-offline', async () => {
    const plain = `${registryHost}/os/test:1`;
    const signed = `${registryHost}/os/signed:1`;
    for (const ref of [plain, signed]) {
      const pulled = await ocisnap('pull', '--progress', 'none', '--tls-verify=false', '--signature-policy', policy, ref);
      expect(pulled.exitCode, pulled.stderr).toBe(0);
    }
    const misuse = await ocisnap('deploy', '--trust-recorded-when-offline', '--signature-policy', policy, plain);
    expect(misuse.exitCode).toBe(2);
    expect(misuse.stderr.trim()).toBe('ocisnap: --trust-recorded-when-offline only applies with --no-pull (a pull checks the signatures at the registry)');

    await registry!.stop();
    registry = undefined;
    const args = ['deploy', '--progress', 'none', '--no-pull', '--signature-policy', policy];
    // insecureAcceptAnything: nothing to read, so neither the registry nor --tls-verify=false is needed.
    const accepted = await ocisnap(...args, plain);
    expect(accepted.exitCode, accepted.stderr).toBe(0);
    expect(accepted.stdout).toContain('as snapshot 3');
    expect(accepted.stderr).not.toContain('could not be reached');
    expect((await status()).snapshots.find((x) => x.number === 3)?.verification).toMatchObject({
      requirement: 'insecureAcceptAnything',
      scope: 'default',
      keyId: null,
      fromRecord: false,
    });

    // reject: refused by the policy itself, not for want of a registry.
    const rejectPolicy = join(work, 'reject.json');
    await writeFile(rejectPolicy, JSON.stringify({ default: [{ type: 'reject' }] }));
    const rejected = await ocisnap('deploy', '--progress', 'none', '--no-pull', '--signature-policy', rejectPolicy, plain);
    expect(rejected.exitCode).toBe(1);
    expect(rejected.stderr.trim()).toBe(`ocisnap: docker://${plain}: rejected by policy scope default (reject): the policy rejects every image in this scope`);

    // sigstoreSigned: the signatures must be read again; without the registry, fail closed.
    const refused = await ocisnap(...args, '--tls-verify=false', signed);
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toContain(`ocisnap: ${signed}: cannot re-verify the signatures of stored image`);
    expect((await readState(sys.paths.root)).deployments).toHaveLength(3);

    const trusted = await ocisnap(...args, '--tls-verify=false', '--trust-recorded-when-offline', signed);
    expect(trusted.exitCode, trusted.stderr).toBe(0);
    expect(trusted.stderr).toContain('note: the registry could not be reached; using the verification recorded at pull');
    expect(trusted.stdout).toContain('as snapshot 4');
    const s = await status();
    expect(s.snapshots.find((x) => x.number === 4)?.verification).toMatchObject({
      requirement: 'sigstoreSigned',
      keyId: publicKeyId(cosignKey.publicKey),
      fromRecord: true,
    });
    expect((await ocisnap('status')).stdout).toContain('(recorded at pull; registry unreachable at deploy)');
  });

  it('rollbacks are recorded and shown: by whom, from, to and why', async () => {
    expect((await status()).lastRollback).toBeNull();
    const r = await ocisnap('rollback', '1');
    expect(r.exitCode, r.stderr).toBe(0);
    let s = await status();
    expect(s.lastRollback).toMatchObject({ from: 4, to: 1, by: 'admin', reason: null });
    expect((await ocisnap('status')).stdout).toMatch(/^Rollback: {4}4 -> 1 by admin at \S+Z$/m);

    // The health module's automatic rollback, through the library.
    await rollback({ paths: sys.paths, target: 2, by: 'health-check', reason: 'sshd.service failed' });
    s = await status();
    expect(s.lastRollback).toMatchObject({ from: 1, to: 2, by: 'health-check', reason: 'sshd.service failed' });
    expect((await ocisnap('status')).stdout).toMatch(/^Rollback: {4}1 -> 2 by health-check at \S+Z: sshd\.service failed$/m);

    // A rollback to what already boots next changes nothing, so records nothing.
    const before = (await readState(sys.paths.root)).lastRollback;
    expect((await ocisnap('rollback', '2')).stdout).toBe('Snapshot 2 already boots next.');
    expect((await readState(sys.paths.root)).lastRollback).toEqual(before);
  });

  it('deploy --no-pull by ID of an image without a registry name re-checks the dir: copy it was pulled from', async () => {
    const id = (await readState(sys.paths.root)).deployments.find((d) => d.snapshot === 1)!.imageId;
    const store = await Store.open(sys.paths.storageRoot);
    expect((await store.findImage(id))?.names ?? []).toEqual([]);
    const args = ['deploy', '--progress', 'none', '--no-pull', '--signature-policy', policy];
    const ok = await ocisnap(...args, id);
    expect(ok.exitCode, ok.stderr).toBe(0);
    let s = await status();
    const made = s.snapshots.at(-1)!;
    expect(made.number).toBe(5);
    // Checked as the copy: its scope, its GPG signature read again.
    expect(made.verification).toMatchObject({ requirement: 'signedBy', keyId: fingerprint, scope: `transports.dir["${join(work, 'dirs')}"]`, fromRecord: false });

    // The copy moved: nothing to re-check the signature with, so refused, saying what to do.
    const moved = join(work, 'dirs', 'os2-moved');
    await execa('mv', [signedCopy, moved]);
    const refused = await ocisnap(...args, id);
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toContain(`ocisnap: image ${id} (${id}) was pulled from dir:${signedCopy}, which the signature policy check needs to read again: `);
    expect(refused.stderr).toContain('deploy it from the copy that holds it now (dir:DIR, oci:DIR[:TAG] or oci-archive:FILE[:TAG]) or pull it by a registry name');
    expect((await readState(sys.paths.root)).deployments.map((d) => d.snapshot)).toEqual([1, 2, 3, 4, 5]);
    // Doing so works: the copy's new path, the same stored image.
    const fromCopy = await ocisnap(...args, `dir:${moved}`);
    expect(fromCopy.exitCode, fromCopy.stderr).toBe(0);
    s = await status();
    expect(s.snapshots.at(-1)).toMatchObject({ number: 6, verification: { requirement: 'signedBy', keyId: fingerprint } });
  });
});
