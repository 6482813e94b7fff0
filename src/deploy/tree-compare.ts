/**
 * Walk a directory tree without following symlinks and compare entries of two
 * trees the way the /etc merge needs: type, permission bits (with setuid/
 * setgid/sticky), owner, xattrs, symlink target, device numbers and content.
 * Timestamps are not compared: a file that was merely touched is unchanged.
 *
 * The walk and the content comparison are in the addon (native/tree.c): a
 * deploy walks three /etc trees of small entries once, in a fresh process,
 * and in JavaScript that ran mostly in V8's interpreter: 25-50 ms per tree of
 * the benchmark image's /etc (712 entries), against about 7 ms natively. The
 * walks run on libuv's thread pool, so the three trees of a merge are read
 * at once (their disk reads overlap when the page cache is cold).
 */
import { join } from 'node:path';
import { sys, type RawTreeEntry } from '../sys/native.js';

export type EntryKind = 'file' | 'dir' | 'symlink' | 'char' | 'block' | 'fifo' | 'socket';

export interface TreeEntry {
  /** Path relative to the tree root, '/'-separated, never empty. */
  rel: string;
  kind: EntryKind;
  /** Permission bits including setuid, setgid and sticky (st_mode & 07777). */
  perm: number;
  uid: number;
  gid: number;
  size: bigint;
  /** Device of the filesystem holding the entry (tells mount points and nested subvolumes apart). */
  dev: bigint;
  rdev: bigint;
  atimeNs: bigint;
  mtimeNs: bigint;
  /** Symlink target, for kind 'symlink'. */
  linkTarget?: string;
  /** Extended attributes by name (security.*, trusted.*, user.*, system.posix_acl_*). */
  xattrs: Map<string, Buffer>;
}

/** Entries a walk did not descend into or could not describe, with why. */
export interface WalkSkip {
  rel: string;
  reason: string;
}

export interface TreeListing {
  entries: Map<string, TreeEntry>;
  skipped: WalkSkip[];
}

const S_IFMT = 0o170000;
const kinds = new Map<number, EntryKind>([
  [0o100000, 'file'],
  [0o040000, 'dir'],
  [0o120000, 'symlink'],
  [0o020000, 'char'],
  [0o060000, 'block'],
  [0o010000, 'fifo'],
  [0o140000, 'socket'],
]);

function toEntry(raw: RawTreeEntry): TreeEntry {
  const entry: TreeEntry = {
    rel: raw.rel,
    kind: kinds.get(raw.mode & S_IFMT) ?? 'socket',
    perm: raw.mode & 0o7777,
    uid: raw.uid,
    gid: raw.gid,
    size: raw.size,
    dev: raw.dev,
    rdev: raw.rdev,
    atimeNs: raw.atimeNs,
    mtimeNs: raw.mtimeNs,
    xattrs: new Map(raw.xattrs),
  };
  if (raw.linkTarget !== undefined) entry.linkTarget = raw.linkTarget;
  return entry;
}

/**
 * List every entry below `root` (the root itself excluded). Symlinks are
 * listed, never followed; directories on another device (mount points,
 * nested btrfs subvolumes) are listed but not descended into, and reported;
 * names that are not UTF-8 (Node names paths by strings) are reported.
 */
export async function walkTree(root: string): Promise<TreeListing> {
  const raw = await sys.walkTree(root);
  const entries = new Map<string, TreeEntry>();
  for (const r of raw.entries) entries.set(r.rel, toEntry(r));
  return { entries, skipped: raw.skipped };
}

function sameXattrs(a: Map<string, Buffer>, b: Map<string, Buffer>, ignore: ReadonlySet<string>): boolean {
  if (a.size === 0 && b.size === 0) return true;
  const names = new Set([...a.keys(), ...b.keys()]);
  for (const name of names) {
    if (ignore.has(name)) continue;
    const x = a.get(name);
    const y = b.get(name);
    if (x === undefined || y === undefined || !x.equals(y)) return false;
  }
  return true;
}

/** Byte comparison of two regular files (in the addon: no symlink followed, no atime written). */
export function sameContent(pathA: string, pathB: string): boolean {
  return sys.sameContent(pathA, pathB);
}

export interface CompareOptions {
  /** xattr names left out of the comparison (e.g. 'security.selinux' when labels are recomputed). */
  ignoreXattrs?: ReadonlySet<string>;
}

/**
 * True when two entries are the same for the merge: both absent, or same
 * kind, permission bits, owner, xattrs and payload (content, link target,
 * device number). Directories compare by their own metadata only.
 */
export function sameEntry(
  a: TreeEntry | undefined,
  aRoot: string,
  b: TreeEntry | undefined,
  bRoot: string,
  opts: CompareOptions = {},
): boolean {
  if (a === undefined || b === undefined) return a === b;
  if (a.kind !== b.kind || a.uid !== b.uid || a.gid !== b.gid) return false;
  // Symlink permission bits are meaningless on Linux (always 0777).
  if (a.kind !== 'symlink' && a.perm !== b.perm) return false;
  if (!sameXattrs(a.xattrs, b.xattrs, opts.ignoreXattrs ?? new Set())) return false;
  switch (a.kind) {
    case 'symlink':
      return a.linkTarget === b.linkTarget;
    case 'char':
    case 'block':
      return a.rdev === b.rdev;
    case 'file':
      return a.size === b.size && sameContent(join(aRoot, a.rel), join(bRoot, b.rel));
    default:
      return true;
  }
}
