/**
 * A text fingerprint of a layer store: every metadata file's bytes and every
 * directory down to the subvolume names. Two equal fingerprints mean a failed
 * operation left the store exactly as it was. Lock files are skipped: podman's
 * "last writer" token in them changes on every write, by design.
 */
import { lstat, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

export async function storeState(root: string): Promise<string> {
  const out: string[] = [];
  const walk = async (dir: string, depth: number): Promise<void> => {
    for (const name of (await readdir(dir)).sort()) {
      const path = join(dir, name);
      const st = await lstat(path);
      if (name.endsWith('.lock')) continue;
      if (st.isFile()) out.push(`${path} ${(await readFile(path)).toString('base64')}`);
      else if (st.isDirectory() && depth < 3) {
        out.push(`${path}/`);
        await walk(path, depth + 1);
      }
    }
  };
  await walk(root, 0);
  return out.join('\n');
}
