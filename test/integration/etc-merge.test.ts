/**
 * The /etc three-way merge on a real btrfs filesystem, as root (owners, setuid
 * bits, device nodes). Each test builds base, local and image trees from a
 * small spec and merges into a fresh target.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, readdirSync, writeFileSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, symlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatEtcMergeReport, mergeEtc, type EtcMergeReport } from '../../src/deploy/etc-merge.js';
import { sameEntry, walkTree } from '../../src/deploy/tree-compare.js';
import { sys } from '../../src/sys/native.js';
import { createBtrfs, type BtrfsFixture } from '../support/btrfs.js';

interface Node {
  kind?: 'file' | 'dir' | 'link' | 'fifo';
  content?: string;
  target?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  xattrs?: Record<string, string>;
  /** mtime in whole seconds plus nanoseconds */
  mtime?: { s: number; ns: number };
}
type Spec = Record<string, string | Node>;

let fs: BtrfsFixture;
let counter = 0;

beforeAll(async () => {
  fs = await createBtrfs({ sizeMiB: 256 });
});
afterAll(async () => {
  await fs?.dispose();
});

async function build(root: string, spec: Spec): Promise<void> {
  await mkdir(root, { recursive: true });
  for (const [rel, raw] of Object.entries(spec)) {
    const node: Node = typeof raw === 'string' ? { content: raw } : raw;
    const path = join(root, rel);
    await mkdir(dirname(path), { recursive: true });
    const kind = node.kind ?? 'file';
    if (kind === 'dir') await mkdir(path, { recursive: true });
    else if (kind === 'link') await symlink(node.target ?? '', path);
    else if (kind === 'fifo') execFileSync('mkfifo', [path]);
    else await writeFile(path, node.content ?? '');
    if (node.uid !== undefined || node.gid !== undefined) {
      sys.fchownat(sys.constants.AT_FDCWD, path, node.uid ?? 0, node.gid ?? 0, sys.constants.AT_SYMLINK_NOFOLLOW);
    }
    if (kind !== 'link') await chmod(path, node.mode ?? (kind === 'dir' ? 0o755 : 0o644));
    for (const [k, v] of Object.entries(node.xattrs ?? {})) sys.lsetxattr(path, k, Buffer.from(v));
    if (node.mtime !== undefined) {
      const m = node.mtime;
      sys.utimensat(sys.constants.AT_FDCWD, path, m.s, m.ns, m.s, m.ns, sys.constants.AT_SYMLINK_NOFOLLOW);
    }
  }
}

interface Trees {
  base: string;
  local: string;
  target: string;
  report: EtcMergeReport;
}

async function merge(spec: { base?: Spec; local: Spec; image: Spec }, opts?: { identityPaths?: string[] }): Promise<Trees> {
  const dir = join(fs.mountpoint, `case-${++counter}`);
  const base = join(dir, 'base');
  const local = join(dir, 'local');
  const target = join(dir, 'target');
  if (spec.base !== undefined) await build(base, spec.base);
  await build(local, spec.local);
  await build(target, spec.image);
  const report = await mergeEtc({ base: spec.base === undefined ? undefined : base, local, target }, opts);
  return { base, local, target, report };
}

const read = (t: Trees, rel: string): string => readFileSync(join(t.target, rel), 'utf8');
const has = (t: Trees, rel: string): boolean => existsSync(join(t.target, rel)) || isLink(join(t.target, rel));
function isLink(p: string): boolean {
  try {
    return lstatSync(p).isSymbolicLink();
  } catch {
    return false;
  }
}

