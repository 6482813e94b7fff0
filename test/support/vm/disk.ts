/**
 * VM disks: a raw image file holding one btrfs filesystem (the whole disk, no
 * partition table; the guest sees it as /dev/vda) in the layout of openSUSE
 * MicroOS without its `@` prefix, which is also what `ocisnap --sysroot DIR`
 * expects when DIR is the top-level subvolume mounted:
 *
 *   /.snapshots              subvolume, mounted at /.snapshots by the guest
 *   /.snapshots/N/snapshot   the root filesystem of snapshot N (snapper layout,
 *                            openSUSE/snapper snapper/Btrfs.cc)
 *   /.snapshots/N/info.xml   snapper's metadata
 *   /var                     subvolume, mounted at /var by the guest (shared by
 *                            every snapshot, so ocisnap's state in
 *                            /var/lib/ocisnap survives a rollback)
 *
 * The btrfs default subvolume names the snapshot to boot. The host side mounts
 * the top level (subvolid=5) through a loop device, only while no VM runs.
 *
 * Two ways to boot it (`boot`):
 * - 'direct': the whole disk is btrfs (/dev/vda); the harness loads the kernel
 *   and initrd itself (machine.ts), playing the bootloader.
 * - 'grub': an MBR with two partitions: 1 = ext2 labelled OCISNAP-BOOT holding
 *   GRUB's files (plugins/grub/grub.cfg, grubenv, mounted at /boot/grub by the
 *   guest: upstream GRUB cannot write a grubenv on btrfs), 2 = the btrfs
 *   filesystem (/dev/vda2); GRUB i386-pc in the MBR and the gap after it. The
 *   snapshot to boot and the trial's boot counter are grubenv variables.
 */
