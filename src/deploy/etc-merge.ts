/**
 * Three-way merge of /etc when a new image becomes the next root snapshot.
 *
 *   base   — pristine /etc of the image the running snapshot came from (read only)
 *   local  — the running system's /etc (read only)
 *   target — the new snapshot's /etc: the new image's /etc, changed in place
 *
 * Per path (union of the three trees, parents before children):
 * - the admin left it alone (local = base): the image's version (changed, new or removed);
 * - the admin changed, added or deleted it and the image did not (new = base): local's;
 * - both made the same change: nothing to do;
 * - both changed it differently: local's stays, the image's is kept beside it as
 *   `<path>.ocisnap-new` (like rpm's .rpmnew) and reported as a conflict; a path the
 *   admin deleted stays deleted (reported; the image's copy is not written, so tools
 *   reading a whole directory, e.g. sudoers.d, do not pick it up); a file the image
 *   removed but the admin changed is kept (reported);
 * - directories follow the same rules for their own metadata; their children are
 *   merged one by one. What the image adds or changes inside a directory the admin
 *   deleted (or replaced by a file) stays out and is reported as 'deleted-locally';
 *   a type change on both sides moves the image's whole entry aside.
 * Without a base (first deployment over a system ocisnap did not make) nothing
 * tells an admin change from an image change, so the conservative rule is: local
 * wins wherever local and image differ (image's copy saved beside, reported as
 * 'no-base'), local-only paths are carried over, image-only paths are added.
 * The running system worked with its /etc; this keeps it, and shows every
 * difference.
 *
 * Host identity (DEFAULT_IDENTITY_PATHS) always mirrors local, present or absent.
 * Account databases (passwd-merge.ts) are merged per entry.
 * "Same" compares kind, permission bits, owner, xattrs and payload, not times
 * (tree-compare.ts). Local copies keep mode, owner, xattrs and mtime (ns); regular
 * files are reflinked when target and local share a btrfs filesystem.
 *
 * Every path is decided first, while the target still is the pristine image;
 * then the target is changed, parents before children. The merge is not atomic:
 * on an error the caller discards the new snapshot.
 *
 * Safety: nothing outside `target` is written. Every path written or removed in
 * target is reached through real directories only: a parent that is a symlink or
 * not a directory makes that path be skipped and reported, never followed. The
 * target is a fresh snapshot no other process writes while we merge.
 * Sockets cannot be copied and are skipped with a report line; local leftovers
 * named *.ocisnap-new (from an earlier deployment) are not carried over; a mount
 * or nested subvolume inside /etc is not descended into (the image's stays there).
 * Known gap: an xattr the image set on a directory that keeps local metadata is
 * not removed (the native addon has no lremovexattr yet).
 */