describe('mergeEtc three-way rules', () => {
  it('takes the image version of a file the admin left untouched', async () => {
    const t = await merge({ base: { 'a.conf': 'v1' }, local: { 'a.conf': 'v1' }, image: { 'a.conf': 'v2' } });
    expect(read(t, 'a.conf')).toBe('v2');
    expect(t.report.tookNew).toEqual(['a.conf']);
    expect(t.report.conflicts).toEqual([]);
  });

  it('keeps a local change when the image did not change the file', async () => {
    const t = await merge({ base: { 'a.conf': 'v1' }, local: { 'a.conf': 'mine' }, image: { 'a.conf': 'v1' } });
    expect(read(t, 'a.conf')).toBe('mine');
    expect(t.report.keptLocal).toEqual(['a.conf']);
  });

  it('keeps local and saves the image version beside it when both changed', async () => {
    const t = await merge({
      base: { 'sub/a.conf': 'v1' },
      local: { 'sub/a.conf': 'mine' },
      image: { 'sub/a.conf': 'v2' },
    });
    expect(read(t, 'sub/a.conf')).toBe('mine');
    expect(read(t, 'sub/a.conf.ocisnap-new')).toBe('v2');
    expect(t.report.conflicts).toEqual([
      { path: 'sub/a.conf', kind: 'changed-both', newSavedAs: 'sub/a.conf.ocisnap-new' },
    ]);
    expect(formatEtcMergeReport(t.report)).toEqual([
      '/etc/sub/a.conf: changed locally and in the new image; local kept, new version in /etc/sub/a.conf.ocisnap-new',
    ]);
  });

  it('does nothing when both made the same change', async () => {
    const t = await merge({ base: { a: 'v1' }, local: { a: 'v2' }, image: { a: 'v2' } });
    expect(read(t, 'a')).toBe('v2');
    expect(t.report.conflicts).toEqual([]);
    expect(t.report.keptLocal).toEqual([]);
  });

  it('keeps a file the admin deleted deleted, and reports it when the image changed it', async () => {
    const t = await merge({
      base: { 'gone.conf': 'v1', 'changed.conf': 'v1', keep: 'k' },
      local: { keep: 'k' },
      image: { 'gone.conf': 'v1', 'changed.conf': 'v2', keep: 'k' },
    });
    expect(has(t, 'gone.conf')).toBe(false);
    expect(has(t, 'changed.conf')).toBe(false);
    expect(has(t, 'changed.conf.ocisnap-new')).toBe(false);
    expect(t.report.deletedLocally.sort()).toEqual(['changed.conf', 'gone.conf']);
    expect(t.report.conflicts).toEqual([{ path: 'changed.conf', kind: 'deleted-locally' }]);
  });

  it('carries over a file the admin added, with mode, owner, xattrs and mtime (ns)', async () => {
    const t = await merge({
      base: {},
      local: {
        'mine.conf': { content: 'x', mode: 0o640, uid: 1234, gid: 4321, xattrs: { 'user.tag': 'v' }, mtime: { s: 1_600_000_000, ns: 123_456_789 } },
      },
      image: {},
    });
    const st = lstatSync(join(t.target, 'mine.conf'), { bigint: true });
    expect(read(t, 'mine.conf')).toBe('x');
    expect(Number(st.mode & 0o7777n)).toBe(0o640);
    expect([Number(st.uid), Number(st.gid)]).toEqual([1234, 4321]);
    expect(st.mtimeNs).toBe(1_600_000_000_123_456_789n);
    expect(sys.lgetxattr(join(t.target, 'mine.conf'), 'user.tag')?.toString()).toBe('v');
    expect(t.report.keptLocal).toEqual(['mine.conf']);
  });

  it('shows a file the image added and drops one it removed that the admin never touched', async () => {
    const t = await merge({
      base: { old: 'o' },
      local: { old: 'o' },
      image: { 'new.d/new.conf': 'n' },
    });
    expect(read(t, 'new.d/new.conf')).toBe('n');
    expect(has(t, 'old')).toBe(false);
    expect(t.report.tookNew.sort()).toEqual(['new.d', 'new.d/new.conf', 'old']);
  });

  it('keeps a file the admin changed that the image removed, and reports it', async () => {
    const t = await merge({ base: { 'x.conf': 'v1' }, local: { 'x.conf': 'mine' }, image: {} });
    expect(read(t, 'x.conf')).toBe('mine');
    expect(t.report.conflicts).toEqual([{ path: 'x.conf', kind: 'removed-in-image' }]);
  });

  it('always takes host identity from local, even when the admin left it untouched', async () => {
    const same = { 'machine-id': 'aaaa\n', hostname: 'host1\n', fstab: 'UUID=1 / btrfs\n', 'ssh/ssh_host_ed25519_key': { content: 'KEY', mode: 0o600 } };
    const t = await merge({
      base: { ...same, 'ssh/ssh_host_rsa_key': 'RSA' },
      local: { ...same, 'ssh/sshd_config': 'cfg' },
      image: {
        'machine-id': '',
        hostname: 'localhost\n',
        fstab: '# UNCONFIGURED\n',
        'ssh/ssh_host_ed25519_key': 'IMAGEKEY',
        'ssh/ssh_host_rsa_key': 'RSA',
        'ssh/sshd_config': 'cfg',
      },
    });
    expect(read(t, 'machine-id')).toBe('aaaa\n');
    expect(read(t, 'hostname')).toBe('host1\n');
    expect(read(t, 'fstab')).toBe('UUID=1 / btrfs\n');
    expect(read(t, 'ssh/ssh_host_ed25519_key')).toBe('KEY');
    expect(lstatSync(join(t.target, 'ssh/ssh_host_ed25519_key')).mode & 0o777).toBe(0o600);
    expect(has(t, 'ssh/ssh_host_rsa_key')).toBe(false); // the host has none: the image's is not used
    expect(t.report.identity.sort()).toEqual(['fstab', 'hostname', 'machine-id', 'ssh/ssh_host_ed25519_key', 'ssh/ssh_host_rsa_key']);
    expect(t.report.conflicts).toEqual([]);
  });

  it('creates missing parents of identity files from local and honours a custom identity list', async () => {
    const t = await merge(
      {
        base: {},
        local: { 'ssh/ssh_host_ed25519_key': 'KEY', 'custom/id': 'local-id', 'machine-id': 'm' },
        image: { 'custom/id': 'image-id', 'machine-id': 'image' },
      },
      { identityPaths: ['custom/*', 'ssh/ssh_host_*'] },
    );
    expect(read(t, 'ssh/ssh_host_ed25519_key')).toBe('KEY');
    expect(read(t, 'custom/id')).toBe('local-id');
    // machine-id is not in the custom list: an ordinary both-sides change.
    expect(read(t, 'machine-id')).toBe('m');
    expect(read(t, 'machine-id.ocisnap-new')).toBe('image');
  });

  it('merges passwd, shadow and group per entry', async () => {
    const sh = (content: string): Node => ({ content, mode: 0o640, gid: 42 });
    const t = await merge({
      base: {
        passwd: 'root:x:0:0::/root:/bin/bash\nold:x:998:998::/:/bin/false\n',
        shadow: sh('root:*:1::::::\nold:!:1::::::\n'),
        group: 'root:x:0:\nshadow:x:42:\nold:x:998:\n',
      },
      local: {
        passwd: 'root:x:0:0::/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n',
        shadow: sh('root:$y$secret:2::::::\nalice:$y$alice:2::::::\n'),
        group: 'root:x:0:\nshadow:x:42:\nalice:x:1000:\n',
        'passwd-': 'backup\n',
      },
      image: {
        passwd: 'root:x:0:0::/root:/bin/bash\nold:x:998:998::/:/bin/false\n_sys:x:990:990::/:/usr/sbin/nologin\n',
        shadow: sh('root:*:3::::::\nold:!:1::::::\n_sys:!:3::::::\n'),
        group: 'root:x:0:\nshadow:x:42:\nold:x:998:\n_sys:x:990:\n',
      },
    });
    expect(read(t, 'passwd')).toBe(
      'root:x:0:0::/root:/bin/bash\n_sys:x:990:990::/:/usr/sbin/nologin\nalice:x:1000:1000::/home/alice:/bin/bash\n',
    );
    expect(read(t, 'shadow')).toBe('root:$y$secret:2::::::\n_sys:!:3::::::\nalice:$y$alice:2::::::\n');
    expect(read(t, 'group')).toBe('root:x:0:\nshadow:x:42:\n_sys:x:990:\nalice:x:1000:\n');
    const st = lstatSync(join(t.target, 'shadow'));
    expect([st.mode & 0o7777, st.gid]).toEqual([0o640, 42]);
    expect(read(t, 'passwd-')).toBe('backup\n');
    expect(t.report.mergedAccounts.sort()).toEqual(['group', 'passwd', 'shadow']);
    expect(readdirSync(t.target).filter((n) => n.includes('ocisnap'))).toEqual([]);
  });

  it('keeps non-UTF-8 bytes in account entries intact', async () => {
    const dir = join(fs.mountpoint, `case-${++counter}`);
    for (const t of ['base', 'local', 'target']) mkdirSync(join(dir, t), { recursive: true });
    const gecos = Buffer.from('bob:x:1001:1001:Bj\xf6rn:/home/bob:/bin/sh\n', 'latin1');
    writeFileSync(join(dir, 'base', 'passwd'), 'root:x:0:0::/root:/bin/sh\n');
    writeFileSync(join(dir, 'local', 'passwd'), Buffer.concat([Buffer.from('root:x:0:0::/root:/bin/sh\n'), gecos]));
    writeFileSync(join(dir, 'target', 'passwd'), 'root:x:0:0::/root:/bin/bash\n');
    await mergeEtc({ base: join(dir, 'base'), local: join(dir, 'local'), target: join(dir, 'target') });
    expect(readFileSync(join(dir, 'target', 'passwd'))).toEqual(Buffer.concat([Buffer.from('root:x:0:0::/root:/bin/bash\n'), gecos]));
  });

  it('merges symlinks by their target and never follows one out of the tree', async () => {
    const outside = await mkdtemp(join(fs.mountpoint, 'outside-'));
    const t = await merge({
      base: { 'alternatives/editor': { kind: 'link', target: '/usr/bin/nano' }, 'conf.d/base.conf': 'b' },
      local: {
        'alternatives/editor': { kind: 'link', target: '/usr/bin/vim' },
        'conf.d/base.conf': 'b',
        'conf.d/mine.conf': 'mine',
      },
      image: { 'alternatives/editor': { kind: 'link', target: '/usr/bin/nano' }, 'conf.d': { kind: 'link', target: outside } },
    });
    expect(readlinkSync(join(t.target, 'alternatives/editor'))).toBe('/usr/bin/vim');
    expect(readlinkSync(join(t.target, 'conf.d'))).toBe(outside);
    expect(readdirSync(outside)).toEqual([]);
    expect(t.report.conflicts).toEqual([{ path: 'conf.d/mine.conf', kind: 'parent-not-directory' }]);
    expect(t.report.keptLocal).toEqual(['alternatives/editor']);
  });

  it('treats mode, owner and xattr changes as changes (setuid kept)', async () => {
    const f = (extra: Node): Node => ({ content: 'same', ...extra });
    const t = await merge({
      base: { suid: f({ mode: 0o755 }), owned: f({}), tagged: f({}), img: f({}) },
      local: { suid: f({ mode: 0o4755, uid: 0, gid: 7 }), owned: f({ uid: 500 }), tagged: f({ xattrs: { 'user.x': '1' } }), img: f({}) },
      image: { suid: f({ mode: 0o755 }), owned: f({}), tagged: f({}), img: f({ mode: 0o600 }) },
    });
    expect(lstatSync(join(t.target, 'suid')).mode & 0o7777).toBe(0o4755);
    expect(lstatSync(join(t.target, 'suid')).gid).toBe(7);
    expect(lstatSync(join(t.target, 'owned')).uid).toBe(500);
    expect(sys.lgetxattr(join(t.target, 'tagged'), 'user.x')?.toString()).toBe('1');
    expect(lstatSync(join(t.target, 'img')).mode & 0o7777).toBe(0o600);
    expect(t.report.keptLocal.sort()).toEqual(['owned', 'suid', 'tagged']);
    expect(t.report.tookNew).toEqual(['img']);
  });

  it('ignores SELinux labels when comparing (by default), but not other xattrs', async () => {
    const label = { 'security.selinux': 'system_u:object_r:etc_t:s0' };
    const spec = { base: { a: 'v1', b: 'v1' }, local: { a: { content: 'v1', xattrs: label }, b: 'v1' }, image: { a: 'v2', b: 'v2' } };
    const t = await merge(spec);
    expect(read(t, 'a')).toBe('v2');
    expect(t.report.tookNew).toEqual(['a', 'b']);
    const dir = join(fs.mountpoint, `case-${++counter}`);
    for (const [k, v] of Object.entries(spec)) await build(join(dir, k), v);
    const strict = await mergeEtc(
      { base: join(dir, 'base'), local: join(dir, 'local'), target: join(dir, 'image') },
      { ignoreXattrs: [] },
    );
    expect(readFileSync(join(dir, 'image', 'a'), 'utf8')).toBe('v1');
    expect(sys.lgetxattr(join(dir, 'image', 'a'), 'security.selinux')?.toString()).toBe('system_u:object_r:etc_t:s0');
    expect(strict.conflicts).toEqual([{ path: 'a', kind: 'changed-both', newSavedAs: 'a.ocisnap-new' }]);
  });

  it('applies local directory metadata changes and keeps a locally deleted directory deleted', async () => {
    const t = await merge({
      base: { 'private': { kind: 'dir', mode: 0o755 }, 'cron.d/job': 'j', 'cron.d/other': 'o' },
      local: { 'private': { kind: 'dir', mode: 0o750, gid: 5 } },
      image: { 'private': { kind: 'dir', mode: 0o755 }, 'cron.d/job': 'j', 'cron.d/other': 'o2', 'cron.d/added': 'a' },
    });
    const st = lstatSync(join(t.target, 'private'));
    expect([st.mode & 0o7777, st.gid]).toEqual([0o750, 5]);
    expect(has(t, 'cron.d')).toBe(false);
    expect(t.report.deletedLocally.sort()).toEqual(['cron.d', 'cron.d/added', 'cron.d/job', 'cron.d/other']);
    expect(t.report.conflicts.map((c) => c.path).sort()).toEqual(['cron.d/added', 'cron.d/other']);
  });

  it('resolves type changes on both sides: local wins, the image entry (a whole directory) saved beside', async () => {
    const t = await merge({
      base: { 'd.conf': 'v1', 'x.d': { kind: 'dir' }, 'y.d': { kind: 'dir' }, 'meta': { kind: 'dir', mode: 0o755 } },
      local: {
        'd.conf': { kind: 'link', target: 'elsewhere' },
        'x.d': 'now a file',
        'y.d': 'also a file',
        'meta': { kind: 'dir', mode: 0o700 },
      },
      image: {
        'd.conf': 'v2',
        'x.d': { kind: 'dir', mode: 0o750 },
        'x.d/inner.conf': 'i',
        'y.d/inner.conf': 'i', // the image changed only inside y.d
        'meta': { kind: 'dir', mode: 0o750 },
      },
    });
    expect(read(t, 'y.d')).toBe('also a file');
    expect(readlinkSync(join(t.target, 'd.conf'))).toBe('elsewhere');
    expect(read(t, 'd.conf.ocisnap-new')).toBe('v2');
    expect(read(t, 'x.d')).toBe('now a file');
    expect(read(t, 'x.d.ocisnap-new/inner.conf')).toBe('i');
    expect(lstatSync(join(t.target, 'meta')).mode & 0o7777).toBe(0o700);
    expect(t.report.conflicts).toEqual([
      { path: 'd.conf', kind: 'changed-both', newSavedAs: 'd.conf.ocisnap-new' },
      { path: 'meta', kind: 'changed-both' },
      { path: 'x.d', kind: 'changed-both', newSavedAs: 'x.d.ocisnap-new' },
      { path: 'y.d/inner.conf', kind: 'deleted-locally' },
    ]);
    expect(t.report.deletedLocally).toEqual(['y.d/inner.conf']);
  });

  it('recreates a directory the image removed to keep a file the admin added in it', async () => {
    const t = await merge({
      base: { 'app/app.conf': 'a' },
      local: { 'app/app.conf': 'a', 'app/local.conf': 'mine' },
      image: {},
    });
    expect(read(t, 'app/local.conf')).toBe('mine');
    expect(has(t, 'app/app.conf')).toBe(false);
  });

  it('without a base keeps local where it differs from the image, saves the image version, adds image-only files', async () => {
    const t = await merge({
      local: { 'a.conf': 'local', 'only-local': 'l', same: 's' },
      image: { 'a.conf': 'image', 'only-image': 'i', same: 's' },
    });
    expect(read(t, 'a.conf')).toBe('local');
    expect(read(t, 'a.conf.ocisnap-new')).toBe('image');
    expect(read(t, 'only-local')).toBe('l');
    expect(read(t, 'only-image')).toBe('i');
    expect(read(t, 'same')).toBe('s');
    expect(t.report.conflicts).toEqual([{ path: 'a.conf', kind: 'no-base', newSavedAs: 'a.conf.ocisnap-new' }]);
  });

  it('copies fifos, skips sockets and stale .ocisnap-new files with a report line', async () => {
    const dir = join(fs.mountpoint, `case-${++counter}`);
    await build(join(dir, 'base'), {});
    await build(join(dir, 'local'), { pipe: { kind: 'fifo', mode: 0o620 }, 'x.conf.ocisnap-new': 'stale' });
    await build(join(dir, 'target'), {});
    const sockPath = join(dir, 'local', 'sock');
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(sockPath, resolve));
    try {
      const report = await mergeEtc({ base: join(dir, 'base'), local: join(dir, 'local'), target: join(dir, 'target') });
      expect(lstatSync(join(dir, 'target', 'pipe')).isFIFO()).toBe(true);
      expect(lstatSync(join(dir, 'target', 'pipe')).mode & 0o7777).toBe(0o620);
      expect(existsSync(join(dir, 'target', 'sock'))).toBe(false);
      expect(existsSync(join(dir, 'target', 'x.conf.ocisnap-new'))).toBe(false);
      expect(report.skipped.map((s) => s.path).sort()).toEqual(['sock', 'x.conf.ocisnap-new']);
    } finally {
      server.close();
    }
  });

  it('compares big files to the last byte', async () => {
    const big = 'y'.repeat(3 * 1024 * 1024 + 17);
    const last = `${big.slice(0, -1)}z`;
    const t = await merge({ base: { a: big, b: big }, local: { a: big, b: last }, image: { a: last, b: big } });
    expect(t.report.tookNew).toEqual(['a']);
    expect(t.report.keptLocal).toEqual(['b']);
    expect(read(t, 'a')).toBe(last);
    expect(read(t, 'b')).toBe(last);
  });

  it('reflinks local files into the target on btrfs (extents shared)', async () => {
    const big = 'x'.repeat(4 * 1024 * 1024);
    const t = await merge({ base: {}, local: { big }, image: {} });
    expect(read(t, 'big')).toBe(big);
    const out = execFileSync('btrfs', ['filesystem', 'du', '--raw', join(t.local, 'big'), join(t.target, 'big')], { encoding: 'utf8' });
    // Columns: Total Exclusive Set-shared Filename; both copies share every byte.
    const rows = out.trim().split('\n').slice(1).map((l) => l.trim().split(/\s+/));
    for (const row of rows) expect(Number(row[1])).toBe(0);
  });

  it('does not descend into a subvolume or mount inside local /etc and leaves the image content there', async () => {
    const dir = join(fs.mountpoint, `case-${++counter}`);
    await build(join(dir, 'base'), { 'mnt/a': 'a' });
    await build(join(dir, 'target'), { 'mnt/a': 'a', 'mnt/b': 'b' });
    mkdirSync(join(dir, 'local'), { recursive: true });
    execFileSync('btrfs', ['-q', 'subvolume', 'create', join(dir, 'local', 'mnt')]);
    writeFileSync(join(dir, 'local', 'mnt', 'other'), 'o');
    const report = await mergeEtc({ base: join(dir, 'base'), local: join(dir, 'local'), target: join(dir, 'target') });
    expect(readdirSync(join(dir, 'target', 'mnt')).sort()).toEqual(['a', 'b']);
    expect(report.skipped.map((s) => s.path)).toEqual(['mnt']);
    expect(report.deletedLocally).toEqual([]);
  });

  it('leaves the access times of the files it compares alone', async () => {
    // Older than a day and equal to mtime: relatime would update it on any read
    // (in a fresh snapshot that copies a shared metadata block per file).
    const old = { s: Math.floor(Date.now() / 1000) - 3 * 86400, ns: 0 };
    const f = (content: string): Node => ({ content, mtime: old });
    const t = await merge({
      base: { 'a.conf': f('v1'), 'b.conf': f('same') },
      local: { 'a.conf': f('v1'), 'b.conf': f('same') },
      image: { 'a.conf': f('v2'), 'b.conf': f('same') },
    });
    expect(t.report.tookNew).toEqual(['a.conf']);
    for (const tree of [t.base, t.local, t.target]) {
      for (const rel of ['a.conf', 'b.conf']) expect(lstatSync(join(tree, rel)).atimeMs, `${tree}/${rel}`).toBe(old.s * 1000);
    }
  });

  it('refuses a target that overlaps local or base', async () => {
    const dir = join(fs.mountpoint, `case-${++counter}`);
    await build(join(dir, 'etc'), { a: 'a' });
    await build(join(dir, 'local'), { a: 'b' });
    await expect(mergeEtc({ local: join(dir, 'etc'), target: join(dir, 'etc') })).rejects.toThrow(/overlaps the local \/etc/);
    await expect(mergeEtc({ base: dir, local: join(dir, 'local'), target: join(dir, 'etc') })).rejects.toThrow(/overlaps the base \/etc/);
    expect(readFileSync(join(dir, 'etc', 'a'), 'utf8')).toBe('a');
  });

  it('refuses a target that is not a directory', async () => {
    const dir = join(fs.mountpoint, `case-${++counter}`);
    mkdirSync(join(dir, 'local'), { recursive: true });
    writeFileSync(join(dir, 'file'), '');
    await expect(mergeEtc({ local: join(dir, 'local'), target: join(dir, 'file') })).rejects.toThrow(/new \/etc is not a directory/);
  });
});

