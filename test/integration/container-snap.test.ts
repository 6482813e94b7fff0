/**
 * `container-snap-ocisnap`: container-snap's commands, arguments and output
 * formats (dcermak/container-snap bin/container-snap.go), on a real btrfs
 * sysroot with a real snapper config, called with exactly the arguments
 * tukit's container-snap backend passes (lib/Snapshot/ContainerSnap.cpp);
 * the sysroot comes from OCISNAP_SYSROOT so the command lines stay the same.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readInfoXml } from '../../src/deploy/snapper.js';
import { readState } from '../../src/deploy/state.js';
import { snapshotPath } from '../../src/deploy/sysroot.js';
import type { BuiltImage } from '../support/image-factory.js';
import { buildOsImage, defaultId, makeSysroot, makeWorkDir, removeDir, repoRoot, subvolumeId, type TestSysroot } from './deploy-support.js';

const bin = join(repoRoot, 'dist/bin/container-snap-main.js');
const config = `ocisnapcs${randomBytes(3).toString('hex')}`;
let sys: TestSysroot;
let work: string;
let layout: string;
let archive: string;
let v1: BuiltImage;
let v2: BuiltImage;
let v3: BuiltImage;

const hex = (d: string): string => d.slice('sha256:'.length);

beforeAll(async () => {
  if (!existsSync(bin)) throw new Error(`${bin} is missing: run 'npm run build'`);
  sys = await makeSysroot({ snapperConfig: config });
  work = await makeWorkDir();
  layout = join(work, 'layout');
  v1 = await buildOsImage(layout, 'v1', { version: '1' });
  v2 = await buildOsImage(layout, 'v2', { version: '2' });
  // An OCI archive holding one image, for `load -i`.
  const single = join(work, 'single');
  v3 = await buildOsImage(single, 'v3', { version: '3' });
  archive = join(work, 'v3.tar');
  await execa('tar', ['-C', single, '-cf', archive, '.']);
});

afterAll(async () => {
  await sys?.dispose();
  if (work) await removeDir(work);
});

/** Runs container-snap with tukit's arguments; never rejects. */
async function cs(...args: string[]) {
  return execa('node', [bin, ...args], { reject: false, stdin: 'ignore', env: { OCISNAP_SYSROOT: sys.paths.root } });
}

/** An error is one line on stderr, a non-zero exit, and no stack trace. */
function expectOneLineError(r: Awaited<ReturnType<typeof cs>>, text: string): void {
  expect(r.exitCode).not.toBe(0);
  expect(r.stdout).toBe('');
  expect(r.stderr.trim().split('\n')).toHaveLength(1);
  expect(r.stderr).toContain(text);
  expect(r.stderr).not.toMatch(/\n\s+at |goroutine|panic/);
}

/** tukit's ContainerSnap::getList: skip the header, split each line at its first comma. */
function tukitList(stdout: string): Array<{ id: string; ro: string }> {
  const [, ...lines] = stdout.split('\n');
  return lines.filter((l) => l !== '' && l.includes(',')).map((l) => ({ id: l.slice(0, l.indexOf(',')), ro: l.slice(l.indexOf(',') + 1) }));
}

