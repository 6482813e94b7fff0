/**
 * The reference check: two layers (the second with whiteouts, an opaque
 * directory and type changes) applied by ocisnap and by Podman itself
 * (containers/storage pkg/archive, `podman pull oci:DIR` + `podman image
 * mount`) must give the same tree.
 */
import { createHash, randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { applyLayer } from '../../src/layers/index.js';
import { sys } from '../../src/sys/native.js';
import { requireCommands, requireRoot } from '../support/host.js';
import { buildTar, type TarSpec } from '../support/tar-builder.js';

const cap = Buffer.from([0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);

const layer1: TarSpec[] = [
  { name: 'etc/', type: 'dir', mtime: 1_600_000_000 },
  { name: 'etc/hostname', content: 'box\n', mtime: 1_600_000_001 },
  { name: 'etc/gone', content: 'bye' },
  { name: 'usr/bin/tool', content: 'bin', mode: 0o4755, xattrs: { 'security.capability': cap } },
  { name: 'usr/bin/alias', type: 'hardlink', linkname: 'usr/bin/tool', mode: 0o4755 },
  { name: 'var/lib/', type: 'dir', mode: 0o700, uid: 100, gid: 101 },
  { name: 'var/lib/state', content: 'old', uid: 100, gid: 101 },
  { name: 'opt/app/old', content: 'old app' },
  { name: 'opt/app/lib/x.so', content: 'x' },
  { name: 'becomes-file/child', content: 'c' },
  { name: 'becomes-dir', content: 'f' },
  { name: 'link', type: 'symlink', linkname: 'etc/hostname' },
  { name: 'dev/null', type: 'char', devmajor: 1, devminor: 3, mode: 0o666 },
];

const layer2: TarSpec[] = [
  { name: 'etc/.wh.gone', content: '' },
  { name: 'opt/app/.wh..wh..opq', content: '' },
  { name: 'opt/app/new', content: 'new app', mtime: 1_650_000_000, mtimeNs: 250_000_000 },
  { name: 'becomes-file', content: 'now a file' },
  { name: 'becomes-dir/', type: 'dir', mode: 0o751 },
  { name: 'becomes-dir/inside', content: 'i' },
  { name: 'link', type: 'symlink', linkname: '/usr/bin/tool' },
  { name: 'var/lib/state', content: 'new', uid: 100, gid: 101, mode: 0o640 },
  { name: 'run/fifo', type: 'fifo', mode: 0o620 },
  { name: 'usr/bin/alias2', type: 'hardlink', linkname: '/usr/bin/tool', mode: 0o4755 },
  { name: 'etc/hostname', type: 'symlink', linkname: '../run/hostname' },
  { name: `deep/${'n'.repeat(150)}/${'m'.repeat(120)}`, content: 'long', mtimeNs: 999_999_999 },
  { name: Buffer.from('caf\u00e9/\u00fcber', 'utf8'), content: 'utf8' },
  { name: 'var/lib/', type: 'dir', mode: 0o710, uid: 100, gid: 101 },
];

function digest(b: Buffer | string): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

/** A minimal OCI image layout (image-spec image-layout.md) with uncompressed layers. */
function writeLayout(dir: string, layers: Buffer[]): void {
  const blobs = join(dir, 'blobs', 'sha256');
  fs.mkdirSync(blobs, { recursive: true });
  const put = (b: Buffer | string) => {
    const d = digest(b);
    fs.writeFileSync(join(blobs, d.slice(7)), b);
    return { digest: d, size: Buffer.byteLength(b) };
  };
  const config = JSON.stringify({
    architecture: 'amd64',
    os: 'linux',
    rootfs: { type: 'layers', diff_ids: layers.map((l) => digest(l)) },
    config: {},
  });
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...put(config) },
    layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...put(l) })),
  });
  const m = put(manifest);
  fs.writeFileSync(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  fs.writeFileSync(
    join(dir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          ...m,
          annotations: { 'org.opencontainers.image.ref.name': 'test' },
        },
      ],
    }),
  );
}

async function mtree(dir: string): Promise<string[]> {
  const r = await execa(
    'bsdtar',
    ['-c', '--format=mtree', '--options=!all,type,mode,uid,gid,size,time,link,device,sha256', '-f', '-', '.'],
    { cwd: dir },
  );
  // Directories get the time of whatever last changed them (whiteouts, implicit parents): compare the rest.
  // The root's mode is the store's choice (containers/storage makes layer roots 0555), not the tar's.
  return r.stdout
    .split('\n')
    .filter((l) => !l.startsWith('#') && !l.startsWith('. '))
    .map((l) => (/ type=dir/.test(l) ? l.replace(/ time=[0-9.]+/, '') : l));
}

let work: string;
const podman = (...args: string[]) =>
  execa('podman', ['--root', join(work, 'store'), '--runroot', join(work, 'run'), '--storage-driver', 'vfs', ...args]);

beforeAll(async () => {
  requireRoot();
  await requireCommands('podman', 'bsdtar');
  // Lowercase only: podman names an oci: image after its path.
  work = join(tmpdir(), `ocisnap-lp-${randomUUID().slice(0, 8)}`);
  await mkdir(work);
});
afterAll(async () => {
  if (!work) return;
  await podman('image', 'umount', '--all').catch(() => {});
  await execa('umount', ['-R', join(work, 'store')], { reject: false });
  await rm(work, { recursive: true, force: true });
});

describe('applyLayer matches Podman', () => {
  it('gives the same tree as podman for two layers with whiteouts', async () => {
    const tars = [buildTar(layer1), buildTar(layer2)];
    const layout = join(work, 'layout');
    writeLayout(layout, tars);
    await podman('pull', '-q', `oci:${layout}:test`);
    const images = await podman('images', '-q', '--no-trunc');
    const id = images.stdout.trim().split('\n')[0]!;
    const theirs = (await podman('image', 'mount', id)).stdout.trim();

    const ours = join(work, 'ours');
    fs.mkdirSync(ours);
    for (const t of tars) await applyLayer(Readable.from([t]), ours, { what: 'layer' });

    const a = await mtree(ours);
    const b = await mtree(theirs);
    expect(a.some((l) => l.startsWith('./opt/app/new '))).toBe(true);
    expect(a).toEqual(b);
    expect(sys.lgetxattr(join(theirs, 'usr/bin/tool'), 'security.capability')).toEqual(cap);
    for (const p of ['usr/bin/tool', 'usr/bin/alias', 'usr/bin/alias2']) {
      expect(sys.lgetxattr(join(ours, p), 'security.capability')).toEqual(
        sys.lgetxattr(join(theirs, p), 'security.capability'),
      );
    }
  });
});
