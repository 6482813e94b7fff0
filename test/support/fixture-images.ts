/**
 * The images of the acceptance test "ocisnap pull == podman pull": one image
 * exercising every layer feature we know of (image-spec layer.md, containers/storage
 * pkg/archive), and an update of it that shares the base layers.
 *
 * Layers of the feature image:
 *  0 base: all entry types and metadata (setuid/setgid/sticky, capabilities, user
 *    xattrs, devices, FIFO, a GNU sparse 1.0 file, long and non-ASCII names,
 *    hardlinks incl. one whose header metadata differs from its target's,
 *    non-root owners, ns mtimes) and the paths later layers remove or replace;
 *  1 middle: changes file content and directory metadata (dir over dir), adds a file
 *    under the dir layer 2 makes opaque (it must vanish too: opaque hides all lower
 *    layers), a hardlink to a file of layer 0;
 *  2 top: whiteouts of a file and a whole directory, an opaque directory whose marker
 *    comes between two new files (both stay: containers/storage keeps what the same
 *    layer unpacked, image-spec says opaque only hides lower layers), a file replaced
 *    by a directory, a directory replaced by a symlink.
 * Every layer lists the parent directories of what it changes (as real builders
 * do), so directory mtimes do not depend on when the extractor ran.
 *
 * What Podman 4.3 makes of it (test/integration/fixtures.test.ts checks each): the
 * store's layer root is 0555; the sparse file is written densely (64 MiB allocated);
 * a hardlink header's mode/owner/mtime land on the shared inode; both files of the
 * opaque layer stay.
 */
import { createHash } from 'node:crypto';
import type { BuiltImage, BuiltIndex, Compression, ImageSpec, LayerSpec, Mtime, Platform } from './image-factory.js';
import {
  buildDockerImage,
  buildImage,
  buildMultiPlatformImage,
  Cap,
  fakePlatformImage,
  fileCapability,
  hostPlatform,
} from './image-factory.js';

/** A few KiB of non-zero, position-dependent bytes. */
function pattern(len: number, seed: number): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = (i * 31 + seed * 7 + (i >> 8)) & 0xff;
  return b;
}

/** Paths (relative, no leading slash) and facts the self-test and the acceptance test check. */
export const Feature = {
  setuid: 'usr/bin/suid-tool',
  setgidDir: 'srv/shared',
  stickyDir: 'tmp',
  capFile: 'usr/bin/ping-cap',
  capValue: fileCapability([Cap.CAP_NET_RAW], true),
  userXattrFile: 'srv/data/notes.txt',
  userXattrDir: 'srv/data',
  userXattr: { name: 'user.ocisnap.comment', value: 'keep me' },
  charDev: { path: 'dev/null', major: 1, minor: 3 },
  blockDev: { path: 'dev/loop-fixture', major: 7, minor: 200 },
  fifo: 'run/fixture.fifo',
  sparse: {
    path: 'var/lib/sparse.img',
    size: 64 * 1024 * 1024,
    data: [
      { offset: 0, bytes: pattern(4096, 1) },
      { offset: 16 * 1024 * 1024 + 512, bytes: pattern(1024, 2) },
      { offset: 40 * 1024 * 1024, bytes: pattern(8192, 3) },
    ],
  },
  longName: `opt/${'long-name-'.repeat(12)}end.txt`,
  deepPath: `opt/deep/${['a'.repeat(60), 'b'.repeat(60), 'c'.repeat(60), 'd'.repeat(60)].join('/')}/leaf.txt`,
  nonAscii: 'srv/café-ñ-日本.txt',
  hardlinks: ['usr/bin/hl-a', 'usr/bin/hl-b'],
  hardlinkHeaderWins: { path: 'usr/share/hl-meta-link', target: 'usr/share/hl-meta-file' },
  crossLayerHardlink: { path: 'usr/bin/hl-c', target: 'usr/bin/tool' },
  absSymlink: { path: 'usr/bin/abs-link', target: '/usr/bin/tool' },
  relSymlink: { path: 'usr/lib/rel-link', target: '../bin/tool' },
  danglingSymlink: { path: 'var/dangling', target: '/nonexistent/target' },
  userOwned: { path: 'home/user/profile', uid: 1000, gid: 1000 },
  nobodyOwned: { path: 'var/nobody', uid: 65534, gid: 65534 },
  nsMtime: { path: 'etc/ns-mtime', mtime: { sec: 1_600_000_000, nsec: 123_456_789 } },
  whiteoutFile: 'var/cache/old-file',
  whiteoutDir: 'var/cache/old-dir',
  keptSibling: 'var/cache/kept',
  opaqueDir: 'etc/opaque.d',
  opaqueLower: ['etc/opaque.d/lower-1', 'etc/opaque.d/sub/lower-2', 'etc/opaque.d/from-middle'],
  opaqueNew: ['etc/opaque.d/new-before-marker', 'etc/opaque.d/new-after-marker'],
  fileToDir: 'srv/replace/file-to-dir',
  fileToDirChild: 'srv/replace/file-to-dir/child',
  dirToLink: { path: 'srv/replace/dir-to-link', target: 'file-to-dir', lowerChild: 'srv/replace/dir-to-link/old' },
  changedFile: { path: 'etc/hostname', content: 'ocisnap-fixture-middle\n' },
} as const;

