/**
 * ocisnap deploy on a real btrfs sysroot: the new snapshot is the default,
 * holds the image's tree (mtree comparison) except the merged /etc, shares
 * its extents with the layer store, is registered for snapper; the /etc
 * merge uses the previous image's pristine /etc as its base; hooks run and
 * a failing hook discards the snapshot.
 */
import { chmod, mkdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deploy } from '../../src/deploy/deploy.js';
import { listSnapshots, readInfoXml } from '../../src/deploy/snapper.js';
import { readState } from '../../src/deploy/state.js';
import { snapshotPath } from '../../src/deploy/sysroot.js';
import { Store } from '../../src/store/index.js';
import { diffManifests, treeManifest } from '../support/mtree.js';
import type { BuiltImage } from '../support/image-factory.js';
import {
  buildOsImage,
  defaultId,
  makeSysroot,
  makeWorkDir,
  removeDir,
  runningEtc,
  subvolumeId,
  type TestSysroot,
} from './deploy-support.js';

let sys: TestSysroot;
let work: string;
let layout: string;
let v1: BuiltImage;
let v2: BuiltImage;
const logs: string[] = [];
const log = (line: string): void => void logs.push(line);

beforeAll(async () => {
  sys = await makeSysroot();
  work = await makeWorkDir();
  layout = join(work, 'layout');
  v1 = await buildOsImage(layout, 'v1', { version: '1' });
  v2 = await buildOsImage(layout, 'v2', { version: '2', extraEtc: { 'etc/new-in-v2.conf': 'new\n' } });
});

afterAll(async () => {
  await sys?.dispose();
  if (work) await removeDir(work);
});

/** `btrfs filesystem du -s --raw`: [total, exclusive, set shared]. */
async function du(path: string): Promise<[number, number, number]> {
  const out = (await execa('btrfs', ['filesystem', 'du', '-s', '--raw', path])).stdout.trim().split('\n');
  const fields = out.at(-1)!.trim().split(/\s+/);
  return [Number(fields[0]), Number(fields[1]), Number(fields[2])];
}

