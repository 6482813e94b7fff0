/**
 * A real btrfs filesystem for a test: a sparse image file, mkfs.btrfs, a loop
 * mount. `dispose()` unmounts and deletes everything.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { requireCommands, requireRoot } from './host.js';

export interface BtrfsFixture {
  /** Where the filesystem is mounted. */
  mountpoint: string;
  /** The backing image file. */
  image: string;
  dispose(): Promise<void>;
}

/** `imageDir`: where the backing image and the mountpoint go (a temporary directory by default). */
export async function createBtrfs(opts: { sizeMiB?: number; label?: string; imageDir?: string } = {}): Promise<BtrfsFixture> {
  requireRoot();
  await requireCommands('mkfs.btrfs', 'btrfs', 'mount', 'umount');
  const dir = await mkdtemp(join(opts.imageDir ?? tmpdir(), 'ocisnap-btrfs-'));
  const image = join(dir, 'fs.img');
  const mountpoint = join(dir, 'mnt');
  await execa('truncate', ['-s', `${opts.sizeMiB ?? 1024}M`, image]);
  await execa('mkfs.btrfs', ['-q', '-L', opts.label ?? 'ocisnap-test', image]);
  await execa('mkdir', ['-p', mountpoint]);
  await execa('mount', ['-o', 'loop', image, mountpoint]);
  return {
    mountpoint,
    image,
    async dispose() {
      await execa('umount', ['-l', mountpoint], { reject: false });
      await rm(dir, { recursive: true, force: true });
    },
  };
}
