/**
 * Shared setup of the deploy tests: a sysroot on a real loop-mounted btrfs,
 * laid out like a snapper system, and small OS images in an OCI layout.
 *
 *   DIR/@root            subvolume, the default: "the running system" (has /etc)
 *   DIR/.snapshots       subvolume
 *   DIR/var              subvolume; var/lib/ocisnap holds state and store
 */
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { sysrootPaths, type SysrootPaths } from '../../src/deploy/sysroot.js';
import { createBtrfs, type BtrfsFixture } from '../support/btrfs.js';
import { buildImage, type BuiltImage, type LayerEntry } from '../support/image-factory.js';

export const repoRoot = new URL('../..', import.meta.url).pathname;
export const cliPath = join(repoRoot, 'dist/bin/main.js');

export interface TestSysroot {
  fs: BtrfsFixture;
  paths: SysrootPaths;
  /** The initial default subvolume ("running system"). */
  rootSubvol: string;
  dispose(): Promise<void>;
}

/** /etc of the "running system" before any deploy. */
export const runningEtc: Record<string, string> = {
  'etc/hostname': 'testhost\n',
  'etc/machine-id': '0123456789abcdef0123456789abcdef\n',
  // As image v1 has them: the first deploy (without a base) then changes nothing there.
  'etc/os-release': 'NAME=testos\nVERSION=1\n',
  'etc/extra.conf': 'extra=1\n',
  // Differs from every image: kept by the first deploy (no base), image's version beside it.
  'etc/app.conf': 'setting=running\n',
};

/**
 * With `snapperConfig`, `snapper create-config` makes .snapshots (and
 * registers the config in /etc/snapper; dispose() deletes it again).
 */
export async function makeSysroot(opts: { sizeMiB?: number; snapperConfig?: string; imageDir?: string } = {}): Promise<TestSysroot> {
  const fs = await createBtrfs({ sizeMiB: opts.sizeMiB ?? 1024, ...(opts.imageDir !== undefined && { imageDir: opts.imageDir }) });
  const dir = fs.mountpoint;
  const rootSubvol = join(dir, '@root');
  await execa('btrfs', ['subvolume', 'create', rootSubvol]);
  for (const [path, content] of Object.entries(runningEtc)) {
    await mkdir(join(rootSubvol, path, '..'), { recursive: true });
    await writeFile(join(rootSubvol, path), content);
  }
  const id = await subvolumeId(rootSubvol);
  await execa('btrfs', ['subvolume', 'set-default', String(id), dir]);
  const config = opts.snapperConfig;
  if (config === undefined) await execa('btrfs', ['subvolume', 'create', join(dir, '.snapshots')]);
  else await execa('snapper', ['--no-dbus', '-c', config, 'create-config', dir]);
  await execa('btrfs', ['subvolume', 'create', join(dir, 'var')]);
  await mkdir(join(dir, 'var/lib/ocisnap'), { recursive: true });
  const dispose = async (): Promise<void> => {
    try {
      if (config !== undefined) {
        // snapper cannot delete the default subvolume: give the default back to the top level first.
        await execa('btrfs', ['subvolume', 'set-default', '5', dir]);
        const r = await execa('snapper', ['--no-dbus', '-c', config, 'delete-config'], { reject: false });
        if (r.exitCode !== 0) throw new Error(`snapper delete-config ${config} failed: ${r.stderr}`);
      }
    } finally {
      await fs.dispose();
    }
  };
  return { fs, paths: sysrootPaths(dir), rootSubvol, dispose };
}

export async function subvolumeId(path: string): Promise<number> {
  const out = (await execa('btrfs', ['subvolume', 'show', path])).stdout;
  const m = /Subvolume ID:\s+(\d+)/.exec(out);
  if (!m) throw new Error(`no subvolume ID for ${path}`);
  return Number(m[1]);
}

/** `btrfs subvolume get-default` as the ID only. */
export async function defaultId(mountpoint: string): Promise<number> {
  const out = (await execa('btrfs', ['subvolume', 'get-default', mountpoint])).stdout;
  const m = /^ID (\d+)/.exec(out.trim());
  if (!m) throw new Error(`unexpected get-default output: ${out}`);
  return Number(m[1]);
}

/** Deterministic pseudo-random bytes (incompressible, so extents are real). */
export function noise(size: number, seed: number): Buffer {
  const out = Buffer.alloc(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out.writeUInt32LE(x >>> 0, Math.min(i, size - 4));
  }
  return out;
}

export interface OsImageOptions {
  version: string;
  /** Size of the big incompressible file in /usr/lib (default 4 MiB). */
  bigSize?: number;
  extraEtc?: Record<string, string>;
  extraEntries?: LayerEntry[];
}

/** A two-layer "OS": /usr content and a big file in the base, /etc in the second layer. */
export function osImageLayers(o: OsImageOptions): LayerEntry[][] {
  const base: LayerEntry[] = [
    { type: 'dir', path: 'usr/bin' },
    { type: 'file', path: 'usr/bin/tool', content: `#!/bin/sh\necho tool ${o.version}\n`, mode: 0o755 },
    { type: 'file', path: 'usr/lib/big.bin', content: noise(o.bigSize ?? 4 << 20, 7) },
    { type: 'symlink', path: 'bin', target: 'usr/bin' },
    { type: 'dir', path: 'var' },
    ...(o.extraEntries ?? []),
  ];
  const etc: Record<string, string> = {
    'etc/hostname': 'imagehost\n',
    'etc/os-release': `NAME=testos\nVERSION=${o.version}\n`,
    'etc/app.conf': `setting=image-${o.version}\n`,
    'etc/extra.conf': `extra=${o.version}\n`,
    ...o.extraEtc,
  };
  const etcLayer: LayerEntry[] = Object.entries(etc).map(([path, content]) => ({ type: 'file', path, content }));
  return [base, etcLayer];
}

export async function buildOsImage(layout: string, tag: string, o: OsImageOptions): Promise<BuiltImage> {
  return buildImage(layout, tag, { layers: osImageLayers(o).map((entries) => ({ entries })) });
}

export async function makeWorkDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), `ocisnap-deploy-${randomBytes(3).toString('hex')}-`));
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

export async function readText(path: string): Promise<string> {
  return readFile(path, 'utf8');
}

/** Runs the built CLI; never rejects. */
export async function cli(args: string[], env: Record<string, string> = {}) {
  return execa('node', [cliPath, ...args], {
    reject: false,
    stdin: 'ignore',
    env: { ...env, OCISNAP_STORAGE_ROOT: '' },
    extendEnv: true,
  });
}
