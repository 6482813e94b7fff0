/**
 * Hostile layer tars: every entry must stay inside the root. Each case has a
 * sentinel directory next to the root (reachable by "../outside" and by its
 * absolute path) and checks that nothing outside the root changed, and that
 * a refused entry is named in the error.
 */
import * as fs from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LayerApplyError, applyLayer } from '../../src/layers/index.js';
import { createBtrfs, type BtrfsFixture } from '../support/btrfs.js';
import { buildTar, type TarSpec } from '../support/tar-builder.js';

let fx: BtrfsFixture;
let n = 0;

beforeAll(async () => {
  fx = await createBtrfs({ sizeMiB: 256 });
});
afterAll(async () => {
  await fx?.dispose();
});

interface Case {
  root: string;
  outside: string;
  base: string;
}

async function newCase(): Promise<Case> {
  const base = join(fx.mountpoint, `case-${++n}`);
  fs.mkdirSync(base);
  const root = join(base, 'root');
  await execa('btrfs', ['subvolume', 'create', root]);
  const outside = join(base, 'outside');
  fs.mkdirSync(join(outside, 'sub'), { recursive: true });
  fs.writeFileSync(join(outside, 'secret'), 'secret');
  fs.writeFileSync(join(outside, 'sub', 'x'), 'x');
  fs.chmodSync(outside, 0o750);
  return { root, outside, base };
}

/** Everything observable about the case directory minus the root: names, types, modes, owners, times, contents. */
function snapshot(c: Case): string[] {
  const out: string[] = [];
  const walk = (p: string) => {
    if (p === c.root) return;
    const st = fs.lstatSync(p, { bigint: true });
    const content = st.isFile() ? fs.readFileSync(p, 'utf8') : st.isSymbolicLink() ? fs.readlinkSync(p) : '';
    out.push(`${p} ${st.mode} ${st.uid}:${st.gid} ${st.mtimeNs} ${st.nlink} ${content}`);
    if (st.isDirectory()) for (const e of fs.readdirSync(p).sort()) walk(join(p, e));
  };
  walk(c.base);
  return out;
}

async function applyHostile(c: Case, entries: TarSpec[]): Promise<unknown> {
  const before = snapshot(c);
  const passwd = fs.readFileSync('/etc/passwd');
  let error: unknown;
  try {
    await applyLayer(Readable.from([buildTar(entries)]), c.root, { what: 'layer evil' });
  } catch (err) {
    error = err;
  }
  expect(snapshot(c)).toEqual(before);
  expect(fs.readFileSync('/etc/passwd').equals(passwd)).toBe(true);
  return error;
}

function expectRefused(err: unknown, entry: string, reason: RegExp): void {
  expect(err).toBeInstanceOf(LayerApplyError);
  const msg = (err as Error).message;
  expect(msg.startsWith(`layer evil: entry ${JSON.stringify(entry)}: `)).toBe(true);
  expect(msg).toMatch(reason);
}

