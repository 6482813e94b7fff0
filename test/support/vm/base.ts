/**
 * The VM tests' base OS: a root filesystem tar built by scripts/lib/vm-base.sh
 * (debootstrap bookworm minbase + kernel + systemd + btrfs-progs + Node.js +
 * the marker units), cached on the host under a hash of its recipe so a
 * recipe change rebuilds it and an unchanged one costs nothing.
 */
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { requireCommands, requireRoot } from '../host.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const RECIPE = join(REPO, 'scripts/lib/vm-base.sh');
const GUEST = join(REPO, 'test/support/vm/guest');

/** Where cached builds live; OCISNAP_TEST_CACHE overrides it (CI may keep it). */
export function vmCacheDir(): string {
  return process.env['OCISNAP_TEST_CACHE'] ?? '/var/tmp/ocisnap-test-cache';
}

export interface VmBase {
  /** Uncompressed tar of the root filesystem (numeric owners, xattrs). */
  tar: string;
  /** The recipe hash the tar was built from. */
  key: string;
  /** Whether this call built it (false: it came from the cache). */
  built: boolean;
  /** How long this call took. */
  ms: number;
}

/** Hash of everything the base depends on: the script, the guest files, Node. */
export async function vmBaseKey(): Promise<string> {
  const h = createHash('sha256');
  h.update(await readFile(RECIPE));
  for (const name of (await readdir(GUEST)).sort()) {
    h.update(`\0${name}\0`);
    h.update(await readFile(join(GUEST, name)));
  }
  const node = await stat(process.execPath);
  h.update(`\0node ${process.version} ${node.size}`);
  return h.digest('hex').slice(0, 16);
}

/**
 * Returns the cached base for the current recipe, building it first if needed
 * (a cold build takes a couple of minutes: debootstrap and the kernel come
 * from Debian's mirror). Builds are serialized with flock(1), so two test
 * processes never build at once; older cached builds are removed.
 */
export async function ensureVmBase(opts: { log?: (line: string) => void } = {}): Promise<VmBase> {
  requireRoot();
  await requireCommands('debootstrap', 'flock', 'tar', 'chroot');
  const started = Date.now();
  const cache = vmCacheDir();
  const key = await vmBaseKey();
  const dir = join(cache, `base-${key}`);
  const tar = join(dir, 'rootfs.tar');
  if (await exists(tar)) return { tar, key, built: false, ms: Date.now() - started };
  await mkdir(dir, { recursive: true });
  const proc = execa('flock', [join(cache, 'build.lock'), 'sh', '-c',
    // Another process may have finished the build while this one waited.
    'test -f "$1" || bash "$2" "$1"', 'sh', tar, RECIPE], {
    env: { OCISNAP_VM_NODE: process.execPath },
    all: true,
    reject: false,
  });
  proc.all?.on('data', (b: Buffer) => {
    for (const line of b.toString().split('\n')) if (line) opts.log?.(line);
  });
  const r = await proc;
  if (r.exitCode !== 0) {
    throw new Error(`building the VM base failed (scripts/lib/vm-base.sh, exit ${r.exitCode}): ${lastLines(r.all ?? '', 15)}`);
  }
  for (const entry of await readdir(cache)) {
    if (entry.startsWith('base-') && entry !== `base-${key}`) {
      await rm(join(cache, entry), { recursive: true, force: true });
    }
  }
  return { tar, key, built: true, ms: Date.now() - started };
}

export interface ImportedBase {
  /** The image reference in the given store, e.g. localhost/ocisnap-vm-base:KEY. */
  reference: string;
  /** podman/buildah global options that select the store. */
  storeOptions: string[];
  ms: number;
}

/**
 * Imports the base tar as a one-layer OCI image into a containers/storage
 * store (vfs driver, so it works on any filesystem), where `buildah build`
 * can use it as the FROM of the top-level Containerfile.
 */
export async function importVmBase(base: VmBase, store: { root: string; runroot: string },
  reference = `localhost/ocisnap-vm-base:${base.key}`): Promise<ImportedBase> {
  await requireCommands('podman');
  const started = Date.now();
  const storeOptions = ['--root', store.root, '--runroot', store.runroot, '--storage-driver', 'vfs'];
  await execa('podman', [...storeOptions, 'import',
    '--change', 'CMD ["/sbin/init"]',
    '--message', `ocisnap VM test base ${base.key}`,
    base.tar, reference]);
  return { reference, storeOptions, ms: Date.now() - started };
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}

function lastLines(text: string, n: number): string {
  return text.trim().split('\n').slice(-n).join(' | ');
}
