/**
 * Deployments as the real snapper sees them (Debian's snapper, --no-dbus, a
 * config on the test filesystem): it lists them with description and
 * userdata, numbers its own snapshots after them, and ocisnap lists snapper's
 * own snapshots without claiming them.
 */
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deploy } from '../../src/deploy/deploy.js';
import { systemStatus } from '../../src/deploy/status.js';
import { requireCommands } from '../support/host.js';
import type { BuiltImage } from '../support/image-factory.js';
import { buildOsImage, makeSysroot, makeWorkDir, removeDir, type TestSysroot } from './deploy-support.js';

const config = `ocisnap-deploy-${process.pid}-${randomBytes(3).toString('hex')}`;
let sys: TestSysroot;
let work: string;
let layout: string;
let v1: BuiltImage;

interface SnapperJsonEntry {
  number: number;
  type: string;
  description: string;
  userdata: Record<string, string> | null;
  cleanup: string;
  default?: boolean;
}

async function snapperList(): Promise<SnapperJsonEntry[]> {
  const r = await execa('snapper', ['--no-dbus', '--utc', '--jsonout', '-c', config, 'list']);
  return (JSON.parse(r.stdout) as Record<string, SnapperJsonEntry[]>)[config]!.filter((e) => e.number !== 0);
}

beforeAll(async () => {
  await requireCommands('snapper');
  sys = await makeSysroot({ snapperConfig: config });
  work = await makeWorkDir();
  layout = join(work, 'layout');
  v1 = await buildOsImage(layout, 'v1', { version: '1', bigSize: 64 << 10 });
  await buildOsImage(layout, 'v2', { version: '2', bigSize: 64 << 10 });
});

afterAll(async () => {
  await sys?.dispose();
  if (work) await removeDir(work);
});

describe('snapper sees ocisnap deployments', () => {
  it('lists them, numbers its own after them, and ocisnap does not claim snapper\'s', async () => {
    const d1 = await deploy({ paths: sys.paths, image: `oci:${layout}:v1` });
    expect(d1.snapshot).toBe(1);
    let listed = await snapperList();
    expect(listed).toHaveLength(1);
    expect(listed[0]).toMatchObject({
      number: 1,
      type: 'single',
      description: `ocisnap: oci:${layout}:v1`,
      cleanup: '',
      userdata: { 'ocisnap.image': `oci:${layout}:v1`, 'ocisnap.digest': v1.manifestDigest, 'ocisnap.image-id': d1.imageId },
    });

    const created = await execa('snapper', ['--no-dbus', '-c', config, 'create', '-p', '-d', 'made by snapper', '-c', 'number']);
    expect(created.stdout.trim()).toBe('2');
    const d2 = await deploy({ paths: sys.paths, image: `oci:${layout}:v2` });
    expect(d2.snapshot).toBe(3);
    listed = await snapperList();
    expect(listed.map((e) => [e.number, e.description])).toEqual([
      [1, `ocisnap: oci:${layout}:v1`],
      [2, 'made by snapper'],
      [3, `ocisnap: oci:${layout}:v2`],
    ]);

    const status = await systemStatus(sys.paths);
    expect(status.snapshots.map((s) => [s.number, s.deployment, s.default])).toEqual([
      [1, true, false],
      [2, false, false],
      [3, true, true],
    ]);
  });
});
