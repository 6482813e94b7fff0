/**
 * btrfs subvolume operations through the kernel's ioctls (native/btrfs.c),
 * with typed results and one-line typed errors: no btrfs-progs process on the
 * hot paths of pull and deploy. Only root can do most of these (tree searches
 * need CAP_SYS_ADMIN); callers check that at their edge. The results match
 * what `btrfs subvolume show/list/get-default` print (the parse* functions
 * still read that output, for callers holding it).
 */
import { lstat, stat, statfs } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { isErrno, sys } from '../sys/native.js';
import { BtrfsError, NotBtrfsError, NotSubvolumeError } from './errors.js';
import {
  allSubvolumes,
  childRefs,
  defaultSubvolumeId,
  FIRST_FREE_OBJECTID,
  FS_TREE_OBJECTID,
  fsPathBelow,
  pathInParent,
  subvolumeFsPath,
  subvolumeGeneration,
} from './tree.js';

/** statfs(2) f_type of btrfs (linux/magic.h BTRFS_SUPER_MAGIC). */
const btrfsSuperMagic = 0x9123683e;
/** Inode number of every subvolume's root directory (btrfs_tree.h BTRFS_FIRST_FREE_OBJECTID). */
const subvolumeRootInode = FIRST_FREE_OBJECTID;
/** linux/btrfs.h BTRFS_SUBVOL_RDONLY: the read-only bit of SUBVOL_GETFLAGS/SETFLAGS. */
const subvolReadonly = 2;
/** linux/btrfs_tree.h BTRFS_ROOT_SUBVOL_RDONLY: the same bit in the root item (GET_SUBVOL_INFO flags). */
const rootSubvolReadonly = 1;

export interface SubvolumeInfo {
  /** Path relative to the filesystem's top-level subvolume ("/" for the top level itself). */
  fsPath: string;
  name: string;
  id: number;
  uuid: string;
  /** UUID of the subvolume this one is a snapshot of; undefined for a fresh subvolume. */
  parentUuid?: string;
  receivedUuid?: string;
  generation: number;
  /** ID of the subvolume containing this one. */
  topLevelId: number;
  readonly: boolean;
}

export interface SubvolumeListEntry {
  id: number;
  generation: number;
  topLevelId: number;
  /** Path as btrfs-progs prints it: relative to the top-level subvolume. */
  fsPath: string;
}

/** The one-line detail of a native errno error: "Directory not empty (ENOTEMPTY)". */
function errnoDetail(err: NodeJS.ErrnoException): string {
  // Native messages read "CODE: strerror, syscall 'path'".
  const m = /^[A-Z0-9]+: (.*?), [A-Z_0-9a-z]+(?: '.*')?$/s.exec(err.message);
  return `${m?.[1] ?? err.message} (${err.code})`;
}

/**
 * Runs one native call, turning its errno error into a typed one naming `path`:
 * ENOTTY (the ioctl is unknown there) means not btrfs, `notSubvolume` lists the
 * codes that mean `path` is not a subvolume root for this call.
 */
function ioctl<T>(operation: string, path: string, call: () => T, notSubvolume: string[] = []): T {
  try {
    return call();
  } catch (err) {
    throw typedError(operation, path, err, notSubvolume);
  }
}

function typedError(operation: string, path: string, err: unknown, notSubvolume: string[] = []): unknown {
  if (typeof err !== 'object' || err === null || typeof (err as NodeJS.ErrnoException).code !== 'string') return err;
  const e = err as NodeJS.ErrnoException;
  if (e.code === 'ENOTTY') return new NotBtrfsError(path);
  if (notSubvolume.includes(e.code!)) return new NotSubvolumeError(path);
  if (e.code === 'EEXIST') return new BtrfsError(operation, path, 'destination already exists', { cause: err });
  if (e.code === 'ENOTEMPTY' && operation === 'subvolume delete') {
    return new BtrfsError(operation, path, 'it contains nested subvolumes', { cause: err });
  }
  return new BtrfsError(operation, path, errnoDetail(e), { cause: err });
}

