/**
 * Pure parts of the deploy modules: mountinfo parsing and the booted
 * snapshot, sysroot paths, gc's keep plan.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { planGc } from '../../src/deploy/gc.js';
import { addDeployment, emptyState, markGood, setPinned, type State } from '../../src/deploy/state.js';
import { bootedSubvolume, parseMountInfo, snapshotNumberOfPath, sysrootPaths } from '../../src/deploy/sysroot.js';

// A MicroOS-like system booted from snapshot 7 (fields as proc(5) documents them).
const microOs = [
  '22 1 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw',
  '60 1 0:33 /@/.snapshots/7/snapshot / ro,relatime shared:1 - btrfs /dev/vda3 ro,space_cache=v2,subvolid=268,subvol=/@/.snapshots/7/snapshot',
  '61 60 0:33 /@/.snapshots /.snapshots rw,relatime shared:30 - btrfs /dev/vda3 rw,space_cache=v2,subvolid=267,subvol=/@/.snapshots',
  '62 60 0:33 /@/var /var rw,relatime shared:31 - btrfs /dev/vda3 rw,space_cache=v2,subvolid=266,subvol=/@/var',
  '63 60 0:40 / /mnt/with\\040space rw - ext4 /dev/vdb rw',
].join('\n');

describe('mountinfo', () => {
  it('parses fields, unescapes paths and finds the booted snapshot', async () => {
    const entries = parseMountInfo(microOs);
    expect(entries).toHaveLength(5);
    expect(entries[1]).toMatchObject({ root: '/@/.snapshots/7/snapshot', mountPoint: '/', fsType: 'btrfs', source: '/dev/vda3' });
    expect(entries[4]!.mountPoint).toBe('/mnt/with space');
    const dir = await mkdtemp(join(tmpdir(), 'ocisnap-mountinfo-'));
    try {
      await writeFile(join(dir, 'mountinfo'), microOs);
      expect(await bootedSubvolume(join(dir, 'mountinfo'))).toEqual({ id: 268, fsPath: '/@/.snapshots/7/snapshot', snapshot: 7 });
      // / on ext4: no booted snapshot.
      await writeFile(join(dir, 'ext4'), '24 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n');
      expect(await bootedSubvolume(join(dir, 'ext4'))).toBeUndefined();
      // / on a btrfs subvolume that is not a snapper snapshot.
      await writeFile(join(dir, 'plain'), '24 1 0:33 /@ / rw - btrfs /dev/vda3 rw,subvolid=256,subvol=/@\n');
      expect(await bootedSubvolume(join(dir, 'plain'))).toEqual({ id: 256, fsPath: '/@' });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('recognises snapper snapshot paths only', () => {
    expect(snapshotNumberOfPath('@/.snapshots/12/snapshot')).toBe(12);
    expect(snapshotNumberOfPath('.snapshots/1/snapshot')).toBe(1);
    expect(snapshotNumberOfPath('/.snapshots/3/snapshot/')).toBe(3);
    expect(snapshotNumberOfPath('@/.snapshots/0/snapshot')).toBeUndefined();
    expect(snapshotNumberOfPath('@/x.snapshots/2/snapshot')).toBeUndefined();
    expect(snapshotNumberOfPath('@root')).toBeUndefined();
  });

  it('lays out a sysroot', () => {
    expect(sysrootPaths('/mnt/sys/')).toEqual({
      root: '/mnt/sys',
      running: false,
      snapshotsDir: '/mnt/sys/.snapshots',
      stateDir: '/mnt/sys/var/lib/ocisnap',
      storageRoot: '/mnt/sys/var/lib/ocisnap/storage',
    });
    expect(sysrootPaths('/').running).toBe(true);
    expect(sysrootPaths('/', { storageRoot: '/srv/store' }).storageRoot).toBe('/srv/store');
  });
});

describe('gc plan', () => {
  const digest = `sha256:${'a'.repeat(64)}` as const;
  const id = 'b'.repeat(64);
  function stateWith(n: number): State {
    let s = emptyState();
    for (let i = 1; i <= n; i++) s = addDeployment(s, { snapshot: i, image: `img:${i}`, manifestDigest: digest, imageId: id });
    return s;
  }

  it('keeps booted, default, last good, pending, pinned and the newest K', () => {
    let s = stateWith(8);
    s = markGood(s, 2, { by: 'test' }); // 2 good and last good; 8 still pending
    s = setPinned(s, 3, true);
    const plan = planGc(s, 1, { booted: 4, default: 5 });
    expect([...plan.keys()].sort((a, b) => a - b)).toEqual([2, 3, 4, 5, 8]);
    expect(plan.get(2)).toEqual(['last good']);
    expect(plan.get(8)).toEqual(['pending', 'newest 1']);
    expect(planGc(s, 0, {}).has(8)).toBe(true); // pending stays with keep 0
    expect(planGc(s, 3, {}).has(7)).toBe(true);
  });

  it('keeps what the pending deployment replaced', () => {
    let s = stateWith(3);
    s = addDeployment(s, { snapshot: 4, image: 'img:4', manifestDigest: digest, imageId: id, parent: 2 });
    expect([...planGc(s, 0, {}).entries()]).toEqual([
      [4, ['pending']],
      [2, ['replaced by the pending one']],
    ]);
  });

  it('ignores booted/default snapshots that are not deployments', () => {
    const plan = planGc(stateWith(2), 0, { booted: 40, default: 41 });
    expect([...plan.keys()]).toEqual([2]);
  });
});
