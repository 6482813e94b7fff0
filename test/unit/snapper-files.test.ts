import { mkdir, mkdtemp, readdir, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  SnapshotMetadataError,
  listSnapshots,
  readInfoXml,
  releaseSnapshotDir,
  renderInfoXml,
  reserveSnapshotNumber,
  setUserdata,
  unregisterSnapshot,
  writeInfoXml,
  type SkippedEntry,
  type SnapshotInfo,
} from '../../src/deploy/snapper.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ocisnap-snapper-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const info = (num: number, extra: Partial<SnapshotInfo> = {}): SnapshotInfo => ({
  num,
  type: 'single',
  date: new Date(Date.UTC(2025, 5, 1, 10, 0, num)),
  description: `deployment ${num}`,
  userdata: { 'ocisnap.image': `example/os:${num}` },
  ...extra,
});

describe('reserveSnapshotNumber', () => {
  it('starts at 1 in an empty directory', async () => {
    expect(await reserveSnapshotNumber(dir)).toBe(1);
    expect((await stat(join(dir, '1'))).isDirectory()).toBe(true);
    expect((await stat(join(dir, '1'))).mode & 0o777).toBe(0o755);
    expect(await reserveSnapshotNumber(dir)).toBe(2);
  });

  it('takes 1 + the highest number, gaps and empty directories included', async () => {
    for (const n of ['1', '5', '3']) await mkdir(join(dir, n));
    expect(await reserveSnapshotNumber(dir)).toBe(6);
  });

  it('ignores names that are not snapper numbers but counts numbered files', async () => {
    for (const n of ['current', '05', '0', '1a', '99x']) await mkdir(join(dir, n));
    await writeFile(join(dir, '.ocisnap-tmp'), '');
    expect(await reserveSnapshotNumber(dir)).toBe(1);
    await writeFile(join(dir, '9'), '');
    expect(await reserveSnapshotNumber(dir)).toBe(10);
  });

  it('stays above a high-water mark so removed numbers are not reused', async () => {
    await mkdir(join(dir, '4'));
    expect(await reserveSnapshotNumber(dir, { above: 20 })).toBe(21);
    expect(await reserveSnapshotNumber(dir, { above: 2 })).toBe(22);
  });

  it('never hands out one number twice to concurrent callers', async () => {
    await mkdir(join(dir, '3'));
    const nums = await Promise.all(Array.from({ length: 24 }, () => reserveSnapshotNumber(dir)));
    expect(new Set(nums).size).toBe(24);
    expect([...nums].sort((a, b) => a - b)).toEqual(Array.from({ length: 24 }, (_, i) => i + 4));
  });

  it('reports a missing snapshots directory clearly', async () => {
    await expect(reserveSnapshotNumber(join(dir, 'nope'))).rejects.toThrow(/cannot read snapshots directory .*nope/);
  });
});

describe('writeInfoXml / readInfoXml / setUserdata', () => {
  it('writes atomically with mode 0644 and reads back', async () => {
    const n = await reserveSnapshotNumber(dir);
    await writeInfoXml(dir, info(n, { cleanup: 'number' }));
    expect(await readdir(join(dir, String(n)))).toEqual(['info.xml']); // no temp files left
    expect((await stat(join(dir, String(n), 'info.xml'))).mode & 0o777).toBe(0o644);
    expect(await readInfoXml(dir, n)).toEqual(info(n, { cleanup: 'number' }));
    await writeInfoXml(dir, info(n, { description: 'second' }));
    expect((await readInfoXml(dir, n)).description).toBe('second');
  });

  it('fails clearly when the number was not reserved', async () => {
    await expect(writeInfoXml(dir, info(7))).rejects.toThrow(/cannot write .*\/7\/info\.xml/);
  });

  it('refuses an info.xml whose <num> is not its directory', async () => {
    await mkdir(join(dir, '2'));
    await writeFile(join(dir, '2', 'info.xml'), renderInfoXml(info(3)));
    await expect(readInfoXml(dir, 2)).rejects.toThrow(/<num> is 3, but the directory is 2/);
  });

  it('does not follow a symlinked info.xml', async () => {
    await mkdir(join(dir, '1'));
    await mkdir(join(dir, 'elsewhere'));
    await writeFile(join(dir, 'elsewhere', 'info.xml'), renderInfoXml(info(1)));
    await symlink(join(dir, 'elsewhere', 'info.xml'), join(dir, '1', 'info.xml'));
    await expect(readInfoXml(dir, 1)).rejects.toThrow(SnapshotMetadataError);
  });

  it('refuses files that are not UTF-8 or not regular, without hanging on a FIFO', async () => {
    await mkdir(join(dir, '1'));
    await writeFile(join(dir, '1', 'info.xml'), Buffer.from([0x3c, 0xff, 0xfe, 0x3e]));
    await expect(readInfoXml(dir, 1)).rejects.toThrow(/info\.xml: not UTF-8/);
    await mkdir(join(dir, '2'));
    await execa('mkfifo', [join(dir, '2', 'info.xml')]);
    await expect(readInfoXml(dir, 2)).rejects.toThrow(/info\.xml: not a regular file/);
  });

  it('sets and removes userdata keeping the rest', async () => {
    const n = await reserveSnapshotNumber(dir);
    await writeInfoXml(dir, info(n));
    const updated = await setUserdata(dir, n, { 'ocisnap.health': 'good', 'ocisnap.image': null });
    expect(updated.userdata).toEqual({ 'ocisnap.health': 'good' });
    expect(await readInfoXml(dir, n)).toEqual({ ...info(n), userdata: { 'ocisnap.health': 'good' } });
    await expect(setUserdata(dir, n, { 'bad,key': 'x' })).rejects.toThrow(/invalid userdata key/);
    expect((await readInfoXml(dir, n)).userdata).toEqual({ 'ocisnap.health': 'good' });
  });
});