describe('container-snap drop-in', () => {
  it('pull and load put images into the layer store; list-images prints ID,Created,Name', async () => {
    const pulled = await cs('pull', `oci:${layout}:v1`);
    expect(pulled.stderr).toContain(`Pulled image with ID ${hex(v1.configDigest)}`);
    expect(pulled.exitCode).toBe(0);
    expect(pulled.stdout.split('\n').filter((l) => l.startsWith('Pulled layer sha256:'))).toHaveLength(2);

    expectOneLineError(await cs('load'), 'Either URL argument or --input/-i flag must be provided');
    const loaded = await cs('load', '-i', archive);
    expect(loaded.exitCode).toBe(0);

    const list = await cs('list-images');
    expect(list.exitCode).toBe(0);
    const lines = list.stdout.split('\n');
    expect(lines).toHaveLength(2);
    for (const line of lines) expect(line).toMatch(/^[0-9a-f]{64},\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(\.\d{1,9})? \+0000 UTC,\S+$/);
    expect(lines.map((l) => l.split(',')[0]).sort()).toEqual([hex(v1.configDigest), hex(v3.configDigest)].sort());
  });

  it('list-snapshots prints the header and id,ro lines tukit parses', async () => {
    const r = await cs('list-snapshots');
    expect(r.exitCode).toBe(0);
    expect(r.stdout.split('\n')[0]).toBe('# snapshot-id,ro');
    const entries = tukitList(r.stdout);
    expect(entries.map((e) => e.id).sort()).toEqual([hex(v1.configDigest), hex(v3.configDigest)].sort());
    for (const e of entries) expect(['true', 'false']).toContain(e.ro);
  });

  it('create-snapshot from an image makes a snapper snapshot with the running /etc merged, and prints its ID', async () => {
    const id = hex(v1.configDigest);
    const r = await cs('create-snapshot', id);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toBe(`${id}-work1`);
    const root = await cs('get-root', `${id}-work1`);
    expect(root.stdout).toBe(`${snapshotPath(sys.paths, 1)}/`);
    expect(await readFile(join(snapshotPath(sys.paths, 1), 'etc/hostname'), 'utf8')).toBe('testhost\n');
    expect(await readFile(join(snapshotPath(sys.paths, 1), 'usr/bin/tool'), 'utf8')).toContain('tool 1');
    const info = await readInfoXml(sys.paths.snapshotsDir, 1);
    expect(info.userdata['ocisnap.image-id']).toBe(id);
    expect(info.userdata['ocisnap.digest']).toBe(v1.manifestDigest);
    const snapper = (await execa('snapper', ['--no-dbus', '-c', config, '--csvout', 'list', '--columns', 'number,description'])).stdout;
    expect(snapper).toMatch(/(^|\n)1,container-snap: /);
    // The image itself: get-root is its top layer in the store.
    expect((await cs('get-root', id)).stdout).toMatch(new RegExp(`/var/lib/ocisnap/storage/btrfs/subvolumes/[0-9a-f]{64}/$`));
  });

  it('get-readonly-state and set-readonly-state --readonly/--no-readonly', async () => {
    const id = `${hex(v1.configDigest)}-work1`;
    expect((await cs('get-readonly-state', id)).stdout).toBe('false');
    expect((await cs('set-readonly-state', '--readonly', id)).exitCode).toBe(0);
    expect((await cs('get-readonly-state', id)).stdout).toBe('true');
    expect((await execa('btrfs', ['property', 'get', '-ts', snapshotPath(sys.paths, 1), 'ro'])).stdout.trim()).toBe('ro=true');
    expect((await cs('set-readonly-state', '--no-readonly', id)).exitCode).toBe(0);
    expect((await cs('get-readonly-state', id)).stdout).toBe('false');
  });

  it('switch makes a snapshot the default; get-default and get-current name it', async () => {
    const id = `${hex(v1.configDigest)}-work1`;
    // The initial default is not a container-snap snapshot.
    expectOneLineError(await cs('get-default'), 'No matching snapshot with subvolume ID');
    const switched = await cs('switch', id);
    expect({ exit: switched.exitCode, stderr: switched.stderr }).toEqual({ exit: 0, stderr: "" });
    expect(await defaultId(sys.fs.mountpoint)).toBe(await subvolumeId(snapshotPath(sys.paths, 1)));
    expect((await cs('get-default')).stdout).toBe(id);
    expect((await cs('get-current')).stdout).toBe(id); // with a sysroot: what boots next
    const state = await readState(sys.paths.root);
    expect(state.deployments.find((d) => d.snapshot === 1)).toMatchObject({ status: 'pending', imageId: hex(v1.configDigest) });
  });

  it('create-snapshot from a snapshot copies it; delete --id removes it and its number is not reused', async () => {
    const base = `${hex(v1.configDigest)}-work1`;
    await writeFile(join(snapshotPath(sys.paths, 1), 'etc/admin.conf'), 'mine\n');
    const r = await cs('create-snapshot', base);
    expect(r.stdout).toBe(`${hex(v1.configDigest)}-work2`);
    expect(await readFile(join(snapshotPath(sys.paths, 2), 'etc/admin.conf'), 'utf8')).toBe('mine\n');
    const listed = tukitList((await cs('list-snapshots')).stdout).map((e) => e.id);
    expect(listed).toContain(r.stdout);

    expect((await cs('delete', `--id=${r.stdout}`)).exitCode).toBe(0);
    expect(existsSync(snapshotPath(sys.paths, 2))).toBe(false);
    expect(tukitList((await cs('list-snapshots')).stdout).map((e) => e.id)).not.toContain(r.stdout);
    expect((await cs('create-snapshot', base)).stdout).toBe(`${hex(v1.configDigest)}-work3`);
  });

  it('refuses what would break the system, with one-line errors', async () => {
    expectOneLineError(await cs('delete', '--id', `${hex(v1.configDigest)}-work1`), 'is the default subvolume');
    expectOneLineError(await cs('delete'), 'Either a url or an ID must be provided');
    expectOneLineError(await cs('get-root', 'f'.repeat(64)), `No image with id '${'f'.repeat(64)}' found in image store`);
    expectOneLineError(await cs('create-snapshot', 'abc-def'), 'snapshot id abc-def is invalid');
    expectOneLineError(await cs('get-root', `${hex(v3.configDigest)}-work1`), `snapshot 1 does not hold image ${hex(v3.configDigest)}`);
    expectOneLineError(await cs('switch', '99'), 'snapshot 99 does not exist');
  });

  it('switch IMAGE deploys the stored image as a new snapshot; delete --id IMAGE removes an image', async () => {
    const pulled = await cs('pull', `oci:${layout}:v2`);
    expect(pulled.exitCode).toBe(0);
    const r = await cs('switch', hex(v2.configDigest));
    expect({ exit: r.exitCode, stderr: r.stderr }).toMatchObject({ exit: 0, stderr: expect.stringContaining('/etc of snapshot 1 merged') });
    const def = (await cs('get-default')).stdout;
    expect(def).toMatch(new RegExp(`^${hex(v2.configDigest)}-work(\\d+)$`));
    const num = Number(def.split('-work')[1]);
    expect(await readFile(join(snapshotPath(sys.paths, num), 'etc/os-release'), 'utf8')).toBe('NAME=testos\nVERSION=2\n');
    expect(await readFile(join(snapshotPath(sys.paths, num), 'etc/admin.conf'), 'utf8')).toBe('mine\n');

    expect((await cs('delete', '--id', hex(v3.configDigest))).exitCode).toBe(0);
    const images = (await cs('list-images')).stdout;
    expect(images).not.toContain(hex(v3.configDigest));
    expect(images).toContain(hex(v2.configDigest));
  });
});
