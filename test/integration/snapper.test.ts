/**
 * ocisnap's snapshot metadata against the real snapper (Debian's package,
 * `--no-dbus`), on a real loop-mounted btrfs: snapper lists ocisnap's
 * snapshots with their descriptions and userdata, numbers its own after
 * ocisnap's, and ocisnap reads what snapper writes.
 */
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  deploymentSnapshotInfo,
  listSnapshots,
  readInfoXml,
  releaseSnapshotDir,
  reserveSnapshotNumber,
  setUserdata,
  snapshotSubvolume,
  unregisterSnapshot,
  writeInfoXml,
  type SkippedEntry,
} from '../../src/deploy/snapper.js';
import { createBtrfs, type BtrfsFixture } from '../support/btrfs.js';
import { requireCommands } from '../support/host.js';

const config = `ocisnap-test-${process.pid}-${randomBytes(3).toString('hex')}`;
const digest1 = `sha256:${'a'.repeat(64)}`;
const digest2 = `sha256:${'b'.repeat(64)}`;

let fs: BtrfsFixture;
let snapshots: string;
let configCreated = false;

async function snapper(...args: string[]) {
  return execa('snapper', ['--no-dbus', '-c', config, ...args]);
}

interface SnapperJsonEntry {
  number: number;
  type: string;
  description: string;
  userdata: Record<string, string> | null;
  cleanup: string;
  date: string;
}

async function snapperList(): Promise<SnapperJsonEntry[]> {
  const r = await execa('snapper', ['--no-dbus', '--utc', '--jsonout', '-c', config, 'list']);
  const parsed = JSON.parse(r.stdout) as Record<string, SnapperJsonEntry[]>;
  return parsed[config]!.filter((e) => e.number !== 0);
}

/** What ocisnap's deploy does, minus the image: reserve N, snapshot, info.xml. */
async function ocisnapSnapshot(image: string, digest: string): Promise<number> {
  const n = await reserveSnapshotNumber(snapshots);
  await execa('btrfs', ['subvolume', 'snapshot', fs.mountpoint, snapshotSubvolume(snapshots, n)]);
  await writeInfoXml(snapshots, deploymentSnapshotInfo({ num: n, image, manifestDigest: digest }));
  return n;
}

beforeAll(async () => {
  await requireCommands('snapper', 'btrfs');
  fs = await createBtrfs({ sizeMiB: 512 });
  snapshots = join(fs.mountpoint, '.snapshots');
  await writeFile(join(fs.mountpoint, 'hello'), 'root filesystem\n');
  // create-config makes the .snapshots subvolume and registers the config in
  // /etc/snapper/configs and /etc/default/snapper; afterAll undoes both.
  await snapper('create-config', fs.mountpoint);
  configCreated = true;
});

afterAll(async () => {
  try {
    if (configCreated) await snapper('delete-config');
  } finally {
    await fs?.dispose();
  }
});

describe('snapper and ocisnap share /.snapshots', () => {
  it('numbers, lists and reads each other’s snapshots', async () => {
    await snapper('create', '-d', 'made by snapper', '-c', 'number', '--userdata', 'origin=snapper');
    const n1 = await ocisnapSnapshot('localhost:5000/os:1', digest1);
    const n2 = await ocisnapSnapshot('localhost:5000/os:2', digest2);
    expect([n1, n2]).toEqual([2, 3]);

    // snapper lists ocisnap's snapshots with description and userdata.
    const listed = await snapperList();
    expect(listed.map((e) => e.number)).toEqual([1, 2, 3]);
    expect(listed[1]).toMatchObject({
      number: 2,
      type: 'single',
      description: 'ocisnap: localhost:5000/os:1',
      cleanup: 'number',
      userdata: { 'ocisnap.image': 'localhost:5000/os:1', 'ocisnap.digest': digest1 },
    });
    expect(listed[2]!.userdata).toEqual({ 'ocisnap.image': 'localhost:5000/os:2', 'ocisnap.digest': digest2 });
    const table = await execa('snapper', ['--no-dbus', '--csvout', '-c', config, 'list', '--columns', 'number,description,userdata']);
    expect(table.stdout).toContain(`3,ocisnap: localhost:5000/os:2,"ocisnap.digest=${digest2}, ocisnap.image=localhost:5000/os:2"`);

    // snapper's next snapshot comes after ocisnap's.
    const created = await snapper('create', '-p', '-d', 'snapper after ocisnap');
    expect(created.stdout.trim()).toBe('4');

    // A number ocisnap reserved but has not finished: snapper steps over it,
    // both tools skip it, and ocisnap's next number is above everything.
    const reserved = await reserveSnapshotNumber(snapshots);
    expect(reserved).toBe(5);
    const after = await snapper('create', '-p', '-d', 'over a reservation');
    expect(after.stdout.trim()).toBe('6');
    expect((await snapperList()).map((e) => e.number)).toEqual([1, 2, 3, 4, 6]);
    const skipped: SkippedEntry[] = [];
    const mine = await listSnapshots(snapshots, (e) => skipped.push(e));
    expect(mine.map((s) => s.num)).toEqual([1, 2, 3, 4, 6]);
    expect(skipped).toEqual([expect.objectContaining({ name: '5', reason: 'no-info-xml' })]);
    expect(await reserveSnapshotNumber(snapshots)).toBe(7);

    // ocisnap reads snapper-made info.xml, and its dates are snapper's (UTC).
    const bySnapper = mine.find((s) => s.num === 1)!;
    expect(bySnapper).toMatchObject({ type: 'single', description: 'made by snapper', cleanup: 'number', userdata: { origin: 'snapper' } });
    expect(Math.abs(bySnapper.date.getTime() - Date.now())).toBeLessThan(120_000);
    const snapperDates = new Map((await snapperList()).map((e) => [e.number, e.date]));
    for (const s of mine) {
      expect(s.date.toISOString().replace('T', ' ').slice(0, 19)).toBe(snapperDates.get(s.num));
    }
  });

  it('keeps userdata in sync both ways', async () => {
    await snapper('modify', '--userdata', 'important=yes', '2');
    expect((await readInfoXml(snapshots, 2)).userdata).toEqual({
      important: 'yes',
      'ocisnap.image': 'localhost:5000/os:1',
      'ocisnap.digest': digest1,
    });
    await setUserdata(snapshots, 4, { 'ocisnap.health': 'good' });
    const listed = await snapperList();
    expect(listed.find((e) => e.number === 4)).toMatchObject({ description: 'snapper after ocisnap', userdata: { 'ocisnap.health': 'good' } });
    expect(listed.find((e) => e.number === 2)!.userdata).toMatchObject({ important: 'yes' });
  });

  it('lets each tool delete the other’s snapshots', async () => {
    await snapper('delete', '3');
    await unregisterSnapshot(snapshots, 4);
    await execa('btrfs', ['subvolume', 'delete', snapshotSubvolume(snapshots, 4)]);
    await releaseSnapshotDir(snapshots, 4);
    expect((await snapperList()).map((e) => e.number)).toEqual([1, 2, 6]);
    expect((await listSnapshots(snapshots)).map((s) => s.num)).toEqual([1, 2, 6]);
  });
});