describe('listSnapshots skips and reports what snapper would not list', () => {
  it('names every skipped entry with a reason', async () => {
    await mkdir(join(dir, 'notanumber'));
    await writeFile(join(dir, '4'), 'a file');
    await mkdir(join(dir, '5')); // reserved, no info.xml
    await mkdir(join(dir, '6'));
    await writeFile(join(dir, '6', 'info.xml'), '<snapshot>');
    await mkdir(join(dir, '7'));
    await writeInfoXml(dir, info(7)); // valid, but no subvolume (a tmpdir is not btrfs)
    await writeFile(join(dir, 'stray-file'), '');
    const skipped: SkippedEntry[] = [];
    expect(await listSnapshots(dir, (e) => skipped.push(e))).toEqual([]);
    const reasons = Object.fromEntries(skipped.map((e) => [e.name, e.reason]));
    expect(reasons).toEqual({
      notanumber: 'not-a-number',
      '4': 'not-a-directory',
      '5': 'no-info-xml',
      '6': 'invalid-info-xml',
      '7': 'no-subvolume',
    });
    const invalid = skipped.find((e) => e.name === '6')!;
    expect(invalid.detail).toContain(join(dir, '6', 'info.xml'));
  });
});

describe('unregisterSnapshot / releaseSnapshotDir', () => {
  it('removes lower directories but keeps the highest one so its number stays used', async () => {
    for (const n of [1, 2]) {
      await reserveSnapshotNumber(dir);
      await writeInfoXml(dir, info(n));
    }
    await writeFile(join(dir, '1', 'filelist-2.txt'), 'snapper comparison');
    await writeFile(join(dir, '2', 'filelist-1.txt.gz'), 'snapper comparison');
    await unregisterSnapshot(dir, 1);
    await releaseSnapshotDir(dir, 1);
    expect(await readdir(dir)).toEqual(['2']);
    expect(await readdir(join(dir, '2'))).toEqual(['info.xml']); // its list against 1 is gone too
    await unregisterSnapshot(dir, 2);
    await releaseSnapshotDir(dir, 2);
    expect(await readdir(join(dir, '2'))).toEqual([]);
    expect(await reserveSnapshotNumber(dir)).toBe(3);
  });

  it('refuses while the subvolume or info.xml is still there', async () => {
    const n = await reserveSnapshotNumber(dir);
    await writeInfoXml(dir, info(n));
    await expect(releaseSnapshotDir(dir, n)).rejects.toThrow(/still holds/);
    await unregisterSnapshot(dir, n);
    await mkdir(join(dir, String(n), 'snapshot'));
    await expect(releaseSnapshotDir(dir, n)).rejects.toThrow(/still holds/);
  });

  it('is idempotent', async () => {
    await unregisterSnapshot(dir, 9);
    await releaseSnapshotDir(dir, 9);
    expect(await readdir(dir)).toEqual([]);
  });
});
