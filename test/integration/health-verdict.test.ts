/**
 * `runHealthCheck` on a real btrfs sysroot: the verdict of a trial boot and
 * what follows (state, snapper userdata, btrfs default, grubenv, hooks, the
 * action), and report-only boots.
 */
import { mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readState, writeState, type State } from '../../src/deploy/state.js';
import { checkTarget } from '../../src/health/builtin.js';
import { readHealthRecord } from '../../src/health/report.js';
import { runHealthCheck, type HealthRunOptions } from '../../src/health/verdict.js';
import { defaultSnapshot, exists, makeHealthFixture, script, userdataHealth, type HealthFixture } from './health-support.js';

let f: HealthFixture;

function emptyWithout(state: State): State {
  const { lastGood: _, ...rest } = state;
  return rest;
}

beforeEach(async () => {
  f = await makeHealthFixture();
});

afterEach(async () => {
  await f?.dispose();
});

function opts(extra: Partial<HealthRunOptions> = {}): HealthRunOptions {
  return { paths: f.paths, config: f.config, scripts: f.scripts, log: f.log, ...extra };
}

const etcDir = (kind: string): string => join(f.healthRoot, 'etc/ocisnap/health.d', kind);
const usrDir = (kind: string): string => join(f.healthRoot, 'usr/lib/ocisnap/health.d', kind);

/** A hook that records its environment. */
async function recordingHook(kind: 'green.d' | 'red.d'): Promise<string> {
  const out = join(f.healthRoot, `${kind}.out`);
  await script(join(usrDir(kind), '50-record'), `echo "$OCISNAP_VERDICT snapshot=$OCISNAP_SNAPSHOT/$OCISNAP_VERDICT_SNAPSHOT trial=$OCISNAP_TRIAL rollback=$OCISNAP_ROLLBACK_TO" > ${out}`);
  return out;
}

