/**
 * The benchmark's btrfs filesystem (a sparse image file, mkfs.btrfs, a loop
 * mount) and the subvolume housekeeping between runs: every tool works inside
 * its own subvolume, which is deleted with everything nested in it (layer
 * subvolumes of a containers/storage graphroot are nested subvolumes) and the
 * cleaner is waited for, so no deletion work spills into the next measurement.
 */
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';

export interface BenchFs {
  mountpoint: string;
  dispose(): Promise<void>;
}

export async function createBenchFs(dir: string, sizeGiB: number): Promise<BenchFs> {
  mkdirSync(dir, { recursive: true });
  const image = join(dir, 'btrfs.img');
  const mountpoint = join(dir, 'mnt');
  await execa('umount', ['-l', mountpoint], { reject: false });
  await execa('rm', ['-f', image]);
  await execa('truncate', ['-s', `${sizeGiB}G`, image]);
  await execa('mkfs.btrfs', ['-q', '-L', 'ocisnap-bench', image]);
  mkdirSync(mountpoint, { recursive: true });
  await execa('mount', ['-o', 'loop', image, mountpoint]);
  return {
    mountpoint,
    async dispose() {
      await execa('umount', [mountpoint], { reject: false });
      await execa('umount', ['-l', mountpoint], { reject: false });
      await execa('rm', ['-f', image]);
    },
  };
}

export async function createSubvolume(path: string): Promise<void> {
  await execa('btrfs', ['subvolume', 'create', path]);
}

/** Paths (absolute) of every subvolume at or under `path`, deepest first. */
async function subvolumesUnder(mountpoint: string, path: string): Promise<string[]> {
  // `list` prints paths relative to the filesystem's top level, which is the mountpoint here.
  const { stdout } = await execa('btrfs', ['subvolume', 'list', mountpoint]);
  const rel = path.slice(mountpoint.length).replace(/^\/+/, '');
  const found: string[] = [];
  for (const line of stdout.split('\n')) {
    const m = / path (.+)$/.exec(line);
    if (!m) continue;
    const p = m[1]!;
    if (p === rel || p.startsWith(`${rel}/`)) found.push(join(mountpoint, p));
  }
  return found.sort((a, b) => b.split('/').length - a.split('/').length || b.localeCompare(a));
}

/** Deletes the subvolume `path` and all nested ones, then waits for the btrfs cleaner. */
export async function deleteSubvolumeTree(mountpoint: string, path: string): Promise<void> {
  if (!existsSync(path)) return;
  const subvols = await subvolumesUnder(mountpoint, path);
  // A deploy makes one of them the default subvolume, which btrfs will not delete.
  if (subvols.length > 0) await execa('btrfs', ['subvolume', 'set-default', '5', mountpoint]);
  for (const s of subvols) {
    // A read-only subvolume (a deployed snapshot, say) must be made writable
    // before its parent directory entries can go.
    await execa('btrfs', ['property', 'set', '-ts', s, 'ro', 'false'], { reject: false });
    await execa('btrfs', ['subvolume', 'delete', s], { stdout: 'ignore' });
  }
  if (existsSync(path)) await execa('rm', ['-rf', path]);
  if (subvols.length === 0) return;
  await execa('btrfs', ['subvolume', 'sync', mountpoint]);
}
