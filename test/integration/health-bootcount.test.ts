/**
 * The boot counter (`countBoot`) and grubenv on a real btrfs sysroot: each
 * trial boot uses a try; with none left the trial fails and the last good
 * snapshot boots again; GRUB giving a trial up is noticed from the snapshot
 * it fell back to.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, describe, expect, it } from 'vitest';
import { readState, writeState, markBad } from '../../src/deploy/state.js';
import { readGrubenv, updateGrubenv, grubTrialVars } from '../../src/health/grubenv.js';
import { readHealthRecord } from '../../src/health/report.js';
import { countBoot, runHealthCheck } from '../../src/health/verdict.js';
import { requireCommands } from '../support/host.js';
import { defaultSnapshot, exists, makeHealthFixture, script, userdataHealth, type HealthFixture } from './health-support.js';

let f: HealthFixture | undefined;

afterEach(async () => {
  await f?.dispose();
  f = undefined;
});

async function fixture(tries?: number): Promise<HealthFixture> {
  f = await makeHealthFixture(tries === undefined ? {} : { tries });
  return f;
}

const base = (x: HealthFixture) => ({ paths: x.paths, config: x.config, scripts: x.scripts, log: x.log });

async function grubenvIn(x: HealthFixture): Promise<string> {
  await requireCommands('grub-editenv');
  const file = join(x.paths.root, 'boot/grub/grubenv');
  await mkdir(join(file, '..'), { recursive: true });
  await execa('grub-editenv', [file, 'create']);
  await execa('grub-editenv', [file, 'set', 'ocisnap_default=1']);
  return file;
}

describe('boot-count', () => {
  it('uses one try per trial boot and rolls back when none is left', async () => {
    const x = await fixture(2);
    x.config.action = 'reboot';
    const red = join(x.healthRoot, 'red.out');
    await script(join(x.healthRoot, 'usr/lib/ocisnap/health.d/red.d/10-record'), `echo "$OCISNAP_VERDICT $OCISNAP_REASON $OCISNAP_ROLLBACK_TO" > ${red}`);

    const first = await countBoot(base(x));
    expect(first.report).toMatchObject({ snapshot: 2, trial: 2, triesLeft: 1, exhausted: false });
    expect((await readState(x.paths.root)).deployments.find((d) => d.snapshot === 2)?.triesLeft).toBe(1);
    const second = await countBoot(base(x));
    expect(second.report).toMatchObject({ triesLeft: 0, exhausted: false });
    expect(await defaultSnapshot(x.paths)).toBe(2);
    expect(await exists(x.markers.reboot)).toBe(false);

    // The third boot finds no try left: the trial has failed.
    const third = await countBoot(base(x));
    expect(third.report.exhausted).toBe(true);
    expect(third.rolledBackTo).toBe(1);
    const state = await readState(x.paths.root);
    const d2 = state.deployments.find((d) => d.snapshot === 2);
    expect(d2?.status).toBe('bad');
    expect(d2?.verdict?.by).toBe('boot-counter');
    expect(state.lastRollback).toMatchObject({ from: 2, to: 1, by: 'boot-counter' });
    expect(state.lastGood).toBe(1);
    expect(await defaultSnapshot(x.paths)).toBe(1);
    expect(await userdataHealth(x.paths, 2)).toBe('bad');
    expect(await readFile(x.markers.reboot, 'utf8')).toBe('now\n');
    expect(await readFile(red, 'utf8')).toBe('bad no boot tries left 1\n');
    expect((await readHealthRecord(x.paths.root)).lastBootCount).toMatchObject({ snapshot: 2, trial: 2, exhausted: true });
    expect((await readHealthRecord(x.paths.root)).lastBootCount?.actions).toContain('default set to snapshot 1');

    // Back on snapshot 1: nothing on trial, nothing counted, no reboot.
    await readFile(x.markers.reboot).then(() => execa('rm', [x.markers.reboot]));
    const after = await countBoot({ ...base(x), booted: 1 });
    expect(after.report).toMatchObject({ snapshot: 1, trial: null, triesLeft: null, exhausted: false, actions: [] });
    expect(await exists(x.markers.reboot)).toBe(false);
  });

  it('does not count a boot of another snapshot while one is on trial', async () => {
    const x = await fixture(3);
    const r = await countBoot({ ...base(x), booted: 1 });
    expect(r.report).toMatchObject({ snapshot: 1, trial: 2, triesLeft: null, exhausted: false });
    expect((await readState(x.paths.root)).deployments.find((d) => d.snapshot === 2)).toMatchObject({ status: 'pending', triesLeft: 3 });
    expect(await defaultSnapshot(x.paths)).toBe(2);
  });

  it('finishes a rollback cut short: a bad deployment that is still the default and booted', async () => {
    const x = await fixture(3);
    x.config.action = 'reboot';
    // State says bad, set-default never happened (a crash between the two steps).
    await writeState(x.paths.root, markBad(await readState(x.paths.root), 2, { by: 'health-check', reason: 'test' }));
    const r = await countBoot(base(x));
    expect(r.rolledBackTo).toBe(1);
    expect(await defaultSnapshot(x.paths)).toBe(1);
    expect(await exists(x.markers.reboot)).toBe(true);
  });
});

describe('grubenv', () => {
  it('a good verdict makes the trial GRUB\'s default, with no trial left', async () => {
    const x = await fixture(3);
    const file = await grubenvIn(x);
    expect(await updateGrubenv(x.paths, grubTrialVars(2, 3))).toEqual({ file, updated: true });
    expect(await readGrubenv(file)).toEqual({ ocisnap_default: '1', ocisnap_trial: '2', ocisnap_tries: '3' });
    // The block keeps GRUB's fixed size.
    expect((await readFile(file)).length).toBe(1024);

    expect((await runHealthCheck(base(x))).verdict).toBe('good');
    expect(await readGrubenv(file)).toEqual({ ocisnap_default: '2' });
  });

  it('after GRUB used up the trial\'s tries and booted the default, the boot counter marks the trial bad', async () => {
    const x = await fixture(3);
    const file = await grubenvIn(x);
    await updateGrubenv(x.paths, { ocisnap_trial: '2', ocisnap_tries: '0' });
    const r = await countBoot({ ...base(x), booted: 1, cmdline: 'root=/dev/vda2 ocisnap.snapshot=1 ocisnap.boot=default' });
    expect(r.report.exhausted).toBe(true);
    const d2 = (await readState(x.paths.root)).deployments.find((d) => d.snapshot === 2);
    expect(d2?.status).toBe('bad');
    expect(d2?.verdict?.reason).toContain('GRUB used up its boot tries');
    expect(await defaultSnapshot(x.paths)).toBe(1);
    expect(await readGrubenv(file)).toEqual({ ocisnap_default: '1' });
    // Already on the good snapshot: no restart.
    expect(await exists(x.markers.reboot)).toBe(false);
  });

  it('a trial whose kernel GRUB could not load (ocisnap.boot=fallback) is bad', async () => {
    const x = await fixture(3);
    await countBoot({ ...base(x), booted: 1, cmdline: 'ocisnap.snapshot=1 ocisnap.boot=fallback' });
    expect((await readState(x.paths.root)).deployments.find((d) => d.snapshot === 2)?.status).toBe('bad');
    expect(await defaultSnapshot(x.paths)).toBe(1);
  });

  it('without a grubenv nothing is written and nothing fails', async () => {
    const x = await fixture(3);
    expect(await updateGrubenv(x.paths, grubTrialVars(2, 3))).toMatchObject({ updated: false });
    expect(await exists(join(x.paths.root, 'boot/grub/grubenv'))).toBe(false);
    expect((await runHealthCheck(base(x))).report?.actions).toEqual(['marked snapshot 2 good', 'userdata ocisnap.health=good on snapshot 2']);
  });
});
