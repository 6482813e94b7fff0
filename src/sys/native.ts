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

/** An opaque zstd decompression context (libzstd ZSTD_DStream, in the addon). */
export type ZstdContext = { readonly __brand: 'ZstdContext' };

/**
 * The result of one zstdDecompress call: `written` bytes went into the
 * targets, in order; `consumed` bytes of the input were used; `more` when the
 * targets are all full (call again with input.subarray(consumed), even if
 * empty); `frameEnded` when everything so far ends exactly at a frame's end.
 */
export type ZstdDone = (err: Error | null, written: number, consumed: number, more: boolean, frameEnded: boolean) => void;

/** BTRFS_IOC_GET_SUBVOL_INFO (linux/btrfs.h struct btrfs_ioctl_get_subvol_info_args). */
export interface BtrfsSubvolInfo {
  id: number;
  name: string;
  /** 0 for the top level. */
  parentId: number;
  dirId: number;
  generation: number;
  flags: number;
  /** 16 bytes each; all zero when unset. */
  uuid: Buffer;
  parentUuid: Buffer;
  receivedUuid: Buffer;
  ctransid: number;
  otransid: number;
}

/** One item of a btrfs tree search: its key and raw (little-endian) data. */
export interface BtrfsSearchItem {
  objectId: number;
  type: number;
  offset: number;
  data: Buffer;
}

/** One entry of walkTree, as lstat(2) (not followed), readlink(2) and the xattr calls saw it. */
export interface RawTreeEntry {
  /** Path below the walked root, '/'-separated. */
  rel: string;
  /** st_mode: type and permission bits. */
  mode: number;
  uid: number;
  gid: number;
  size: bigint;
  dev: bigint;
  rdev: bigint;
  atimeNs: bigint;
  mtimeNs: bigint;
  /** For symlinks. */
  linkTarget?: string;
  /** [name, value] of every extended attribute, by name. */
  xattrs: Array<[string, Buffer]>;
}

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
  /**
   * Every entry below `root` (pre-order, a directory's children in byte order
   * of their names). Symlinks are described, not followed; a directory on
   * another device is listed and reported in `skipped`, not entered; a name
   * that is not valid UTF-8 is reported, not listed; an entry removed during
   * the walk is left out. Runs on libuv's thread pool; rejects with an errno
   * error for anything else.
   */
  walkTree(root: string): Promise<{ entries: RawTreeEntry[]; skipped: Array<{ rel: string; reason: string }> }>;
  /** Byte equality of two regular files; neither is followed if a symlink (ELOOP), nor gets its atime updated. */
  sameContent(pathA: PathArg, pathB: PathArg): boolean;
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
   * glibc mallopt(M_MMAP_THRESHOLD, bytes): allocations this large are
   * mmapped, so freeing them returns the memory to the kernel. False when
   * glibc refused. Process-wide: for the program, not for a library.
   */
  setMmapThreshold(bytes: number): boolean;
  /**
   * Hashes `chunks`, in order, on libuv's thread pool, then calls `done`. One
   * update per context at a time (another call, or sha256Digest, throws until
   * `done`); neither the array nor the chunks may change until then.
   */
  sha256Update(ctx: Sha256Context, chunks: Uint8Array[], done: (err: Error | null) => void): void;
  /** The digest of everything hashed so far (32 bytes); the context can go on. */
  sha256Digest(ctx: Sha256Context): Buffer;
  /** A zstd decoder with libzstd's default window limit (128 MiB). */
  zstdCreate(): ZstdContext;
  /**
   * Decodes `input` on libuv's thread pool into `targets` (1 to 16, filled in
   * order), then calls `done` (on failure with only an Error: the message is
   * libzstd's). One call per context at a time (another throws until `done`);
   * neither the input nor the targets may be touched until then.
   */
  zstdDecompress(ctx: ZstdContext, input: Uint8Array, targets: Uint8Array[], done: ZstdDone): void;
  /** Frees the decoder now (not at garbage collection); the context is unusable after. Throws while busy. */
  zstdFree(ctx: ZstdContext): void;
  /** BTRFS_IOC_SUBVOL_CREATE: a new subvolume `name` in directory `dir`. */
  btrfsSubvolCreate(dir: PathArg, name: PathArg): void;
  /** BTRFS_IOC_SNAP_CREATE_V2: snapshot of subvolume `source` as `dir`/`name`. */
  btrfsSnapCreate(source: PathArg, dir: PathArg, name: PathArg, readonly: boolean): void;
  /** BTRFS_IOC_SNAP_DESTROY: deletes subvolume `dir`/`name` (ENOTEMPTY with nested subvolumes). */
  btrfsSnapDestroy(dir: PathArg, name: PathArg): void;
  /** BTRFS_IOC_SUBVOL_GETFLAGS of the subvolume rooted at `path` (BTRFS_SUBVOL_RDONLY = 2). */
  btrfsGetFlags(path: PathArg): number;
  btrfsSetFlags(path: PathArg, flags: number): void;
  /** BTRFS_IOC_DEFAULT_SUBVOL on the filesystem holding `path`. */
  btrfsSetDefault(path: PathArg, id: number): void;
  /** BTRFS_IOC_SYNC: commits the current transaction of the filesystem holding `path`. */
  btrfsSync(path: PathArg): void;
  /** BTRFS_IOC_GET_SUBVOL_INFO of the subvolume containing `path` (flags: root item flags, BTRFS_ROOT_SUBVOL_RDONLY = 1). */
  btrfsSubvolInfo(path: PathArg): BtrfsSubvolInfo;
  /**
   * BTRFS_IOC_INO_LOOKUP: the path of directory `objectId` inside tree `treeId`
   * (0: the tree of `path`), with a trailing "/" ("" for the tree's root directory).
   */
  btrfsInoLookup(path: PathArg, treeId: number, objectId: number): { treeId: number; name: string };
  /**
   * BTRFS_IOC_TREE_SEARCH_V2 (root only) over the whole-key range [min, max] of
   * tree `treeId`; negative bounds are taken as u64 (-1 = UINT64_MAX).
   */
  btrfsTreeSearch(
    path: PathArg,
    treeId: number,
    minObjectId: number,
    maxObjectId: number,
    minType: number,
    maxType: number,
    minOffset: number,
    maxOffset: number,
  ): BtrfsSearchItem[];
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
