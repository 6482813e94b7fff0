/**
 * Crash-safe file replacement: after a crash a reader sees either the old
 * file or the complete new one, never a torn write. The data goes to a
 * temporary file in the same directory (rename(2) is atomic only within one
 * filesystem), is fsynced, renamed over the target, and the directory is
 * fsynced so the rename itself is durable.
 */
import { randomBytes } from 'node:crypto';
import { open, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/**
 * Replaces `path` atomically with `data`; `mode` (default 0o644) is set
 * exactly, regardless of umask. `tempPrefix` names the temporary file
 * `<tempPrefix><name><random>` so that a directory's owner can find and remove
 * leftovers of interrupted writers (containers/storage uses `.tmp-`).
 * `syncDir: false` leaves the directory's fsync to the caller, who writes
 * several files into it and then calls syncDir once.
 */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  mode = 0o644,
  opts: { tempPrefix?: string; syncDir?: boolean } = {},
): Promise<void> {
  const dir = dirname(path);
  const random = randomBytes(6).toString('hex');
  const tmp = join(dir, opts.tempPrefix === undefined ? `.${basename(path)}.tmp-${random}` : `${opts.tempPrefix}${basename(path)}${random}`);
  const fh = await open(tmp, 'wx', mode);
  try {
    try {
      await fh.chmod(mode);
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  if (opts.syncDir !== false) await syncDir(dir);
}

/** fsync(2) a directory, making creations, renames and removals in it durable. */
export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Removes a file (ENOENT is fine) and makes the removal durable. */
export async function unlinkDurable(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if ((err as { code?: unknown }).code !== 'ENOENT') throw err;
    return;
  }
  await syncDir(dirname(path));
}
