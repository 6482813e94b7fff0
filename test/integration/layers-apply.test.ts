/**
 * applyLayer on a real btrfs filesystem, as root: every entry type with its
 * metadata, a second layer with whiteouts and replacements, and a comparison
 * with bsdtar's extraction of the same tar (mtree manifests).
 */
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { gzipSync } from 'node:zlib';
import { DigestMismatchError } from '../../src/errors.js';
import { LayerApplyError, applyLayer, decompressStream } from '../../src/layers/index.js';
import { createVerifier } from '../../src/oci/digest.js';
import { sys } from '../../src/sys/native.js';
import { createBtrfs, type BtrfsFixture } from '../support/btrfs.js';
import { requireCommands } from '../support/host.js';
import { buildTar, type TarSpec } from '../support/tar-builder.js';

let fx: BtrfsFixture;
let n = 0;

beforeAll(async () => {
  await requireCommands('bsdtar', 'tar', 'btrfs');
  fx = await createBtrfs({ sizeMiB: 512 });
});
afterAll(async () => {
  await fx?.dispose();
});

async function newRoot(): Promise<string> {
  const root = join(fx.mountpoint, `root-${++n}`);
  await execa('btrfs', ['subvolume', 'create', root]);
  return root;
}

function apply(tar: Buffer, root: string) {
  return applyLayer(Readable.from([tar]), root, { what: 'layer test' });
}

