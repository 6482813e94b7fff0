/**
 * The ioctl-based subvolume operations against btrfs-progs' own view of the
 * same filesystem: what `btrfs subvolume show/list/get-default` print must
 * match what src/btrfs reads from the kernel.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { execa } from 'execa';
import { createBtrfs, type BtrfsFixture } from '../support/btrfs.js';
import {
  BtrfsError,
  createSubvolume,
  deleteSubvolume,
  getDefaultSubvolume,
  getReadonly,
  isBtrfs,
  isSubvolume,
  listChildSubvolumes,
  listSubvolumes,
  NotBtrfsError,
  NotSubvolumeError,
  parseSubvolumeList,
  parseSubvolumeShow,
  setDefaultSubvolume,
  setReadonly,
  showSubvolume,
  snapshotSubvolume,
  syncFilesystem,
  waitSubvolumeCleaned,
} from '../../src/btrfs/index.js';

let fs: BtrfsFixture;
let mnt: string;
let other: string;
beforeAll(async () => {
  fs = await createBtrfs({ sizeMiB: 256 });
  mnt = fs.mountpoint;
  other = await mkdtemp(join(tmpdir(), 'ocisnap-notbtrfs-'));
  // Layout: a (file f), a/d/c (nested in a plain dir), a/b, a/b/e, s = ro snapshot of a.
  await createSubvolume(join(mnt, 'a'));
  await writeFile(join(mnt, 'a', 'f'), 'one');
  await mkdir(join(mnt, 'a', 'd'));
  await createSubvolume(join(mnt, 'a', 'd', 'c'));
  await createSubvolume(join(mnt, 'a', 'b'));
  await createSubvolume(join(mnt, 'a', 'b', 'e'));
  await snapshotSubvolume(join(mnt, 'a'), join(mnt, 's'), { readonly: true });
});
afterAll(async () => {
  await fs?.dispose();
  if (other) await rm(other, { recursive: true, force: true });
});

async function progs(...args: string[]): Promise<string> {
  return (await execa('btrfs', args)).stdout;
}

const oneLine = (err: unknown): string => {
  expect(err).toBeInstanceOf(Error);
  const message = (err as Error).message;
  expect(message).not.toContain('\n');
  return message;
};

async function failure(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => expect.unreachable('expected a failure'),
    (err: unknown) => err,
  );
}

describe('btrfs through ioctls, checked against btrfs-progs', () => {
  it('shows subvolumes as `btrfs subvolume show` does', async () => {
    expect(await isBtrfs(other)).toBe(false);
    for (const rel of ['', 'a', 'a/d/c', 'a/b/e', 's']) {
      const path = join(mnt, rel);
      const expected = parseSubvolumeShow(await progs('subvolume', 'show', path), path);
      expect(await showSubvolume(path), rel || '/').toEqual(expected);
    }
    const s = await showSubvolume(join(mnt, 's'));
    expect(s.readonly).toBe(true);
    expect(s.parentUuid).toBe((await showSubvolume(join(mnt, 'a'))).uuid);
    expect((await showSubvolume(join(mnt, 'a', 'd', 'c'))).fsPath).toBe('a/d/c');
  });

  it('lists subvolumes and nested subvolumes as `btrfs subvolume list [-o]` does', async () => {
    const byId = <T extends { id: number }>(xs: T[]): T[] => [...xs].sort((x, y) => x.id - y.id);
    // Enough root items (~470 bytes each) that the tree search takes several 64 KiB batches.
    const many = join(mnt, 'many');
    await mkdir(many);
    for (let i = 0; i < 300; i++) await createSubvolume(join(many, `v${i}`));
    const all = await listSubvolumes(mnt);
    expect(all.filter((s) => s.fsPath.startsWith('many/'))).toHaveLength(300);
    expect(all).toEqual(byId(parseSubvolumeList(await progs('subvolume', 'list', mnt))));
    const children = await listChildSubvolumes(join(mnt, 'a'));
    const expected = parseSubvolumeList(await progs('subvolume', 'list', '-o', join(mnt, 'a')));
    expect(byId(children).map(({ path: _p, ...entry }) => entry)).toEqual(byId(expected));
    expect(children.map((c) => c.path).sort()).toEqual([join(mnt, 'a', 'b'), join(mnt, 'a', 'd', 'c')]);
  });

  it('sets and reads the default subvolume as `btrfs subvolume get-default` does', async () => {
    const c = await showSubvolume(join(mnt, 'a', 'd', 'c'));
    await setDefaultSubvolume(c.id, mnt);
    expect(await progs('subvolume', 'get-default', mnt)).toBe(`ID ${c.id} gen ${c.generation} top level ${c.topLevelId} path a/d/c`);
    expect(await getDefaultSubvolume(mnt)).toEqual({ id: c.id, fsPath: 'a/d/c' });
    await execa('btrfs', ['subvolume', 'set-default', '5', mnt]);
    expect(await getDefaultSubvolume(mnt)).toEqual({ id: 5, fsPath: '' });
    const err = await failure(setDefaultSubvolume(99999, mnt));
    expect(err).toBeInstanceOf(BtrfsError);
    expect(oneLine(err)).toContain(mnt);
  });

  it('snapshots read-only and writable, sets and clears read-only, as btrfs-progs sees it', async () => {
    const rw = join(mnt, 'rw');
    await snapshotSubvolume(join(mnt, 'a'), rw);
    expect(await readFile(join(rw, 'f'), 'utf8')).toBe('one');
    expect(await progs('property', 'get', '-ts', rw, 'ro')).toBe('ro=false');
    await setReadonly(rw, true);
    expect(await progs('property', 'get', '-ts', rw, 'ro')).toBe('ro=true');
    await expect(writeFile(join(rw, 'g'), 'x')).rejects.toMatchObject({ code: 'EROFS' });
    await execa('btrfs', ['property', 'set', '-ts', rw, 'ro', 'false']);
    expect(await getReadonly(rw)).toBe(false);
    await writeFile(join(rw, 'g'), 'x');
    expect(await getReadonly(join(mnt, 's'))).toBe(true);
    await expect(writeFile(join(mnt, 's', 'g'), 'x')).rejects.toMatchObject({ code: 'EROFS' });
    // Nested subvolumes are not part of a snapshot: an empty directory stands in their place.
    expect(await isSubvolume(join(mnt, 's', 'b'))).toBe(false);
    await deleteSubvolume(rw);
    expect(await isSubvolume(rw)).toBe(false);
  });

  it('deletes recursively, deepest first, through read-only subvolumes', async () => {
    const top = join(mnt, 'tree');
    await createSubvolume(top);
    await mkdir(join(top, 'x', 'y'), { recursive: true });
    await createSubvolume(join(top, 'x', 'y', 'inner'));
    await createSubvolume(join(top, 'x', 'y', 'inner', 'leaf'));
    await createSubvolume(join(top, 'sib'));
    await setReadonly(join(top, 'x', 'y', 'inner'), true);
    await setReadonly(top, true);
    const err = await failure(deleteSubvolume(top));
    expect(err).toBeInstanceOf(BtrfsError);
    expect(oneLine(err)).toBe(`btrfs subvolume delete ${top}: it contains nested subvolumes`);
    expect(await isSubvolume(top)).toBe(true);
    await deleteSubvolume(top, { recursive: true });
    expect(await isSubvolume(top)).toBe(false);
    const left = parseSubvolumeList(await progs('subvolume', 'list', mnt)).filter((s) => s.fsPath.startsWith('tree'));
    expect(left).toEqual([]);
  });

  it('deletes a read-only subvolume and waits for the cleaner', async () => {
    const ro = join(mnt, 'ro-gone');
    await snapshotSubvolume(join(mnt, 'a'), ro, { readonly: true });
    const { id } = await showSubvolume(ro);
    await deleteSubvolume(ro, { recursive: true });
    expect(await isSubvolume(ro)).toBe(false);
    await syncFilesystem(mnt);
    await waitSubvolumeCleaned(mnt, id, { pollMs: 20 });
    expect(await progs('subvolume', 'list', '-d', mnt)).not.toMatch(new RegExp(`^ID ${id} `, 'm'));
  });

  it('fails with one-line typed errors naming the path', async () => {
    const plain = join(mnt, 'a', 'd');
    const onPlain = [showSubvolume, getReadonly, (p: string) => setReadonly(p, true), deleteSubvolume];
    for (const op of onPlain) {
      const err = await failure(op(plain));
      expect(err).toBeInstanceOf(NotSubvolumeError);
      expect(oneLine(err)).toBe(`${plain} is not a btrfs subvolume`);
    }
    await expect(snapshotSubvolume(plain, join(mnt, 'p2'))).rejects.toThrow(NotSubvolumeError);

    const elsewhere = [() => createSubvolume(join(other, 'x')), () => getReadonly(other), () => setDefaultSubvolume(5, other)];
    for (const op of elsewhere) {
      const err = await failure(op());
      expect(err).toBeInstanceOf(NotBtrfsError);
      expect(oneLine(err)).toMatch(new RegExp(`^path ${other}(/x)? is not on a btrfs filesystem$`));
    }

    const exists = await failure(createSubvolume(join(mnt, 'a')));
    expect(exists).toBeInstanceOf(BtrfsError);
    expect(oneLine(exists)).toBe(`btrfs subvolume create ${join(mnt, 'a')}: destination already exists`);
    const missing = join(mnt, 'no', 'such');
    const noParent = await failure(snapshotSubvolume(join(mnt, 'a'), missing));
    expect(noParent).toBeInstanceOf(BtrfsError);
    expect(oneLine(noParent)).toBe(`btrfs subvolume snapshot ${missing}: No such file or directory (ENOENT)`);
    const xdev = await failure(snapshotSubvolume(join(mnt, 'a'), join(other, 'snap')));
    expect(xdev).toBeInstanceOf(Error);
    expect(oneLine(xdev)).toContain(join(other, 'snap'));
  });
});