const t = (sec: number, nsec = 0): Mtime => ({ sec, nsec });

function baseLayer(): LayerSpec {
  return {
    createdBy: 'fixture: base',
    defaultMtime: t(1_704_067_200),
    entries: [
      { type: 'dir', path: 'etc', mtime: t(1_704_067_201, 1) },
      { type: 'file', path: 'etc/hostname', content: 'ocisnap-fixture\n', mtime: t(1_704_067_202, 500_000_000) },
      { type: 'file', path: 'etc/os-release', content: 'ID=ocisnap-fixture\nVERSION_ID=1\n' },
      { type: 'file', path: Feature.nsMtime.path, content: 'ns\n', mtime: Feature.nsMtime.mtime },
      { type: 'dir', path: Feature.opaqueDir, mode: 0o750 },
      { type: 'file', path: Feature.opaqueLower[0], content: 'lower 1\n' },
      { type: 'file', path: Feature.opaqueLower[1], content: 'lower 2\n' },
      { type: 'dir', path: 'usr' },
      { type: 'dir', path: 'usr/bin' },
      { type: 'file', path: 'usr/bin/tool', content: '#!/bin/sh\necho tool\n', mode: 0o755 },
      { type: 'file', path: Feature.setuid, content: '#!/bin/sh\necho suid\n', mode: 0o4755, mtime: t(1_650_000_000, 999_999_999) },
      { type: 'file', path: 'usr/bin/sgid-tool', content: '#!/bin/sh\necho sgid\n', mode: 0o2755, gid: 5 },
      {
        type: 'file',
        path: Feature.capFile,
        content: '#!/bin/sh\necho ping\n',
        mode: 0o755,
        xattrs: { 'security.capability': Feature.capValue },
      },
      { type: 'file', path: Feature.hardlinks[0], content: 'hardlinked content\n', mode: 0o755, mtime: t(1_690_000_000, 42) },
      // Metadata copied from the target, as Go's tar writer (buildah, podman) does.
      { type: 'hardlink', path: Feature.hardlinks[1], target: Feature.hardlinks[0] },
      { type: 'symlink', path: Feature.absSymlink.path, target: Feature.absSymlink.target, mtime: t(1_680_000_000, 7) },
      { type: 'symlink', path: Feature.relSymlink.path, target: Feature.relSymlink.target },
      { type: 'dir', path: 'dev', mode: 0o755 },
      { type: 'char', path: Feature.charDev.path, major: Feature.charDev.major, minor: Feature.charDev.minor, mode: 0o666 },
      { type: 'block', path: Feature.blockDev.path, major: Feature.blockDev.major, minor: Feature.blockDev.minor, mode: 0o660, gid: 6 },
      { type: 'dir', path: 'run' },
      { type: 'fifo', path: Feature.fifo, mode: 0o620 },
      { type: 'dir', path: Feature.stickyDir, mode: 0o1777 },
      { type: 'dir', path: 'srv' },
      { type: 'dir', path: Feature.setgidDir, mode: 0o2775, gid: 1000 },
      { type: 'file', path: `${Feature.setgidDir}/readme`, content: 'shared\n', gid: 1000, mode: 0o664 },
      {
        type: 'dir',
        path: Feature.userXattrDir,
        xattrs: { 'user.ocisnap.dir': 'directory attribute' },
      },
      {
        type: 'file',
        path: Feature.userXattrFile,
        content: 'notes\n',
        xattrs: { [Feature.userXattr.name]: Feature.userXattr.value, 'user.binary': Buffer.from([0, 1, 2, 0xff, 0xfe, 0]) },
      },
      { type: 'file', path: Feature.nonAscii, content: 'non-ascii name\n', mtime: t(1_700_000_000, 1) },
      { type: 'dir', path: 'srv/replace' },
      { type: 'file', path: Feature.fileToDir, content: 'I was a file\n' },
      { type: 'dir', path: Feature.dirToLink.path },
      { type: 'file', path: Feature.dirToLink.lowerChild, content: 'old child\n' },
      { type: 'dir', path: 'home' },
      { type: 'dir', path: 'home/user', mode: 0o700, uid: 1000, gid: 1000 },
      { type: 'file', path: Feature.userOwned.path, content: 'export X=1\n', uid: 1000, gid: 1000, mode: 0o600 },
      { type: 'dir', path: 'var' },
      { type: 'file', path: Feature.nobodyOwned.path, content: 'nobody\n', uid: 65534, gid: 65534 },
      { type: 'symlink', path: Feature.danglingSymlink.path, target: Feature.danglingSymlink.target },
      { type: 'dir', path: 'var/cache' },
      { type: 'file', path: Feature.whiteoutFile, content: 'to be deleted\n' },
      { type: 'file', path: Feature.keptSibling, content: 'kept\n' },
      { type: 'dir', path: Feature.whiteoutDir },
      { type: 'file', path: `${Feature.whiteoutDir}/a`, content: 'a\n' },
      { type: 'file', path: `${Feature.whiteoutDir}/sub/b`, content: 'b\n' },
      { type: 'dir', path: 'var/lib' },
      {
        type: 'sparse',
        path: Feature.sparse.path,
        size: Feature.sparse.size,
        data: [...Feature.sparse.data],
      },
      { type: 'dir', path: 'opt' },
      { type: 'file', path: Feature.longName, content: 'long name\n' },
      { type: 'file', path: Feature.deepPath, content: 'deep path\n' },
      // Here the link's header disagrees with its target: containers/storage
      // pkg/archive createTarFile chowns, chmods and sets the times of the path after
      // link(2), so the header of the last link written wins (GNU tar ignores it).
      { type: 'file', path: Feature.hardlinkHeaderWins.target, content: 'metadata from the link\n', mode: 0o600, mtime: t(1_690_000_001) },
      {
        type: 'hardlink',
        path: Feature.hardlinkHeaderWins.path,
        target: Feature.hardlinkHeaderWins.target,
        mode: 0o640,
        uid: 1000,
        gid: 1000,
        mtime: t(1_690_000_002, 5),
      },
      {
        type: 'file',
        path: 'usr/share/big.bin',
        content: function* () {
          for (let i = 0; i < 16; i++) yield pattern(64 * 1024, i);
        },
      },
    ],
  };
}

