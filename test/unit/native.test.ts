import { closeSync, mkdtempSync, openSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
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
});