import { constants as fsc } from 'node:fs';
import { copyFile, lstat, mkdir, readFile, realpath, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { describeError, OcisnapError } from '../errors.js';
import { isErrno, sys } from '../sys/native.js';
import { ACCOUNT_FILES, mergeAccountText } from './passwd-merge.js';
import { sameEntry, walkTree, type CompareOptions, type TreeEntry } from './tree-compare.js';

/**
 * Paths (relative to /etc; `*` matches within one path component) that are the
 * host's own and always come from local:
 * - machine-id, machine-info, hostname: who the host is (machine-id(5), hostname(5));
 * - fstab, crypttab: its disks (an image cannot know them);
 * - adjtime: hardware clock state (hwclock(8)); localtime, timezone: its time zone;
 * - ssh/ssh_host_*: its SSH host keys (sshd(8));
 * - passwd-, shadow-, group-, gshadow-, subuid-, subgid-: backups the shadow tools
 *   write of the local databases; they belong with the local accounts.
 * Not listed: hosts, resolv.conf, locale settings — ordinary configuration the
 * three-way rules handle (an admin change to them wins anyway).
 */
export const DEFAULT_IDENTITY_PATHS: readonly string[] = [
  'machine-id',
  'machine-info',
  'hostname',
  'fstab',
  'crypttab',
  'adjtime',
  'localtime',
  'timezone',
  'ssh/ssh_host_*',
  'passwd-',
  'shadow-',
  'group-',
  'gshadow-',
  'subuid-',
  'subgid-',
];

/**
 * xattrs not compared by default. SELinux labels come from the policy, not from
 * the admin: a running system's files are labelled, an image's usually are not
 * (or differently), and the new snapshot is relabelled anyway. Comparing them
 * would make every file look changed locally, so no image update would apply.
 */
export const DEFAULT_IGNORED_XATTRS: readonly string[] = ['security.selinux'];

/** Suffix of the image's version of a file kept beside the local one. */
export const NEW_SUFFIX = '.ocisnap-new';
/**
 * Private (0700) directory at the top of the target where new entries are
 * built before being renamed into place: a copied setuid file is root-owned
 * with its setuid bit for a moment, and nobody else may reach it then.
 */
export const STAGING_DIR = '.ocisnap-staging';

export interface EtcMergeInput {
  /** Pristine /etc of the image the running snapshot was deployed from; undefined when unknown. */
  base?: string;
  /** The running system's /etc (read only). */
  local: string;
  /** The new snapshot's /etc: starts as the new image's /etc, modified in place. */
  target: string;
}

export interface EtcMergeOptions {
  /** Replaces DEFAULT_IDENTITY_PATHS. */
  identityPaths?: readonly string[];
  /** Replaces DEFAULT_IGNORED_XATTRS: xattr names left out of comparisons (still copied with local files). */
  ignoreXattrs?: readonly string[];
}

export type EtcConflictKind =
  /** Both changed it differently: local kept, the image's version saved as `newSavedAs` (not for directories). */
  | 'changed-both'
  /** The admin deleted it, the image changed or added it: stays deleted. */
  | 'deleted-locally'
  /** The image removed it, the admin had changed it: local kept. */
  | 'removed-in-image'
  /** No base and local differs from the image: local kept, image's saved as `newSavedAs` (not for directories). */
  | 'no-base'
  /** Local wanted it written but a parent in the target is not a real directory (e.g. a symlink): skipped. */
  | 'parent-not-directory';

export interface EtcConflict {
  path: string;
  kind: EtcConflictKind;
  /** Where the image's version now is (relative to /etc), when it was kept beside the local one. */
  newSavedAs?: string;
}

/** All paths relative to /etc. */
export interface EtcMergeReport {
  /** Local version written: the admin changed or added it (and conflicts where local won). */
  keptLocal: string[];
  /** The image's change (new, changed or removed) taken over an untouched local path. */
  tookNew: string[];
  /** Needs the admin's attention. */
  conflicts: EtcConflict[];
  /** The admin deleted it and it stays deleted (whether or not the image changed it). */
  deletedLocally: string[];
  /** Host identity paths copied from local (or removed because local has none). */
  identity: string[];
  /** Account databases merged per entry. */
  mergedAccounts: string[];
  /** Entries not merged, with why (sockets, mounts inside /etc, stale .ocisnap-new files). */
  skipped: Array<{ path: string; reason: string }>;
}

export class EtcMergeError extends OcisnapError {
  constructor(
    readonly path: string,
    detail: string,
    options?: { cause?: unknown },
  ) {
    super(`/etc merge: ${path}: ${detail}`, options);
  }
}

/** Does `rel` match a pattern: `*` within one component; a match on a directory covers what is below it. */
export function matchesIdentity(rel: string, patterns: readonly string[]): boolean {
  return identityMatcher(patterns)(rel);
}

/** matchesIdentity with the patterns compiled once (the merge asks for every path of three trees). */
export function identityMatcher(patterns: readonly string[]): (rel: string) => boolean {
  const compiled = patterns
    .map((pattern) => pattern.split('/').filter((p) => p !== '').map(globComponent))
    .filter((pp) => pp.length > 0);
  return (rel) => {
    const parts = rel.split('/');
    return compiled.some((pp) => pp.length <= parts.length && pp.every((re, i) => re.test(parts[i] as string)));
  };
}

function globComponent(pattern: string): RegExp {
  return new RegExp(`^${pattern.split('*').map((s) => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&')).join('.*')}$`);
}

type Listing = Map<string, TreeEntry>;

interface Plan {
  action: 'keep' | 'delete' | 'local' | 'local+new' | 'accounts';
  /** The image's entry exists and differs from base's (only known with a base). */
  imageChanged: boolean;
}

class Merger {
  readonly report: EtcMergeReport = {
    keptLocal: [],
    tookNew: [],
    conflicts: [],
    deletedLocally: [],
    identity: [],
    mergedAccounts: [],
    skipped: [],
  };
  /** Subtrees of the image's /etc no longer in target: removed, or moved aside. */
  private readonly gone = new Map<string, 'removed' | 'moved'>();
  /** Directories whose mtime must be set from local once their children are written. */
  private readonly dirTimes: TreeEntry[] = [];
  private readonly cmp: CompareOptions;
  private tmpCounter = 0;

  constructor(
    private readonly input: EtcMergeInput,
    private readonly b: Listing | undefined,
    private readonly l: Listing,
    private readonly n: Listing,
    private readonly isIdentity: (rel: string) => boolean,
    ignoreXattrs: readonly string[],
    private readonly opaque: ReadonlySet<string>,
  ) {
    this.cmp = { ignoreXattrs: new Set(ignoreXattrs) };
  }

  private same(x: TreeEntry | undefined, xRoot: string, y: TreeEntry | undefined, yRoot: string): boolean {
    return sameEntry(x, xRoot, y, yRoot, this.cmp);
  }

  /**
   * Two passes: first decide every path while the target still is the pristine
   * image (comparisons read its files), then change the target, parents first.
   */
  async run(): Promise<void> {
    const all = [...new Set<string>([...this.l.keys(), ...this.n.keys(), ...(this.b?.keys() ?? [])])].sort();
    const plans: Array<[string, Plan]> = [];
    for (const rel of all) plans.push([rel, this.guardSync(rel, () => this.plan(rel))]);
    const staging = join(this.input.target, STAGING_DIR);
    await rm(staging, { recursive: true, force: true });
    await mkdir(staging, { mode: 0o700 });
    try {
      for (const [rel, plan] of plans) await this.guard(rel, () => this.apply(rel, plan));
    } finally {
      await rm(staging, { recursive: true, force: true });
    }
    // Deepest first, so setting a child's time cannot disturb its parent's.
    for (const e of this.dirTimes.reverse()) {
      if (await this.targetParentOk(e.rel, false)) this.setTimes(join(this.input.target, e.rel), e);
    }
  }

  private async guard<T>(rel: string, fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw this.wrapError(rel, err);
    }
  }

  private guardSync<T>(rel: string, fn: () => T): T {
    try {
      return fn();
    } catch (err) {
      throw this.wrapError(rel, err);
    }
  }

  private wrapError(rel: string, err: unknown): unknown {
    return err instanceof OcisnapError ? err : new EtcMergeError(rel, describeError(err), { cause: err });
  }

  /** At or below a directory some tree did not descend into (a mount): local's content is unknown, so the image's stays. */
  private underOpaque(rel: string): boolean {
    for (let p = rel; p !== '.'; p = dirname(p)) if (this.opaque.has(p)) return true;
    return false;
  }

  private goneAncestor(rel: string): 'removed' | 'moved' | undefined {
    for (let p = dirname(rel); p !== '.'; p = dirname(p)) {
      const why = this.gone.get(p);
      if (why !== undefined) return why;
    }
    return undefined;
  }

  private plan(rel: string): Plan {
    const { local, target } = this.input;
    const base = this.input.base ?? '';
    const l = this.l.get(rel);
    const n = this.n.get(rel);
    const b = this.b?.get(rel);

    if (this.underOpaque(rel)) return { action: 'keep', imageChanged: false };
    if (rel === STAGING_DIR || rel.startsWith(`${STAGING_DIR}/`)) {
      if (rel === STAGING_DIR) this.report.skipped.push({ path: rel, reason: 'name reserved for the merge; not merged' });
      return { action: 'keep', imageChanged: false };
    }
    if (l !== undefined && n === undefined && basename(rel).endsWith(NEW_SUFFIX)) {
      this.report.skipped.push({ path: rel, reason: 'left over from an earlier merge; not carried over' });
      return { action: 'keep', imageChanged: false };
    }
    if (l?.kind === 'socket') {
      this.report.skipped.push({ path: rel, reason: 'a socket cannot be copied' });
      return { action: 'keep', imageChanged: false };
    }
    if (this.isIdentity(rel)) {
      if (this.same(l, local, n, target)) return { action: 'keep', imageChanged: false };
      this.report.identity.push(rel);
      return { action: l === undefined ? 'delete' : 'local', imageChanged: false };
    }
    if (!rel.includes('/') && ACCOUNT_FILES.includes(rel) && l?.kind === 'file' && n?.kind === 'file') {
      if (b === undefined || b.kind === 'file') return { action: 'accounts', imageChanged: false };
    }
    // Whether the image changed it is asked twice (report, decision): compare once.
    const imageSameAsBase = this.b !== undefined && this.same(n, target, b, base);
    const imageChanged = this.b !== undefined && n !== undefined && !imageSameAsBase;
    return { action: this.decide(rel, b, base, l, local, n, target, imageSameAsBase), imageChanged };
  }

  private async apply(rel: string, plan: Plan): Promise<void> {
    const l = this.l.get(rel);
    switch (plan.action) {
      case 'keep':
        if (plan.imageChanged && this.goneAncestor(rel) === 'removed') {
          // The image added or changed it inside a directory the admin deleted: stays deleted.
          const i = this.report.tookNew.indexOf(rel);
          if (i >= 0) this.report.tookNew.splice(i, 1);
          this.report.deletedLocally.push(rel);
          this.report.conflicts.push({ path: rel, kind: 'deleted-locally' });
        }
        return;
      case 'delete':
        await this.removeTarget(rel, 'removed');
        return;
      case 'local':
        if (l !== undefined) await this.copyFromLocal(rel, l);
        return;
      case 'local+new': {
        const saved = await this.moveAside(rel);
        if (l !== undefined) await this.copyFromLocal(rel, l);
        const conflict = this.report.conflicts.find((c) => c.path === rel);
        if (conflict !== undefined && saved !== undefined) conflict.newSavedAs = saved;
        return;
      }
      case 'accounts':
        await this.mergeAccounts(rel, l as TreeEntry, this.n.get(rel) as TreeEntry, this.b === undefined ? undefined : this.b.get(rel));
        return;
    }
  }

  /** What the target must hold at `rel`; records the report lines. */
  private decide(
    rel: string,
    b: TreeEntry | undefined,
    base: string,
    l: TreeEntry | undefined,
    local: string,
    n: TreeEntry | undefined,
    target: string,
    /** sameEntry(n, b), when there is a base. */
    imageSameAsBase: boolean,
  ): 'keep' | 'delete' | 'local' | 'local+new' {
    const r = this.report;
    if (this.b === undefined) {
      if (this.same(l, local, n, target)) return 'keep';
      if (l === undefined) {
        r.tookNew.push(rel);
        return 'keep';
      }
      r.keptLocal.push(rel);
      if (n === undefined) return 'local';
      r.conflicts.push({ path: rel, kind: 'no-base' });
      return l.kind === 'dir' && n.kind === 'dir' ? 'local' : 'local+new';
    }
    if (this.same(l, local, b, base)) {
      if (!imageSameAsBase) r.tookNew.push(rel);
      return 'keep';
    }
    // The admin changed, added or deleted it.
    if (imageSameAsBase) {
      if (l === undefined) {
        r.deletedLocally.push(rel);
        return 'delete';
      }
      r.keptLocal.push(rel);
      return 'local';
    }
    if (this.same(l, local, n, target)) return 'keep';
    // Both changed it, differently.
    if (l === undefined) {
      r.deletedLocally.push(rel);
      r.conflicts.push({ path: rel, kind: 'deleted-locally' });
      return 'delete';
    }
    r.keptLocal.push(rel);
    if (n === undefined) {
      r.conflicts.push({ path: rel, kind: 'removed-in-image' });
      return 'local';
    }
    r.conflicts.push({ path: rel, kind: 'changed-both' });
    return l.kind === 'dir' && n.kind === 'dir' ? 'local' : 'local+new';
  }

  private async mergeAccounts(rel: string, l: TreeEntry, n: TreeEntry, b: TreeEntry | undefined): Promise<void> {
    const { local, target } = this.input;
    // latin1 maps every byte to one char and back: non-UTF-8 bytes (e.g. in a GECOS field) survive.
    const baseText =
      this.b === undefined ? undefined : b === undefined ? '' : await readFile(join(this.input.base ?? '', rel), 'latin1');
    const localText = await readFile(join(local, rel), 'latin1');
    const imageText = await readFile(join(target, rel), 'latin1');
    const merged = mergeAccountText(baseText, localText, imageText);
    const metaDiffers = l.uid !== n.uid || l.gid !== n.gid || l.perm !== n.perm;
    if (merged.text === imageText && !metaDiffers) return;
    if (!(await this.targetParentOk(rel, false))) return;
    const dest = join(target, rel);
    const tmp = this.tmpName();
    // Account databases hold password hashes: create the file closed (0600) before the owner and mode are set.
    await writeFile(tmp, merged.text, { encoding: 'latin1', mode: 0o600, flag: 'wx' });
    this.applyMeta(tmp, l, false);
    await rename(tmp, dest);
    this.report.mergedAccounts.push(rel);
  }

  /** Check (and, with `create`, make from local's metadata) every parent of `rel` in target. */
  private async targetParentOk(rel: string, create: boolean): Promise<boolean> {
    const parts = rel.split('/');
    parts.pop();
    let cur = '';
    for (const part of parts) {
      cur = cur === '' ? part : `${cur}/${part}`;
      const path = join(this.input.target, cur);
      let kindOk: boolean | undefined;
      try {
        kindOk = (await lstat(path)).isDirectory();
      } catch (err) {
        if (!isErrno(err, 'ENOENT')) throw err;
      }
      if (kindOk === true) continue;
      const le = this.l.get(cur);
      if (kindOk === undefined && create && le?.kind === 'dir') {
        await mkdir(path, { mode: 0o700 });
        this.applyMeta(path, le, false);
        this.dirTimes.push(le);
        continue;
      }
      if (create) {
        const i = this.report.keptLocal.indexOf(rel);
        if (i >= 0) this.report.keptLocal.splice(i, 1);
        this.report.conflicts.push({ path: rel, kind: 'parent-not-directory' });
      }
      return false;
    }
    return true;
  }

  private tmpName(): string {
    return join(this.input.target, STAGING_DIR, String(++this.tmpCounter));
  }

  private async removeTarget(rel: string, why: 'removed' | 'moved'): Promise<void> {
    if (!(await this.targetParentOk(rel, false))) return;
    const path = join(this.input.target, rel);
    // rm does not follow symlinks: a symlink is removed, not what it points to.
    await rm(path, { recursive: true, force: true });
    this.gone.set(rel, why);
  }

  /** Move the image's version aside as `<rel>.ocisnap-new`; returns that name, or undefined if there was none. */
  private async moveAside(rel: string): Promise<string | undefined> {
    if (!(await this.targetParentOk(rel, false))) return undefined;
    const path = join(this.input.target, rel);
    try {
      await lstat(path);
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return undefined;
      throw err;
    }
    const saved = `${rel}${NEW_SUFFIX}`;
    await rm(join(this.input.target, saved), { recursive: true, force: true });
    await rename(path, join(this.input.target, saved));
    this.gone.set(rel, 'moved');
    return saved;
  }

  /** Make target's `rel` a copy of local's entry `e` with all its metadata. */
  private async copyFromLocal(rel: string, e: TreeEntry): Promise<void> {
    if (!(await this.targetParentOk(rel, true))) return;
    const src = join(this.input.local, rel);
    const dest = join(this.input.target, rel);
    let existing: 'dir' | 'other' | undefined;
    try {
      existing = (await lstat(dest)).isDirectory() ? 'dir' : 'other';
    } catch (err) {
      if (!isErrno(err, 'ENOENT')) throw err;
    }
    if (e.kind === 'dir') {
      if (existing === 'other') await rm(dest, { force: true });
      if (existing !== 'dir') await mkdir(dest, { mode: 0o700 });
      this.applyMeta(dest, e, false);
      this.dirTimes.push(e);
      return;
    }
    const tmp = this.tmpName();
    switch (e.kind) {
      case 'file':
        // A reflink when both sides are on the same btrfs; a plain copy otherwise.
        await copyFile(src, tmp, fsc.COPYFILE_FICLONE | fsc.COPYFILE_EXCL);
        break;
      case 'symlink':
        await symlink(e.linkTarget as string, tmp);
        break;
      case 'char':
      case 'block':
      case 'fifo': {
        const type = e.kind === 'char' ? fsc.S_IFCHR : e.kind === 'block' ? fsc.S_IFBLK : fsc.S_IFIFO;
        const [major, minor] = splitDev(e.rdev);
        sys.mknodat(sys.constants.AT_FDCWD, tmp, type | 0o600, major, minor);
        break;
      }
      default:
        this.report.skipped.push({ path: rel, reason: `a ${e.kind} cannot be copied` });
        return;
    }
    this.applyMeta(tmp, e, true);
    if (existing === 'dir') {
      await rm(dest, { recursive: true, force: true });
      this.gone.set(rel, 'removed');
    }
    await rename(tmp, dest);
  }

  /** Owner, then mode (chown clears setuid), xattrs, and optionally times. No symlink is followed. */
  private applyMeta(path: string, e: TreeEntry, times: boolean): void {
    const c = sys.constants;
    sys.fchownat(c.AT_FDCWD, path, e.uid, e.gid, c.AT_SYMLINK_NOFOLLOW);
    if (e.kind !== 'symlink') sys.fchmodat(c.AT_FDCWD, path, e.perm);
    for (const [name, value] of e.xattrs) {
      try {
        sys.lsetxattr(path, name, value);
      } catch (err) {
        // The kernel refuses user.* on symlinks; nothing to carry then.
        if (!(e.kind === 'symlink' && isErrno(err, 'EPERM'))) throw err;
      }
    }
    if (times) this.setTimes(path, e);
  }

  private setTimes(path: string, e: TreeEntry): void {
    const c = sys.constants;
    const s = (ns: bigint): [number, number] => [Number(ns / 1_000_000_000n), Number(ns % 1_000_000_000n)];
    const [as, ans] = s(e.atimeNs);
    const [ms, mns] = s(e.mtimeNs);
    sys.utimensat(c.AT_FDCWD, path, as, ans, ms, mns, c.AT_SYMLINK_NOFOLLOW);
  }
}

