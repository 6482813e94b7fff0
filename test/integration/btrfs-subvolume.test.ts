import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdir, writeFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
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
  NotSubvolumeError,
  setDefaultSubvolume,
  setReadonly,
  showSubvolume,
  snapshotSubvolume,
} from '../../src/btrfs/index.js';

let fs: BtrfsFixture;
beforeAll(async () => {
  fs = await createBtrfs({ sizeMiB: 256 });
});
afterAll(async () => {
  await fs?.dispose();
});

describe('btrfs subvolumes', () => {
  it('tells btrfs from other filesystems', async () => {
    expect(await isBtrfs(fs.mountpoint)).toBe(true);
    expect(await isBtrfs(tmpdir())).toBe(false);
    const plain = join(fs.mountpoint, 'plain');
    await mkdir(plain);
    expect(await isSubvolume(plain)).toBe(false);
    expect(await isSubvolume(join(fs.mountpoint, 'missing'))).toBe(false);
  });

  it('creates, snapshots (rw and ro) and shows subvolumes', async () => {
    const a = join(fs.mountpoint, 'a');
    await createSubvolume(a);
    await writeFile(join(a, 'f'), 'one');
    expect(await isSubvolume(a)).toBe(true);
    const ro = join(fs.mountpoint, 'a-ro');
    const rw = join(fs.mountpoint, 'a-rw');
    await snapshotSubvolume(a, ro, { readonly: true });
    await snapshotSubvolume(a, rw);
    const [infoA, infoRo, infoRw] = await Promise.all([showSubvolume(a), showSubvolume(ro), showSubvolume(rw)]);
    expect(infoA.parentUuid).toBeUndefined();
    expect(infoRo.parentUuid).toBe(infoA.uuid);
    expect(infoRw.parentUuid).toBe(infoA.uuid);
    expect(infoRo.readonly).toBe(true);
    expect(infoRw.readonly).toBe(false);
    expect(await getReadonly(ro)).toBe(true);
    await expect(writeFile(join(ro, 'g'), 'x')).rejects.toMatchObject({ code: 'EROFS' });
    await writeFile(join(rw, 'f'), 'two');
    expect(await readFile(join(a, 'f'), 'utf8')).toBe('one');
    await setReadonly(rw, true);
    expect((await showSubvolume(rw)).readonly).toBe(true);
    await setReadonly(rw, false);
    expect(await getReadonly(rw)).toBe(false);
    const ids = (await listSubvolumes(fs.mountpoint)).map((s) => s.id);
    expect(ids).toEqual(expect.arrayContaining([infoA.id, infoRo.id, infoRw.id]));
  });

  it('refuses an existing destination and a non-subvolume source with typed errors', async () => {
    const a = join(fs.mountpoint, 'a');
    await expect(createSubvolume(a)).rejects.toThrow(BtrfsError);
    await expect(snapshotSubvolume(join(fs.mountpoint, 'plain'), join(fs.mountpoint, 'p2'))).rejects.toThrow(NotSubvolumeError);
    await expect(showSubvolume(join(fs.mountpoint, 'nope'))).rejects.toThrow(/btrfs subvolume show .*nope/);
  });

  it('deletes nested subvolumes recursively, even under a read-only parent', async () => {
    const top = join(fs.mountpoint, 'nest');
    await createSubvolume(top);
    await createSubvolume(join(top, 'b'));
    await mkdir(join(top, 'd'));
    await createSubvolume(join(top, 'd', 'c'));
    await createSubvolume(join(top, 'b', 'e'));
    const children = await listChildSubvolumes(top);
    expect(children.map((c) => c.path).sort()).toEqual([join(top, 'b'), join(top, 'd', 'c')]);
    await setReadonly(top, true);
    await expect(deleteSubvolume(top)).rejects.toThrow(BtrfsError);
    await deleteSubvolume(top, { recursive: true });
    expect(await isSubvolume(top)).toBe(false);
    const left = (await listSubvolumes(fs.mountpoint)).filter((s) => s.fsPath.startsWith('nest'));
    expect(left).toEqual([]);
  });

  it('sets and gets the default subvolume', async () => {
    expect(await getDefaultSubvolume(fs.mountpoint)).toEqual({ id: 5, fsPath: '' });
    const a = await showSubvolume(join(fs.mountpoint, 'a'));
    await setDefaultSubvolume(a.id, fs.mountpoint);
    expect(await getDefaultSubvolume(fs.mountpoint)).toEqual({ id: a.id, fsPath: 'a' });
    await setDefaultSubvolume(5, fs.mountpoint);
    expect((await getDefaultSubvolume(fs.mountpoint)).id).toBe(5);
  });
});
