import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadTukitConfig, TukitConfigError } from '../../src/tukit/config.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ocisnap-tukit-conf-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function conf(text: string): Promise<string> {
  const path = join(dir, `c${Math.random().toString(36).slice(2)}.conf`);
  await writeFile(path, text);
  return path;
}

describe('tukit plugin config', () => {
  it('reads image and pull; the environment overrides them', async () => {
    const path = await conf('image = "reg.example/os:1"\npull = false\n');
    expect(await loadTukitConfig({ OCISNAP_TUKIT_CONFIG: path })).toEqual({ image: 'reg.example/os:1', pull: false, sysroot: '/' });
    expect(await loadTukitConfig({ OCISNAP_TUKIT_CONFIG: path, OCISNAP_IMAGE: 'other:2', OCISNAP_PULL: '1', OCISNAP_SYSROOT: '/mnt' })).toEqual({
      image: 'other:2',
      pull: true,
      sysroot: '/mnt',
    });
    // An empty OCISNAP_IMAGE turns a configured image off.
    expect((await loadTukitConfig({ OCISNAP_TUKIT_CONFIG: path, OCISNAP_IMAGE: '' })).image).toBeUndefined();
  });

  it('without a config or OCISNAP_IMAGE there is no image', async () => {
    const path = await conf('');
    expect(await loadTukitConfig({ OCISNAP_TUKIT_CONFIG: path })).toEqual({ pull: true, sysroot: '/' });
  });

  it('rejects unknown settings, wrong types, bad TOML and a missing named file, in one line', async () => {
    for (const text of ['imagee = "x"\n', 'image = 3\n', 'pull = "yes"\n', 'image = \n']) {
      const err = await loadTukitConfig({ OCISNAP_TUKIT_CONFIG: await conf(text) }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TukitConfigError);
      expect((err as Error).message).not.toContain('\n');
    }
    await expect(loadTukitConfig({ OCISNAP_TUKIT_CONFIG: join(dir, 'missing.conf') })).rejects.toThrow(TukitConfigError);
    await expect(loadTukitConfig({ OCISNAP_TUKIT_CONFIG: await conf(''), OCISNAP_PULL: 'maybe' })).rejects.toThrow(TukitConfigError);
  });
});
