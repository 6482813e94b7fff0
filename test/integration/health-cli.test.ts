/**
 * `ocisnap health check|boot-count|status` as a user (or systemd) runs them,
 * through the built CLI with --sysroot, --health-root and the health.conf
 * found there.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readState } from '../../src/deploy/state.js';
import { ocisnap } from '../support/cli.js';
import { defaultSnapshot, makeHealthFixture, script, type HealthFixture } from './health-support.js';

let f: HealthFixture;

beforeEach(async () => {
  f = await makeHealthFixture({ tries: 3 });
});

afterEach(async () => {
  await f?.dispose();
});

const globals = (): string[] => ['--sysroot', f.paths.root];
const health = (): string[] => ['health', '--health-root', f.healthRoot];

describe('ocisnap health', () => {
  it('check: a failing required check exits 1 with one line, logs with journal priorities, and rolls back', async () => {
    await script(join(f.healthRoot, 'etc/ocisnap/health.d/required.d/20-app'), 'echo no answer; exit 1');
    const r = await ocisnap([...globals(), ...health(), 'check'], { env: { JOURNAL_STREAM: '8:1234' } });
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toBe('ocisnap: snapshot 2 is unhealthy: required.d/20-app: exit status 1: no answer');
    expect(r.stdout).toContain('<6>ocisnap-health: PASS builtin:failed-units: no failed units\n');
    expect(r.stdout).toContain('<3>ocisnap-health: FAIL required.d/20-app: exit status 1: no answer\n');
    expect(r.stdout).toContain('<5>ocisnap-health: rolled back: snapshot 1 (last known good) boots next\n');
    expect(await defaultSnapshot(f.paths)).toBe(1);
  });

  it('check: passing exits 0 and marks the trial good; without JOURNAL_STREAM no prefixes', async () => {
    const r = await ocisnap([...globals(), ...health(), 'check']);
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toMatch(/^ocisnap-health: checking snapshot 2 \(trial boot/);
    expect((await readState(f.paths.root)).lastGood).toBe(2);
  });

  it('boot-count counts a try; status --json shows the trial, verdicts and the last check', async () => {
    expect((await ocisnap([...globals(), ...health(), 'boot-count'])).exitCode).toBe(0);
    const before = await ocisnap([...globals(), ...health(), 'status', '--json']);
    expect(before.exitCode).toBe(0);
    const s1 = JSON.parse(String(before.stdout));
    expect(s1).toMatchObject({
      schemaVersion: 1,
      sysroot: f.paths.root,
      booted: 2,
      trial: { snapshot: 2, triesLeft: 2 },
      lastGood: 1,
      lastCheck: null,
      lastBootCount: { snapshot: 2, trial: 2, triesLeft: 2, exhausted: false },
      grubenv: null,
    });

    await ocisnap([...globals(), ...health(), 'check']);
    const after = JSON.parse(String((await ocisnap([...globals(), ...health(), 'status', '--json'])).stdout));
    expect(Object.keys(after).sort()).toEqual(
      ['schemaVersion', 'sysroot', 'booted', 'trial', 'lastGood', 'deployments', 'lastCheck', 'lastBootCount', 'grubenv'].sort(),
    );
    expect(after.trial).toBeNull();
    expect(after.lastGood).toBe(2);
    expect(after.deployments).toEqual([
      expect.objectContaining({ snapshot: 1, image: 'registry.test/os:v1', status: 'good', triesLeft: null }),
      expect.objectContaining({ snapshot: 2, image: 'registry.test/os:v2', status: 'good', triesLeft: null, verdict: expect.objectContaining({ by: 'health-check' }) }),
    ]);
    expect(after.lastCheck).toMatchObject({ snapshot: 2, trial: true, verdict: 'good', reason: null, bootId: null });
    expect(after.lastCheck.checks[0]).toEqual({ name: 'builtin:target', required: true, passed: true, detail: 'basic.target is active', durationMs: expect.any(Number) });

    const text = await ocisnap([...globals(), ...health(), 'status']);
    expect(text.stdout).toContain('Last good:  2');
    expect(text.stdout).toContain('PASS builtin:target: basic.target is active');
  });

  it('rejects a malformed health.conf with one line and exit status 2', async () => {
    await writeFile(f.configFile, 'action = "explode"\n');
    const r = await ocisnap([...globals(), ...health(), 'check']);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toBe(`ocisnap: ${f.configFile}: action: must be "reboot", "poweroff" or "none"`);
  });
});
