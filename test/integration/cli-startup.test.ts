/**
 * Startup cost of the ocisnap command: each command imports only what it
 * runs (src/cli/program.ts), so listing images or asking for help does not
 * load the registry client, execa, the policy engines, deploy or health.
 * Loading all of them cost about a third of a second per run, most of an
 * update pull. This watches which modules a run loads, through a module
 * loader hook, rather than timing anything.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_KEEP } from '../../src/deploy/gc.js';
import { DEFAULT_HEALTH_CONF } from '../../src/health/config.js';
import { createBtrfs, type BtrfsFixture } from '../support/btrfs.js';
import { cliPath } from '../support/cli.js';

const dir = mkdtempSync(join(tmpdir(), 'ocisnap-startup-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const hooks = join(dir, 'hooks.mjs');
writeFileSync(hooks, 'export async function load(url, context, next) { process.stderr.write(`LOADED ${url}\\n`); return next(url, context); }\n');
const register = join(dir, 'register.mjs');
writeFileSync(register, `import { register } from 'node:module';\nregister(${JSON.stringify(pathToFileURL(hooks).href)});\n`);

const repoRoot = join(cliPath, '..', '..', '..');
/** tsc's output, module by module: what the bundle's chunks are cut along. */
const modulesEntry = join(repoRoot, 'dist', 'cli', 'main.js');

/**
 * The modules (paths relative to the repository) a run of the CLI loads, and
 * its output. For the bundle (dist/bin, scripts/bundle.mjs), a loaded chunk
 * stands for the modules esbuild put in it, which it names in comments
 * ("// dist/registry/distribution.js").
 */
async function loadedBy(entry: string, args: string[]): Promise<{ modules: string[]; stdout: string; exitCode: number | undefined }> {
  const r = await execa('node', ['--import', register, entry, ...args], { reject: false, stdin: 'ignore' });
  const repo = pathToFileURL(repoRoot).href;
  const files = r.stderr
    .split('\n')
    .filter((l) => l.startsWith('LOADED file://'))
    .map((l) => l.slice('LOADED '.length).replace(`${repo}/`, ''));
  const modules = files.flatMap((f) =>
    f.startsWith('dist/bin/') ? [f, ...(readFileSync(join(repoRoot, f), 'utf8').match(/^\/\/ (?:dist|node_modules)\/\S+$/gm) ?? []).map((c) => c.slice(3))] : [f],
  );
  return { modules, stdout: r.stdout, exitCode: r.exitCode };
}

const heavy = [/node_modules\/undici\//, /node_modules\/execa\//, /node_modules\/yaml\//, /dist\/deploy\/deploy\.js$/, /dist\/health\//, /dist\/registry\//, /dist\/policy\/gpg\.js$/, /dist\/layers\/(apply|decompress)\.js$/];

describe('CLI startup', () => {
  let fs: BtrfsFixture;
  beforeAll(async () => {
    fs = await createBtrfs();
  });
  afterAll(async () => {
    await fs?.dispose();
  });

  const builds = [
    ['tsc output', modulesEntry],
    ['bundle', cliPath],
  ] as const;

  it.each(builds)('`ocisnap --help` loads none of the command implementations (%s)', async (_build, entry) => {
    const r = await loadedBy(entry, ['--help']);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain('pull');
    expect(r.modules.some((m) => m.endsWith('dist/cli/program.js'))).toBe(true);
    for (const re of heavy) expect(r.modules.filter((m) => re.test(m))).toEqual([]);
  });

  it.each(builds)('`ocisnap images` opens the store without the registry client, execa, deploy or health (%s)', async (_build, entry) => {
    const r = await loadedBy(entry, ['--storage-root', join(fs.mountpoint, 'store'), 'images']);
    expect(r.exitCode).toBe(0);
    expect(r.modules.some((m) => m.endsWith('dist/store/store.js'))).toBe(true);
    for (const re of heavy) expect(r.modules.filter((m) => re.test(m))).toEqual([]);
  });

  it('`ocisnap --version` prints the version of package.json, loading no command', async () => {
    const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string };
    const r = await loadedBy(cliPath, ['--version']);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe(pkg.version);
    for (const re of heavy) expect(r.modules.filter((m) => re.test(m))).toEqual([]);
  });

  it('help texts show the defaults the code uses', async () => {
    const gc = await execa('node', [cliPath, 'gc', '--help'], { stdin: 'ignore' });
    expect(gc.stdout).toContain(`(default ${DEFAULT_KEEP})`);
    const health = await execa('node', [cliPath, 'health', '--help'], { stdin: 'ignore' });
    expect(health.stdout).toContain(`(default ${DEFAULT_HEALTH_CONF})`);
  });
});
