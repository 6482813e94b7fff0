/**
 * Image big-data items (containers/storage images.go SetBigData/BigData):
 * files in `btrfs-images/<image-id>/`, named by store.go makeBigDataBaseName,
 * written atomically with mode 0600 in a 0700 directory.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { atomicWriteFile } from './atomic.js';
import { bigDataFileName, imageDataDir, type StoreLayout } from './layout.js';

export async function writeImageBigData(layout: StoreLayout, imageId: string, key: string, data: Uint8Array): Promise<void> {
  const dir = imageDataDir(layout, imageId);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await atomicWriteFile(join(dir, bigDataFileName(key)), data, 0o600);
}

export async function readImageBigData(layout: StoreLayout, imageId: string, key: string): Promise<Buffer> {
  return readFile(join(imageDataDir(layout, imageId), bigDataFileName(key)));
}
