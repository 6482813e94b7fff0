/**
 * src/btrfs sits on the CLI's startup path (pull, deploy): importing it must
 * not load execa (~100 ms of module loading). A spawn that remains must import
 * execa lazily, inside the function that needs it.
 */
import { describe, expect, it } from 'vitest';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const dir = fileURLToPath(new URL('../../src/btrfs/', import.meta.url));

describe('src/btrfs imports', () => {
  it('has no static import of execa', async () => {
    const files = (await readdir(dir)).filter((f) => f.endsWith('.ts'));
    expect(files).toContain('subvolume.ts');
    for (const f of files) {
      const text = await readFile(join(dir, f), 'utf8');
      expect(text, f).not.toMatch(/^\s*import\s[^;]*from\s+['"]execa['"]/m);
      expect(text, f).not.toMatch(/^\s*import\s+['"]execa['"]/m);
    }
  });
});
