/**
 * Image big-data items (containers/storage images.go SetBigData/BigData):
 * files in `btrfs-images/<image-id>/`, named by store.go makeBigDataBaseName,
 * written atomically with mode 0600 in a 0700 directory.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { atomicWriteFile, fsyncDir } from './atomic.js';
import { bigDataFileName, imageDataDir, type StoreLayout } from './layout.js';

/**
 * Writes an image's big-data items, all at once (their fsyncs overlap), and
 * makes the directory durable once at the end: before the caller commits
 * images.json, which names them.
 */
export async function writeImageBigData(layout: StoreLayout, imageId: string, items: ReadonlyArray<readonly [string, Uint8Array]>): Promise<void> {
  const dir = imageDataDir(layout, imageId);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await Promise.all(items.map(([key, data]) => atomicWriteFile(join(dir, bigDataFileName(key)), data, 0o600, { syncDir: false })));
  await fsyncDir(dir);
}

export async function readImageBigData(layout: StoreLayout, imageId: string, key: string): Promise<Buffer> {
  return readFile(join(imageDataDir(layout, imageId), bigDataFileName(key)));
}
