/**
 * btrfs subvolume operations through btrfs-progs (`btrfs subvolume ...`,
 * `btrfs property ...`), with typed results and one-line typed errors.
 * Only root can do most of these; callers check that at their edge.
 */
import { lstat, statfs } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { execa } from 'execa';
import { isErrno } from '../sys/native.js';
import { BtrfsError, NotSubvolumeError } from './errors.js';

/** statfs(2) f_type of btrfs (linux/magic.h BTRFS_SUPER_MAGIC). */
const btrfsSuperMagic = 0x9123683e;
/** Inode number of every subvolume's root directory (btrfs_tree.h BTRFS_FIRST_FREE_OBJECTID). */
const subvolumeRootInode = 256;

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

async function btrfs(operation: string, path: string, args: string[]): Promise<string> {
  const result = await execa('btrfs', args, { reject: false, stdin: 'ignore' });
  if (result.exitCode !== 0 || result.failed) {
    const lines = `${result.stderr}\n${result.stdout}`.split('\n').map((l) => l.trim()).filter(Boolean);
    const detail = lines.find((l) => l.startsWith('ERROR:'))?.replace(/^ERROR:\s*/, '') ?? lines.at(-1) ?? result.shortMessage ?? 'failed';
    throw new BtrfsError(operation, path, detail);
  }
  return result.stdout;
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

async function requireAbsent(operation: string, path: string): Promise<void> {
  try {
    await lstat(path);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return;
    throw err;
  }
  // btrfs-progs would create the new subvolume *inside* an existing directory.
  throw new BtrfsError(operation, path, 'destination already exists');
}

export async function createSubvolume(path: string): Promise<void> {
  await requireAbsent('subvolume create', path);
  await btrfs('subvolume create', path, ['subvolume', 'create', path]);
}

/** Snapshot `source` (a subvolume) as the new subvolume `dest`; writable unless `readonly`. */
export async function snapshotSubvolume(source: string, dest: string, opts: { readonly?: boolean } = {}): Promise<void> {
  await requireAbsent('subvolume snapshot', dest);
  if (!(await isSubvolume(source))) throw new NotSubvolumeError(source);
  const args = ['subvolume', 'snapshot', ...(opts.readonly ? ['-r'] : []), source, dest];
  await btrfs('subvolume snapshot', dest, args);
}

/**
 * Deletes the subvolume at `path`. With `recursive`, nested subvolumes are deleted
 * first (btrfs-progs 6.2 has no --recursive; a subvolume with nested ones fails
 * with ENOTEMPTY), clearing the read-only flag of parents that have children.
 */
export async function deleteSubvolume(path: string, opts: { recursive?: boolean } = {}): Promise<void> {
  if (!(await isSubvolume(path))) throw new NotSubvolumeError(path);
  if (opts.recursive) {
    const children = await listChildSubvolumes(path);
    if (children.length > 0) {
      if (await getReadonly(path)) await setReadonly(path, false);
      for (const child of children) await deleteSubvolume(child.path, { recursive: true });
    }
  }
  await btrfs('subvolume delete', path, ['subvolume', 'delete', path]);
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

export async function showSubvolume(path: string): Promise<SubvolumeInfo> {
  return parseSubvolumeShow(await btrfs('subvolume show', path, ['subvolume', 'show', path]), path);
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

/** All subvolumes of the filesystem holding `path`. */
export async function listSubvolumes(path: string): Promise<SubvolumeListEntry[]> {
  return parseSubvolumeList(await btrfs('subvolume list', path, ['subvolume', 'list', path]));
}

/** The subvolumes directly nested in the subvolume at `path`, with their absolute paths. */
export async function listChildSubvolumes(path: string): Promise<Array<SubvolumeListEntry & { path: string }>> {
  const abs = resolve(path);
  const self = await showSubvolume(abs);
  const children = parseSubvolumeList(await btrfs('subvolume list', abs, ['subvolume', 'list', '-o', abs]));
  // `list -o` and `show` both print paths relative to the top-level subvolume.
  const prefix = self.fsPath === '/' ? '' : `${self.fsPath.replace(/^\/+/, '')}/`;
  return children.map((child) => {
    const fsPath = child.fsPath.replace(/^<FS_TREE>\//, '');
    if (!fsPath.startsWith(prefix)) {
      throw new BtrfsError('subvolume list', abs, `nested subvolume ${child.fsPath} is not below ${self.fsPath}`);
    }
    return { ...child, path: join(abs, fsPath.slice(prefix.length)) };
  });
}

/** Makes subvolume `id` the default (mounted when no subvol= option is given). */
export async function setDefaultSubvolume(id: number, mountPath: string): Promise<void> {
  await btrfs('subvolume set-default', mountPath, ['subvolume', 'set-default', String(id), mountPath]);
}

/** The default subvolume: `{ id: 5, fsPath: '' }` for the top level. */
export async function getDefaultSubvolume(mountPath: string): Promise<{ id: number; fsPath: string }> {
  const out = (await btrfs('subvolume get-default', mountPath, ['subvolume', 'get-default', mountPath])).trim();
  const top = /^ID (\d+) \(FS_TREE\)$/.exec(out);
  if (top) return { id: Number(top[1]), fsPath: '' };
  const [entry] = parseSubvolumeList(out);
  if (!entry) throw new BtrfsError('subvolume get-default', mountPath, `unexpected output: ${out.slice(0, 80)}`);
  return { id: entry.id, fsPath: entry.fsPath };
}

export async function getReadonly(path: string): Promise<boolean> {
  const out = (await btrfs('property get', path, ['property', 'get', '-ts', path, 'ro'])).trim();
  if (out === 'ro=true') return true;
  if (out === 'ro=false') return false;
  throw new BtrfsError('property get', path, `unexpected output: ${out.slice(0, 80)}`);
}

export async function setReadonly(path: string, readonly: boolean): Promise<void> {
  await btrfs('property set', path, ['property', 'set', '-ts', path, 'ro', String(readonly)]);
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
