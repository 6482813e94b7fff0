/**
 * Applies one layer tar to a directory (a btrfs subvolume in production), as
 * containers/storage pkg/archive (archive.go createTarFile, diff.go
 * UnpackLayer) does for Podman, with image-spec layer.md whiteouts. The tar is
 * untrusted: every path is resolved inside the root (root-dir.ts), and any
 * entry that cannot be applied exactly fails the whole layer with
 * LayerApplyError; the caller then throws the half-filled directory away.
 */
import * as fs from 'node:fs';
import type { Readable } from 'node:stream';
import { OcisnapError, UntrustedInputError, describeError } from '../errors.js';
import type { Digest } from '../oci/types.js';
import { isErrno, sys } from '../sys/native.js';
import { ByteSource, InputStreamError, TruncatedInputError } from './byte-source.js';
import { CorruptLayerDataError } from './decompress.js';
import { FileWriteError, FileWrites } from './file-writes.js';
import { BadNameError, classify, cleanName, displayName } from './names.js';
import { RootDir, bytes } from './root-dir.js';
import { TarFormatError, TarReader, type TarEntry, type Timestamp } from './tar-reader.js';

export interface ApplyOptions {
  /** Names the layer in errors, e.g. "layer sha256:ab12… of localhost:5000/os:1". */
  what: string;
  signal?: AbortSignal;
}

export interface ApplyResult {
  /** sha256 of the uncompressed tar stream, every byte of it. */
  diffId: Digest;
  /** Uncompressed tar bytes. */
  size: number;
  /** Tar entries seen (whiteouts included, PAX/GNU extension headers not). */
  entries: number;
}

/** A layer entry was refused or could not be applied. */
export class LayerApplyError extends UntrustedInputError {
  constructor(what: string, entry: string | undefined, reason: string, options?: { cause?: unknown }) {
    super(entry === undefined ? `${what}: ${reason}` : `${what}: entry ${displayName(entry)}: ${reason}`, options);
  }
}

/** A refusal decided here (not an errno from the filesystem). */
class Refused extends Error {}

const c = sys.constants;
const { O_WRONLY, O_CREAT, O_EXCL } = fs.constants;
const regularFileFlags = O_WRONLY | O_CREAT | O_EXCL;
/**
 * Files at least this large are written on the thread pool (file-writes.ts);
 * smaller ones at once: for them a pool round trip costs the main thread
 * more than the write itself.
 */
const poolWriteMinSize = 64 * 1024;

interface DirTime {
  components: string[];
  atime: Timestamp;
  mtime: Timestamp;
}

export async function applyLayer(tar: Readable, root: string, opts: ApplyOptions): Promise<ApplyResult> {
  const source = new ByteSource(tar);
  const reader = new TarReader(source);
  let dir: RootDir;
  try {
    dir = new RootDir(root);
  } catch (err) {
    await source.close().catch(() => {});
    throw new LayerApplyError(opts.what, undefined, `cannot open the target directory ${root}: ${describeError(err)}`, {
      cause: err,
    });
  }
  const applier = new Applier(dir, reader, opts.signal);
  let entries = 0;
  let current: string | undefined;
  try {
    for (;;) {
      opts.signal?.throwIfAborted();
      current = undefined;
      const entry = await reader.next();
      if (entry === null) break;
      current = entry.name;
      entries++;
      await applier.apply(entry);
      dir.endEntry();
    }
    current = undefined;
    await applier.drain();
    applier.applyDirTimes();
    // The diffID covers the whole stream, including anything after the end-of-archive blocks.
    await source.drain();
    return { diffId: await source.digest(), size: source.bytes, entries };
  } catch (err) {
    if (opts.signal?.aborted && err === opts.signal.reason) throw err;
    throw toApplyError(err, opts.what, current);
  } finally {
    // No write may go on into a directory the caller is about to delete.
    await applier.drain().catch(() => {});
    dir.close();
    await source.close().catch(() => {});
  }
}

