/**
 * The benchmark's OS images, built once and cached (BENCH_CACHE, default
 * /var/tmp/ocisnap-bench-cache):
 * - a Debian bookworm root filesystem with systemd and a kernel (debootstrap
 *   from Debian's mirror), the slow step, done once;
 * - layers cut from it with GNU tar (pax, sorted names, numeric owners, xattrs,
 *   no atime/ctime records, so the same rootfs always gives the same bytes),
 *   each compressed with `gzip -6 -n` and with `zstd -3`, as a registry would
 *   serve an OS image built in several steps;
 * - a top "site" layer of about 5 MiB (incompressible, derived from a version
 *   seed) that differs between version 1 and version 2 of the image, so an
 *   update pull fetches and applies exactly that layer;
 * - an OCI image layout (image-spec image-layout.md) holding the four images
 *   `1-gzip`, `2-gzip`, `1-zstd`, `2-zstd`, pushed to the registry by skopeo.
 */
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, mkdirSync, readdirSync, renameSync, rmSync, utimesSync, writeFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { execa } from 'execa';

/** Bump when the image recipe changes: a different key rebuilds the cached layout. */
const recipeVersion = 'v3';

const debootstrapPackages = [
  'systemd', 'systemd-sysv', 'udev', 'dbus', 'kmod', 'linux-image-amd64', 'iproute2', 'ifupdown', 'procps',
  'less', 'vim-tiny', 'openssh-server', 'ca-certificates', 'curl', 'btrfs-progs',
];
/** Installed with apt in the chroot afterwards (debootstrap's resolver is weaker): more files, as a real OS has. */
const extraPackages = ['python3', 'perl', 'git', 'man-db', 'manpages', 'iptables', 'nftables', 'sudo', 'rsync'];

export type Compression = 'gzip' | 'zstd';
export const compressions: Compression[] = ['gzip', 'zstd'];

export interface BenchLayer {
  name: string;
  /** Uncompressed tar in the cache (for the `tar -x` limit). */
  tarPath: string;
  tarSize: number;
  diffId: string;
  blobs: Record<Compression, { digest: string; size: number; path: string }>;
}

export interface BenchImages {
  layoutDir: string;
  /** tag → layers, bottom first (tags `1-gzip`, `2-gzip`, `1-zstd`, `2-zstd`). */
  layers: Record<'1' | '2', BenchLayer[]>;
  files: number;
}

const layerSpecs: Array<{ name: string; include: string[]; createdBy: string }> = [
  { name: 'kernel', include: ['usr/lib/modules', 'boot'], createdBy: 'RUN apt-get install linux-image-amd64' },
  { name: 'libs', include: ['usr/lib/x86_64-linux-gnu'], createdBy: 'RUN apt-get install systemd ...' },
  { name: 'share', include: ['usr/share'], createdBy: 'RUN apt-get install ... (usr/share)' },
];
/** Excluded from the base layer: the other layers' trees; from every layer: pseudo filesystems. */
const alwaysExcluded = ['dev/*', 'proc/*', 'sys/*', 'run/*', 'tmp/*', 'var/cache/apt/*.bin', 'var/lib/apt/lists/*'];

const pinnedMtime = new Date('2025-05-20T00:00:00Z');

function log(msg: string): void {
  process.stdout.write(`bench: ${msg}\n`);
}