describe('the trial boot of a pending deployment', () => {
  it('fails a required check: marked bad, the last good snapshot is the default again, red.d runs, action none', async () => {
    await script(join(usrDir('required.d'), '10-ok'), 'exit 0');
    await script(join(etcDir('required.d'), '20-app'), 'echo "app does not answer"; exit 4');
    const green = await recordingHook('green.d');
    const red = await recordingHook('red.d');
    expect(await defaultSnapshot(f.paths)).toBe(2);

    const r = await runHealthCheck(opts());

    expect(r.verdict).toBe('bad');
    expect(await defaultSnapshot(f.paths)).toBe(1);
    const state = await readState(f.paths.root);
    const d2 = state.deployments.find((d) => d.snapshot === 2);
    expect(d2?.status).toBe('bad');
    expect(d2?.triesLeft).toBeUndefined();
    expect(d2?.verdict?.by).toBe('health-check');
    expect(d2?.verdict?.reason).toContain('required.d/20-app: exit status 4: app does not answer');
    expect(state.lastGood).toBe(1);
    expect(state.lastRollback).toMatchObject({ from: 2, to: 1, by: 'health-check' });
    expect(await userdataHealth(f.paths, 2)).toBe('bad');
    expect(await readFile(red, 'utf8')).toBe('bad snapshot=2/2 trial=1 rollback=1\n');
    expect(await exists(green)).toBe(false);
    expect(await exists(f.markers.reboot)).toBe(false);
    const rec = await readHealthRecord(f.paths.root);
    expect(rec.lastCheck?.verdict).toBe('bad');
    expect(rec.lastCheck?.checks.map((c) => [c.name, c.passed])).toEqual([
      ['builtin:target', true],
      ['builtin:failed-units', true],
      ['required.d/10-ok', true],
      ['required.d/20-app', false],
    ]);
    expect(rec.lastCheck?.actions).toEqual(['marked snapshot 2 bad', 'userdata ocisnap.health=bad on snapshot 2', 'default set to snapshot 1']);
    expect(f.lines).toContainEqual({ priority: 'err', line: 'FAIL required.d/20-app: exit status 4: app does not answer' });
  });

  it('with no deployment known good yet, goes back to the snapshot the trial was deployed from', async () => {
    // Snapshot 1 as an installer left it: not an ocisnap deployment; 2 was deployed from it.
    const state = await readState(f.paths.root);
    await writeState(f.paths.root, { ...emptyWithout(state), deployments: state.deployments.filter((d) => d.snapshot === 2) });
    await script(join(usrDir('required.d'), '20-app'), 'exit 1');
    const r = await runHealthCheck(opts());
    expect(r.verdict).toBe('bad');
    expect(await defaultSnapshot(f.paths)).toBe(1);
    expect((await readState(f.paths.root)).deployments).toEqual([expect.objectContaining({ snapshot: 2, status: 'bad' })]);
    expect(f.lines).toContainEqual({ priority: 'notice', line: 'rolled back: snapshot 1 (the one it was deployed from) boots next' });
  });

  it('with action reboot, runs the configured reboot command after the rollback', async () => {
    await script(join(usrDir('required.d'), '20-app'), 'exit 1');
    f.config.action = 'reboot';
    await runHealthCheck(opts());
    expect(await defaultSnapshot(f.paths)).toBe(1);
    expect(await readFile(f.markers.reboot, 'utf8')).toBe('now\n');
    expect((await readHealthRecord(f.paths.root)).lastCheck?.actions.at(-1)).toBe('reboot');
  });

  it('with action poweroff, runs the poweroff command', async () => {
    await script(join(usrDir('required.d'), '20-app'), 'exit 1');
    f.config.action = 'poweroff';
    await runHealthCheck(opts());
    expect(await exists(f.markers.poweroff)).toBe(true);
    expect(await exists(f.markers.reboot)).toBe(false);
  });

  it('passes: marked good, the last known good, stays the default, green.d runs', async () => {
    await script(join(usrDir('required.d'), '10-ok'), 'exit 0');
    const green = await recordingHook('green.d');
    const red = await recordingHook('red.d');
    const r = await runHealthCheck(opts());
    expect(r.verdict).toBe('good');
    const state = await readState(f.paths.root);
    expect(state.deployments.find((d) => d.snapshot === 2)?.status).toBe('good');
    expect(state.lastGood).toBe(2);
    expect(await defaultSnapshot(f.paths)).toBe(2);
    expect(await userdataHealth(f.paths, 2)).toBe('good');
    expect(await readFile(green, 'utf8')).toBe('good snapshot=2/2 trial=1 rollback=\n');
    expect(await exists(red)).toBe(false);
  });

  it('a failing wanted check is reported but the verdict stays good', async () => {
    await script(join(usrDir('wanted.d'), '30-nice-to-have'), 'echo degraded; exit 1');
    const r = await runHealthCheck(opts());
    expect(r.verdict).toBe('good');
    expect(r.report?.checks.find((c) => c.name === 'wanted.d/30-nice-to-have')).toMatchObject({ required: false, passed: false });
    expect(f.lines).toContainEqual({ priority: 'warning', line: 'FAIL wanted.d/30-nice-to-have (wanted): exit status 1: degraded' });
    expect((await readState(f.paths.root)).lastGood).toBe(2);
  });

  it('a check that runs past its timeout is killed, with what it started, and counts as failed', async () => {
    f.config.checkTimeoutMs = 1000;
    // A child in the background that would outlive its parent if only the parent were killed.
    await script(join(usrDir('required.d'), '40-hangs'), 'sleep 31.25 &\nsleep 31.5');
    const started = Date.now();
    const r = await runHealthCheck(opts());
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(r.verdict).toBe('bad');
    expect(r.report?.checks.find((c) => c.name === 'required.d/40-hangs')?.detail).toMatch(/^timed out after 1\.\d s \(killed\)$/);
    const left = await execa('pgrep', ['-f', 'sleep 31\\.(25|5)'], { reject: false });
    expect(left.stdout).toBe('');
    expect(await defaultSnapshot(f.paths)).toBe(1);
  });

  it('a failed unit fails the built-in check unless ignored; a target not reached fails too', async () => {
    await writeFile(f.markers.failedUnits, 'broken.service loaded failed failed Broken thing\n');
    const bad = await runHealthCheck(opts({ reportOnly: true }));
    expect(bad.verdict).toBe('bad');
    expect(bad.report?.reason).toBe('builtin:failed-units: failed units: broken.service');

    f.config.builtin.ignoreUnits = ['broken.service'];
    // Our own unit, failed by an earlier run in this boot, does not count either.
    await writeFile(f.markers.failedUnits, 'broken.service loaded failed failed Broken thing\nocisnap-health.service loaded failed failed ocisnap boot health checks\n');
    expect((await runHealthCheck(opts({ reportOnly: true }))).verdict).toBe('good');

    await writeFile(f.markers.targetState, 'inactive\n');
    const late = await runHealthCheck(opts({ reportOnly: true }));
    expect(late.report?.reason).toBe('builtin:target: basic.target not reached 0 s after boot (state: inactive)');
    // report-only changed nothing.
    expect((await readState(f.paths.root)).deployments.find((d) => d.snapshot === 2)?.status).toBe('pending');
    expect(await defaultSnapshot(f.paths)).toBe(2);
  });

  it('/etc shadows /usr by name, a link to /dev/null masks, a non-executable file is skipped', async () => {
    await script(join(usrDir('required.d'), '10-shadowed'), 'exit 1');
    await script(join(etcDir('required.d'), '10-shadowed'), 'exit 0');
    await script(join(usrDir('required.d'), '20-masked'), 'exit 1');
    await mkdir(etcDir('required.d'), { recursive: true });
    await symlink('/dev/null', join(etcDir('required.d'), '20-masked'));
    await writeFile(join(usrDir('required.d'), '30-not-executable'), '#!/bin/sh\nexit 1\n');
    const r = await runHealthCheck(opts());
    expect(r.verdict).toBe('good');
    expect(r.report?.checks.map((c) => c.name)).toEqual(['builtin:target', 'builtin:failed-units', 'required.d/10-shadowed']);
    expect(f.lines.some((l) => l.priority === 'warning' && l.line.includes('30-not-executable: not executable'))).toBe(true);
  });
});