function toApplyError(err: unknown, what: string, entry: string | undefined): unknown {
  if (err instanceof LayerApplyError) return err;
  if (err instanceof FileWriteError) return new LayerApplyError(what, err.entry, describeError(err.cause), { cause: err.cause });
  if (err instanceof InputStreamError) {
    const cause = err.cause;
    // Errors from upstream stages (a digest verifier, the registry client) already say what failed.
    if (cause instanceof OcisnapError && !(cause instanceof CorruptLayerDataError)) return cause;
    return new LayerApplyError(what, undefined, describeError(cause), { cause });
  }
  if (err instanceof TruncatedInputError) return new LayerApplyError(what, entry, err.message, { cause: err });
  if (err instanceof TarFormatError) return new LayerApplyError(what, err.entry ?? entry, err.message, { cause: err });
  if (err instanceof BadNameError || err instanceof Refused) {
    return new LayerApplyError(what, entry, err.message, { cause: err });
  }
  return new LayerApplyError(what, entry, describeError(err), { cause: err });
}

class Applier {
  /** Path keys ("a/b") this layer created, so an opaque marker keeps them (pkg/archive unpackedPaths). */
  private readonly created = new Set<string>();
  /** Directory times, applied after every entry (creating entries changes a directory's mtime). */
  private readonly dirTimes = new Map<string, DirTime>();
  private readonly writes = new FileWrites();

  constructor(
    private readonly root: RootDir,
    private readonly reader: TarReader,
    private readonly signal: AbortSignal | undefined,
  ) {}

  /** Waits for the file writes in flight; throws the first that failed. */
  drain(): Promise<void> {
    return this.writes.drain();
  }

  async apply(e: TarEntry): Promise<void> {
    this.writes.check();
    const components = cleanName(e.name);
    const kind = classify(components);
    if (kind.kind === 'ignored') return;
    const key = components.join('/');
    const parent = components.slice(0, -1);
    const base = components[components.length - 1];

    if (kind.kind === 'whiteout') {
      this.whiteout(parent, kind.target);
      return;
    }
    if (kind.kind === 'opaque') {
      this.opaque(parent);
      return;
    }
    if (base === undefined) {
      // The root itself ("./", "/"): only its metadata can change.
      if (e.type !== 'dir') throw new Refused(`a ${e.type} cannot replace the layer root`);
      this.rootMetadata(e);
      return;
    }

    const pfd = this.parentDir(parent);
    this.created.add(key);
    if (e.type !== 'dir') this.dirTimes.delete(key);
    switch (e.type) {
      case 'dir':
        this.directory(pfd, base, e, components);
        break;
      case 'file':
        await this.regularFile(pfd, base, e);
        break;
      case 'symlink':
        this.create(pfd, base, () => fs.symlinkSync(bytes(e.linkname), this.root.at(pfd, base)));
        this.metadata(pfd, base, e, false);
        break;
      case 'hardlink':
        // The target may be a file still being written: its owner and mode decide what the link changes.
        await this.writes.drain();
        this.hardlink(pfd, base, e);
        break;
      case 'char':
      case 'block':
      case 'fifo': {
        const type = e.type === 'char' ? c.S_IFCHR : e.type === 'block' ? c.S_IFBLK : c.S_IFIFO;
        this.create(pfd, base, () => sys.mknodat(pfd, bytes(base), type | 0o600, e.devmajor, e.devminor));
        this.metadata(pfd, base, e, true);
        break;
      }
    }
  }

  /** The entry's directory, resolved in the root; missing directories are created (pkg/archive MkdirAll). */
  private parentDir(parent: string[]): number {
    try {
      return this.root.openDir(parent, true, (k) => this.created.add(k));
    } catch (err) {
      // E.g. a symlink whose in-root target does not exist, or a file used as a directory.
      throw new Refused(`cannot open its directory inside the layer root: ${describeError(err)}`);
    }
  }

  /**
   * Runs `make` to create `base`; if something is in the way, removes it
   * (recursively for a directory, pkg/archive: "anything but dir over dir is
   * replaced") and tries once more.
   */
  private create(pfd: number, base: string, make: () => void): void {
    try {
      make();
    } catch (err) {
      if (!isErrno(err, 'EEXIST')) throw err;
      this.root.remove(pfd, base);
      make();
    }
  }

  private directory(pfd: number, base: string, e: TarEntry, components: string[]): void {
    const path = this.root.at(pfd, base);
    try {
      fs.mkdirSync(path, 0o700);
    } catch (err) {
      if (!isErrno(err, 'EEXIST')) throw err;
      const st = this.root.lstat(pfd, base);
      // An existing directory stays (with what lower layers put in it); its metadata is updated.
      if (!st?.isDirectory()) {
        this.root.remove(pfd, base, st);
        fs.mkdirSync(path, 0o700);
      }
    }
    this.ownership(pfd, base, e);
    sys.fchmodat(pfd, bytes(base), e.mode);
    this.xattrs(pfd, base, e, false);
    this.dirTimes.set(components.join('/'), { components, ...times(e) });
  }