describe('deploy', () => {
  it('makes the new snapshot the default, with the image tree and shared extents', async () => {
    const result = await deploy({ paths: sys.paths, image: `oci:${layout}:v1`, log });
    expect(result.snapshot).toBe(1);
    expect(result.manifestDigest).toBe(v1.manifestDigest);
    const snap = snapshotPath(sys.paths, 1);

    // Default subvolume = the new snapshot.
    expect(await defaultId(sys.fs.mountpoint)).toBe(await subvolumeId(snap));

    // Tree equals the image's (the store's top layer) outside /etc ...
    const store = await Store.open(sys.paths.storageRoot);
    const image = await store.findImage(result.imageId);
    const layer = store.layerPath(image!.layer!);
    const outsideEtc = { exclude: (p: string) => p === './etc' };
    const [mSnap, mLayer] = [await treeManifest(snap, outsideEtc), await treeManifest(layer, outsideEtc)];
    expect(diffManifests(mLayer, mSnap, ['image', 'snapshot'])).toEqual([]);
    // ... and inside /etc too, except the files the merge decided from the running system.
    const [eSnap, eLayer] = [await treeManifest(join(snap, 'etc')), await treeManifest(join(layer, 'etc'))];
    const changed = diffManifests(eLayer, eSnap).join('\n');
    expect(changed).toContain('./hostname'); // identity: the running system's
    expect(changed).not.toContain('./extra.conf');
    expect(changed).not.toContain('./os-release');
    expect(changed).toContain('only in b: ./app.conf.ocisnap-new'); // no base: local kept, image's beside
    expect(await readFile(join(snap, 'etc/app.conf'), 'utf8')).toBe(runningEtc['etc/app.conf']);
    expect(await readFile(join(snap, 'etc/hostname'), 'utf8')).toBe(runningEtc['etc/hostname']);
    expect(await readFile(join(snap, 'etc/machine-id'), 'utf8')).toBe(runningEtc['etc/machine-id']);
    expect(await readFile(join(snap, 'usr/bin/tool'), 'utf8')).toContain('tool 1');

    // Extents: the snapshot shares (almost) everything with the store layer.
    const [total, exclusive, shared] = await du(snap);
    expect(total).toBeGreaterThanOrEqual(4 << 20);
    expect(shared).toBeGreaterThanOrEqual(4 << 20);
    expect(exclusive).toBeLessThan(256 << 10);

    // snapper metadata and state.
    const info = await readInfoXml(sys.paths.snapshotsDir, 1);
    expect(info.description).toBe(`ocisnap: oci:${layout}:v1`);
    expect(info.userdata['ocisnap.digest']).toBe(v1.manifestDigest);
    expect(info.userdata['ocisnap.image']).toBe(`oci:${layout}:v1`);
    expect(info.cleanup).toBeUndefined();
    const state = await readState(sys.paths.root);
    expect(state.inProgress).toBeUndefined();
    expect(state.followed).toBe(`oci:${layout}:v1`);
    expect(state.deployments).toHaveLength(1);
    expect(state.deployments[0]).toMatchObject({ snapshot: 1, status: 'pending', manifestDigest: v1.manifestDigest });
    expect(logs.join('\n')).toContain('no deploy hooks found');
  });

  it('merges /etc against the pristine /etc of the image the current snapshot came from', async () => {
    // The admin changes app.conf and adds a file in the current default (snapshot 1).
    const current = snapshotPath(sys.paths, 1);
    await writeFile(join(current, 'etc/app.conf'), 'setting=admin\n');
    await writeFile(join(current, 'etc/admin.conf'), 'mine\n');

    const result = await deploy({ paths: sys.paths, image: `oci:${layout}:v2`, log, readOnly: true });
    expect(result.snapshot).toBe(2);
    expect(result.parent).toBe(1);
    const snap = snapshotPath(sys.paths, 2);
    // Untouched locally (local = v1 image = base): the v2 image's version.
    // Without the base these would be "no-base" conflicts with local kept.
    expect(await readFile(join(snap, 'etc/os-release'), 'utf8')).toBe('NAME=testos\nVERSION=2\n');
    expect(await readFile(join(snap, 'etc/extra.conf'), 'utf8')).toBe('extra=2\n');
    expect(await readFile(join(snap, 'etc/new-in-v2.conf'), 'utf8')).toBe('new\n');
    // Changed on both sides: local kept, the image's beside it.
    expect(await readFile(join(snap, 'etc/app.conf'), 'utf8')).toBe('setting=admin\n');
    expect(await readFile(join(snap, 'etc/app.conf.ocisnap-new'), 'utf8')).toBe('setting=image-2\n');
    expect(result.etc?.conflicts).toEqual([{ path: 'app.conf', kind: 'changed-both', newSavedAs: 'app.conf.ocisnap-new' }]);
    // Added locally: carried over. Identity: still the host's.
    expect(await readFile(join(snap, 'etc/admin.conf'), 'utf8')).toBe('mine\n');
    expect(await readFile(join(snap, 'etc/hostname'), 'utf8')).toBe(runningEtc['etc/hostname']);

    expect((await execa('btrfs', ['property', 'get', '-ts', snap, 'ro'])).stdout.trim()).toBe('ro=true');
    expect(await defaultId(sys.fs.mountpoint)).toBe(await subvolumeId(snap));
    const state = await readState(sys.paths.root);
    expect(state.deployments.map((d) => [d.snapshot, d.status, d.parent])).toEqual([
      [1, 'superseded', undefined],
      [2, 'pending', 1],
    ]);
  });

  it('runs deploy hooks with the new snapshot; a failing hook discards it and keeps the default', async () => {
    const hooks = join(work, 'hooks');
    await mkdir(hooks, { recursive: true });
    const marker = join(work, 'hook-ran');
    await writeFile(join(hooks, '10-record'), `#!/bin/sh\necho "$1 $2 $OCISNAP_IMAGE" > ${marker}\necho hello from hook\n`);
    await chmod(join(hooks, '10-record'), 0o755);
    // Shipped by the image inside the snapshot is found too: use the host dir here.
    const ok = await deploy({ paths: sys.paths, image: `oci:${layout}:v1`, pull: false, log, hookDirs: [hooks] });
    expect(ok.hooksRun).toEqual(['10-record']);
    expect(await readFile(marker, 'utf8')).toBe(`${snapshotPath(sys.paths, ok.snapshot)} ${ok.snapshot} oci:${layout}:v1\n`);
    expect(logs).toContain('[10-record] hello from hook');

    await writeFile(join(hooks, '20-fail'), '#!/bin/sh\necho cannot build initrd >&2\nexit 3\n');
    await chmod(join(hooks, '20-fail'), 0o755);
    const before = await defaultId(sys.fs.mountpoint);
    const stateBefore = await readState(sys.paths.root);
    await expect(deploy({ paths: sys.paths, image: `oci:${layout}:v2`, pull: false, log, hookDirs: [hooks] })).rejects.toThrow(
      /deploy hook .*20-fail failed \(exit status 3\): cannot build initrd/,
    );
    expect(await defaultId(sys.fs.mountpoint)).toBe(before);
    const failedNum = ok.snapshot + 1;
    await expect(stat(snapshotPath(sys.paths, failedNum))).rejects.toThrow(/ENOENT/);
    expect((await listSnapshots(sys.paths.snapshotsDir)).map((s) => s.num)).not.toContain(failedNum);
    const stateAfter = await readState(sys.paths.root);
    expect(stateAfter.inProgress).toBeUndefined();
    expect(stateAfter.deployments).toEqual(stateBefore.deployments);
    // The number is used up, never handed out again.
    expect(stateAfter.highestSnapshot).toBe(failedNum);
  });

  it("runs the image's own hooks; the admin disables one with a /dev/null link in /etc", async () => {
    const hookDir = 'usr/lib/ocisnap/deploy.d';
    await buildOsImage(layout, 'hooked', {
      version: '3',
      extraEntries: [
        { type: 'file', path: `${hookDir}/50-initrd`, mode: 0o755, content: '#!/bin/sh\necho "initrd for $2" > "$1/usr/lib/initrd-stamp"\n' },
        { type: 'file', path: `${hookDir}/60-bootloader`, mode: 0o755, content: '#!/bin/sh\nexit 9\n' },
        { type: 'file', path: `${hookDir}/70-not-executable`, mode: 0o644, content: '#!/bin/sh\nexit 9\n' },
      ],
    });
    // The admin's /etc (in the current default) disables 60-bootloader; the merge carries the link over.
    const state = await readState(sys.paths.root);
    const current = Math.max(...state.deployments.map((d) => d.snapshot));
    expect(await defaultId(sys.fs.mountpoint)).toBe(await subvolumeId(snapshotPath(sys.paths, current)));
    await mkdir(join(snapshotPath(sys.paths, current), 'etc/ocisnap/deploy.d'), { recursive: true });
    await symlink('/dev/null', join(snapshotPath(sys.paths, current), 'etc/ocisnap/deploy.d/60-bootloader'));

    const r = await deploy({ paths: sys.paths, image: `oci:${layout}:hooked`, log });
    expect(r.hooksRun).toEqual(['50-initrd']);
    expect(await readFile(join(snapshotPath(sys.paths, r.snapshot), 'usr/lib/initrd-stamp'), 'utf8')).toBe(`initrd for ${r.snapshot}\n`);
    expect(logs.join('\n')).toMatch(/ignored hook: .*70-not-executable: not executable/);
    expect(await defaultId(sys.fs.mountpoint)).toBe(await subvolumeId(snapshotPath(sys.paths, r.snapshot)));
  });
});