// VFS cap v2: CAP_NET_BIND_SERVICE (bit 10) permitted+effective.
const capability = Buffer.from([0x01, 0x00, 0x00, 0x02, 0x00, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
const longName = `${'d'.repeat(120)}/${'f'.repeat(130)}`;
const nonAscii = Buffer.from('caf\u00e9-\u65e5\u672c', 'utf8');
const latin1Name = Buffer.from([0x6e, 0xe9, 0xff]); // not valid UTF-8

const everyType: TarSpec[] = [
  { name: './', type: 'dir', mode: 0o755, mtime: 1_600_000_000 },
  { name: 'etc/', type: 'dir', mode: 0o755, mtime: 1_600_000_100, mtimeNs: 5 },
  { name: 'etc/passwd', content: 'root:x:0:0::/root:/bin/sh\n', mode: 0o644, mtime: 1_650_000_000, mtimeNs: 123456789 },
  {
    name: 'usr/bin/ping',
    content: 'ELF'.repeat(5000),
    mode: 0o4755,
    uid: 0,
    gid: 0,
    xattrs: { 'security.capability': capability, 'user.note': 'hello' },
  },
  { name: 'usr/bin/wall', content: 'w', mode: 0o2755, uid: 0, gid: 5 },
  { name: 'tmp/', type: 'dir', mode: 0o1777 },
  { name: 'home/user/', type: 'dir', mode: 0o700, uid: 1000, gid: 1000 },
  { name: 'home/user/file', content: 'mine', mode: 0o600, uid: 1000, gid: 1001 },
  { name: 'etc/localtime', type: 'symlink', linkname: '/usr/share/zoneinfo/UTC', uid: 3, gid: 4, mtime: 1_500_000_000 },
  { name: 'etc/passwd-link', type: 'hardlink', linkname: 'etc/passwd', mode: 0o644, mtime: 1_650_000_000, mtimeNs: 123456789 },
  { name: 'dev/null', type: 'char', devmajor: 1, devminor: 3, mode: 0o666 },
  { name: 'dev/loop0', type: 'block', devmajor: 7, devminor: 0, mode: 0o660, gid: 6 },
  { name: 'run/initctl', type: 'fifo', mode: 0o600 },
  { name: longName, content: 'long', mode: 0o644 },
  { name: `gnu-${'g'.repeat(200)}`, content: 'gnu long', longNames: 'gnu' },
  { name: `link-${'k'.repeat(200)}`, type: 'symlink', linkname: `/target-${'t'.repeat(200)}`, longNames: 'gnu' },
  { name: nonAscii, content: 'utf8' },
  { name: latin1Name, content: 'latin1' },
  { name: 'big', content: Buffer.alloc(3 * 1024 * 1024 + 7, 0x5a) },
];

describe('applyLayer, one layer with every entry type', () => {
  let root: string;
  let tar: Buffer;
  beforeAll(async () => {
    root = await newRoot();
    tar = buildTar(everyType, { trailing: Buffer.alloc(10 * 512) });
  });

  it('reports the diffID of every byte of the stream, the size and the entry count', async () => {
    const r = await apply(tar, root);
    expect(r.diffId).toBe(`sha256:${createHash('sha256').update(tar).digest('hex')}`);
    expect(r.size).toBe(tar.length);
    expect(r.entries).toBe(everyType.length);
  });

  it('writes regular files with content, mode, owner and nanosecond mtime', () => {
    const p = join(root, 'etc/passwd');
    const st = fs.lstatSync(p, { bigint: true });
    expect(Number(st.mode & 0o7777n)).toBe(0o644);
    expect(st.mtimeNs).toBe(1_650_000_000_123_456_789n);
    expect(st.atimeNs).toBe(1_650_000_000_123_456_789n);
    expect(fs.readFileSync(p, 'utf8')).toBe('root:x:0:0::/root:/bin/sh\n');
    expect(fs.readFileSync(join(root, 'big')).equals(Buffer.alloc(3 * 1024 * 1024 + 7, 0x5a))).toBe(true);
  });

  it('keeps setuid/setgid/sticky bits, owners and xattrs including security.capability', () => {
    const ping = fs.lstatSync(join(root, 'usr/bin/ping'));
    expect(ping.mode & 0o7777).toBe(0o4755);
    expect(sys.lgetxattr(join(root, 'usr/bin/ping'), 'security.capability')).toEqual(capability);
    expect(sys.lgetxattr(join(root, 'usr/bin/ping'), 'user.note')?.toString()).toBe('hello');
    const wall = fs.lstatSync(join(root, 'usr/bin/wall'));
    expect([wall.mode & 0o7777, wall.uid, wall.gid]).toEqual([0o2755, 0, 5]);
    expect(fs.lstatSync(join(root, 'tmp')).mode & 0o7777).toBe(0o1777);
    const home = fs.lstatSync(join(root, 'home/user'));
    expect([home.mode & 0o7777, home.uid, home.gid]).toEqual([0o700, 1000, 1000]);
    const f = fs.lstatSync(join(root, 'home/user/file'));
    expect([f.uid, f.gid]).toEqual([1000, 1001]);
  });

  it('creates symlinks (not followed), hardlinks, devices and fifos', () => {
    const l = fs.lstatSync(join(root, 'etc/localtime'));
    expect(l.isSymbolicLink()).toBe(true);
    expect(fs.readlinkSync(join(root, 'etc/localtime'))).toBe('/usr/share/zoneinfo/UTC');
    expect([l.uid, l.gid, l.mtimeMs]).toEqual([3, 4, 1_500_000_000_000]);
    expect(fs.lstatSync(join(root, 'etc/passwd-link')).ino).toBe(fs.lstatSync(join(root, 'etc/passwd')).ino);
    expect(fs.lstatSync(join(root, 'etc/passwd')).nlink).toBe(2);
    const nul = fs.lstatSync(join(root, 'dev/null'));
    expect(nul.isCharacterDevice()).toBe(true);
    expect([nul.rdev >> 8, nul.rdev & 0xff, nul.mode & 0o7777]).toEqual([1, 3, 0o666]);
    const loop = fs.lstatSync(join(root, 'dev/loop0'));
    expect(loop.isBlockDevice()).toBe(true);
    expect([loop.rdev >> 8, loop.rdev & 0xff, loop.gid]).toEqual([7, 0, 6]);
    expect(fs.lstatSync(join(root, 'run/initctl')).isFIFO()).toBe(true);
  });

  it('handles PAX and GNU long names, UTF-8 and non-UTF-8 names byte for byte', () => {
    expect(fs.readFileSync(join(root, longName), 'utf8')).toBe('long');
    expect(fs.readFileSync(join(root, `gnu-${'g'.repeat(200)}`), 'utf8')).toBe('gnu long');
    expect(fs.readlinkSync(join(root, `link-${'k'.repeat(200)}`))).toBe(`/target-${'t'.repeat(200)}`);
    expect(fs.readFileSync(join(root, nonAscii.toString()), 'utf8')).toBe('utf8');
    const names = fs.readdirSync(root, { encoding: 'buffer' });
    const raw = names.find((b) => b.equals(latin1Name));
    expect(raw).toBeDefined();
    expect(fs.readFileSync(Buffer.concat([Buffer.from(`${root}/`), latin1Name]), 'utf8')).toBe('latin1');
  });

  it('sets directory times last, root included', () => {
    expect(fs.lstatSync(join(root, 'etc'), { bigint: true }).mtimeNs).toBe(1_600_000_100_000_000_005n);
    expect(fs.lstatSync(root).mtimeMs).toBe(1_600_000_000_000);
  });
});

describe('applyLayer, a second layer over the first', () => {
  it('applies whiteouts, opaque directories and replacements', async () => {
    const root = await newRoot();
    await apply(
      buildTar([
        { name: 'a/', type: 'dir' },
        { name: 'a/keep', content: 'k' },
        { name: 'a/gone', content: 'g' },
        { name: 'a/sub/deep', content: 'd' },
        { name: 'opq/', type: 'dir', mode: 0o750 },
        { name: 'opq/old1', content: '1' },
        { name: 'opq/olddir/x', content: 'x' },
        { name: 'dir2file/inner', content: 'i' },
        { name: 'file2dir', content: 'f' },
        { name: 'link2dir', type: 'symlink', linkname: 'a' },
        { name: 'gonedir/x', content: 'x' },
        { name: 'hard', content: 'shared' },
        { name: 'hard2', type: 'hardlink', linkname: 'hard' },
      ]),
      root,
    );
    await apply(
      buildTar([
        // This layer adds opq/new before the opaque marker (order in a tar is not guaranteed).
        { name: 'opq/new', content: 'n' },
        { name: 'opq/.wh..wh..opq', content: '' },
        { name: 'opq/newdir/y', content: 'y' },
        { name: 'a/.wh.gone', content: '' },
        { name: '.wh.gonedir', content: '' },
        { name: 'a/.wh.notthere', content: '' },
        { name: 'dir2file', content: 'now a file' },
        { name: 'file2dir/', type: 'dir' },
        { name: 'file2dir/child', content: 'c' },
        { name: 'link2dir/', type: 'dir', mode: 0o711 },
        { name: 'hard', content: 'replaced' },
        { name: '.wh..wh.plnk/123.456', content: 'aufs' },
      ]),
      root,
    );
    const ls = (p: string) => fs.readdirSync(join(root, p)).sort();
    expect(ls('a')).toEqual(['keep', 'sub']);
    expect(ls('opq')).toEqual(['new', 'newdir']);
    expect(fs.lstatSync(join(root, 'opq')).mode & 0o7777).toBe(0o750);
    expect(fs.existsSync(join(root, 'gonedir'))).toBe(false);
    expect(fs.readFileSync(join(root, 'dir2file'), 'utf8')).toBe('now a file');
    expect(ls('file2dir')).toEqual(['child']);
    const l2d = fs.lstatSync(join(root, 'link2dir'));
    expect([l2d.isDirectory(), l2d.mode & 0o7777]).toEqual([true, 0o711]);
    expect(ls('link2dir')).toEqual([]);
    expect(fs.readFileSync(join(root, 'hard'), 'utf8')).toBe('replaced');
    // Replacing one name of a hardlinked file must not change the other.
    expect(fs.readFileSync(join(root, 'hard2'), 'utf8')).toBe('shared');
    expect(fs.existsSync(join(root, '.wh..wh.plnk'))).toBe(false);
    expect(ls('.').filter((x) => x.startsWith('.wh.'))).toEqual([]);
  });
});

describe('applyLayer compared with bsdtar', () => {
  it('produces the same tree as bsdtar -x --xattrs --numeric-owner -p (mtree)', async () => {
    const specs = everyType.filter((s) => !Buffer.isBuffer(s.name) && !s.name.startsWith('link-'));
    const tar = buildTar(specs);
    const explicitDirs = new Set(
      specs.filter((s) => s.type === 'dir' && s.name !== './').map((s) => `./${String(s.name).replace(/\/$/, '')}`),
    );
    const ours = await newRoot();
    await apply(tar, ours);
    const theirs = await newRoot();
    await execa('bsdtar', ['-x', '--xattrs', '--numeric-owner', '-p', '-f', '-', '-C', theirs], { input: tar });
    const mtree = async (dir: string) => {
      const r = await execa(
        'bsdtar',
        ['-c', '--format=mtree', '--options=!all,type,mode,uid,gid,size,time,link,device,sha256', '-f', '-', '.'],
        { cwd: dir },
      );
      // Directories the tar does not list (made as parents) and "." get the time of extraction
      // (bsdtar leaves "." alone): compare everything but their times.
      return r.stdout
        .split('\n')
        .filter((l) => !l.startsWith('#'))
        .map((l) => (explicitDirs.has(l.split(' ')[0]!) ? l : l.replace(/ time=[0-9.]+(?=.* type=dir)/, '')));
    };
    const a = await mtree(ours);
    const b = await mtree(theirs);
    expect(a.length).toBeGreaterThan(specs.length);
    expect(a).toEqual(b);
    // xattrs too (mtree does not carry them).
    expect(sys.lgetxattr(join(ours, 'usr/bin/ping'), 'security.capability')).toEqual(
      sys.lgetxattr(join(theirs, 'usr/bin/ping'), 'security.capability'),
    );
  });
});

describe('applyLayer with GNU tar sparse files', () => {
  for (const flags of [
    ['--format=posix'], // PAX sparse 1.0
    ['--format=posix', '--sparse-version=0.1'],
    ['--format=posix', '--sparse-version=0.0'],
    ['--format=gnu'], // old GNU 'S' headers
  ]) {
    it(`keeps holes as holes (tar --sparse ${flags.join(' ')})`, async () => {
      const src = fs.mkdtempSync(join(fx.mountpoint, 'sparse-src-'));
      const file = join(src, 'sparse.img');
      const fd = fs.openSync(file, 'w');
      const pieces = [
        [0, 'head'],
        [4 * 1024 * 1024, 'middle'],
        [9 * 1024 * 1024 + 3, 'tail'],
      ] as const;
      for (const [off, text] of pieces) fs.writeSync(fd, Buffer.from(text.repeat(3000)), 0, text.length * 3000, off);
      fs.ftruncateSync(fd, 16 * 1024 * 1024);
      fs.closeSync(fd);
      const tar = (await execa('tar', ['--sparse', ...flags, '-cf', '-', '-C', src, 'sparse.img'], {
        encoding: 'buffer',
      })).stdout;
      const root = await newRoot();
      await apply(Buffer.from(tar), root);
      const out = join(root, 'sparse.img');
      const st = fs.statSync(out);
      expect(st.size).toBe(16 * 1024 * 1024);
      expect(fs.readFileSync(out).equals(fs.readFileSync(file))).toBe(true);
      // Three small data regions: far fewer than 16 MiB of blocks.
      expect(st.blocks * 512).toBeLessThan(1024 * 1024);
      expect(fs.readdirSync(root)).toEqual(['sparse.img']);
    });
  }
});

describe('applyLayer, large files (written on the thread pool)', () => {
  it('gives them content, owner, setuid mode and times, and hardlinks see the finished file', async () => {
    const root = await newRoot();
    const su = randomBytes(300 * 1024);
    const data = randomBytes(5 * 1024 * 1024 + 3);
    await apply(
      buildTar([
        { name: 'bin/su', content: su, mode: 0o4755, uid: 0, gid: 0, mtime: 1_700_000_000, mtimeNs: 42 },
        // Same owner: the link leaves the inode alone, setuid stays.
        { name: 'bin/su-link', type: 'hardlink', linkname: 'bin/su', mode: 0o4755, mtime: 1_700_000_000, mtimeNs: 42 },
        { name: 'srv/data', content: data, mode: 0o640, uid: 1000, gid: 1001, mtime: 1_600_000_000 },
        // Another owner: the link's chown changes the shared inode, as pkg/archive does.
        { name: 'srv/data-link', type: 'hardlink', linkname: 'srv/data', mode: 0o640, uid: 7, gid: 8, mtime: 1_600_000_000 },
        { name: 'srv/after', content: randomBytes(200 * 1024), mode: 0o600, uid: 3, gid: 4 },
      ]),
      root,
    );
    const st = fs.lstatSync(join(root, 'bin/su'), { bigint: true });
    expect([Number(st.mode & 0o7777n), st.uid, st.gid, st.mtimeNs]).toEqual([0o4755, 0n, 0n, 1_700_000_000_000_000_042n]);
    expect(fs.readFileSync(join(root, 'bin/su')).equals(su)).toBe(true);
    expect(fs.lstatSync(join(root, 'bin/su-link')).ino).toBe(Number(st.ino));
    const d = fs.lstatSync(join(root, 'srv/data'));
    expect([d.uid, d.gid, d.nlink]).toEqual([7, 8, 2]);
    expect(fs.readFileSync(join(root, 'srv/data-link')).equals(data)).toBe(true);
    const after = fs.lstatSync(join(root, 'srv/after'));
    expect([after.mode & 0o7777, after.uid, after.gid, after.size]).toEqual([0o600, 3, 4, 200 * 1024]);
  });

  it('fails on a full filesystem with one error naming the file, and keeps no file open', async () => {
    const small = await createBtrfs({ sizeMiB: 256 });
    try {
      const root = join(small.mountpoint, 'root');
      await execa('btrfs', ['subvolume', 'create', root]);
      const free = Number(fs.statfsSync(small.mountpoint).bavail) * fs.statfsSync(small.mountpoint).bsize;
      await execa('fallocate', ['-l', String(Math.max(0, free - 8 * 1024 * 1024)), join(small.mountpoint, 'filler')]);
      const before = fs.readdirSync('/proc/self/fd').length;
      const err = await apply(
        buildTar([
          { name: 'ok', content: randomBytes(100 * 1024) },
          { name: 'usr/lib/huge.so', content: Buffer.alloc(48 * 1024 * 1024, 0x61) },
          { name: 'later', content: randomBytes(100 * 1024) },
        ]),
        root,
      ).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(LayerApplyError);
      expect((err as Error).message).toMatch(/^layer test: entry "usr\/lib\/huge\.so": .*ENOSPC/);
      expect((err as Error).message).not.toContain('\n');
      expect(fs.readdirSync('/proc/self/fd').length).toBe(before);
    } finally {
      await small.dispose();
    }
  });
});

describe('applyLayer input errors', () => {
  it('names the layer when the gzip stream is truncated', async () => {
    const root = await newRoot();
    const gz = gzipSync(buildTar(everyType));
    const d = decompressStream('gzip');
    Readable.from([gz.subarray(0, gz.length - 100)]).pipe(d);
    const err = await applyLayer(d, root, { what: 'layer sha256:abc' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LayerApplyError);
    expect((err as Error).message).toBe('layer sha256:abc: corrupt or truncated gzip data: unexpected end of file');
  });

  it('names the entry when the tar itself stops in the middle of a file', async () => {
    const root = await newRoot();
    const tar = buildTar([{ name: 'f', content: Buffer.alloc(5000, 1) }]);
    const err = await apply(tar.subarray(0, 3000), root).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LayerApplyError);
    expect((err as Error).message).toMatch(/^layer test: entry "f": unexpected end of tar data/);
  });

  it('passes an upstream digest mismatch through unchanged', async () => {
    const root = await newRoot();
    const tar = buildTar([{ name: 'f', content: 'x' }]);
    const v = createVerifier({ digest: `sha256:${'0'.repeat(64)}`, size: tar.length }, 'blob sha256:000');
    Readable.from([tar]).pipe(v);
    const err = await applyLayer(v, root, { what: 'layer test' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DigestMismatchError);
  });

  it('stops when aborted', async () => {
    const root = await newRoot();
    const ac = new AbortController();
    const reason = new Error('cancelled by test');
    ac.abort(reason);
    const err = await applyLayer(Readable.from([buildTar(everyType)]), root, { what: 'x', signal: ac.signal }).catch(
      (e: unknown) => e,
    );
    expect(err).toBe(reason);
    expect(fs.readdirSync(root)).toEqual([]);
  });
});
