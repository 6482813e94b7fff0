/**
 * `deploy --no-pull` sits on the CLI's hot path: importing src/deploy must not
 * load execa (about 0.1 s of module loading; hooks and grub-editenv import it
 * when they run) nor the pull pipeline (decompressors, tar, layer applier),
 * which deploy.ts imports only when it pulls.
 */
import { describe, expect, it } from 'vitest';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const dir = fileURLToPath(new URL('../../src/deploy/', import.meta.url));
const staticImport = (from: string): RegExp => new RegExp(`^\\s*import\\s(?!type\\s)[^;]*from\\s+['"]${from.replace(/[.]/g, '\\.')}['"]`, 'm');

describe('src/deploy imports', () => {
  it('has no static import of execa', async () => {
    const files = (await readdir(dir)).filter((f) => f.endsWith('.ts'));
    expect(files).toContain('deploy.ts');
    for (const f of files) expect(await readFile(join(dir, f), 'utf8'), f).not.toMatch(staticImport('execa'));
  });

  it('deploy.ts loads the pull pipeline and the image sources only to read from a source', async () => {
    const text = await readFile(join(dir, 'deploy.ts'), 'utf8');
    for (const m of ['../pull/pull.js', '../pull/source-config.js', '../registry/source.js']) {
      expect(text, m).not.toMatch(staticImport(m));
      expect(text, m).toContain(`import('${m}')`);
    }
  });
});
