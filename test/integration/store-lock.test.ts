/**
 * Cross-process locking: Store.lock() from two processes serializes; the
 * containers/storage lock files exclude podman (fcntl locks) and are touched
 * on every write.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { execa, type ResultPromise } from 'execa';
import { createBtrfs, type BtrfsFixture } from '../support/btrfs.js';
import { requireCommands } from '../support/host.js';
import { LockFile, Store } from '../../src/store/index.js';
import { makeLayerTar, makeWorkDir, podmanFor, storeImage } from './store-support.js';

const repoRoot = resolve(fileURLToPath(import.meta.url), '../../..');

// The child runs the TypeScript sources directly through a tiny ESM loader that
// transpiles them with the project's own typescript (no build step needed).
const loaderSource = `
import { readFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
const ts = createRequire(${JSON.stringify(join(repoRoot, 'package.json'))})('typescript');
export async function resolve(specifier, context, next) {
  if (specifier.endsWith('.js') && context.parentURL?.endsWith('.ts')) {
    const tsUrl = new URL(specifier.slice(0, -3) + '.ts', context.parentURL);
    if (existsSync(tsUrl)) return { url: tsUrl.href, shortCircuit: true };
  }
  return next(specifier, context);
}
export async function load(url, context, next) {
  if (!url.endsWith('.ts')) return next(url, context);
  const src = await readFile(new URL(url), 'utf8');
  const out = ts.transpileModule(src, { fileName: url, compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 } });
  return { format: 'module', source: out.outputText, shortCircuit: true };
}
`;

const childSource = `
import { appendFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
const [storeUrl, graph, log, holdMs, timeoutMs] = process.argv.slice(2);
const { Store } = await import(storeUrl);
const store = await Store.open(graph);
try {
  await store.lock(async () => {
    appendFileSync(log, 'child-start ' + Date.now() + '\\n');
    process.stdout.write('locked\\n');
    await sleep(Number(holdMs));
    appendFileSync(log, 'child-end ' + Date.now() + '\\n');
  }, timeoutMs ? { timeoutMs: Number(timeoutMs) } : {});
} catch (err) {
  process.stderr.write(err.name + ': ' + err.message + '\\n');
  process.exit(3);
}
`;

let fs: BtrfsFixture;
let work: string;
let graph: string;
let loader: string;
let child: string;

function spawnChild(log: string, holdMs: number, timeoutMs?: number): ResultPromise {
  const storeUrl = pathToFileURL(join(repoRoot, 'src/store/index.ts')).href;
  const args = ['--no-warnings', '--loader', pathToFileURL(loader).href, child, storeUrl, graph, log, String(holdMs)];
  if (timeoutMs !== undefined) args.push(String(timeoutMs));
  return execa('node', args, { reject: false, stdin: 'ignore', cwd: repoRoot });
}

async function waitForLine(proc: ResultPromise, line: string): Promise<void> {
  await new Promise<void>((resolveWait, reject) => {
    let seen = '';
    proc.stdout?.on('data', (chunk: Buffer) => {
      seen += chunk.toString();
      if (seen.includes(line)) resolveWait();
    });
    void proc.then((r) => reject(new Error(`child ended before "${line}": ${String(r.stderr)}`)));
  });
}

beforeAll(async () => {
  await requireCommands('podman', 'node');
  fs = await createBtrfs({ sizeMiB: 256 });
  work = await makeWorkDir();
  graph = join(fs.mountpoint, 'graph');
  loader = join(work, 'loader.mjs');
  child = join(work, 'child.mjs');
  await writeFile(loader, loaderSource);
  await writeFile(child, childSource);
});

afterAll(async () => {
  await fs?.dispose();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('store locking across processes', () => {
  it('keeps podman writes and ocisnap writes made at the same time', async () => {
    const run = join(work, 'run');
    const podman = podmanFor(graph, run);
    const store = await Store.open(graph, { runRoot: run });
    const tars = await Promise.all([0, 1, 2].map((i) => makeLayerTar(work, `conc-${i}`, { [`f${i}`]: `content ${i}\n` })));
    const podmanTars = await Promise.all([0, 1].map((i) => makeLayerTar(work, `pconc-${i}`, { [`p${i}`]: `podman ${i}\n` })));
    const [mine] = await Promise.all([
      (async () => {
        const out = [];
        for (const [i, tar] of tars.entries()) out.push(await storeImage(store, [tar], [`localhost/conc/ocisnap:${i}`]));
        return out;
      })(),
      ...podmanTars.map((tar, i) => podman('import', tar.path, `localhost/conc/podman:${i}`)),
    ]);
    const listed = JSON.parse(await podman('images', '--format', 'json')) as Array<{ Id: string; Names?: string[] }>;
    const names = listed.flatMap((i) => i.Names ?? []);
    expect(names).toEqual(expect.arrayContaining(['localhost/conc/ocisnap:0', 'localhost/conc/ocisnap:1', 'localhost/conc/ocisnap:2', 'localhost/conc/podman:0', 'localhost/conc/podman:1']));
    for (const img of mine) expect((await store.findImage(img.id))?.layer).toBe(img.layerIds[0]);
    for (const layer of await store.listLayers()) expect(layer.flags?.incomplete).toBeUndefined();
    for (const name of names) await store.removeImage(name);
    expect(await store.listLayers()).toEqual([]);
  });

  it('serializes lock() holders in two processes', async () => {
    const store = await Store.open(graph);
    const log = join(work, 'order.log');
    await writeFile(log, '');
    const proc = spawnChild(log, 1200);
    await waitForLine(proc, 'locked');
    const waitedFrom = Date.now();
    await store.lock(async () => {
      await writeFile(log, `parent ${Date.now()}\n`, { flag: 'a' });
    });
    const waited = Date.now() - waitedFrom;
    expect((await proc).exitCode).toBe(0);
    const lines = (await readFile(log, 'utf8')).trim().split('\n').map((l) => l.split(' '));
    expect(lines.map((l) => l[0])).toEqual(['child-start', 'child-end', 'parent']);
    expect(Number(lines[2]![1])).toBeGreaterThanOrEqual(Number(lines[1]![1]));
    expect(waited).toBeGreaterThan(500);
  });

  it('gives up after a timeout while another process holds the lock', async () => {
    const store = await Store.open(graph);
    const log = join(work, 'timeout.log');
    await store.lock(async () => {
      const r = await spawnChild(log, 0, 300);
      expect(r.exitCode).toBe(3);
      expect(String(r.stderr)).toMatch(/LockTimeoutError: lock .*ocisnap\.lock: held by another process/);
    });
    const r = await spawnChild(log, 0, 2000);
    expect(r.exitCode).toBe(0);
  });

  it('does not block podman while held, but images.lock does, and writes touch the lock files', async () => {
    const run = join(work, 'run');
    const podman = podmanFor(graph, run);
    const store = await Store.open(graph, { runRoot: run });
    await store.lock(async () => {
      const started = Date.now();
      await podman('images');
      expect(Date.now() - started).toBeLessThan(5000);
    });

    const imagesLock = LockFile.for(store.layout.imagesLock);
    let podmanDone = 0;
    const holdUntil = await imagesLock.with('write', async () => {
      const listing = podman('images', '--format', 'json').then(() => (podmanDone = Date.now()));
      await new Promise((r) => setTimeout(r, 1500));
      const released = Date.now();
      // podman is still waiting for the fcntl lock we hold.
      expect(podmanDone).toBe(0);
      void listing;
      return { released, listing };
    });
    await holdUntil.listing;
    expect(podmanDone).toBeGreaterThanOrEqual(holdUntil.released);

    const before = await readFile(store.layout.layersLock).catch(() => Buffer.alloc(0));
    const tar = await makeLayerTar(work, 'lockt', { a: 'b' });
    await storeImage(store, [tar], ['localhost/lock:1']);
    const after = await readFile(store.layout.layersLock);
    expect(after.length).toBe(64);
    expect(after.equals(before)).toBe(false);
    expect(after.readUInt32LE(16)).toBe(process.pid);
    expect((await readFile(store.layout.imagesLock)).readUInt32LE(16)).toBe(process.pid);
  });
});