/** True when `path` (which must exist) is on a btrfs filesystem. */
export async function isBtrfs(path: string): Promise<boolean> {
  const st = await statfs(path);
  return Number(st.type) === btrfsSuperMagic;
}

/** True when `path` is the root directory of a btrfs subvolume; false when missing. */
export async function isSubvolume(path: string): Promise<boolean> {
  try {
    const st = await lstat(path);
    return st.isDirectory() && st.ino === subvolumeRootInode && (await isBtrfs(path));
  } catch (err) {
    if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) return false;
    throw err;
  }
}

/** The subvolume root at `path` (symlinks followed, as btrfs-progs does), or NotSubvolumeError. */
async function requireSubvolumeRoot(operation: string, path: string): Promise<void> {
  let st;
  try {
    st = await stat(path);
  } catch (err) {
    throw typedError(operation, path, err);
  }
  if (!st.isDirectory() || st.ino !== subvolumeRootInode) throw new NotSubvolumeError(path);
}

export async function createSubvolume(path: string): Promise<void> {
  const abs = resolve(path);
  ioctl('subvolume create', abs, () => sys.btrfsSubvolCreate(dirname(abs), basename(abs)));
}

/** Snapshot `source` (a subvolume) as the new subvolume `dest`; writable unless `readonly`. */
export async function snapshotSubvolume(source: string, dest: string, opts: { readonly?: boolean } = {}): Promise<void> {
  const abs = resolve(dest);
  // The kernel would snapshot the subvolume *containing* a plain directory.
  if (!(await isSubvolume(source))) throw new NotSubvolumeError(source);
  ioctl('subvolume snapshot', abs, () =>
    sys.btrfsSnapCreate(resolve(source), dirname(abs), basename(abs), opts.readonly === true),
  );
}

/** The subvolumes linked directly inside subvolume `path` (given as absolute), with their ids. */
function nestedSubvolumes(abs: string): Array<{ id: number; path: string; rel: string }> {
  const id = ioctl('subvolume list', abs, () => sys.btrfsInoLookup(abs, 0, FIRST_FREE_OBJECTID).treeId);
  return ioctl('subvolume list', abs, () =>
    childRefs(abs, id).map((ref) => {
      const rel = pathInParent(abs, ref);
      return { id: ref.childId, path: join(abs, rel), rel };
    }),
  );
}

/**
 * Deletes the subvolume at `path`. With `recursive`, nested subvolumes are deleted
 * first, deepest first (the kernel refuses a subvolume with nested ones with
 * ENOTEMPTY), clearing the read-only flag of parents that have children (their
 * directory entries must go).
 */
export async function deleteSubvolume(path: string, opts: { recursive?: boolean } = {}): Promise<void> {
  if (!(await isSubvolume(path))) throw new NotSubvolumeError(path);
  const abs = resolve(path);
  if (opts.recursive) {
    const children = nestedSubvolumes(abs);
    if (children.length > 0) {
      if (await getReadonly(abs)) await setReadonly(abs, false);
      for (const child of children) await deleteSubvolume(child.path, { recursive: true });
    }
  }
  ioctl('subvolume delete', abs, () => sys.btrfsSnapDestroy(dirname(abs), basename(abs)));
}

function parseNumber(value: string | undefined, what: string, path: string): number {
  const n = Number(value);
  if (value === undefined || !Number.isSafeInteger(n)) {
    throw new BtrfsError('subvolume show', path, `unexpected output: no ${what}`);
  }
  return n;
}