describe('the built-in target check', () => {
  it('waits for the target until the deadline, then passes once it is active', async () => {
    // Inactive for the first two polls, then active.
    const count = join(f.healthRoot, 'polls');
    const systemctl = await script(
      join(f.healthRoot, 'bin/systemctl-slow'),
      `n=$(cat ${count} 2>/dev/null || echo 0); n=$((n+1)); echo $n > ${count}\nif [ $n -ge 3 ]; then echo active; else echo activating; exit 3; fi`,
    );
    f.config.commands.systemctl = [systemctl];
    f.config.builtin.targetDeadlineSec = 60;
    const r = await checkTarget(f.config, { pollMs: 50, uptime: async () => 10 });
    expect(r).toMatchObject({ passed: true, detail: 'basic.target is active' });
    expect(await readFile(count, 'utf8')).toBe('3\n');
    // Past the deadline it fails at the first look.
    await writeFile(count, '0\n');
    const late = await checkTarget(f.config, { pollMs: 50, uptime: async () => 61 });
    expect(late).toMatchObject({ passed: false, detail: 'basic.target not reached 60 s after boot (state: activating)' });
  });
});

describe('the examples', () => {
  it('the broken image\'s required check fails its trial; the good image\'s hooks log the verdict', async () => {
    const examples = new URL('../../examples/health/', import.meta.url).pathname;
    const r = await runHealthCheck(opts({ scripts: { bases: [join(examples, 'broken/usr/lib/ocisnap/health.d'), join(examples, 'good/usr/lib/ocisnap/health.d')] } }));
    expect(r.verdict).toBe('bad');
    expect(r.report?.reason).toContain('required.d/90-broken-on-purpose: exit status 1: this image is broken on purpose (examples/health/broken)');
    expect(await defaultSnapshot(f.paths)).toBe(1);
    expect(f.lines).toContainEqual({ priority: 'info', line: 'hook red.d/50-log: passed' });
  });
});

describe('a boot that is not a trial', () => {
  it('runs the checks and only reports: no verdict recorded on a deployment, nothing rolled back, hooks run', async () => {
    await script(join(usrDir('required.d'), '20-app'), 'exit 1');
    const red = await recordingHook('red.d');
    const r = await runHealthCheck(opts({ booted: 1 }));
    expect(r.verdict).toBe('bad');
    expect(r.report?.trial).toBe(false);
    const state = await readState(f.paths.root);
    expect(state.deployments.map((d) => [d.snapshot, d.status])).toEqual([
      [1, 'good'],
      [2, 'pending'],
    ]);
    expect(await defaultSnapshot(f.paths)).toBe(2);
    expect(await userdataHealth(f.paths, 1)).toBe('pending');
    expect(await readFile(red, 'utf8')).toBe('bad snapshot=1/1 trial=0 rollback=\n');
    expect((await readHealthRecord(f.paths.root)).lastCheck).toMatchObject({ snapshot: 1, trial: false, verdict: 'bad', actions: [] });
  });

  it('with non_trial = "skip", runs nothing', async () => {
    const ran = join(f.healthRoot, 'ran');
    await script(join(usrDir('required.d'), '10-touch'), `touch ${ran}`);
    f.config.nonTrial = 'skip';
    expect((await runHealthCheck(opts({ booted: 1 }))).verdict).toBe('skipped');
    expect(await exists(ran)).toBe(false);
    // The trial boot still runs them.
    expect((await runHealthCheck(opts())).verdict).toBe('good');
    expect(await exists(ran)).toBe(true);
  });
});
