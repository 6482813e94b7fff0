/**
 * Filesystem access confined to a layer root. Podman extracts a layer inside a
 * chroot (containers/storage pkg/chrootarchive), so symlinks in parent
 * components resolve as if the root were "/". Without a chroot we get the same
 * with openat2(RESOLVE_IN_ROOT) on an fd of the root: a parent directory is
 * opened that way, and the final component is then always handled relative to
 * that fd and never followed (O_EXCL creates, mknodat, AT_SYMLINK_NOFOLLOW,
 * link(2)/unlink(2)/rmdir(2) which do not follow the last component, or an
 * lstat first). Paths given to Node's fs are "/proc/self/fd/N/<name>" with a
 * single-component name, so they cannot leave that directory either.
 */
import * as fs from 'node:fs';
import { isErrno, sys } from '../sys/native.js';

const c = sys.constants;
const inRoot = c.RESOLVE_IN_ROOT | c.RESOLVE_NO_MAGICLINKS | c.RESOLVE_NO_XDEV;
const beneathNoLinks = c.RESOLVE_BENEATH | c.RESOLVE_NO_SYMLINKS | c.RESOLVE_NO_MAGICLINKS | c.RESOLVE_NO_XDEV;
const maxCachedDirs = 128;

/** A component name (byte string) as the bytes the kernel wants. */
export function bytes(name: string): Buffer {
  return Buffer.from(name, 'latin1');
}

export class RootDir {
  readonly fd: number;
  /** Parent-directory fds by path key ("a/b"); dropped whenever a directory or symlink is removed. */
  private readonly dirs = new Map<string, number>();
  private readonly retired: number[] = [];
  /** "/proc/self/fd/N/" by fd number (the string only depends on N, so it never goes stale). */
  private readonly prefixes = new Map<number, Buffer>();

  constructor(readonly path: string) {
    this.fd = sys.openat2(c.AT_FDCWD, path, c.O_PATH | c.O_DIRECTORY, 0, 0);
  }

  /** "/proc/self/fd/<dirfd>/<name>" for Node's fs; `name` is one component. */
  at(dirfd: number, name: string): Buffer {
    let prefix = this.prefixes.get(dirfd);
    if (!prefix) {
      prefix = Buffer.from(`/proc/self/fd/${dirfd}/`);
      this.prefixes.set(dirfd, prefix);
    }
    return Buffer.concat([prefix, bytes(name)]);
  }

  /** "/proc/self/fd/<dirfd>" itself. */
  self(dirfd: number): string {
    return `/proc/self/fd/${dirfd}`;
  }

  /**
   * An O_PATH fd of directory `components` (resolved in the root). With
   * `create`, missing directories are made 0755 root:root, as pkg/archive's
   * MkdirAll of parents does, and reported to `onCreate` by key. Throws
   * errno errors (ENOENT, ENOTDIR, ELOOP, …) otherwise. The fd is owned by
   * the cache: do not close it.
   */
  openDir(components: string[], create: boolean, onCreate?: (key: string) => void): number {
    if (components.length === 0) return this.fd;
    const key = components.join('/');
    const cached = this.dirs.get(key);
    if (cached !== undefined) return cached;
    let fd: number;
    try {
      fd = sys.openat2(this.fd, bytes(key), c.O_PATH | c.O_DIRECTORY, 0, inRoot);
    } catch (err) {
      if (!create || !isErrno(err, 'ENOENT')) throw err;
      const parent = this.openDir(components.slice(0, -1), true, onCreate);
      const name = components[components.length - 1]!;
      try {
        fs.mkdirSync(this.at(parent, name), 0o755);
        // An explicit mode: the process umask must not decide it.
        fs.chmodSync(this.at(parent, name), 0o755);
        onCreate?.(key);
      } catch (e) {
        // EEXIST here means a dangling symlink: refused, like MkdirAll through it would be.
        if (!isErrno(e, 'EEXIST')) throw e;
      }
      fd = sys.openat2(this.fd, bytes(key), c.O_PATH | c.O_DIRECTORY, 0, inRoot);
    }
    if (this.dirs.size >= maxCachedDirs) this.forgetDirs();
    this.dirs.set(key, fd);
    return fd;
  }

  /**
   * Drops every cached directory fd (after something that may change how
   * paths resolve). The fds stay open until endEntry(): the entry being
   * applied may still hold one (its parent directory is still the same
   * directory; only later lookups by name could differ).
   */
  forgetDirs(): void {
    for (const fd of this.dirs.values()) this.retired.push(fd);
    this.dirs.clear();
  }

  /** Called between entries: closes the fds forgetDirs() dropped. */
  endEntry(): void {
    for (const fd of this.retired) fs.closeSync(fd);
    this.retired.length = 0;
  }

  lstat(dirfd: number, name: string): fs.Stats | undefined {
    return fs.lstatSync(this.at(dirfd, name), { throwIfNoEntry: false });
  }

  /**
   * Removes `name` in `dirfd` (recursively when it is a directory; symlinks
   * are removed, never followed). Returns false when nothing was there.
   */
  remove(dirfd: number, name: string, st = this.lstat(dirfd, name)): boolean {
    if (!st) return false;
    if (st.isDirectory()) {
      this.removeTree(dirfd, name);
      this.forgetDirs();
    } else {
      fs.unlinkSync(this.at(dirfd, name));
      if (st.isSymbolicLink()) this.forgetDirs();
    }
    return true;
  }

  private removeTree(dirfd: number, name: string): void {
    const fd = sys.openat2(dirfd, bytes(name), c.O_PATH | c.O_DIRECTORY | c.O_NOFOLLOW, 0, beneathNoLinks);
    try {
      this.emptyDir(fd, () => false);
    } finally {
      fs.closeSync(fd);
    }
    fs.rmdirSync(this.at(dirfd, name));
  }

  /**
   * Removes the children of directory `fd`, except those `keep(childKey…)`
   * says to keep; kept directories are descended into. `key` is the
   * directory's path key, used to build the children's keys.
   */
  emptyDir(fd: number, keep: (key: string) => boolean, key = ''): void {
    const children = fs.readdirSync(this.self(fd), { encoding: 'buffer', withFileTypes: true });
    for (const child of children) {
      const name = child.name.toString('latin1');
      const childKey = key === '' ? name : `${key}/${name}`;
      if (keep(childKey)) {
        if (child.isDirectory()) {
          const sub = sys.openat2(fd, bytes(name), c.O_PATH | c.O_DIRECTORY | c.O_NOFOLLOW, 0, beneathNoLinks);
          try {
            this.emptyDir(sub, keep, childKey);
          } finally {
            fs.closeSync(sub);
          }
        }
        continue;
      }
      if (child.isDirectory()) this.removeTree(fd, name);
      else fs.unlinkSync(this.at(fd, name));
    }
  }

  close(): void {
    this.forgetDirs();
    this.endEntry();
    fs.closeSync(this.fd);
  }
}