async function ensureRootfs(cache: string): Promise<string> {
  const rootfs = join(cache, 'rootfs');
  if (existsSync(join(cache, 'rootfs.done'))) return rootfs;
  const tmp = join(cache, 'rootfs.tmp');
  rmSync(tmp, { recursive: true, force: true });
  log(`debootstrap bookworm with systemd and a kernel into ${rootfs} (once; a few minutes)`);
  const t0 = Date.now();
  await execa(
    'debootstrap',
    ['--variant=minbase', `--include=${debootstrapPackages.join(',')}`, 'bookworm', tmp, 'http://deb.debian.org/debian'],
    { stdout: { file: join(cache, 'debootstrap.log') }, stderr: { file: join(cache, 'debootstrap.err') }, buffer: false },
  );
  await execa(
    'chroot',
    [tmp, 'sh', '-c', `apt-get update -q && apt-get install -y -q --no-install-recommends ${extraPackages.join(' ')} && apt-get clean`],
    { env: { DEBIAN_FRONTEND: 'noninteractive' }, stdout: { file: join(cache, 'apt.log') }, stderr: { file: join(cache, 'apt.log') }, buffer: false },
  );
  rmSync(rootfs, { recursive: true, force: true });
  renameSync(tmp, rootfs);
  writeFileSync(join(cache, 'rootfs.done'), `${new Date().toISOString()}\n`);
  log(`debootstrap done in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  return rootfs;
}

async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  await pipeline(createReadStream(path, { highWaterMark: 1 << 20 }), h);
  return `sha256:${h.digest('hex')}`;
}

const tarCommon = [
  '--format=posix',
  '--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime',
  '--sort=name',
  '--numeric-owner',
  '--xattrs',
  '--xattrs-include=*',
  '--anchored',
  ...alwaysExcluded.map((e) => `--exclude=${e}`),
];

async function tarLayer(dir: string, out: string, include: string[], exclude: string[] = []): Promise<void> {
  await execa('tar', ['--create', '--file', out, ...tarCommon, ...exclude.map((e) => `--exclude=${e}`), '-C', dir, ...include]);
}

/** A deterministic pseudo-random byte string (sha256 in counter mode): incompressible, reproducible. */
function seededBytes(seed: string, size: number): Buffer {
  const out = Buffer.alloc(size);
  for (let off = 0, i = 0; off < size; i++) {
    off += createHash('sha256').update(`${seed}/${i}`).digest().copy(out, off);
  }
  return out;
}

/** The top layer's tree: ~5 MiB of application files and a release file, per version. */
function writeSiteTree(dir: string, version: string): void {
  rmSync(dir, { recursive: true, force: true });
  const app = join(dir, 'usr/local/lib/bench-app');
  mkdirSync(app, { recursive: true });
  mkdirSync(join(dir, 'etc'), { recursive: true });
  for (let i = 0; i < 40; i++) {
    writeFileSync(join(app, `part-${String(i).padStart(2, '0')}.bin`), seededBytes(`bench-app ${version} ${i}`, 128 * 1024));
  }
  writeFileSync(join(dir, 'etc/bench-release'), `BENCH_IMAGE_VERSION=${version}\n`);
  for (const p of [...readdirSync(app).map((f) => join(app, f)), app, join(dir, 'usr/local/lib'), join(dir, 'usr/local'), join(dir, 'usr'), join(dir, 'etc/bench-release'), join(dir, 'etc')]) {
    utimesSync(p, pinnedMtime, pinnedMtime);
  }
}

async function compressTo(tar: string, compression: Compression, out: string): Promise<void> {
  const cmd = compression === 'gzip' ? 'gzip -6 -n -c "$1" > "$2"' : 'zstd -3 -q -f -T1 "$1" -o "$2"';
  await execa('sh', ['-c', cmd, 'sh', tar, out]);
}

async function buildLayer(layout: string, tarsDir: string, name: string, make: (out: string) => Promise<void>): Promise<BenchLayer> {
  const tarPath = join(tarsDir, `${name}.tar`);
  await make(tarPath);
  const diffId = await sha256File(tarPath);
  const blobs = {} as BenchLayer['blobs'];
  await Promise.all(
    compressions.map(async (c) => {
      const tmp = join(layout, `tmp-${name}.${c}`);
      await compressTo(tarPath, c, tmp);
      const digest = await sha256File(tmp);
      const path = join(layout, 'blobs/sha256', digest.slice('sha256:'.length));
      renameSync(tmp, path);
      blobs[c] = { digest, size: statSync(path).size, path };
    }),
  );
  return { name, tarPath, tarSize: statSync(tarPath).size, diffId, blobs };
}

function writeBlob(layout: string, bytes: Buffer): { digest: string; size: number } {
  const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
  writeFileSync(join(layout, 'blobs/sha256', digest.slice(7)), bytes);
  return { digest, size: bytes.length };
}

const mediaTypes = {
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  config: 'application/vnd.oci.image.config.v1+json',
  layer: { gzip: 'application/vnd.oci.image.layer.v1.tar+gzip', zstd: 'application/vnd.oci.image.layer.v1.tar+zstd' },
} as const;

function writeImage(layout: string, layers: BenchLayer[], c: Compression, version: string) {
  const created = pinnedMtime.toISOString();
  const config = Buffer.from(
    JSON.stringify({
      created,
      architecture: 'amd64',
      os: 'linux',
      config: { Cmd: ['/sbin/init'], Labels: { 'org.opencontainers.image.version': version, 'containers.bootc': '1' } },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
      history: layers.map((l) => ({ created, created_by: `bench layer ${l.name}` })),
    }),
  );
  const cfg = writeBlob(layout, config);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: mediaTypes.manifest,
      config: { mediaType: mediaTypes.config, digest: cfg.digest, size: cfg.size },
      layers: layers.map((l) => ({ mediaType: mediaTypes.layer[c], digest: l.blobs[c].digest, size: l.blobs[c].size })),
    }),
  );
  const m = writeBlob(layout, manifest);
  return {
    mediaType: mediaTypes.manifest,
    digest: m.digest,
    size: m.size,
    annotations: { 'org.opencontainers.image.ref.name': `${version}-${c}` },
  };
}

export async function ensureImages(cache: string): Promise<BenchImages> {
  mkdirSync(cache, { recursive: true });
  const rootfs = await ensureRootfs(cache);
  const layout = join(cache, 'layout');
  const tarsDir = join(cache, 'tars');
  const doneFile = join(cache, `layout-${recipeVersion}.json`);
  if (existsSync(doneFile)) {
    const { readFileSync } = await import('node:fs');
    return JSON.parse(readFileSync(doneFile, 'utf8')) as BenchImages;
  }
  log('building the image layers (once; gzip -6 and zstd -3 of every layer)');
  const t0 = Date.now();
  rmSync(layout, { recursive: true, force: true });
  rmSync(tarsDir, { recursive: true, force: true });
  mkdirSync(join(layout, 'blobs/sha256'), { recursive: true });
  mkdirSync(tarsDir, { recursive: true });

  const top = readdirSync(rootfs).sort();
  const base = await buildLayer(layout, tarsDir, 'base', (out) =>
    tarLayer(rootfs, out, top, layerSpecs.flatMap((s) => s.include.flatMap((p) => [p, `${p}/*`]))),
  );
  const mid: BenchLayer[] = [];
  for (const spec of layerSpecs) {
    mid.push(await buildLayer(layout, tarsDir, spec.name, (out) => tarLayer(rootfs, out, spec.include.filter((p) => existsSync(join(rootfs, p))))));
  }
  const site: Record<'1' | '2', BenchLayer> = {} as Record<'1' | '2', BenchLayer>;
  for (const v of ['1', '2'] as const) {
    const dir = join(cache, `site-${v}`);
    writeSiteTree(dir, v);
    site[v] = await buildLayer(layout, tarsDir, `site-${v}`, (out) => tarLayer(dir, out, ['etc', 'usr']));
  }
  const layers = { '1': [base, ...mid, site['1']], '2': [base, ...mid, site['2']] };
  const manifests = [];
  for (const c of compressions) for (const v of ['1', '2'] as const) manifests.push(writeImage(layout, layers[v], c, v));
  writeFileSync(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(
    join(layout, 'index.json'),
    JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests }),
  );
  const { stdout } = await execa('sh', ['-c', `find ${rootfs} -xdev | wc -l`]);
  const images: BenchImages = { layoutDir: layout, layers, files: Number(stdout.trim()) };
  writeFileSync(doneFile, JSON.stringify(images, null, 2));
  log(`layers built in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  return images;
}

export function describeImages(images: BenchImages): string {
  const mib = (n: number) => (n / 1048576).toFixed(1);
  const rows = images.layers['1'].map(
    (l) => `| ${l.name} | ${mib(l.tarSize)} | ${mib(l.blobs.gzip.size)} | ${mib(l.blobs.zstd.size)} |`,
  );
  const s2 = images.layers['2'].at(-1)!;
  rows.push(`| ${s2.name} (update) | ${mib(s2.tarSize)} | ${mib(s2.blobs.gzip.size)} | ${mib(s2.blobs.zstd.size)} |`);
  const sum = (k: (l: BenchLayer) => number) => mib(images.layers['1'].reduce((a, l) => a + k(l), 0));
  rows.push(`| **image v1** | ${sum((l) => l.tarSize)} | ${sum((l) => l.blobs.gzip.size)} | ${sum((l) => l.blobs.zstd.size)} |`);
  return [
    `Image: Debian bookworm (debootstrap minbase + ${[...debootstrapPackages, ...extraPackages].join(', ')}), ${images.files} files, ${images.layers['1'].length} layers:`,
    '',
    '| layer | tar MiB | gzip -6 MiB | zstd -3 MiB |',
    '|---|---:|---:|---:|',
    ...rows,
  ].join('\n');
}
