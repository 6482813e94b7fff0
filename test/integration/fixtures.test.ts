/**
 * Self-test of the acceptance-test fixtures (test/support/image-factory.ts,
 * fixture-images.ts, mtree.ts) against the real tools: Podman pulls the feature
 * image into a btrfs store and the tree it extracts has every feature; GNU tar
 * reads our tars the same way; treeManifest notices small differences; skopeo
 * pushes the images to a real registry byte for byte.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { sys } from '../../src/sys/native.js';
import { createBtrfs, type BtrfsFixture } from '../support/btrfs.js';
import { requireCommands, requireRoot } from '../support/host.js';
import {
  buildFeatureDockerImage,
  buildFeatureImage,
  buildFeatureIndex,
  buildUpdateImage,
  Feature,
  featureImageSpec,
  foreignPlatform,
  sparseFileSha256,
} from '../support/fixture-images.js';
import {
  buildDockerManifestList,
  buildImage,
  buildLayerTar,
  fakePlatformImage,
  pushDir,
  pushLayout,
  type BuiltImage,
} from '../support/image-factory.js';
import { diffManifests, parseManifest, treeManifest, withoutRoot } from '../support/mtree.js';

interface Store {
  root: string;
  runroot: string;
}

let fs: BtrfsFixture;
let work: string;
let storeCount = 0;
const timings: string[] = [];
const built: Record<'gzip' | 'zstd', BuiltImage> = {} as Record<'gzip' | 'zstd', BuiltImage>;
/** treeManifest of Podman's extraction of the gzip feature image. */
let podmanGzipTree = '';

function layoutDir(c: 'gzip' | 'zstd'): string {
  return join(work, `layout-${c}`);
}

async function newStore(): Promise<Store> {
  storeCount++;
  const store = { root: join(fs.mountpoint, `store-${storeCount}`), runroot: join(work, `run-${storeCount}`) };
  await mkdir(store.root, { recursive: true });
  return store;
}

function podman(store: Store, ...args: string[]): ResultPromise {
  return execa('podman', ['--root', store.root, '--runroot', store.runroot, '--storage-driver', 'btrfs', ...args]);
}

async function timedPull(store: Store, source: string, what: string, extra: string[] = []): Promise<string> {
  const t0 = performance.now();
  const r = await podman(store, 'pull', '-q', ...extra, source);
  timings.push(`podman pull ${what}: ${Math.round(performance.now() - t0)} ms`);
  return String(r.stdout).trim();
}

async function mountImage(store: Store, image: string): Promise<string> {
  const r = await podman(store, 'image', 'mount', image);
  return String(r.stdout).trim();
}

function line(m: Map<string, Map<string, string>>, path: string): Map<string, string> {
  const l = m.get(`./${path}`);
  if (l === undefined) throw new Error(`no line for ./${path} in the tree manifest`);
  return l;
}

