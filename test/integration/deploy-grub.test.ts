/**
 * Deploy, rollback and status with the health side, on a real btrfs sysroot:
 * the boot tries default to `tries` of the new snapshot's own
 * /etc/ocisnap/health.conf (read confined to the snapshot; a malformed one
 * stops the deploy), the sysroot's boot/grub/grubenv (edited with the real
 * grub-editenv) puts each deployment on trial and a rollback makes its
 * target GRUB's default, and `ocisnap status` (text and JSON, validated
 * against docs/status-schema.json) shows each deployment's verdict.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import Ajv2020Module from 'ajv/dist/2020.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deploy, recoverInterruptedDeploy } from '../../src/deploy/deploy.js';
import { rollback } from '../../src/deploy/rollback.js';
import { markGood, readState, updateState } from '../../src/deploy/state.js';
import type { SystemStatus } from '../../src/deploy/status.js';
import { readGrubenv } from '../../src/health/grubenv.js';
import { requireCommands } from '../support/host.js';
import { buildOsImage, cli, makeSysroot, makeWorkDir, removeDir, type TestSysroot } from './deploy-support.js';
import { defaultSnapshot, exists } from './health-support.js';

const Ajv2020 = Ajv2020Module as unknown as typeof Ajv2020Module.default;

let sys: TestSysroot;
let work: string;
let layout: string;
let grubenv: string;
let hostConf: string;
let validate: (data: unknown) => boolean;
let validationErrors: () => unknown;
const quiet = { log: () => undefined };

async function status(): Promise<{ json: SystemStatus; text: string }> {
  const r = await cli(['--sysroot', sys.paths.root, 'status', '--json']);
  expect(r.exitCode, r.stderr).toBe(0);
  const json: unknown = JSON.parse(r.stdout);
  expect(validate(json), JSON.stringify(validationErrors())).toBe(true);
  const t = await cli(['--sysroot', sys.paths.root, 'status']);
  expect(t.exitCode, t.stderr).toBe(0);
  return { json: json as SystemStatus, text: t.stdout };
}

beforeAll(async () => {
  await requireCommands('grub-editenv');
  const schema = JSON.parse(await readFile(new URL('../../docs/status-schema.json', import.meta.url), 'utf8')) as object;
  const v = new Ajv2020({ allErrors: true, strict: true }).compile(schema);
  validate = (d) => v(d);
  validationErrors = () => v.errors;
  sys = await makeSysroot({ sizeMiB: 512 });
  work = await makeWorkDir();
  layout = join(work, 'layout');
  grubenv = join(sys.paths.root, 'boot/grub/grubenv');
  // A host file an image's symlink names: deploy must not read it.
  hostConf = join(work, 'host-health.conf');
  await writeFile(hostConf, 'tries = 7\n');
  const small = { bigSize: 1 << 14 };
  await buildOsImage(layout, 'v1', { version: '1', ...small, extraEtc: { 'etc/ocisnap/health.conf': 'tries = 5\n' } });
  await buildOsImage(layout, 'v2', { version: '2', ...small, extraEtc: { 'etc/ocisnap/health.conf': 'tries = 5\n' } });
  await buildOsImage(layout, 'badconf', { version: '3', ...small, extraEtc: { 'etc/ocisnap/health.conf': 'tries = 0\n' } });
  await buildOsImage(layout, 'symlink', {
    version: '4',
    ...small,
    extraEntries: [{ type: 'symlink', path: 'etc/ocisnap/health.conf', target: hostConf }],
  });
});

afterAll(async () => {
  await sys?.dispose();
  if (work) await removeDir(work);
});

describe.sequential('deploy and rollback drive grubenv; status shows verdicts', () => {
  it('without a grubenv the tries come from the snapshot\'s health.conf and nothing else happens', async () => {
    const d = await deploy({ paths: sys.paths, image: `oci:${layout}:v1`, ...quiet });
    expect(d.snapshot).toBe(1);
    expect(d.tries).toBe(5);
    expect(d.grubenv).toEqual({ updated: false, why: `no grubenv under ${sys.paths.root}/boot` });
    expect((await readState(sys.paths.root)).deployments[0]).toMatchObject({ snapshot: 1, status: 'pending', triesLeft: 5 });
    expect(await exists(grubenv)).toBe(false);
  });

  it('with a grubenv, deploy puts the new snapshot on trial (GRUB counts at most 9 tries)', async () => {
    await mkdir(join(grubenv, '..'), { recursive: true });
    await execa('grub-editenv', [grubenv, 'create']);
    await execa('grub-editenv', [grubenv, 'set', 'ocisnap_default=1', 'other=kept']);
    await updateState(sys.paths.root, (s) => markGood(s, 1, { by: 'health-check', reason: 'all 2 checks passed' }));
    const d = await deploy({ paths: sys.paths, image: `oci:${layout}:v2`, tries: 12, ...quiet });
    expect(d.snapshot).toBe(2);
    expect(d.grubenv).toEqual({ updated: true, file: grubenv });
    expect(await readGrubenv(grubenv)).toEqual({ ocisnap_default: '1', other: 'kept', ocisnap_trial: '2', ocisnap_tries: '9' });
    expect((await readFile(grubenv)).length).toBe(1024);
    expect((await readState(sys.paths.root)).deployments.find((x) => x.snapshot === 2)).toMatchObject({ status: 'pending', triesLeft: 12 });
  });

  it('a malformed health.conf in the image stops the deploy before the commit point', async () => {
    await expect(deploy({ paths: sys.paths, image: `oci:${layout}:badconf`, ...quiet })).rejects.toThrow(
      /\/\.snapshots\/3\/snapshot\/etc\/ocisnap\/health\.conf: tries: must be a whole number >= 1/,
    );
    expect(await defaultSnapshot(sys.paths)).toBe(2);
    expect(await exists(join(sys.paths.snapshotsDir, '3', 'info.xml'))).toBe(false);
    expect(await readGrubenv(grubenv)).toMatchObject({ ocisnap_trial: '2', ocisnap_tries: '9' });
    expect((await readState(sys.paths.root)).inProgress).toBeUndefined();
  });

  it('health.conf is read inside the snapshot: an absolute symlink does not reach the host', async () => {
    const d = await deploy({ paths: sys.paths, image: `oci:${layout}:symlink`, ...quiet });
    expect(d.snapshot).toBe(4);
    expect(d.tries).toBe(3); // the default: the host file says 7
    expect(await readGrubenv(grubenv)).toMatchObject({ ocisnap_default: '1', ocisnap_trial: '4', ocisnap_tries: '3' });
  });

  it('rollback makes the target GRUB\'s default with no trial', async () => {
    const r = await rollback({ paths: sys.paths, ...quiet });
    expect(r).toMatchObject({ snapshot: 1, previous: 4, unchanged: false, grubenv: { updated: true, file: grubenv } });
    expect(await readGrubenv(grubenv)).toEqual({ ocisnap_default: '1', other: 'kept' });
    expect(await defaultSnapshot(sys.paths)).toBe(1);
  });

  it('status shows every verdict (at, by, reason) in text and JSON', async () => {
    const { json, text } = await status();
    const verdicts = Object.fromEntries(json.snapshots.map((x) => [x.number, x.verdict]));
    expect(verdicts[1]).toMatchObject({ by: 'health-check', reason: 'all 2 checks passed' });
    expect(verdicts[2]).toMatchObject({ by: 'deploy' });
    expect(verdicts[4]).toMatchObject({ by: 'rollback', reason: 'rolled back to snapshot 1' });
    const v4 = verdicts[4]!;
    expect(text).toContain(`verdict: superseded at ${v4.at} by rollback: rolled back to snapshot 1`);
    expect(text).toContain(`verdict: good at ${verdicts[1]!.at} by health-check: all 2 checks passed`);
  });

  it('a pending deployment keeps its GRUB trial when "rolled back" to while it already boots next', async () => {
    const d = await deploy({ paths: sys.paths, image: `oci:${layout}:v1`, tries: 2, ...quiet });
    expect(await readGrubenv(grubenv)).toMatchObject({ ocisnap_trial: String(d.snapshot), ocisnap_tries: '2' });
    const r = await rollback({ paths: sys.paths, target: d.snapshot, ...quiet });
    expect(r).toMatchObject({ unchanged: true, grubenv: { updated: false } });
    expect(await readGrubenv(grubenv)).toMatchObject({ ocisnap_default: '1', ocisnap_trial: String(d.snapshot), ocisnap_tries: '2' });
    const { json } = await status();
    expect(json.snapshots.find((x) => x.number === d.snapshot)).toMatchObject({ status: 'pending', verdict: null });
  });

  it('a deploy killed after set-default but before grubenv is finished by the next run, grubenv included', async () => {
    const r = await cli(['--sysroot', sys.paths.root, 'deploy', '--progress', 'none', `oci:${layout}:v2`], { OCISNAP_TEST_CRASH_AT: 'default-set' });
    expect(r.signal, r.stderr).toBe('SIGKILL');
    expect((await readState(sys.paths.root)).inProgress?.snapshot).toBe(6);
    expect(await defaultSnapshot(sys.paths)).toBe(6);
    expect(await readGrubenv(grubenv)).toMatchObject({ ocisnap_trial: '5' });
    expect(await recoverInterruptedDeploy(sys.paths)).toContain('snapshot 6 is the next boot');
    expect(await readGrubenv(grubenv)).toMatchObject({ ocisnap_default: '1', ocisnap_trial: '6', ocisnap_tries: '5' });
    const state = await readState(sys.paths.root);
    expect(state.inProgress).toBeUndefined();
    expect(state.deployments.find((x) => x.snapshot === 6)).toMatchObject({ status: 'pending', triesLeft: 5 });
  });
});