import { copyFile, mkdir, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { requireCommands, requireRoot } from '../host.js';

export type VmBootMode = 'direct' | 'grub';

export interface VmDisk {
  /** The raw image file. */
  image: string;
  /** The btrfs filesystem label; the guest's fstab mounts by it. */
  label: string;
  /** The root device as the guest's kernel sees it. */
  rootDevice: string;
  boot: VmBootMode;
  /** Byte offset of the btrfs filesystem in the image (0: whole disk). */
  btrfsOffset: number;
  /** The GRUB partition (boot 'grub' only). */
  bootPartition?: { offset: number; size: number; label: string };
}

export interface MountedDisk {
  disk: VmDisk;
  /** The top-level subvolume (id 5). */
  mountpoint: string;
  /** The GRUB partition's mount point, `<mountpoint>/boot/grub` (boot 'grub' only). */
  bootMountpoint?: string;
  dispose(): Promise<void>;
}

export const SNAPSHOTS = '.snapshots';
const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const GRUB_CFG = join(REPO, 'plugins/grub/grub.cfg');
const GRUB_PC = '/usr/lib/grub/i386-pc';
const MiB = 1024 * 1024;

export function snapshotDir(m: MountedDisk, n: number): string {
  return join(m.mountpoint, SNAPSHOTS, String(n), 'snapshot');
}

/** Creates an empty disk with the layout above (no snapshot yet). */
export async function createVmDisk(opts: {
  path: string; sizeMiB?: number; label?: string; boot?: VmBootMode;
}): Promise<VmDisk> {
  requireRoot();
  await requireCommands('mkfs.btrfs', 'btrfs', 'truncate', 'mount', 'umount');
  const sizeMiB = opts.sizeMiB ?? 4096;
  const label = opts.label ?? 'ocisnap-vm';
  const boot = opts.boot ?? 'direct';
  await rm(opts.path, { force: true });
  await execa('truncate', ['-s', `${sizeMiB}M`, opts.path]);
  let disk: VmDisk;
  if (boot === 'direct') {
    disk = { image: opts.path, label, rootDevice: '/dev/vda', boot, btrfsOffset: 0 };
    await execa('mkfs.btrfs', ['-q', '-L', label, disk.image]);
  } else {
    await requireCommands('mkfs.ext2', 'grub-mkimage', 'grub-editenv');
    // 1 MiB for the MBR and GRUB's core.img, 32 MiB of ext2, then btrfs.
    const bootPartition = { offset: 1 * MiB, size: 32 * MiB, label: 'OCISNAP-BOOT' };
    disk = { image: opts.path, label, rootDevice: '/dev/vda2', boot, btrfsOffset: 33 * MiB, bootPartition };
    await writeMbr(disk.image, [
      { start: bootPartition.offset, size: bootPartition.size, bootable: true },
      { start: disk.btrfsOffset, size: sizeMiB * MiB - disk.btrfsOffset, bootable: false },
    ]);
    await withLoop(disk.image, bootPartition.offset, bootPartition.size, (dev) =>
      execa('mkfs.ext2', ['-q', '-L', bootPartition.label, dev]));
    await withLoop(disk.image, disk.btrfsOffset, 0, (dev) =>
      execa('mkfs.btrfs', ['-q', '-L', label, dev]));
    await installGrub(disk);
  }
  await withMountedDisk(disk, async (m) => {
    await execa('btrfs', ['-q', 'subvolume', 'create', join(m.mountpoint, SNAPSHOTS)]);
    await execa('btrfs', ['-q', 'subvolume', 'create', join(m.mountpoint, 'var')]);
    if (m.bootMountpoint) {
      await copyFile(GRUB_CFG, join(m.bootMountpoint, 'grub.cfg'));
      await execa('grub-editenv', [join(m.bootMountpoint, 'grubenv'), 'create']);
    }
  });
  return disk;
}

/** An MBR partition table (type 0x83 entries, LBA only; CHS fields unused). */
async function writeMbr(image: string, parts: { start: number; size: number; bootable: boolean }[]): Promise<void> {
  const mbr = Buffer.alloc(512);
  parts.forEach((p, i) => {
    const e = 446 + 16 * i;
    mbr[e] = p.bootable ? 0x80 : 0;
    mbr.writeUIntLE(0xfffffe, e + 1, 3);
    mbr[e + 4] = 0x83;
    mbr.writeUIntLE(0xfffffe, e + 5, 3);
    mbr.writeUInt32LE(p.start / 512, e + 8);
    mbr.writeUInt32LE(p.size / 512, e + 12);
  });
  mbr[510] = 0x55;
  mbr[511] = 0xaa;
  await writeAt(image, mbr, 0);
}

async function writeAt(image: string, data: Buffer, position: number): Promise<void> {
  const fh = await open(image, 'r+');
  try {
    await fh.write(data, 0, data.length, position);
  } finally {
    await fh.close();
  }
}

/**
 * GRUB for BIOS the way grub-install embeds it in an MBR disk: boot.img's
 * code in the MBR (its partition table kept) and core.img from sector 1,
 * where boot.img and diskboot.img look for it by default (grub
 * grub-core/boot/i386/pc/boot.S kernel_sector, diskboot.S blocklist).
 * core.img carries every module it needs, so the partition holds only
 * grub.cfg and grubenv.
 */
async function installGrub(disk: VmDisk): Promise<void> {
  const work = await mkdtemp(join(tmpdir(), 'ocisnap-grub-'));
  try {
    const core = join(work, 'core.img');
    await execa('grub-mkimage', ['-O', 'i386-pc', '-o', core, '-p', '(hd0,msdos1)/',
      'biosdisk', 'part_msdos', 'ext2', 'btrfs', 'normal', 'linux', 'loadenv', 'test',
      'echo', 'configfile', 'serial', 'terminal']);
    const coreImg = await readFile(core);
    if (coreImg.length > (disk.bootPartition?.offset ?? 0) - 512) throw new Error('GRUB core.img does not fit before the first partition');
    const bootImg = await readFile(join(GRUB_PC, 'boot.img'));
    await writeAt(disk.image, bootImg.subarray(0, 440), 0);
    await writeAt(disk.image, coreImg, 512);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

async function withLoop<T>(image: string, offset: number, size: number, fn: (dev: string) => Promise<T>): Promise<T> {
  const args = ['--find', '--show', '--offset', String(offset), ...(size > 0 ? ['--sizelimit', String(size)] : []), image];
  const dev = (await execa('losetup', args)).stdout.trim();
  try {
    return await fn(dev);
  } finally {
    await execa('losetup', ['-d', dev], { reject: false });
  }
}

/** Loop-mounts the disk's top-level subvolume (and the GRUB partition). Never while a VM uses it. */
export async function mountVmDisk(disk: VmDisk): Promise<MountedDisk> {
  const dir = await mkdtemp(join(tmpdir(), 'ocisnap-vmdisk-'));
  const top = join(dir, 'top');
  // The GRUB partition goes where the guest mounts it, relative to the top
  // level: `ocisnap --sysroot TOP` then finds TOP/boot/grub/grubenv just as
  // the running system finds /boot/grub/grubenv.
  const boot = join(top, 'boot/grub');
  const mounted: string[] = [];
  const dispose = async () => {
    for (const mp of mounted.reverse()) {
      // `-o loop` sets LO_FLAGS_AUTOCLEAR: umount also frees the loop device.
      const r = await execa('umount', [mp], { reject: false });
      if (r.exitCode !== 0) await execa('umount', ['-l', mp], { reject: false });
    }
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await mkdir(top);
    await execa('mount', ['-o', `loop,offset=${disk.btrfsOffset},subvolid=5`, disk.image, top]);
    mounted.push(top);
    if (disk.bootPartition) {
      await mkdir(boot, { recursive: true });
      const p = disk.bootPartition;
      await execa('mount', ['-t', 'ext2', '-o', `loop,offset=${p.offset},sizelimit=${p.size}`, disk.image, boot]);
      mounted.push(boot);
    }
  } catch (err) {
    await dispose();
    throw err;
  }
  return {
    disk,
    mountpoint: top,
    ...(disk.bootPartition ? { bootMountpoint: boot } : {}),
    dispose,
  };
}

export async function withMountedDisk<T>(disk: VmDisk, fn: (m: MountedDisk) => Promise<T>): Promise<T> {
  const m = await mountVmDisk(disk);
  try {
    return await fn(m);
  } finally {
    await m.dispose();
  }
}

/** Reads the GRUB partition's grubenv (boot 'grub' only). */
export async function readGrubEnv(m: MountedDisk): Promise<Record<string, string>> {
  const { stdout } = await execa('grub-editenv', [grubenvPath(m), 'list']);
  const env: Record<string, string> = {};
  for (const line of stdout.split('\n')) {
    const eq = line.indexOf('=');
    if (eq > 0) env[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return env;
}

/** Sets (string) or unsets (undefined) grubenv variables (boot 'grub' only). */
export async function setGrubEnv(m: MountedDisk, vars: Record<string, string | undefined>): Promise<void> {
  const set = Object.entries(vars).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${v}`);
  const unset = Object.entries(vars).filter(([, v]) => v === undefined).map(([k]) => k);
  if (set.length > 0) await execa('grub-editenv', [grubenvPath(m), 'set', ...set]);
  if (unset.length > 0) await execa('grub-editenv', [grubenvPath(m), 'unset', ...unset]);
}

function grubenvPath(m: MountedDisk): string {
  if (!m.bootMountpoint) throw new Error(`${m.disk.image} has no GRUB partition (boot mode ${m.disk.boot})`);
  return join(m.bootMountpoint, 'grubenv');
}

/**
 * Makes snapshot N by extracting a root filesystem tar into a new subvolume
 * (what an installer does for the first snapshot), adds the fstab lines for
 * the layout, and fills the /var subvolume from it if that is still empty.
 */
export async function createSnapshotFromTar(m: MountedDisk, n: number, tar: string,
  description = 'first root filesystem'): Promise<string> {
  const dir = snapshotDir(m, n);
  await mkdir(join(m.mountpoint, SNAPSHOTS, String(n)));
  await execa('btrfs', ['-q', 'subvolume', 'create', dir]);
  await execa('tar', ['-C', dir, '--numeric-owner', '--xattrs', '--xattrs-include=*', '-xpf', tar]);
  await installFirstSnapshot(m, n);
  await writeInfoXml(m, n, description);
  return dir;
}

/**
 * What an installer adds to the first snapshot of a disk, however it was
 * filled (a tar here; `ocisnap deploy --sysroot` later): the fstab of this
 * layout, the mount points, and the /var subvolume seeded from the snapshot's
 * /var if still empty. The snapshot must be writable.
 */
export async function installFirstSnapshot(m: MountedDisk, n: number): Promise<void> {
  const dir = snapshotDir(m, n);
  await writeFile(join(dir, 'etc/fstab'), fstab(m.disk));
  await mkdir(join(dir, SNAPSHOTS), { recursive: true });
  await mkdir(join(dir, 'boot/grub'), { recursive: true });
  const varDir = join(m.mountpoint, 'var');
  const r = await execa('sh', ['-c', 'ls -A "$1" | head -n 1', 'sh', varDir]);
  if (r.stdout === '') {
    // Reflinks: the /var subvolume starts as a copy that shares extents.
    await execa('cp', ['-a', '--reflink=auto', `${join(dir, 'var')}/.`, `${varDir}/`]);
  }
}

/** Snapshot N+1-style copy: a writable btrfs snapshot of snapshot `from`. */
export async function copySnapshot(m: MountedDisk, from: number, to: number, description: string): Promise<string> {
  const dir = snapshotDir(m, to);
  await mkdir(join(m.mountpoint, SNAPSHOTS, String(to)));
  await execa('btrfs', ['-q', 'subvolume', 'snapshot', snapshotDir(m, from), dir]);
  await writeInfoXml(m, to, description);
  return dir;
}

/**
 * Makes snapshot N the one to boot: the btrfs default subvolume and, on a
 * GRUB disk, grubenv's ocisnap_default (no trial).
 */
export async function setDefaultSnapshot(m: MountedDisk, n: number): Promise<void> {
  await execa('btrfs', ['subvolume', 'set-default', snapshotDir(m, n)]);
  if (m.bootMountpoint) await setGrubEnv(m, { ocisnap_default: String(n), ocisnap_trial: undefined, ocisnap_tries: undefined });
}

/**
 * The snapshot number of the btrfs default subvolume, or undefined when the
 * default is not a snapshot (e.g. the top level).
 */
export async function getDefaultSnapshot(m: MountedDisk): Promise<number | undefined> {
  // "ID 257 gen 9 top level 256 path .snapshots/1/snapshot"
  const { stdout } = await execa('btrfs', ['subvolume', 'get-default', m.mountpoint]);
  const match = /path (?:<FS_TREE>\/)?\.snapshots\/(\d+)\/snapshot\s*$/.exec(stdout.trim());
  return match ? Number(match[1]) : undefined;
}

/** The fstab the layout needs: /var and /.snapshots are separate subvolumes. */
export function fstab(disk: VmDisk): string {
  return [
    '# ocisnap VM test disk (test/support/vm/disk.ts)',
    `LABEL=${disk.label} /var btrfs subvol=/var 0 0`,
    `LABEL=${disk.label} /${SNAPSHOTS} btrfs subvol=/${SNAPSHOTS} 0 0`,
    ...(disk.bootPartition ? [`LABEL=${disk.bootPartition.label} /boot/grub ext2 defaults 0 0`] : []),
    '',
  ].join('\n');
}

/** snapper's info.xml (openSUSE/snapper snapper/Snapshot.cc), type single. */
async function writeInfoXml(m: MountedDisk, n: number, description: string): Promise<void> {
  const date = new Date().toISOString().replace('T', ' ').slice(0, 19);
  const esc = description.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  const path = join(m.mountpoint, SNAPSHOTS, String(n), 'info.xml');
  await writeFile(`${path}.tmp`,
    `<?xml version="1.0"?>\n<snapshot>\n  <type>single</type>\n  <num>${n}</num>\n` +
    `  <date>${date}</date>\n  <description>${esc}</description>\n</snapshot>\n`);
  await execa('mv', [`${path}.tmp`, path]);
}

/** Reads a file from the disk (top-level path), or undefined if missing. */
export async function readDiskFile(m: MountedDisk, path: string): Promise<string | undefined> {
  try {
    return await readFile(join(m.mountpoint, path), 'utf8');
  } catch {
    return undefined;
  }
}