function middleLayer(): LayerSpec {
  return {
    createdBy: 'fixture: middle',
    defaultMtime: t(1_706_745_600),
    entries: [
      { type: 'dir', path: 'etc', mtime: t(1_706_745_601, 11) },
      { type: 'file', path: Feature.changedFile.path, content: Feature.changedFile.content, mtime: t(1_706_745_602, 22) },
      // dir over dir: only the metadata changes, the lower contents stay.
      { type: 'dir', path: Feature.opaqueDir, mode: 0o755 },
      { type: 'file', path: Feature.opaqueLower[2], content: 'from middle\n' },
      { type: 'dir', path: 'srv' },
      { type: 'dir', path: Feature.setgidDir, mode: 0o2770, gid: 1000, mtime: t(1_706_745_603, 33) },
      { type: 'dir', path: 'usr' },
      { type: 'dir', path: 'usr/bin' },
      // Same metadata as the lower layer's target (see the hardlink note in the base layer).
      {
        type: 'hardlink',
        path: Feature.crossLayerHardlink.path,
        target: Feature.crossLayerHardlink.target,
        mode: 0o755,
        mtime: t(1_704_067_200),
      },
      { type: 'file', path: 'usr/share/doc/fixture/README', content: 'middle layer\n', uid: 1000, gid: 100 },
    ],
  };
}

function topLayer(): LayerSpec {
  return {
    createdBy: 'fixture: top',
    defaultMtime: t(1_709_251_200),
    entries: [
      { type: 'dir', path: 'var' },
      { type: 'dir', path: 'var/cache', mtime: t(1_709_251_201, 1) },
      { type: 'whiteout', path: Feature.whiteoutFile },
      { type: 'whiteout', path: Feature.whiteoutDir },
      { type: 'dir', path: 'etc' },
      { type: 'dir', path: Feature.opaqueDir, mode: 0o755, mtime: t(1_709_251_202, 2) },
      { type: 'file', path: Feature.opaqueNew[0], content: 'new before marker\n' },
      { type: 'opaque', path: Feature.opaqueDir },
      { type: 'file', path: Feature.opaqueNew[1], content: 'new after marker\n' },
      { type: 'dir', path: 'srv' },
      { type: 'dir', path: 'srv/replace', mtime: t(1_709_251_203, 3) },
      { type: 'dir', path: Feature.fileToDir, mode: 0o711 },
      { type: 'file', path: Feature.fileToDirChild, content: 'child\n' },
      { type: 'symlink', path: Feature.dirToLink.path, target: Feature.dirToLink.target },
    ],
  };
}