function sha256Hex(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

beforeAll(async () => {
  requireRoot();
  await requireCommands('podman', 'skopeo', 'tar', 'docker-registry');
  fs = await createBtrfs({ sizeMiB: 1024 });
  // Lower case only: podman names an image pulled from oci:DIR after DIR, and a
  // repository name with upper case letters is refused ("must be lowercase").
  work = join(tmpdir(), `ocisnap-fixtures-${process.pid}-${Date.now().toString(36)}`);
  await mkdir(work);
  for (const c of ['gzip', 'zstd'] as const) {
    const t0 = performance.now();
    built[c] = await buildFeatureImage(layoutDir(c), { compression: c });
    timings.push(`build feature image (${c}): ${Math.round(performance.now() - t0)} ms`);
  }
});

afterAll(async () => {
  console.log(timings.join('\n'));
  await fs?.dispose();
  if (work !== undefined) await rm(work, { recursive: true, force: true });
});

describe('the feature image as Podman extracts it', () => {
  test('podman pulls the gzip image and the tree has every feature', async () => {
    const store = await newStore();
    const id = await timedPull(store, `oci:${layoutDir('gzip')}:feature`, 'oci: gzip feature image');
    expect(`sha256:${id}`).toBe(built.gzip.configDigest);
    const mnt = await mountImage(store, id);
    const t0 = performance.now();
    podmanGzipTree = await treeManifest(mnt);
    timings.push(`treeManifest of the extraction: ${Math.round(performance.now() - t0)} ms`);
    const m = parseManifest(podmanGzipTree);

    // containers/storage drivers/btrfs/btrfs.go Create: a base layer's subvolume root is chmod 0555.
    expect(m.get('.')?.get('mode')).toBe('0555');

    // Whiteouts (layer 2) removed a file and a whole directory, nothing else.
    for (const gone of [Feature.whiteoutFile, Feature.whiteoutDir, `${Feature.whiteoutDir}/sub/b`]) {
      expect(m.has(`./${gone}`), gone).toBe(false);
    }
    expect(line(m, Feature.keptSibling).get('type')).toBe('file');
    for (const p of m.keys()) expect(p.includes('.wh.'), p).toBe(false);

    // Opaque dir: everything from lower layers gone (layer 0 and layer 1), both new files kept.
    for (const gone of [...Feature.opaqueLower, 'etc/opaque.d/sub']) expect(m.has(`./${gone}`), gone).toBe(false);
    for (const kept of Feature.opaqueNew) expect(line(m, kept).get('type')).toBe('file');

    // Type changes across layers.
    expect(line(m, Feature.fileToDir).get('type')).toBe('dir');
    expect(line(m, Feature.fileToDir).get('mode')).toBe('0711');
    expect(line(m, Feature.fileToDirChild).get('type')).toBe('file');
    expect(line(m, Feature.dirToLink.path).get('type')).toBe('symlink');
    expect(line(m, Feature.dirToLink.path).get('link')).toBe(Feature.dirToLink.target);
    expect(m.has(`./${Feature.dirToLink.lowerChild}`)).toBe(false);

    // Modes, owners, special bits.
    expect(line(m, Feature.setuid).get('mode')).toBe('4755');
    expect(line(m, 'usr/bin/sgid-tool').get('mode')).toBe('2755');
    expect(line(m, Feature.setgidDir).get('mode')).toBe('2770'); // layer 1 changed it: dir over dir
    expect(line(m, `${Feature.setgidDir}/readme`).get('gid')).toBe('1000');
    expect(line(m, Feature.stickyDir).get('mode')).toBe('1777');
    expect(line(m, Feature.userOwned.path).get('uid')).toBe('1000');
    expect(line(m, Feature.userOwned.path).get('mode')).toBe('0600');
    expect(line(m, Feature.nobodyOwned.path).get('uid')).toBe('65534');
    expect(line(m, Feature.nobodyOwned.path).get('gid')).toBe('65534');

    // xattrs: the capability survives the chown, user.* on files and directories, binary values.
    expect(line(m, Feature.capFile).get('xattr.security.capability')).toBe(sha256Hex(Feature.capValue));
    expect(sys.lgetxattr(join(mnt, Feature.capFile), 'security.capability')).toEqual(Feature.capValue);
    // What `setcap cap_net_raw+ep` writes (read back with getfattr -n security.capability).
    expect(Feature.capValue.toString('hex')).toBe('0100000200200000000000000000000000000000');
    expect(line(m, Feature.userXattrFile).get(`xattr.${Feature.userXattr.name}`)).toBe(
      sha256Hex(Buffer.from(Feature.userXattr.value)),
    );
    expect(line(m, Feature.userXattrFile).get('xattr.user.binary')).toBe(sha256Hex(Buffer.from([0, 1, 2, 0xff, 0xfe, 0])));
    expect(line(m, Feature.userXattrDir).get('xattr.user.ocisnap.dir')).toBeDefined();

    // Devices and FIFO.
    expect(line(m, Feature.charDev.path).get('type')).toBe('char');
    expect(line(m, Feature.charDev.path).get('dev')).toBe('1,3');
    expect(line(m, Feature.blockDev.path).get('type')).toBe('block');
    expect(line(m, Feature.blockDev.path).get('dev')).toBe('7,200');
    expect(line(m, Feature.blockDev.path).get('gid')).toBe('6');
    expect(line(m, Feature.fifo).get('type')).toBe('fifo');
    expect(line(m, Feature.fifo).get('mode')).toBe('0620');

    // The GNU sparse 1.0 entry: full apparent size and content (holes read as zeros).
    expect(line(m, Feature.sparse.path).get('size')).toBe(String(Feature.sparse.size));
    expect(line(m, Feature.sparse.path).get('sha256')).toBe(sparseFileSha256());
    const du = await execa('du', ['-k', join(mnt, Feature.sparse.path)]);
    timings.push(`sparse file on disk after podman pull: ${du.stdout.split('\t')[0]} KiB allocated of ${Feature.sparse.size / 1024}`);

    // Names: > 100 bytes, a path > 255 bytes, non-ASCII.
    expect(Buffer.byteLength(Feature.longName.split('/').pop()!)).toBeGreaterThan(100);
    expect(Buffer.byteLength(Feature.deepPath)).toBeGreaterThan(255);
    expect(line(m, Feature.longName).get('type')).toBe('file');
    expect(line(m, Feature.deepPath).get('type')).toBe('file');
    expect(line(m, Feature.nonAscii).get('type')).toBe('file');

    // Links: hardlinks within a layer and to a lower layer's file; symlinks kept verbatim.
    expect(line(m, Feature.hardlinks[0]).get('hardlink')).toBe(`./${Feature.hardlinks[0]}`);
    expect(line(m, Feature.hardlinks[1]).get('hardlink')).toBe(`./${Feature.hardlinks[0]}`);
    expect([line(m, Feature.hardlinks[1]).get('mode'), line(m, Feature.hardlinks[1]).get('mtime')]).toEqual([
      '0755',
      '1690000000.000000042',
    ]);
    expect(line(m, Feature.crossLayerHardlink.path).get('hardlink')).toBe(`./${Feature.crossLayerHardlink.path}`);
    expect(line(m, Feature.crossLayerHardlink.target).get('hardlink')).toBe(`./${Feature.crossLayerHardlink.path}`);
    // containers/storage applies a hardlink header's owner, mode and times to the shared inode.
    for (const p of [Feature.hardlinkHeaderWins.path, Feature.hardlinkHeaderWins.target]) {
      const l = line(m, p);
      expect([l.get('mode'), l.get('uid'), l.get('gid'), l.get('mtime')], p).toEqual([
        '0640',
        '1000',
        '1000',
        '1690000002.000000005',
      ]);
    }
    expect(line(m, Feature.absSymlink.path).get('link')).toBe(Feature.absSymlink.target);
    expect(line(m, Feature.relSymlink.path).get('link')).toBe(Feature.relSymlink.target);
    expect(line(m, Feature.danglingSymlink.path).get('link')).toBe(Feature.danglingSymlink.target);

    // Contents and times: layer 1 changed a file; ns mtimes on files, symlinks and directories.
    expect(line(m, Feature.changedFile.path).get('sha256')).toBe(sha256Hex(Buffer.from(Feature.changedFile.content)));
    expect(line(m, Feature.nsMtime.path).get('mtime')).toBe('1600000000.123456789');
    expect(line(m, Feature.absSymlink.path).get('mtime')).toBe('1680000000.000000007');
    expect(line(m, Feature.opaqueDir).get('mtime')).toBe('1709251202.000000002');
    expect(line(m, 'var/cache').get('mtime')).toBe('1709251201.000000001');

    await podman(store, 'image', 'unmount', id);
  });

  test('the zstd image extracts to the same tree as the gzip one', async () => {
    expect(podmanGzipTree).not.toBe('');
    expect(built.zstd.layers.map((l) => l.mediaType)).toEqual(
      Array(3).fill('application/vnd.oci.image.layer.v1.tar+zstd'),
    );
    // Same tars, so the same diffIDs and config: the image ID is the same.
    expect(built.zstd.configDigest).toBe(built.gzip.configDigest);
    expect(built.zstd.layers.map((l) => l.digest)).not.toEqual(built.gzip.layers.map((l) => l.digest));
    const store = await newStore();
    const id = await timedPull(store, `oci:${layoutDir('zstd')}:feature`, 'oci: zstd feature image');
    const layers = JSON.parse(await readFile(join(store.root, 'btrfs-layers', 'layers.json'), 'utf8')) as Array<{
      'compressed-diff-digest': string;
      compression: number;
    }>;
    // containers/storage pkg/archive Compression: Zstd = 4 (Gzip = 2); the blobs kept their digests.
    expect(layers.map((l) => l.compression)).toEqual([4, 4, 4]);
    expect(layers.map((l) => l['compressed-diff-digest'])).toEqual(built.zstd.layers.map((l) => l.digest));
    const tree = await treeManifest(await mountImage(store, id));
    expect(diffManifests(podmanGzipTree, tree, ['gzip', 'zstd'])).toEqual([]);
    await podman(store, 'image', 'unmount', id);
  });

  test('the update image shares the base and middle layers in the store', async () => {
    const update = await buildUpdateImage(layoutDir('gzip'), { compression: 'gzip' });
    expect(update.layers.slice(0, 2)).toEqual(built.gzip.layers.slice(0, 2));
    expect(update.layers[2]!.digest).not.toBe(built.gzip.layers[2]!.digest);
    const store = await newStore();
    await timedPull(store, `oci:${layoutDir('gzip')}:feature`, 'feature (for sharing)');
    await timedPull(store, `oci:${layoutDir('gzip')}:update`, 'update sharing 2 of 3 layers');
    const layers = JSON.parse(await readFile(join(store.root, 'btrfs-layers', 'layers.json'), 'utf8')) as Array<{
      id: string;
    }>;
    expect(layers).toHaveLength(4);
    // containers/image storage_dest.go: the first layer's ID is its diffID hex.
    expect(layers[0]!.id).toBe(built.gzip.layers[0]!.diffId.slice('sha256:'.length));
  });
});

describe('our tars as GNU tar reads them', () => {
  test('GNU tar extracts the base layer to the tree Podman makes of it', async () => {
    const base = featureImageSpec({ compression: 'gzip' }).layers[0]!;
    const layout = join(work, 'layout-base');
    const img = await buildImage(layout, 'base', { compression: 'gzip', layers: [base] });
    const store = await newStore();
    const id = await timedPull(store, `oci:${layout}:base`, 'one-layer base image');
    expect(`sha256:${id}`).toBe(img.configDigest);
    const mnt = await mountImage(store, id);

    const tarFile = join(work, 'base.tar');
    await writeFile(tarFile, buildLayerTar(base));
    const dest = join(fs.mountpoint, 'gnutar-base');
    await mkdir(dest);
    await execa('tar', ['--xattrs', "--xattrs-include=*", '--numeric-owner', '--same-owner', '--delay-directory-restore', '-xpf', tarFile, '-C', dest]);
    // GNU tar ignores a hardlink header's metadata, containers/storage applies it (checked above).
    const hlHeader = new Set([Feature.hardlinkHeaderWins.path, Feature.hardlinkHeaderWins.target].map((p) => `./${p}`));
    const tarTree = await treeManifest(dest, { exclude: (p) => hlHeader.has(p) });
    const podmanTree = await treeManifest(mnt, { exclude: (p) => hlHeader.has(p) });
    expect(diffManifests(withoutRoot(podmanTree), withoutRoot(tarTree), ['podman', 'gnu tar'])).toEqual([]);
    await podman(store, 'image', 'unmount', id);
  });
});

describe('treeManifest notices what differs', () => {
  test('a changed mode, xattr, mtime, content, hardlink or a missing file shows in diffManifests', async () => {
    const tarFile = join(work, 'base-for-diff.tar');
    await writeFile(tarFile, buildLayerTar(featureImageSpec({ compression: 'none' }).layers[0]!));
    const dirs = [join(fs.mountpoint, 'diff-a'), join(fs.mountpoint, 'diff-b')];
    for (const d of dirs) {
      await mkdir(d);
      await execa('tar', ['--xattrs', "--xattrs-include=*", '--numeric-owner', '--delay-directory-restore', '-xpf', tarFile, '-C', d]);
    }
    const [a, b] = dirs as [string, string];
    const before = await treeManifest(a);
    expect(diffManifests(before, await treeManifest(b))).toEqual([]);
    expect(before).toMatch(/^\. type=dir /);

    await execa('chmod', ['0700', join(b, Feature.setuid)]);
    sys.lsetxattr(join(b, Feature.userXattrFile), Feature.userXattr.name, Buffer.from('changed'));
    const { sec, nsec } = Feature.nsMtime.mtime;
    sys.utimensat(sys.constants.AT_FDCWD, join(b, Feature.nsMtime.path), sec, nsec, sec, nsec + 1, sys.constants.AT_SYMLINK_NOFOLLOW);
    await writeFile(join(b, 'etc/os-release'), 'ID=other\nVERSION_ID=1\n');
    // Break the hardlink pair: same content, separate inode.
    await unlink(join(b, Feature.hardlinks[1]));
    await writeFile(join(b, Feature.hardlinks[1]), await readFile(join(b, Feature.hardlinks[0])));
    await unlink(join(b, Feature.nobodyOwned.path));

    const diff = diffManifests(before, await treeManifest(b), ['a', 'b']);
    const about = (path: string, key: string): string[] =>
      diff.filter((d) => d.startsWith(`./${path}: `) && d.includes(`${key}: `));
    expect(about(Feature.setuid, 'mode')).toHaveLength(1);
    expect(about(Feature.userXattrFile, `xattr.${Feature.userXattr.name}`)).toHaveLength(1);
    expect(about(Feature.nsMtime.path, 'mtime')[0]).toContain('1600000000.123456789 ≠ 1600000000.123456790');
    expect(about('etc/os-release', 'sha256')).toHaveLength(1);
    expect(about(Feature.hardlinks[0], 'hardlink')).toHaveLength(1);
    expect(about(Feature.hardlinks[1], 'hardlink')).toHaveLength(1);
    expect(diff.filter((d) => d.startsWith(`only in a: ./${Feature.nobodyOwned.path} `))).toHaveLength(1);
    // Writing files changed their directories' mtimes too; nothing else differs.
    const expectedPaths = new Set([
      Feature.setuid,
      Feature.userXattrFile,
      Feature.nsMtime.path,
      'etc/os-release',
      ...Feature.hardlinks,
      Feature.nobodyOwned.path,
      'usr/bin',
      'var',
      'etc',
    ]);
    for (const d of diff) {
      const path = d.replace(/^only in [ab]: /, '').split(/:? /)[0]!.slice(2);
      expect(expectedPaths.has(path), d).toBe(true);
    }
  });
});

/** A CNCF distribution registry on 127.0.0.1 for the push tests. */
async function startRegistry(dir: string): Promise<{ host: string; stop(): Promise<void> }> {
  const port = await new Promise<number>((resolve, reject) => {
    const srv = createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => resolve(typeof addr === 'object' && addr !== null ? addr.port : 0));
    });
  });
  const config = join(dir, 'registry.yml');
  await writeFile(
    config,
    [
      'version: 0.1',
      'log:',
      '  level: error',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${join(dir, 'data')}`,
      'http:',
      `  addr: 127.0.0.1:${port}`,
      '',
    ].join('\n'),
  );
  const proc = execa('docker-registry', ['serve', config], { reject: false });
  const host = `127.0.0.1:${port}`;
  for (let i = 0; ; i++) {
    const ok = await fetch(`http://${host}/v2/`).then(
      (r) => r.ok,
      () => false,
    );
    if (ok) break;
    if (i > 100 || proc.exitCode !== null) throw new Error(`docker-registry did not start on ${host}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    host,
    async stop() {
      proc.kill('SIGTERM');
      await proc;
    },
  };
}

async function rawManifestDigest(ref: string): Promise<string> {
  const r = await execa('skopeo', ['inspect', '--raw', '--tls-verify=false', ref], { encoding: 'buffer' });
  return `sha256:${sha256Hex(r.stdout)}`;
}

describe('pushing to a registry keeps every byte', () => {
  test('gzip, zstd, an OCI index, a Docker schema2 image and manifest list arrive unchanged; podman pulls them', async () => {
    const regDir = join(work, 'registry');
    await mkdir(regDir);
    const reg = await startRegistry(regDir);
    try {
      for (const c of ['gzip', 'zstd'] as const) {
        const ref = `docker://${reg.host}/fixture/${c}:feature`;
        await pushLayout(layoutDir(c), 'feature', ref);
        expect(await rawManifestDigest(ref)).toBe(built[c].manifestDigest);
      }

      const index = await buildFeatureIndex(join(work, 'layout-index'), { compression: 'zstd' });
      const indexRef = `docker://${reg.host}/fixture/index:1`;
      await pushLayout(join(work, 'layout-index'), 'feature-index', indexRef, { all: true });
      expect(await rawManifestDigest(indexRef)).toBe(index.indexDigest);
      for (const img of index.images) {
        expect(await rawManifestDigest(`docker://${reg.host}/fixture/index@${img.manifestDigest}`)).toBe(img.manifestDigest);
      }

      const docker = await buildFeatureDockerImage(join(work, 'dir-docker'));
      const dockerRef = `docker://${reg.host}/fixture/docker:feature`;
      await pushDir(join(work, 'dir-docker'), dockerRef);
      expect(await rawManifestDigest(dockerRef)).toBe(docker.manifestDigest);
      expect(docker.manifestMediaType).toBe('application/vnd.docker.distribution.manifest.v2+json');

      const list = await buildDockerManifestList(join(work, 'dir-list'), [
        featureImageSpec({ compression: 'gzip' }),
        fakePlatformImage(foreignPlatform()),
      ]);
      const listRef = `docker://${reg.host}/fixture/list:1`;
      await pushDir(join(work, 'dir-list'), listRef, { all: true });
      expect(await rawManifestDigest(listRef)).toBe(list.indexDigest);
      expect(list.indexMediaType).toBe('application/vnd.docker.distribution.manifest.list.v2+json');

      // The foreign half of each index is a real image for its platform.
      for (const [ref, fake] of [
        [`${reg.host}/fixture/index:1`, index.images[1]!],
        [`${reg.host}/fixture/list:1`, list.images[1]!],
      ] as const) {
        const store = await newStore();
        const platformArgs = ['--arch', fake.platform.architecture];
        if (fake.platform.variant !== undefined) platformArgs.push('--variant', fake.platform.variant);
        const id = await timedPull(store, `docker://${ref}`, `foreign platform from ${ref}`, ['--tls-verify=false', ...platformArgs]);
        expect(`sha256:${id}`).toBe(fake.configDigest);
      }

      // Podman picks the host's manifest from each index. Podman checks every layer
      // against its diffID, so the same image ID means the same tars; one tree
      // comparison (zstd over the network) is enough. A store each: the image ID is
      // the same, a shared store would not pull again.
      for (const [ref, what] of [
        [`${reg.host}/fixture/zstd:feature`, 'registry zstd'],
        [`${reg.host}/fixture/index:1`, 'registry OCI index (zstd)'],
        [`${reg.host}/fixture/docker:feature`, 'registry Docker schema2 (gzip)'],
        [`${reg.host}/fixture/list:1`, 'registry Docker manifest list (gzip)'],
      ] as const) {
        const store = await newStore();
        const id = await timedPull(store, `docker://${ref}`, what, ['--tls-verify=false']);
        expect(`sha256:${id}`).toBe(built.gzip.configDigest);
        if (what === 'registry zstd') {
          const tree = await treeManifest(await mountImage(store, id));
          expect(diffManifests(podmanGzipTree, tree, ['oci: gzip', what])).toEqual([]);
          await podman(store, 'image', 'unmount', id);
        }
      }
    } finally {
      await reg.stop();
    }
  });
});
