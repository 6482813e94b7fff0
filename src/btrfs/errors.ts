/**
 * Typed failures of btrfs operations. Messages are one line: the operation,
 * the path, and what btrfs-progs or the kernel said.
 */
import { OcisnapError } from '../errors.js';

/** A btrfs-progs command failed; `detail` is its last stderr line. */
export class BtrfsError extends OcisnapError {
  constructor(
    readonly operation: string,
    readonly path: string,
    readonly detail: string,
    options?: { cause?: unknown },
  ) {
    super(`btrfs ${operation} ${path}: ${detail}`, options);
  }
}

/** A path that must be on btrfs is on another filesystem. */
export class NotBtrfsError extends OcisnapError {
  constructor(
    readonly path: string,
    what = 'path',
  ) {
    super(`${what} ${path} is not on a btrfs filesystem`);
  }
}

/** A path that must be a btrfs subvolume is a plain directory (or missing). */
export class NotSubvolumeError extends OcisnapError {
  constructor(readonly path: string) {
    super(`${path} is not a btrfs subvolume`);
  }
}