/** glibc's gnu_dev_major/gnu_dev_minor. */
function splitDev(rdev: bigint): [number, number] {
  const major = Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn));
  const minor = Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn));
  return [major, minor];
}

async function requireDir(path: string, what: string): Promise<void> {
  try {
    if ((await lstat(path)).isDirectory()) return;
  } catch (err) {
    if (!isErrno(err, 'ENOENT')) throw new EtcMergeError(path, `${what}: ${describeError(err)}`, { cause: err });
  }
  throw new EtcMergeError(path, `${what} is not a directory`);
}

/** The target is written: it must not be, contain or lie inside a tree that is only read. */
async function requireDistinct(input: EtcMergeInput): Promise<void> {
  const target = await realpath(input.target);
  for (const [what, path] of [['local /etc', input.local], ['base /etc', input.base]] as const) {
    if (path === undefined) continue;
    const other = await realpath(path);
    const inside = (a: string, b: string): boolean => a === b || a.startsWith(b.endsWith('/') ? b : `${b}/`);
    if (inside(target, other) || inside(other, target)) {
      throw new EtcMergeError(input.target, `new /etc overlaps the ${what} ${path}; refusing to write into it`);
    }
  }
}

/** Merge local changes into the new snapshot's /etc (`input.target`). */
export async function mergeEtc(input: EtcMergeInput, opts: EtcMergeOptions = {}): Promise<EtcMergeReport> {
  await requireDir(input.local, 'local /etc');
  await requireDir(input.target, 'new /etc');
  if (input.base !== undefined) await requireDir(input.base, 'base /etc');
  await requireDistinct(input);
  const [local, image, base] = await Promise.all([
    walkTree(input.local),
    walkTree(input.target),
    input.base === undefined ? undefined : walkTree(input.base),
  ]);
  const opaque = new Set([...local.skipped, ...image.skipped, ...(base?.skipped ?? [])].map((s) => s.rel));
  const merger = new Merger(
    input,
    base?.entries,
    local.entries,
    image.entries,
    identityMatcher(opts.identityPaths ?? DEFAULT_IDENTITY_PATHS),
    opts.ignoreXattrs ?? DEFAULT_IGNORED_XATTRS,
    opaque,
  );
  for (const s of local.skipped) merger.report.skipped.push({ path: s.rel, reason: `local: ${s.reason}` });
  for (const s of image.skipped) merger.report.skipped.push({ path: s.rel, reason: `image: ${s.reason}` });
  for (const s of base?.skipped ?? []) merger.report.skipped.push({ path: s.rel, reason: `base: ${s.reason}` });
  await merger.run();
  return merger.report;
}

/** One line per thing an admin should look at after a merge (conflicts, kept deletions, skips). */
export function formatEtcMergeReport(report: EtcMergeReport): string[] {
  const lines: string[] = [];
  for (const c of report.conflicts) {
    const what: Record<EtcConflictKind, string> = {
      'changed-both': 'changed locally and in the new image; local kept',
      'deleted-locally': 'deleted locally, changed or added by the new image; stays deleted',
      'removed-in-image': 'removed by the new image, changed locally; local kept',
      'no-base': 'differs from the new image and the previous image is unknown; local kept',
      'parent-not-directory': 'local version not written: a parent in the new /etc is not a directory',
    };
    const saved = c.newSavedAs === undefined ? '' : `, new version in /etc/${c.newSavedAs}`;
    lines.push(`/etc/${c.path}: ${what[c.kind]}${saved}`);
  }
  for (const s of report.skipped) lines.push(`/etc/${s.path}: skipped: ${s.reason}`);
  return lines;
}