  private async regularFile(pfd: number, base: string, e: TarEntry): Promise<void> {
    let fd: number;
    try {
      fd = sys.openat2(pfd, bytes(base), regularFileFlags, 0o600, 0);
    } catch (err) {
      if (!isErrno(err, 'EEXIST')) throw err;
      this.root.remove(pfd, base);
      fd = sys.openat2(pfd, bytes(base), regularFileFlags, 0o600, 0);
    }
    if (!e.sparse && e.size >= poolWriteMinSize && e.xattrs.length === 0) {
      await this.regularFileOnPool(fd, e);
      return;
    }
    let open = true;
    try {
      if (e.sparse) await this.writeSparse(fd, e.sparse);
      else if (e.size > 0) {
        await this.reader.readContent((chunk) => {
          // Large files: let a cancel stop the copy too, not only the next entry.
          this.signal?.throwIfAborted();
          writeAll(fd, chunk, null);
        });
      }
      // chown clears setuid/setgid and file capabilities: chown, then chmod, then xattrs.
      // One native call does chown, chmod, times and close (setting xattrs later leaves the times alone).
      const { atime, mtime } = times(e);
      open = false;
      sys.finishFile(fd, e.uid, e.gid, e.mode, atime.sec, atime.nsec, mtime.sec, mtime.nsec);
    } finally {
      if (open) fs.closeSync(fd);
    }
    this.xattrs(pfd, base, e, false);
  }

  /**
   * Writes the content on the thread pool and returns once it is queued; the
   * file is finished (owner, mode, times, close) when its writes are done.
   * Files with xattrs are not written here: their xattrs go after the chmod.
   */
  private async regularFileOnPool(fd: number, e: TarEntry): Promise<void> {
    const { atime, mtime } = times(e);
    let file;
    try {
      file = await this.writes.open(fd, e.name, (f) =>
        sys.finishFile(f, e.uid, e.gid, e.mode, atime.sec, atime.nsec, mtime.sec, mtime.nsec),
      );
    } catch (err) {
      fs.closeSync(fd);
      throw err;
    }
    try {
      await this.reader.readContent((chunk) => {
        this.signal?.throwIfAborted();
        return file.write(chunk);
      });
    } catch (err) {
      file.abandon();
      throw err;
    }
    file.end();
  }

  /** Data segments go to their offsets; the gaps stay holes (seek, never write zeros). */
  private async writeSparse(fd: number, sparse: NonNullable<TarEntry['sparse']>): Promise<void> {
    let seg = 0;
    let done = 0;
    const segments = sparse.segments;
    await this.reader.readContent((chunk) => {
      let off = 0;
      while (off < chunk.length) {
        while (segments[seg]!.length === done) {
          seg++;
          done = 0;
        }
        const s = segments[seg]!;
        const n = Math.min(s.length - done, chunk.length - off);
        writeAll(fd, chunk.subarray(off, off + n), s.offset + done);
        done += n;
        off += n;
      }
    });
    fs.ftruncateSync(fd, sparse.realSize);
  }

  private hardlink(pfd: number, base: string, e: TarEntry): void {
    // pkg/archive: the target is joined to the root and must stay inside it.
    const target = cleanName(e.linkname, 'hardlink target');
    const tbase = target[target.length - 1];
    if (tbase === undefined) throw new Refused('hardlink target is the layer root');
    let tfd: number;
    try {
      tfd = this.root.openDir(target.slice(0, -1), false);
    } catch (err) {
      throw new Refused(`hardlink target ${displayName(e.linkname)} not found: ${describeError(err)}`);
    }
    const tst = this.root.lstat(tfd, tbase);
    if (!tst) throw new Refused(`hardlink target ${displayName(e.linkname)} does not exist`);
    if (tst.isDirectory()) throw new Refused(`hardlink target ${displayName(e.linkname)} is a directory`);
    // link(2) does not follow a symlink as its last component: a link to a symlink links the symlink.
    this.create(pfd, base, () => fs.linkSync(this.root.at(tfd, tbase), this.root.at(pfd, base)));
    // The inode is shared: chown only when the owner differs (containers/storage idtools.SafeLchown),
    // because chown clears the file capabilities of the linked file.
    const sameOwner = tst.uid === e.uid && tst.gid === e.gid;
    this.metadata(pfd, base, e, !tst.isSymbolicLink(), !sameOwner);
  }