function updateTopLayer(): LayerSpec {
  return {
    createdBy: 'fixture: update top',
    defaultMtime: t(1_711_929_600),
    entries: [
      { type: 'dir', path: 'etc' },
      { type: 'file', path: 'etc/os-release', content: 'ID=ocisnap-fixture\nVERSION_ID=2\n' },
      { type: 'dir', path: 'usr' },
      { type: 'dir', path: 'usr/bin' },
      { type: 'file', path: 'usr/bin/tool', content: '#!/bin/sh\necho tool v2\n', mode: 0o755 },
      { type: 'whiteout', path: 'usr/bin/sgid-tool' },
    ],
  };
}

export interface FixtureOptions {
  compression: Compression;
  /** Tag in the layout; defaults 'feature' and 'update'. */
  tag?: string;
  /** Leave the GNU-sparse entry out (for consumers known not to support it yet). Default true. */
  sparse?: boolean;
}

function withoutSparse(l: LayerSpec): LayerSpec {
  return { ...l, entries: l.entries.filter((e) => e.type !== 'sparse') };
}

export function featureImageSpec(opts: FixtureOptions): ImageSpec {
  const base = opts.sparse === false ? withoutSparse(baseLayer()) : baseLayer();
  return {
    compression: opts.compression,
    runConfig: { Env: ['PATH=/usr/bin'], Cmd: ['/usr/bin/tool'], Labels: { 'org.example.fixture': 'feature' } },
    layers: [base, middleLayer(), topLayer()],
  };
}

/** The feature image (3 layers) into the OCI layout `dir`, tagged `opts.tag ?? 'feature'`. */
export async function buildFeatureImage(dir: string, opts: FixtureOptions): Promise<BuiltImage> {
  return buildImage(dir, opts.tag ?? 'feature', featureImageSpec(opts));
}

/**
 * The update: the feature image's base and middle layers (byte-identical, so the
 * same diffIDs and containers/storage layer IDs) plus a different top layer.
 */
export async function buildUpdateImage(dir: string, opts: FixtureOptions): Promise<BuiltImage> {
  const spec = featureImageSpec(opts);
  return buildImage(dir, opts.tag ?? 'update', {
    ...spec,
    runConfig: { ...spec.runConfig, Labels: { 'org.example.fixture': 'update' } },
    layers: [spec.layers[0]!, spec.layers[1]!, updateTopLayer()],
  });
}

/** The feature image with a Docker schema2 manifest (gzip layers) in a skopeo `dir:` directory. */
export async function buildFeatureDockerImage(dir: string, opts: { sparse?: boolean } = {}): Promise<BuiltImage> {
  return buildDockerImage(dir, featureImageSpec({ compression: 'gzip', sparse: opts.sparse }));
}

/** A platform that is not the host's: linux/arm64/v8 on amd64 hosts, linux/amd64 elsewhere. */
export function foreignPlatform(): Platform {
  return hostPlatform().architecture === 'amd64'
    ? { os: 'linux', architecture: 'arm64', variant: 'v8' }
    : { os: 'linux', architecture: 'amd64' };
}

/**
 * An OCI index tagged `opts.tag ?? 'feature-index'`: the feature image for the host
 * platform and a one-layer fake image (a file etc/platform) for foreignPlatform().
 */
export async function buildFeatureIndex(dir: string, opts: FixtureOptions): Promise<BuiltIndex> {
  return buildMultiPlatformImage(dir, opts.tag ?? 'feature-index', [
    featureImageSpec(opts),
    fakePlatformImage(foreignPlatform(), opts.compression),
  ]);
}

/** The sha256 (hex) of the sparse file's full content, holes read as zeros. */
export function sparseFileSha256(): string {
  const full = Buffer.alloc(Feature.sparse.size);
  for (const seg of Feature.sparse.data) Buffer.from(seg.bytes).copy(full, seg.offset);
  return createHash('sha256').update(full).digest('hex');
}
