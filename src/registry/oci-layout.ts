/**
 * `oci:DIR[:TAG]`: an OCI image layout directory. Files are opened with
 * openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS) relative to the layout
 * directory, so a symlink (or `..`) in the layout cannot make us read a file
 * outside it; only regular files are served.
 */
import { closeSync, constants as fsConstants, createReadStream, fstatSync, openSync } from 'node:fs';
import { resolve } from 'node:path';
import { isErrno, sys } from '../sys/native.js';
import { LayoutError, SourceSpecError } from './errors.js';
import { LayoutSource, type LayoutStorage } from './layout.js';

/** Regular files under one directory, opened without escaping it (also used by the dir: source). */
export class DirectoryStorage implements LayoutStorage {
  private dirfd: number | undefined;

  /** `name` is how the directory appears in messages: "oci:/dir", "dir:/dir". */
  constructor(
    readonly name: string,
    dirfd: number,
  ) {
    this.dirfd = dirfd;
  }

  /** Opens `dir` (made absolute) for reading; `transport` ("oci", "dir") prefixes its name. */
  static open(transport: string, dir: string, what: string): DirectoryStorage {
    const abs = resolve(dir);
    let dirfd: number;
    try {
      dirfd = openSync(abs, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY);
    } catch (err) {
      throw new SourceSpecError(`${transport}:${abs}: cannot open the ${what}: ${(err as Error).message}`, { cause: err });
    }
    return new DirectoryStorage(`${transport}:${abs}`, dirfd);
  }

  async open(path: string): Promise<{ stream: ReturnType<typeof createReadStream>; size: number } | undefined> {
    if (this.dirfd === undefined) throw new LayoutError(`${this.name}: source is closed`);
    let fd: number;
    try {
      fd = sys.openat2(
        this.dirfd,
        path,
        fsConstants.O_RDONLY | fsConstants.O_NOCTTY | fsConstants.O_NONBLOCK,
        0,
        sys.constants.RESOLVE_BENEATH | sys.constants.RESOLVE_NO_MAGICLINKS,
      );
    } catch (err) {
      if (isErrno(err, 'ENOENT')) return undefined;
      if (isErrno(err, 'EXDEV')) {
        throw new LayoutError(`${this.name}: ${path} resolves outside the directory (symlink or ..); refused`);
      }
      if (isErrno(err, 'ELOOP')) throw new LayoutError(`${this.name}: ${path}: too many symlinks; refused`);
      throw new LayoutError(`${this.name}: cannot open ${path}: ${(err as Error).message}`, { cause: err });
    }
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) throw new LayoutError(`${this.name}: ${path} is not a regular file; refused`);
      return { stream: createReadStream('', { fd, autoClose: true }), size: st.size };
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  async close(): Promise<void> {
    if (this.dirfd !== undefined) closeSync(this.dirfd);
    this.dirfd = undefined;
  }
}

/** Opens `dir` as an OCI layout; the tag (if any) is looked up on the first getManifest(). */
export function openOciLayout(dir: string, tag: string | undefined): LayoutSource {
  return new LayoutSource(DirectoryStorage.open('oci', dir, 'layout directory'), tag);
}
