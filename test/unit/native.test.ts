import { closeSync, lstatSync, mkdirSync, mkdtempSync, openSync, rmSync, symlinkSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { sys } from '../../src/sys/native.js';

const dir = mkdtempSync(join(tmpdir(), 'ocisnap-native-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('native addon', () => {
  it('openat2 RESOLVE_IN_ROOT keeps an absolute symlink inside the root', () => {
    writeFileSync(join(dir, 'inside'), 'x');
    symlinkSync('/inside', join(dir, 'abs-link'));
    const root = openSync(dir, 'r');
    try {
      const c = sys.constants;
      const fd = sys.openat2(root, 'abs-link', 0, 0, c.RESOLVE_IN_ROOT);
      closeSync(fd);
      symlinkSync('/etc/passwd', join(dir, 'escape'));
      expect(() => sys.openat2(root, 'escape', 0, 0, c.RESOLVE_IN_ROOT)).toThrow(/ENOENT/);
      expect(() => sys.openat2(root, 'abs-link', 0, 0, c.RESOLVE_NO_SYMLINKS)).toThrow(/ELOOP/);
    } finally {
      closeSync(root);
    }
  });

  it('takes and reports conflicting fcntl locks only across processes', () => {
    const f = join(dir, 'lock');
    writeFileSync(f, '');
    const fd = openSync(f, 'r+');
    expect(sys.setlk(fd, 1)).toBe(true);
    expect(sys.setlk(fd, 2)).toBe(true);
    closeSync(fd);
  });

  it('round-trips user xattrs without following symlinks', () => {
    const f = join(dir, 'xa');
    writeFileSync(f, '');
    sys.lsetxattr(f, 'user.ocisnap', Buffer.from('v'));
    expect(sys.lgetxattr(f, 'user.ocisnap')?.toString()).toBe('v');
    expect(sys.llistxattr(f)).toContain('user.ocisnap');
    expect(sys.lgetxattr(f, 'user.absent')).toBeNull();
  });

  it('computes CRC-64/GO-ISO in slices, continuing from a state', () => {
    const state = Buffer.alloc(8, 0xff);
    sys.crc64(state, Buffer.from('1234'));
    sys.crc64(state, new Uint8Array(Buffer.from('56789')));
    const crc = Buffer.from(state.map((b) => ~b & 0xff)).reverse();
    expect(crc.toString('hex')).toBe('b90956c775a41001');
    expect(() => sys.crc64(Buffer.alloc(4), Buffer.from('x'))).toThrow(/8 bytes/);
  });

  it('sets glibc mmap threshold within bounds only', () => {
    expect(sys.setMmapThreshold(128 * 1024)).toBe(true);
    expect(() => sys.setMmapThreshold(-1)).toThrow(RangeError);
    expect(() => sys.setMmapThreshold(64 * 1024 * 1024)).toThrow(/out of range/);
  });

  it('hashes sha256 batches asynchronously, one update at a time', async () => {
    const ctx = sys.sha256Create();
    const parts = [Buffer.from('ab'), new Uint8Array(0), Buffer.from('c')];
    const done = new Promise<Error | null>((resolve) => sys.sha256Update(ctx, parts, resolve));
    expect(() => sys.sha256Digest(ctx)).toThrow(/busy/);
    expect(() => sys.sha256Update(ctx, [], () => {})).toThrow(/busy/);
    expect(await done).toBeNull();
    // SHA-256("abc"), FIPS 180-2 example.
    expect(sys.sha256Digest(ctx).toString('hex')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  });

  it('finishes a written file: owner, then mode (setuid kept), times to the nanosecond, closed', () => {
    const f = join(dir, 'finished');
    const fd = openSync(f, 'w', 0o600);
    writeSync(fd, 'data');
    sys.finishFile(fd, 1234, 5678, 0o4751, 1_600_000_000, 123_456_789, 1_500_000_000, 987_654_321);
    const st = lstatSync(f, { bigint: true });
    expect([st.uid, st.gid, st.mode & 0o7777n]).toEqual([1234n, 5678n, 0o4751n]);
    expect(st.mtimeNs).toBe(1_500_000_000_987_654_321n);
    expect(st.atimeNs).toBe(1_600_000_000_123_456_789n);
    // A failing step is reported; the steps before it took effect.
    const ro = openSync(f, 'r');
    expect(() => sys.finishFile(ro, 0, 0, 0o644, 0, -1, 0, 0)).toThrow(/EINVAL: .*futimens/);
    expect(lstatSync(f).mode & 0o7777).toBe(0o644);
  });

  it('walks a tree like lstat: pre-order, names in byte order, symlinks described not followed, xattrs by name', async () => {
    const root = join(dir, 'walk');
    mkdirSync(join(root, 'b/c'), { recursive: true });
    writeFileSync(join(root, 'b/c/f'), 'hello');
    writeFileSync(join(root, 'a'), '');
    symlinkSync('/etc', join(root, 'link'));
    writeFileSync(join(root, 'bÿ'), ''); // UTF-8 62 c3 bf: after "b" and everything below it
    sys.lsetxattr(join(root, 'a'), 'user.z', Buffer.from('2'));
    sys.lsetxattr(join(root, 'a'), 'user.a', Buffer.from('1'));
    const { entries, skipped } = await sys.walkTree(`${root}/`);
    expect(entries.map((e) => e.rel)).toEqual(['a', 'b', 'b/c', 'b/c/f', 'bÿ', 'link']);
    expect(skipped).toEqual([]);
    const f = entries.find((e) => e.rel === 'b/c/f')!;
    const st = lstatSync(join(root, 'b/c/f'), { bigint: true });
    expect(f).toEqual({ rel: 'b/c/f', mode: Number(st.mode), uid: Number(st.uid), gid: Number(st.gid), size: 5n, dev: st.dev, rdev: st.rdev, atimeNs: st.atimeNs, mtimeNs: st.mtimeNs, xattrs: [] });
    expect(entries.find((e) => e.rel === 'link')?.linkTarget).toBe('/etc');
    expect(entries.find((e) => e.rel === 'a')?.xattrs).toEqual([['user.a', Buffer.from('1')], ['user.z', Buffer.from('2')]]);
    await expect(sys.walkTree(join(root, 'a'))).rejects.toThrow(/is not a directory/);
    await expect(sys.walkTree(join(root, 'missing'))).rejects.toMatchObject({ code: 'ENOENT', syscall: 'lstat', path: join(root, 'missing') });
  });

  it('reports names that are not UTF-8 instead of listing them', async () => {
    const root = join(dir, 'walk-bytes');
    mkdirSync(root);
    const name = Buffer.from([0x78, 0xff, 0x2e, 0x63]); // "x\xff.c"
    closeSync(openSync(Buffer.concat([Buffer.from(`${root}/`), name]), 'w'));
    const { entries, skipped } = await sys.walkTree(root);
    expect(entries).toEqual([]);
    expect(skipped).toEqual([{ rel: 'x\uFFFD.c', reason: 'name is not valid UTF-8; not merged' }]);
  });

  it('compares file contents to the last byte, never through a symlink', () => {
    const big = Buffer.alloc(100_000, 7);
    writeFileSync(join(dir, 'c1'), big);
    writeFileSync(join(dir, 'c2'), big);
    expect(sys.sameContent(join(dir, 'c1'), join(dir, 'c2'))).toBe(true);
    big[big.length - 1] = 8;
    writeFileSync(join(dir, 'c2'), big);
    expect(sys.sameContent(join(dir, 'c1'), join(dir, 'c2'))).toBe(false);
    writeFileSync(join(dir, 'c2'), big.subarray(0, 65_536));
    expect(sys.sameContent(join(dir, 'c1'), join(dir, 'c2'))).toBe(false);
    symlinkSync(join(dir, 'c1'), join(dir, 'c-link'));
    expect(() => sys.sameContent(join(dir, 'c1'), join(dir, 'c-link'))).toThrow(/ELOOP/);
  });
});
