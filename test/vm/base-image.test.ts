/**
 * The VM base as an OCI image: imported into a containers/storage store, it
 * is the FROM of the top-level Containerfile, which buildah builds without
 * running a container (COPY/LABEL only; `buildah run` cannot work here).
 */
import { mkdtemp, readFile, readlink, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireCommands, requireRoot } from '../support/host.js';
import { ensureVmBase, importVmBase, type ImportedBase } from '../support/vm/base.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
let work: string;
let imported: ImportedBase;

beforeAll(async () => {
  requireRoot();
  await requireCommands('podman', 'buildah');
  work = await mkdtemp(join(tmpdir(), 'ocisnap-vmbase-'));
  const base = await ensureVmBase();
  imported = await importVmBase(base, { root: join(work, 'store'), runroot: join(work, 'run') });
});

afterAll(async () => {
  if (imported) await execa('podman', [...imported.storeOptions, 'image', 'unmount', '--all'], { reject: false });
  if (work) await rm(work, { recursive: true, force: true });
});

describe('the VM base image', () => {
  it('is the FROM of the top-level Containerfile, built by buildah', async () => {
    const started = Date.now();
    await execa('buildah', [...imported.storeOptions, 'build', '-q', '--layers',
      '--build-arg', `BASE=${imported.reference}`, '-f', 'Containerfile', '-t', 'localhost/ocisnap-vm-example:test', '.'],
    { cwd: REPO });
    const buildMs = Date.now() - started;
    const { stdout } = await execa('podman', [...imported.storeOptions, 'image', 'mount', 'localhost/ocisnap-vm-example:test']);
    const root = stdout.trim();
    // The base's parts: kernel and initrd at the names the harness loads,
    // systemd as init, Node.js for ocisnap, the marker units enabled.
    expect((await stat(join(root, 'boot/vmlinuz'))).size).toBeGreaterThan(1_000_000);
    expect((await stat(join(root, 'boot/initrd.img'))).size).toBeGreaterThan(1_000_000);
    // (The enablement link is absolute: read it, do not follow it on the host.)
    expect(await readlink(join(root, 'etc/systemd/system/multi-user.target.wants/ocisnap-test-ready.service')))
      .toBe('/etc/systemd/system/ocisnap-test-ready.service');
    expect(await readFile(join(root, 'etc/systemd/system/ocisnap-test-ready.service'), 'utf8'))
      .toContain('marker.sh ready');
    const node = await execa('chroot', [root, '/usr/local/bin/node', '-p', 'process.versions.node'],
      { env: { NODE_EXTRA_CA_CERTS: '' } });
    expect(node.stdout.trim()).toBe(process.versions.node);
    // The Containerfile's own layer on top.
    expect(await readFile(join(root, 'etc/hostname'), 'utf8'))
      .toBe(await readFile(join(REPO, 'examples/rootfs/etc/hostname'), 'utf8'));
    console.log(`VM base image: import ${(imported.ms / 1000).toFixed(1)} s, buildah build ${(buildMs / 1000).toFixed(1)} s`);
  });
});