describe('mergeEtc on a real /etc', () => {
  it('changes only what changed when merging a copy of this host /etc', async () => {
    const dir = join(fs.mountpoint, `real-${++counter}`);
    mkdirSync(dir);
    for (const t of ['base', 'local', 'target']) execFileSync('cp', ['-a', '/etc', join(dir, t)]);
    writeFileSync(join(dir, 'target', 'issue'), 'New OS \\n \\l\n');
    writeFileSync(join(dir, 'target', 'image-added.conf'), 'new\n');
    const passwd = readFileSync(join(dir, 'local', 'passwd'), 'utf8');
    writeFileSync(join(dir, 'local', 'passwd'), `${passwd}zed:x:4242:4242::/home/zed:/bin/sh\n`);
    writeFileSync(join(dir, 'local', 'motd'), 'local motd\n');
    writeFileSync(Buffer.from(join(dir, 'local', 'caf\u00e9-latin1'), 'latin1'), 'x');
    const report = await mergeEtc({ base: join(dir, 'base'), local: join(dir, 'local'), target: join(dir, 'target') });
    expect(report.tookNew.sort()).toEqual(['image-added.conf', 'issue']);
    expect(report.keptLocal).toEqual(['motd']);
    expect(report.mergedAccounts).toEqual(['passwd']);
    expect(report.conflicts).toEqual([]);
    expect(report.identity).toEqual([]);
    expect(report.skipped.map((s) => s.reason)).toEqual(['local: name is not valid UTF-8; not merged']);
    expect(readFileSync(join(dir, 'target', 'passwd'), 'utf8')).toBe(`${passwd}zed:x:4242:4242::/home/zed:/bin/sh\n`);
    // Everything else is the image's, content and metadata (tree-compare's notion of same).
    const l = (await walkTree(join(dir, 'local'))).entries;
    const n = (await walkTree(join(dir, 'target'))).entries;
    const differing: string[] = [];
    for (const rel of new Set([...l.keys(), ...n.keys()])) {
      if (!sameEntry(l.get(rel), join(dir, 'local'), n.get(rel), join(dir, 'target'))) differing.push(rel);
    }
    expect(differing.sort()).toEqual(['image-added.conf', 'issue']);
  });
});
