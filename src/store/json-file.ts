/** Reading a containers/storage JSON file; a missing file reads as empty. */
import { readFile } from 'node:fs/promises';
import { isErrno } from '../sys/native.js';

export async function readOptional(path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return '';
    throw err;
  }
}
