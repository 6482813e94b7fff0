/**
 * Typed access to the small native addon (native/ocisnap_sys.c): the Linux
 * syscalls Node.js lacks. Each function throws a Node-style errno error
 * (`code`, `errno`, `syscall`, `path`) on failure.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** A path or name: a string (passed as UTF-8) or a Buffer of raw bytes (no NUL). */
export type PathArg = string | Buffer;

/** An opaque SHA-256 context (OpenSSL, in the addon). */
export type Sha256Context = { readonly __brand: 'Sha256Context' };

export interface NativeSys {
  /** openat2(2); `resolve` is a mask of RESOLVE_* constants. Returns an fd. */
  openat2(dirfd: number, path: PathArg, flags: number, mode: number, resolve: number): number;
  mknodat(dirfd: number, name: PathArg, mode: number, major: number, minor: number): void;
  fchownat(dirfd: number, name: PathArg, uid: number, gid: number, flags: number): void;
  fchmodat(dirfd: number, name: PathArg, mode: number): void;
  utimensat(
    dirfd: number,
    name: PathArg,
    atimeSec: number,
    atimeNsec: number,
    mtimeSec: number,
    mtimeNsec: number,
    flags: number,
  ): void;
  /**
   * fchown, fchmod, futimens, then close of a file being written: one call
   * per file instead of four. The fd is closed even when a step fails.
   */
  finishFile(
    fd: number,
    uid: number,
    gid: number,
    mode: number,
    atimeSec: number,
    atimeNsec: number,
    mtimeSec: number,
    mtimeNsec: number,
  ): void;
  lsetxattr(path: PathArg, name: PathArg, value: Buffer): void;
  /** null when the attribute is not set. */
  lgetxattr(path: PathArg, name: PathArg): Buffer | null;
  llistxattr(path: PathArg): string[];
  /** Whole-file fcntl(2) record lock, non-blocking: 0 read, 1 write, 2 unlock. */
  setlk(fd: number, type: 0 | 1 | 2): boolean;
  /**
   * CRC-64/ISO (Go hash/crc64 ISO table) of `data`, continuing from `state`:
   * 8 bytes, little-endian, holding the complement of the CRC so far (start
   * with 8 bytes of 0xff; the CRC is the complement of the final state).
   */
  crc64(state: Buffer, data: Uint8Array): void;
  sha256Create(): Sha256Context;
  /**
   * Hashes `chunks`, in order, on libuv's thread pool, then calls `done`. One
   * update per context at a time (another call, or sha256Digest, throws until
   * `done`); neither the array nor the chunks may change until then.
   */
  sha256Update(ctx: Sha256Context, chunks: Uint8Array[], done: (err: Error | null) => void): void;
  /** The digest of everything hashed so far (32 bytes); the context can go on. */
  sha256Digest(ctx: Sha256Context): Buffer;
  constants: {
    RESOLVE_NO_XDEV: number;
    RESOLVE_NO_MAGICLINKS: number;
    RESOLVE_NO_SYMLINKS: number;
    RESOLVE_BENEATH: number;
    RESOLVE_IN_ROOT: number;
    AT_SYMLINK_NOFOLLOW: number;
    AT_FDCWD: number;
    O_PATH: number;
    O_DIRECTORY: number;
    O_NOFOLLOW: number;
    S_IFCHR: number;
    S_IFBLK: number;
    S_IFIFO: number;
  };
}

function findAddon(): string {
  // dist/sys/native.js and src/sys/native.ts both sit two levels below the package root.
  const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
  for (const kind of ['Release', 'Debug']) {
    const candidate = join(root, 'build', kind, 'ocisnap_sys.node');
    if (existsSync(candidate)) return candidate;
  }
  throw new Error(`native addon not built: run 'npm run build:native' in ${root}`);
}

export const sys: NativeSys = createRequire(import.meta.url)(findAddon()) as NativeSys;

/** True when `err` is a Node-style errno error with the given code. */
export function isErrno(err: unknown, code: string): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: unknown }).code === code;
}
