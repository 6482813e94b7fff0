/**
 * Atomic file replacement as containers/storage does it (pkg/ioutils/fswriters.go
 * AtomicWriteFile): write a temp file `.tmp-<name>*` in the same directory,
 * fdatasync, chmod, rename over the target; then fsync the directory so the
 * rename itself survives a crash. A reader sees the old or the new file, never
 * a partial one.
 */
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { isErrno } from '../sys/native.js';
import { syncDir, writeFileAtomic } from '../sys/atomic-file.js';

export const tempPrefix = '.tmp-';

export async function atomicWriteFile(path: string, data: Uint8Array | string, mode: number, opts: { syncDir?: boolean } = {}): Promise<void> {
  await writeFileAtomic(path, data, mode, { tempPrefix, ...opts });
}

export const fsyncDir = syncDir;

/** Removes temp files left in `dir` by interrupted writers; call only under the lock that guards `dir`. */
export async function removeStaleTempFiles(dir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return [];
    throw err;
  }
  const removed: string[] = [];
  for (const name of names) {
    if (!name.startsWith(tempPrefix)) continue;
    await rm(join(dir, name), { force: true });
    removed.push(name);
  }
  return removed;
}
