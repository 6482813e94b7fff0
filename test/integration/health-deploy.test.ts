/**
 * The health verdicts on deployments made by `ocisnap deploy` itself (K's
 * src/deploy), on a real btrfs sysroot: v1's trial passes and it becomes the
 * last good; v2's required check fails, so v2 is bad and v1 boots next;
 * `ocisnap status` and `ocisnap rollback` agree.
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deploy } from '../../src/deploy/deploy.js';
import { rollback } from '../../src/deploy/rollback.js';
import { readState } from '../../src/deploy/state.js';
import { systemStatus } from '../../src/deploy/status.js';
import { defaultHealthConfig } from '../../src/health/config.js';
import { scriptDirs } from '../../src/health/scripts.js';
import { countBoot, runHealthCheck } from '../../src/health/verdict.js';
import type { Priority } from '../../src/health/log.js';
import { buildOsImage, makeSysroot, makeWorkDir, removeDir, type TestSysroot } from './deploy-support.js';
import { defaultSnapshot, script, userdataHealth } from './health-support.js';

let sys: TestSysroot;
let work: string;
let layout: string;
const lines: { priority: Priority; line: string }[] = [];
const log = (priority: Priority, line: string): void => void lines.push({ priority, line });

beforeAll(async () => {
  sys = await makeSysroot({ sizeMiB: 512 });
  work = await makeWorkDir();
  layout = join(work, 'layout');
  await buildOsImage(layout, 'v1', { version: '1', bigSize: 1 << 16 });
  await buildOsImage(layout, 'v2', { version: '2', bigSize: 1 << 16 });
});

afterAll(async () => {
  await sys?.dispose();
  if (work) await removeDir(work);
});

function health(root: string) {
  const config = defaultHealthConfig();
  config.action = 'none';
  config.builtin.failedUnits = false;
  config.builtin.reachTarget = false;
  return { paths: sys.paths, config, scripts: scriptDirs(root), log };
}

describe.sequential('health verdicts on real deployments', () => {
  it('v1 deployed and booted: one try counted, checks pass, v1 is the last good', async () => {
    const d = await deploy({ paths: sys.paths, image: `oci:${layout}:v1`, log: () => undefined });
    expect((await readState(sys.paths.root)).deployments.find((x) => x.snapshot === d.snapshot)?.status).toBe('pending');
    const root = join(work, 'health-v1');
    await script(join(root, 'usr/lib/ocisnap/health.d/required.d/10-ok'), 'test "$OCISNAP_SNAPSHOT" = 1');
    expect((await countBoot(health(root))).report.triesLeft).toBe(2);
    expect((await runHealthCheck(health(root))).verdict).toBe('good');
    const state = await readState(sys.paths.root);
    expect(state.lastGood).toBe(1);
    expect(await userdataHealth(sys.paths, 1)).toBe('good');
  });

  it('v2 with a failing required check: bad, v1 is the default again, status shows it', async () => {
    const d = await deploy({ paths: sys.paths, image: `oci:${layout}:v2`, log: () => undefined });
    expect(d.snapshot).toBe(2);
    expect(await defaultSnapshot(sys.paths)).toBe(2);
    const root = join(work, 'health-v2');
    await script(join(root, 'usr/lib/ocisnap/health.d/required.d/90-broken'), 'echo broken; exit 1');
    expect((await runHealthCheck(health(root))).verdict).toBe('bad');
    expect(await defaultSnapshot(sys.paths)).toBe(1);
    const s = await systemStatus(sys.paths);
    expect(s.default).toBe(1);
    expect(s.lastGood).toBe(1);
    expect(s.pending).toBeNull();
    expect(s.snapshots.find((x) => x.number === 2)?.status).toBe('bad');
    expect(await userdataHealth(sys.paths, 2)).toBe('bad');
    // A manual rollback to the bad one is refused without --force.
    await expect(rollback({ paths: sys.paths, target: 2 })).rejects.toThrow(/marked bad/);
  });
});