/** Parses `btrfs subvolume show` (btrfs-progs cmds/subvolume.c). */
export function parseSubvolumeShow(output: string, path: string): SubvolumeInfo {
  const lines = output.split('\n');
  const fields = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const m = /^\s+([A-Za-z ()]+?):\s*(.*)$/.exec(line);
    if (m?.[1] !== undefined && m[2] !== undefined && !fields.has(m[1])) fields.set(m[1], m[2].trim());
  }
  const optionalUuid = (v: string | undefined): string | undefined => (v === undefined || v === '-' ? undefined : v);
  const uuid = fields.get('UUID');
  if (uuid === undefined) throw new BtrfsError('subvolume show', path, 'unexpected output: no UUID');
  const info: SubvolumeInfo = {
    fsPath: (lines[0] ?? '').trim(),
    name: fields.get('Name') ?? '',
    id: parseNumber(fields.get('Subvolume ID'), 'Subvolume ID', path),
    uuid,
    generation: parseNumber(fields.get('Generation'), 'Generation', path),
    topLevelId: parseNumber(fields.get('Top level ID') ?? fields.get('Parent ID'), 'Top level ID', path),
    readonly: (fields.get('Flags') ?? '').split(/[\s,]+/).includes('readonly'),
  };
  const parentUuid = optionalUuid(fields.get('Parent UUID'));
  if (parentUuid !== undefined) info.parentUuid = parentUuid;
  const receivedUuid = optionalUuid(fields.get('Received UUID'));
  if (receivedUuid !== undefined) info.receivedUuid = receivedUuid;
  return info;
}

const uuidString = (b: Buffer): string | undefined => {
  if (b.every((x) => x === 0)) return undefined;
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
};

/** What `btrfs subvolume show` prints, from BTRFS_IOC_GET_SUBVOL_INFO and the root tree. */
export async function showSubvolume(path: string): Promise<SubvolumeInfo> {
  const abs = resolve(path);
  const op = 'subvolume show';
  // GET_SUBVOL_INFO describes the subvolume *containing* abs: check abs is its root.
  const raw = ioctl(op, abs, () => sys.btrfsSubvolInfo(abs));
  await requireSubvolumeRoot(op, abs);
  const top = raw.id === FS_TREE_OBJECTID;
  const fsPath = top
    ? '/'
    : ioctl(op, abs, () =>
        fsPathBelow(abs, { parentId: raw.parentId, childId: raw.id, dirId: raw.dirId, name: raw.name }),
      );
  if (fsPath === undefined) throw new BtrfsError(op, abs, 'the subvolume is not linked into the filesystem');
  const info: SubvolumeInfo = {
    fsPath,
    name: top ? '<FS_TREE>' : raw.name,
    id: raw.id,
    uuid: uuidString(raw.uuid) ?? '-',
    generation: raw.generation,
    topLevelId: raw.parentId,
    readonly: (raw.flags & rootSubvolReadonly) !== 0,
  };
  const parentUuid = uuidString(raw.parentUuid);
  if (parentUuid !== undefined) info.parentUuid = parentUuid;
  const receivedUuid = uuidString(raw.receivedUuid);
  if (receivedUuid !== undefined) info.receivedUuid = receivedUuid;
  return info;
}

/** Parses `btrfs subvolume list` lines: "ID 257 gen 9 top level 5 path a/b". */
export function parseSubvolumeList(output: string): SubvolumeListEntry[] {
  const entries: SubvolumeListEntry[] = [];
  for (const line of output.split('\n')) {
    const m = /^ID (\d+) gen (\d+) top level (\d+) path (.*)$/.exec(line.trim());
    if (!m) continue;
    entries.push({ id: Number(m[1]), generation: Number(m[2]), topLevelId: Number(m[3]), fsPath: m[4] ?? '' });
  }
  return entries;
}