  /** Ownership, mode (not for symlinks), xattrs and times of a non-directory that is not a regular file. */
  private metadata(pfd: number, base: string, e: TarEntry, chmod: boolean, chown = true): void {
    if (chown) this.ownership(pfd, base, e);
    if (chmod) sys.fchmodat(pfd, bytes(base), e.mode);
    this.xattrs(pfd, base, e, !chmod);
    this.times(pfd, base, e);
  }

  private ownership(pfd: number, base: string, e: TarEntry): void {
    sys.fchownat(pfd, bytes(base), e.uid, e.gid, c.AT_SYMLINK_NOFOLLOW);
  }

  private xattrs(pfd: number, base: string, e: TarEntry, symlink: boolean): void {
    if (e.xattrs.length === 0) return;
    const path = this.root.at(pfd, base);
    for (const [name, value] of e.xattrs) {
      try {
        sys.lsetxattr(path, bytes(name), value);
      } catch (err) {
        // The kernel refuses user.* xattrs on symlinks; pkg/archive skips EPERM the same way.
        if (symlink && isErrno(err, 'EPERM')) continue;
        throw new Refused(`cannot set xattr ${displayName(name)}: ${describeError(err)}`);
      }
    }
  }

  private times(pfd: number, base: string, e: TarEntry): void {
    const t = times(e);
    sys.utimensat(pfd, bytes(base), t.atime.sec, t.atime.nsec, t.mtime.sec, t.mtime.nsec, c.AT_SYMLINK_NOFOLLOW);
  }

  private rootMetadata(e: TarEntry): void {
    // The root directory is ours (the caller made it), so its own path is trusted.
    const self = this.root.path;
    fs.chownSync(self, e.uid, e.gid);
    fs.chmodSync(self, e.mode);
    for (const [name, value] of e.xattrs) sys.lsetxattr(self, bytes(name), value);
    this.dirTimes.set('', { components: [], ...times(e) });
  }

  /** `.wh.NAME`: NAME goes, whatever it is (pkg/archive: os.RemoveAll). A missing directory means nothing to do. */
  private whiteout(parent: string[], target: string): void {
    let pfd: number;
    try {
      pfd = this.root.openDir(parent, false);
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return;
      throw err;
    }
    this.root.remove(pfd, target);
    const key = [...parent, target].join('/');
    this.created.delete(key);
  }

  /**
   * `.wh..wh..opq`: everything in the directory that this layer did not
   * create goes (pkg/archive walks the directory and removes paths not in
   * unpackedPaths); entries of this layer that come later are created after.
   */
  private opaque(dirComponents: string[]): void {
    const fd = this.parentDir(dirComponents);
    const key = dirComponents.join('/');
    this.root.emptyDir(fd, (k) => this.created.has(k), key);
    this.root.forgetDirs();
  }

  /** Deepest first, so setting a directory's times is not undone by touching its parent. */
  applyDirTimes(): void {
    const all = [...this.dirTimes.values()].sort((a, b) => b.components.length - a.components.length);
    for (const d of all) {
      const base = d.components[d.components.length - 1];
      try {
        if (base === undefined) {
          sys.utimensat(c.AT_FDCWD, this.root.path, d.atime.sec, d.atime.nsec, d.mtime.sec, d.mtime.nsec, 0);
          continue;
        }
        const pfd = this.root.openDir(d.components.slice(0, -1), false);
        sys.utimensat(pfd, bytes(base), d.atime.sec, d.atime.nsec, d.mtime.sec, d.mtime.nsec, c.AT_SYMLINK_NOFOLLOW);
      } catch (err) {
        // A later whiteout may have removed the directory.
        if (!isErrno(err, 'ENOENT') && !isErrno(err, 'ENOTDIR')) throw err;
      }
    }
  }
}

/** pkg/archive: atime is the later of the PAX atime and mtime (mtime when there is no atime). */
function times(e: TarEntry): { atime: Timestamp; mtime: Timestamp } {
  const m = e.mtime;
  const a = e.atime;
  const atime = a && (a.sec > m.sec || (a.sec === m.sec && a.nsec > m.nsec)) ? a : m;
  return { atime, mtime: m };
}

function writeAll(fd: number, chunk: Buffer, position: number | null): void {
  let off = 0;
  while (off < chunk.length) {
    const n = fs.writeSync(fd, chunk, off, chunk.length - off, position === null ? null : position + off);
    off += n;
  }
}
