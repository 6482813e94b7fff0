/**
 * Atomic file replacement as containers/storage does it (pkg/ioutils/fswriters.go
 * AtomicWriteFile): write a temp file `.tmp-<name>*` in the same directory,
 * fdatasync, chmod, rename over the target; then fsync the directory so the
 * rename itself survives a crash. A reader sees the old or the new file, never
 * a partial one.
 */
import { randomBytes } from 'node:crypto';
import { open, rename, rm, chmod, readdir } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { isErrno } from '../sys/native.js';

export const tempPrefix = '.tmp-';

export async function atomicWriteFile(path: string, data: Uint8Array | string, mode: number): Promise<void> {
  const dir = dirname(path);
  const temp = join(dir, `${tempPrefix}${basename(path)}${randomBytes(5).toString('hex')}`);
  const file = await open(temp, 'wx', mode);
  let renamed = false;
  try {
    try {
      await file.writeFile(data);
      await file.datasync();
    } finally {
      await file.close();
    }
    await chmod(temp, mode); // the mode given to open() is filtered by the umask
    await rename(temp, path);
    renamed = true;
    await fsyncDir(dir);
  } finally {
    if (!renamed) await rm(temp, { force: true });
  }
}

export async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

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