describe('applyLayer refuses or contains hostile entries', () => {
  it('refuses ../x', async () => {
    const c = await newCase();
    const err = await applyHostile(c, [{ name: '../outside/pwned', content: 'x' }]);
    expectRefused(err, '../outside/pwned', /escapes the layer root/);
  });

  it('refuses a name that climbs out after cleaning (a/../../x)', async () => {
    const c = await newCase();
    const err = await applyHostile(c, [{ name: 'a/../../outside/secret', content: 'x' }]);
    expectRefused(err, 'a/../../outside/secret', /escapes the layer root/);
  });

  it('cleans absolute names into the root, like pkg/archive (/abs, /../x)', async () => {
    const c = await newCase();
    const err = await applyHostile(c, [
      { name: `${c.outside}/secret`, content: 'inside' },
      { name: '/../top', content: 'top' },
    ]);
    expect(err).toBeUndefined();
    expect(fs.readFileSync(join(c.root, c.outside, 'secret'), 'utf8')).toBe('inside');
    expect(fs.readFileSync(join(c.root, 'top'), 'utf8')).toBe('top');
  });

  it('resolves a symlink to an absolute outside path inside the root', async () => {
    const c = await newCase();
    const err = await applyHostile(c, [
      { name: 'evil', type: 'symlink', linkname: c.outside },
      { name: `${c.outside.slice(1)}/`, type: 'dir' },
      { name: 'evil/pwned', content: 'x' },
      { name: 'evil/secret', content: 'overwritten?' },
    ]);
    expect(err).toBeUndefined();
    expect(fs.readFileSync(join(c.root, c.outside, 'pwned'), 'utf8')).toBe('x');
    expect(fs.readFileSync(join(c.root, c.outside, 'secret'), 'utf8')).toBe('overwritten?');
  });

  it('refuses to write through a symlink whose in-root target does not exist', async () => {
    const c = await newCase();
    const err = await applyHostile(c, [
      { name: 'evil', type: 'symlink', linkname: c.outside },
      { name: 'evil/pwned', content: 'x' },
    ]);
    expectRefused(err, 'evil/pwned', /cannot open its directory inside the layer root: ENOENT/);
  });

  it('contains a relative ../../.. symlink in the root', async () => {
    const c = await newCase();
    const err = await applyHostile(c, [
      { name: 'a/b/up', type: 'symlink', linkname: '../../../../..' },
      { name: 'a/b/up/outside/', type: 'dir', mode: 0o777 },
      { name: 'a/b/up/outside/secret', content: 'inside' },
    ]);
    expect(err).toBeUndefined();
    expect(fs.readFileSync(join(c.root, 'outside/secret'), 'utf8')).toBe('inside');
    expect(fs.lstatSync(join(c.root, 'outside')).mode & 0o777).toBe(0o777);
  });

  it('refuses a hardlink to ../../etc/passwd', async () => {
    const c = await newCase();
    const err = await applyHostile(c, [{ name: 'pw', type: 'hardlink', linkname: '../../etc/passwd' }]);
    expectRefused(err, 'pw', /hardlink target escapes the layer root/);
  });

  it('resolves an absolute hardlink target in the root (and refuses it when missing there)', async () => {
    const c = await newCase();
    const err = await applyHostile(c, [{ name: 'pw', type: 'hardlink', linkname: '/etc/passwd' }]);
    expectRefused(err, 'pw', /hardlink target "\/etc\/passwd" (not found|does not exist)/);
  });

  it('refuses a hardlink through a symlinked parent that points outside', async () => {
    const c = await newCase();
    const err = await applyHostile(c, [
      { name: 'out', type: 'symlink', linkname: '../outside' },
      { name: 'h', type: 'hardlink', linkname: 'out/secret' },
    ]);
    expectRefused(err, 'h', /hardlink target "out\/secret"/);
    expect(fs.lstatSync(join(c.outside, 'secret')).nlink).toBe(1);
  });

  it('links a symlink itself, never its outside target', async () => {
    const c = await newCase();
    const err = await applyHostile(c, [
      { name: 's', type: 'symlink', linkname: `${c.outside}/secret` },
      { name: 'h', type: 'hardlink', linkname: 's', mode: 0o777 },
    ]);
    expect(err).toBeUndefined();
    expect(fs.lstatSync(join(c.root, 'h')).isSymbolicLink()).toBe(true);
    expect(fs.lstatSync(join(c.outside, 'secret')).nlink).toBe(1);
  });

  it('refuses a hardlink to a directory', async () => {
    const c = await newCase();
    const err = await applyHostile(c, [
      { name: 'd/', type: 'dir' },
      { name: 'h', type: 'hardlink', linkname: 'd' },
    ]);
    expectRefused(err, 'h', /is a directory/);
  });

  it('replaces a symlink by a directory instead of chmod/chown through it', async () => {
    const c = await newCase();
    const err = await applyHostile(c, [
      { name: 'sl', type: 'symlink', linkname: c.outside },
      { name: 'sl/', type: 'dir', mode: 0o777, uid: 1234, mtime: 1 },
      { name: 'sl2', type: 'symlink', linkname: '../outside/secret' },
      { name: 'sl2', content: 'replaced', mode: 0o4777 },
    ]);
    expect(err).toBeUndefined();
    expect(fs.lstatSync(join(c.root, 'sl')).isDirectory()).toBe(true);
    expect(fs.readFileSync(join(c.root, 'sl2'), 'utf8')).toBe('replaced');
  });

  it('contains a symlink that replaces a directory and is then written through', async () => {
    const c = await newCase();
    const err = await applyHostile(c, [
      { name: 'd/', type: 'dir' },
      { name: 'd/f', content: 'inside' },
      { name: 'd', type: 'symlink', linkname: '../outside' },
      { name: 'd/secret', content: 'pwned' },
    ]);
    // In-root, d → /outside does not exist: refused (Podman's chroot refuses it too).
    expectRefused(err, 'd/secret', /cannot open its directory inside the layer root: ENOENT/);
  });

  it('contains whiteouts and opaque markers behind symlinks', async () => {
    const c = await newCase();
    const err = await applyHostile(c, [
      { name: 'sl', type: 'symlink', linkname: '../outside' },
      { name: 'sl/.wh.secret', content: '' },
      { name: 'abs', type: 'symlink', linkname: c.outside },
      { name: 'abs/.wh.sub', content: '' },
      { name: 'rel', type: 'symlink', linkname: '../../..' },
      { name: 'rel/.wh..wh..opq', content: '' },
    ]);
    expect(err).toBeUndefined();
  });

  for (const [name, reason] of [
    ['.wh.', /invalid whiteout name/],
    ['a/.wh..', /invalid whiteout name/],
    ['.wh...', /invalid whiteout name/],
    ['../.wh.outside', /escapes the layer root/],
    ['a/../../.wh.outside', /escapes the layer root/],
  ] as const) {
    it(`refuses the whiteout ${name}`, async () => {
      const c = await newCase();
      fs.writeFileSync(join(c.root, 'keep'), 'k');
      const err = await applyHostile(c, [{ name, content: '' }]);
      expectRefused(err, name, reason);
      expect(fs.readdirSync(c.root)).toEqual(['keep']);
    });
  }

  it('refuses to replace the root with a file', async () => {
    const c = await newCase();
    const err = await applyHostile(c, [{ name: './', type: 'symlink', linkname: '/' }]);
    expectRefused(err, './', /cannot replace the layer root/);
  });

  it('refuses unsupported entry types', async () => {
    const c = await newCase();
    const err = await applyHostile(c, [{ name: 'vol', typeflag: 'V' }]);
    expectRefused(err, 'vol', /unsupported tar entry type "V"/);
  });
});