/** All subvolumes of the filesystem holding `path`, by id (as `btrfs subvolume list`). */
export async function listSubvolumes(path: string): Promise<SubvolumeListEntry[]> {
  const abs = resolve(path);
  return ioctl('subvolume list', abs, () => {
    const known = new Map<number, string>();
    const entries: SubvolumeListEntry[] = [];
    for (const { ref, generation } of allSubvolumes(abs)) {
      const fsPath = fsPathBelow(abs, ref, known);
      if (fsPath !== undefined) entries.push({ id: ref.childId, generation, topLevelId: ref.parentId, fsPath });
    }
    return entries.sort((x, y) => x.id - y.id);
  });
}

/** The subvolumes directly nested in the subvolume at `path`, with their absolute paths. */
export async function listChildSubvolumes(path: string): Promise<Array<SubvolumeListEntry & { path: string }>> {
  const abs = resolve(path);
  const op = 'subvolume list';
  await requireSubvolumeRoot(op, abs);
  const self = await showSubvolume(abs);
  const prefix = self.fsPath === '/' ? '' : `${self.fsPath}/`;
  return nestedSubvolumes(abs).map((child) => ({
    id: child.id,
    generation: ioctl(op, abs, () => subvolumeGeneration(abs, child.id)) ?? 0,
    topLevelId: self.id,
    fsPath: `${prefix}${child.rel}`,
    path: child.path,
  }));
}

/** Makes subvolume `id` the default (mounted when no subvol= option is given). */
export async function setDefaultSubvolume(id: number, mountPath: string): Promise<void> {
  const abs = resolve(mountPath);
  ioctl('subvolume set-default', abs, () => sys.btrfsSetDefault(abs, id));
}

/** The default subvolume: `{ id: 5, fsPath: '' }` for the top level. */
export async function getDefaultSubvolume(mountPath: string): Promise<{ id: number; fsPath: string }> {
  const abs = resolve(mountPath);
  const op = 'subvolume get-default';
  const id = ioctl(op, abs, () => defaultSubvolumeId(abs));
  const fsPath = ioctl(op, abs, () => subvolumeFsPath(abs, id));
  if (fsPath === undefined) throw new BtrfsError(op, abs, `default subvolume ${id} is not linked into the filesystem`);
  return { id, fsPath };
}

/** The read-only flag of the subvolume at `path`. */
export async function getReadonly(path: string): Promise<boolean> {
  const abs = resolve(path);
  // GETFLAGS fails with EINVAL on a directory that is not a subvolume root.
  return (ioctl('property get', abs, () => sys.btrfsGetFlags(abs), ['EINVAL']) & subvolReadonly) !== 0;
}

export async function setReadonly(path: string, readonly: boolean): Promise<void> {
  const abs = resolve(path);
  const op = 'property set';
  const flags = ioctl(op, abs, () => sys.btrfsGetFlags(abs), ['EINVAL']);
  const wanted = readonly ? flags | subvolReadonly : flags & ~subvolReadonly;
  if (wanted !== flags) ioctl(op, abs, () => sys.btrfsSetFlags(abs, wanted));
}

/** Commits the current transaction of the filesystem holding `path` (`btrfs filesystem sync`). */
export async function syncFilesystem(path: string): Promise<void> {
  const abs = resolve(path);
  ioctl('filesystem sync', abs, () => sys.btrfsSync(abs));
}

/**
 * Waits until deleted subvolume `id` is cleaned (its root item gone), as
 * `btrfs subvolume sync PATH ID` does, polling every `pollMs`.
 */
export async function waitSubvolumeCleaned(path: string, id: number, opts: { pollMs?: number } = {}): Promise<void> {
  const abs = resolve(path);
  while (ioctl('subvolume sync', abs, () => subvolumeGeneration(abs, id)) !== undefined) {
    await sleep(opts.pollMs ?? 100);
  }
}

/** The nearest existing ancestor of `path` (itself if it exists). */
export async function nearestExisting(path: string): Promise<string> {
  let current = resolve(path);
  for (;;) {
    try {
      await lstat(current);
      return current;
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) throw err;
      const parent = dirname(current);
      if (parent === current) return current;
      current = parent;
    }
  }
}
