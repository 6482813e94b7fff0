/**
 * The commands around deployments, through the built CLI on a real btrfs
 * sysroot: upgrade (--check exit codes) and switch, status --json validated
 * against docs/status-schema.json, rollback (last good, N, refusals,
 * --force), gc (keeps default, last good, pinned, newest K; never snapper's
 * own; removes the images only removed deployments used).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import Ajv2020Module from 'ajv/dist/2020.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deploymentSnapshotInfo, listSnapshots, reserveSnapshotNumber, snapshotSubvolume, unregisterSnapshot, writeInfoXml } from '../../src/deploy/snapper.js';
import { markBad, markGood, readState, setPinned, updateState } from '../../src/deploy/state.js';
import { snapshotPath } from '../../src/deploy/sysroot.js';
import type { SystemStatus } from '../../src/deploy/status.js';
import { Store } from '../../src/store/index.js';
import type { BuiltImage } from '../support/image-factory.js';
import { buildOsImage, cli, defaultId, makeSysroot, makeWorkDir, removeDir, subvolumeId, type TestSysroot } from './deploy-support.js';

const Ajv2020 = Ajv2020Module as unknown as typeof Ajv2020Module.default;

let sys: TestSysroot;
let work: string;
let layout: string;
let validate: (data: unknown) => boolean;
let validationErrors: () => unknown;
const images: Record<string, BuiltImage> = {};

async function ocisnap(...args: string[]) {
  return cli(['--sysroot', sys.paths.root, ...args]);
}

async function status(): Promise<SystemStatus> {
  const r = await ocisnap('status', '--json');
  expect(r.exitCode, r.stderr).toBe(0);
  const json: unknown = JSON.parse(r.stdout);
  expect(validate(json), JSON.stringify(validationErrors())).toBe(true);
  return json as SystemStatus;
}

async function expectDefault(num: number): Promise<void> {
  expect(await defaultId(sys.paths.root)).toBe(await subvolumeId(snapshotPath(sys.paths, num)));
}

beforeAll(async () => {
  const schema = JSON.parse(await readFile(new URL('../../docs/status-schema.json', import.meta.url), 'utf8')) as object;
  const ajv = new Ajv2020({ allErrors: true, strict: true });
  const v = ajv.compile(schema);
  validate = (d) => v(d);
  validationErrors = () => v.errors;
  sys = await makeSysroot();
  work = await makeWorkDir();
  layout = join(work, 'layout');
  for (const version of ['1', '2', '3']) images[version] = await buildOsImage(layout, `v${version}`, { version, bigSize: 256 << 10 });
  await buildOsImage(layout, 'stable', { version: '1', bigSize: 256 << 10 });
});

afterAll(async () => {
  await sys?.dispose();
  if (work) await removeDir(work);
});

describe('upgrade, switch, status, rollback, gc', () => {
  const stable = () => `oci:${layout}:stable`;

  it('deploy follows the reference; upgrade --check says 77 while nothing changed', async () => {
    const r = await ocisnap('deploy', '--progress', 'none', stable());
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain('as snapshot 1; it boots next');
    await updateState(sys.paths.root, (s) => markGood(s, 1, { by: 'test' }));
    const s = await status();
    expect(s).toMatchObject({ booted: null, default: 1, pending: null, lastGood: 1, followed: stable() });
    expect(s.snapshots[0]).toMatchObject({ number: 1, deployment: true, status: 'good', digest: images['1']!.manifestDigest, default: true, lastGood: true });

    const check = await ocisnap('upgrade', '--check');
    expect(check.exitCode).toBe(77);
    expect(check.stdout).toContain('No update');
  });

  it('upgrade deploys when the followed tag moves, and only then', async () => {
    await buildOsImage(layout, 'stable', { version: '2', bigSize: 256 << 10 }); // the tag now names v2's manifest
    const check = await ocisnap('upgrade', '--check');
    expect(check.exitCode, check.stderr).toBe(0);
    expect(check.stdout).toContain(`Update available for ${stable()}: ${images['1']!.manifestDigest} -> ${images['2']!.manifestDigest}`);
    const up = await ocisnap('upgrade', '--progress', 'none');
    expect(up.exitCode, up.stderr).toBe(0);
    expect(up.stdout).toContain('as snapshot 2');
    await expectDefault(2);
    const again = await ocisnap('upgrade', '--progress', 'none');
    expect(again.exitCode).toBe(0);
    expect(again.stdout).toContain('No update');
    expect((await readState(sys.paths.root)).deployments).toHaveLength(2);
  });

  it('switch follows another image and deploys it', async () => {
    const r = await ocisnap('switch', '--progress', 'none', `oci:${layout}:v3`);
    expect(r.exitCode, r.stderr).toBe(0);
    await expectDefault(3);
    const s = await status();
    expect(s).toMatchObject({ default: 3, pending: 3, lastGood: 1, followed: `oci:${layout}:v3` });
    const human = (await ocisnap('status')).stdout;
    expect(human).toContain(`Next boot:   3  oci:${layout}:v3 (pending, 3 boot tries left)`);
    expect(human).toContain(`Last good:   1  oci:${layout}:stable (good)`);
    expect(s.snapshots.find((x) => x.number === 2)).toMatchObject({ status: 'superseded', parent: 1 });
    expect(s.snapshots.find((x) => x.number === 3)).toMatchObject({ status: 'pending', triesLeft: 3, parent: 2 });
  });

  it('status lists snapper snapshots ocisnap did not make; rollback refuses them without --force', async () => {
    // A snapshot snapper made by itself (no ocisnap userdata, not in the state).
    const n = await reserveSnapshotNumber(sys.paths.snapshotsDir);
    expect(n).toBe(4);
    await execa('btrfs', ['subvolume', 'snapshot', snapshotPath(sys.paths, 1), snapshotSubvolume(sys.paths.snapshotsDir, n)]);
    const info = deploymentSnapshotInfo({ num: n, image: 'x', manifestDigest: `sha256:${'0'.repeat(64)}` });
    await writeInfoXml(sys.paths.snapshotsDir, { ...info, description: 'snapper: before zypper', userdata: {} });
    const s = await status();
    expect(s.snapshots.find((x) => x.number === 4)).toMatchObject({ deployment: false, image: null, status: null, description: 'snapper: before zypper' });
    const list = await ocisnap('list');
    expect(list.stdout).toMatch(/^4 .*snapper .*snapper: before zypper$/m);
    expect(list.stdout).toMatch(/^3 .*pending .*D .*oci:.*:v3$/m);

    const refused = await ocisnap('rollback', '4');
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr.trim()).toBe("ocisnap: snapshot 4 was not deployed by ocisnap (snapper's or tukit's own); use --force to boot it anyway");
    await expectDefault(3);
    const missing = await ocisnap('rollback', '99');
    expect(missing.exitCode).toBe(1);
    expect(missing.stderr).toContain('snapshot 99 does not exist');
    const forced = await ocisnap('rollback', '4', '--force');
    expect(forced.exitCode, forced.stderr).toBe(0);
    await expectDefault(4);
    expect((await status()).pending).toBeNull(); // 3's trial ended: it no longer boots next
  });

  it('rollback without N goes to the last good deployment', async () => {
    const r = await ocisnap('rollback');
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toBe('Snapshot 1 boots next (was 4).');
    await expectDefault(1);
    const s = await status();
    expect(s).toMatchObject({ default: 1, pending: null, lastGood: 1 });
    expect(s.snapshots.find((x) => x.number === 3)).toMatchObject({ status: 'superseded' });
    const state = await readState(sys.paths.root);
    // The trial of 3 ended when the forced rollback to 4 made it stop being the next boot.
    expect(state.deployments.find((d) => d.snapshot === 3)?.verdict).toMatchObject({ by: 'rollback', reason: 'rolled back to snapshot 4' });
  });

  it('rollback refuses a deployment marked bad unless forced', async () => {
    const r = await ocisnap('deploy', '--progress', 'none', '--no-pull', `oci:${layout}:v3`);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain('as snapshot 5');
    await updateState(sys.paths.root, (s) => markBad(s, 5, { by: 'test', reason: 'unit failed' }));
    const back = await ocisnap('rollback');
    expect(back.exitCode, back.stderr).toBe(0);
    await expectDefault(1);
    const refused = await ocisnap('rollback', '5');
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toContain('snapshot 5 failed its health checks (marked bad); use --force');
    await expectDefault(1);
  });

  it('gc keeps default, last good and pinned, never snapper\'s own, and removes unused images', async () => {
    await updateState(sys.paths.root, (s) => setPinned(s, 2, true));
    const store = await Store.open(sys.paths.storageRoot);
    const before = (await store.listImages()).map((i) => i.id).sort();
    expect(before).toHaveLength(3); // v1, v2 (stable), v3

    const dry = await ocisnap('gc', '--keep', '0', '--dry-run');
    expect(dry.exitCode, dry.stderr).toBe(0);
    expect(dry.stdout).toContain('Would remove 2 snapshot(s) (3, 5)');
    expect((await listSnapshots(sys.paths.snapshotsDir)).map((s) => s.num)).toEqual([1, 2, 3, 4, 5]);

    const r = await ocisnap('gc', '--keep', '0');
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain('Removed 2 snapshot(s) (3, 5) and 1 image(s)');
    expect(r.stdout).toContain('1 [default, last good]');
    expect(r.stdout).toContain('2 [pinned]');
    expect((await listSnapshots(sys.paths.snapshotsDir)).map((s) => s.num)).toEqual([1, 2, 4]);
    const state = await readState(sys.paths.root);
    expect(state.deployments.map((d) => d.snapshot)).toEqual([1, 2]);
    const after = (await store.listImages()).map((i) => i.id).sort();
    expect(after).toEqual([state.deployments[0]!.imageId, state.deployments[1]!.imageId].sort());
    const s = await status();
    expect(s.missingDeployments).toEqual([]);
    await expectDefault(1);

    // A deployment whose snapshot was deleted behind ocisnap's back (e.g. by snapper) is forgotten, pinned or not.
    await unregisterSnapshot(sys.paths.snapshotsDir, 2);
    await execa('btrfs', ['subvolume', 'delete', snapshotPath(sys.paths, 2)]);
    expect((await status()).missingDeployments).toEqual([{ number: 2, image: `oci:${layout}:stable`, digest: images['2']!.manifestDigest, status: 'superseded' }]);
    expect((await ocisnap('status')).stdout).toContain('missing snapshot 2');
    const again = await ocisnap('gc', '--keep', '0');
    expect(again.exitCode, again.stderr).toBe(0);
    expect(again.stderr).toContain('forgot deployment 2');
    expect((await readState(sys.paths.root)).deployments.map((d) => d.snapshot)).toEqual([1]);
    expect((await status()).missingDeployments).toEqual([]);

    // Numbers are never reused after gc.
    const d = await ocisnap('deploy', '--progress', 'none', `oci:${layout}:v3`);
    expect(d.exitCode, d.stderr).toBe(0);
    expect(d.stdout).toContain('as snapshot 6');
  });
});
