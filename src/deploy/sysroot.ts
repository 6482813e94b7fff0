/**
 * Where things are in a sysroot: the root of a btrfs filesystem laid out as
 * openSUSE's snapper layout (MicroOS, Aeon) has it, seen either from the
 * running system (`/`) or as a mounted filesystem that is not running
 * (`--sysroot DIR`, e.g. a loop-mounted disk image):
 *
 *   DIR/.snapshots/N/snapshot       snapper snapshot N (a subvolume), info.xml beside it
 *   DIR/var/lib/ocisnap/state.json  deployment state (state.ts)
 *   DIR/var/lib/ocisnap/storage     the layer store (containers/storage btrfs layout)
 *
 * /.snapshots and /var are subvolumes of their own on such systems, so a
 * snapshot of a store layer into /.snapshots stays on one filesystem (btrfs
 * snapshots cannot cross filesystems).
 *
 * The booted snapshot only exists when the sysroot is `/`: it is the btrfs
 * subvolume mounted at `/`, read from /proc/self/mountinfo (proc(5): field 4
 * is the root of the mount within its filesystem, the super options carry
 * btrfs's `subvolid=` and `subvol=`), as container-snap's `get-current` does.
 */
import { lstat, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { getDefaultSubvolume, isBtrfs, NotBtrfsError } from '../btrfs/index.js';
import { describeError, OcisnapError } from '../errors.js';
import { isErrno } from '../sys/native.js';
import { snapshotSubvolume, snapshotDir } from './snapper.js';
import { stateDir } from './state.js';

export interface SysrootPaths {
  /** Absolute path of the sysroot ("/" for the running system). */
  root: string;
  /** True when the sysroot is the running system: there is a booted snapshot. */
  running: boolean;
  snapshotsDir: string;
  stateDir: string;
  storageRoot: string;
}

/** The sysroot is not usable (not btrfs, no snapshots directory, ...). */
export class SysrootError extends OcisnapError {}

export function sysrootPaths(root: string, opts: { storageRoot?: string } = {}): SysrootPaths {
  const abs = resolve(root);
  return {
    root: abs,
    running: abs === '/',
    snapshotsDir: join(abs, '.snapshots'),
    stateDir: stateDir(abs),
    storageRoot: opts.storageRoot === undefined ? join(stateDir(abs), 'storage') : resolve(opts.storageRoot),
  };
}

/** `DIR/.snapshots/N/snapshot`. */
export function snapshotPath(paths: SysrootPaths, num: number): string {
  return snapshotSubvolume(paths.snapshotsDir, num);
}

export function snapshotInfoDir(paths: SysrootPaths, num: number): string {
  return snapshotDir(paths.snapshotsDir, num);
}

/**
 * Checks that the sysroot can take deployments: it and its snapshots
 * directory are on btrfs. The snapshots directory is not created: on a real
 * system it is snapper's subvolume mounted at /.snapshots, and creating it
 * inside the booted snapshot instead would hide the problem.
 */
export async function checkSysroot(paths: SysrootPaths): Promise<void> {
  try {
    const st = await lstat(paths.root);
    if (!st.isDirectory()) throw new SysrootError(`sysroot ${paths.root} is not a directory`);
  } catch (err) {
    if (err instanceof SysrootError) throw err;
    throw new SysrootError(`sysroot ${paths.root}: ${describeError(err)}`, { cause: err });
  }
  if (!(await isBtrfs(paths.root))) throw new NotBtrfsError(paths.root, 'sysroot');
  try {
    const st = await lstat(paths.snapshotsDir);
    if (!st.isDirectory()) throw new SysrootError(`${paths.snapshotsDir} is not a directory`);
  } catch (err) {
    if (err instanceof SysrootError) throw err;
    if (isErrno(err, 'ENOENT')) {
      throw new SysrootError(
        `${paths.snapshotsDir} does not exist: not a snapper layout (create it with "snapper create-config /" or "btrfs subvolume create ${paths.snapshotsDir}")`,
      );
    }
    throw new SysrootError(`${paths.snapshotsDir}: ${describeError(err)}`, { cause: err });
  }
  if (!(await isBtrfs(paths.snapshotsDir))) throw new NotBtrfsError(paths.snapshotsDir, 'snapshots directory');
}

// ---------------------------------------------------------------- mountinfo

export interface MountInfoEntry {
  mountId: number;
  parentId: number;
  /** Root of the mount within its filesystem (for btrfs: the subvolume path, e.g. "/@/.snapshots/1/snapshot"). */
  root: string;
  mountPoint: string;
  fsType: string;
  source: string;
  superOptions: string[];
}

/** proc(5) escapes space, tab, newline and backslash in paths as \ooo. */
function unescapeMountPath(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}

/** Parses /proc/PID/mountinfo (proc(5)); malformed lines are skipped. */
export function parseMountInfo(text: string): MountInfoEntry[] {
  const entries: MountInfoEntry[] = [];
  for (const line of text.split('\n')) {
    const fields = line.split(' ');
    const sep = fields.indexOf('-', 6);
    if (fields.length < 10 || sep < 0 || fields.length < sep + 3) continue;
    entries.push({
      mountId: Number(fields[0]),
      parentId: Number(fields[1]),
      root: unescapeMountPath(fields[3]!),
      mountPoint: unescapeMountPath(fields[4]!),
      fsType: fields[sep + 1]!,
      source: unescapeMountPath(fields[sep + 2]!),
      superOptions: (fields[sep + 3] ?? '').split(','),
    });
  }
  return entries;
}

/** The mount that is visible at `mountPoint` (the last one mounted there). */
export function mountAt(entries: MountInfoEntry[], mountPoint: string): MountInfoEntry | undefined {
  return entries.filter((e) => e.mountPoint === mountPoint).at(-1);
}

export interface BootedSubvolume {
  /** btrfs subvolume ID (`subvolid=`). */
  id: number;
  /** Path within the filesystem, e.g. "/@/.snapshots/1/snapshot". */
  fsPath: string;
  /** The snapper snapshot number when the path is `.../.snapshots/N/snapshot`. */
  snapshot?: number;
}

/** snapper's layout: `[prefix/].snapshots/N/snapshot`. */
export function snapshotNumberOfPath(fsPath: string): number | undefined {
  const m = /(?:^|\/)\.snapshots\/([1-9][0-9]*)\/snapshot\/?$/.exec(fsPath);
  return m ? Number(m[1]) : undefined;
}

/** The btrfs subvolume mounted at `/`, or undefined when `/` is not btrfs. */
export async function bootedSubvolume(mountInfoPath = '/proc/self/mountinfo'): Promise<BootedSubvolume | undefined> {
  let text: string;
  try {
    text = await readFile(mountInfoPath, 'utf8');
  } catch (err) {
    throw new SysrootError(`cannot read ${mountInfoPath}: ${describeError(err)}`, { cause: err });
  }
  const root = mountAt(parseMountInfo(text), '/');
  if (root?.fsType !== 'btrfs') return undefined;
  const opt = (name: string): string | undefined =>
    root.superOptions.find((o) => o.startsWith(`${name}=`))?.slice(name.length + 1);
  const id = Number(opt('subvolid'));
  const fsPath = opt('subvol') ?? root.root;
  if (!Number.isSafeInteger(id) || id <= 0) return undefined;
  const booted: BootedSubvolume = { id, fsPath };
  const snapshot = snapshotNumberOfPath(fsPath);
  if (snapshot !== undefined) booted.snapshot = snapshot;
  return booted;
}

export interface DefaultSubvolume {
  id: number;
  /** Path within the filesystem as btrfs-progs prints it ("" for the top level). */
  fsPath: string;
  snapshot?: number;
}

/** The btrfs default subvolume of the sysroot's filesystem: what boots next. */
export async function defaultSubvolume(paths: SysrootPaths): Promise<DefaultSubvolume> {
  const d = await getDefaultSubvolume(paths.root);
  const out: DefaultSubvolume = { id: d.id, fsPath: d.fsPath };
  const snapshot = snapshotNumberOfPath(d.fsPath);
  if (snapshot !== undefined) out.snapshot = snapshot;
  return out;
}

/**
 * Where a subvolume (by its path within the filesystem) is visible under
 * the sysroot, using the sysroot's own mount: e.g. fsPath "@/root" under a
 * sysroot that is the top level (root "/") is DIR/@/root. Undefined when
 * the sysroot's mount does not contain it.
 */
export async function pathInSysroot(paths: SysrootPaths, fsPath: string, mountInfoPath = '/proc/self/mountinfo'): Promise<string | undefined> {
  const entries = parseMountInfo(await readFile(mountInfoPath, 'utf8'));
  const mount = mountAt(entries, paths.root);
  if (mount?.fsType !== 'btrfs') return undefined;
  const strip = (p: string): string => p.replace(/^\/+|\/+$/g, '');
  const mountRoot = strip(mount.root);
  const target = strip(fsPath);
  if (mountRoot === '') return join(paths.root, target);
  if (target === mountRoot) return paths.root;
  if (target.startsWith(`${mountRoot}/`)) return join(paths.root, target.slice(mountRoot.length + 1));
  return undefined;
}
