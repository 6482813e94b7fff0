/**
 * The tukit plugin (plugins/tukit/ocisnap), called exactly as tukit calls it
 * (`<plugin> <stage> [args]`, no stdin, in tukit's mount namespace with the
 * snapshot bind-mounted; see tukit-emulation.ts) on a real btrfs sysroot
 * with a real snapper config: `tukit execute`, `open`/`close` and `abort`.
 */
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deploy } from '../../src/deploy/deploy.js';
import { listSnapshots, readInfoXml } from '../../src/deploy/snapper.js';
import { readState } from '../../src/deploy/state.js';
import { snapshotPath } from '../../src/deploy/sysroot.js';
import { Store } from '../../src/store/index.js';
import { recordPath, recordsDir } from '../../src/tukit/records.js';
import type { BuiltImage } from '../support/image-factory.js';
import { diffManifests, treeManifest } from '../support/mtree.js';
import { buildOsImage, defaultId, makeSysroot, makeWorkDir, removeDir, repoRoot, subvolumeId, type TestSysroot } from './deploy-support.js';
import { runTukit } from './tukit-emulation.js';

const plugin = join(repoRoot, 'plugins/tukit/ocisnap');
const config = `ocisnaptukit${randomBytes(3).toString('hex')}`;
let sys: TestSysroot;
let work: string;
let layout: string;
let v2: BuiltImage;
let v3: BuiltImage;
let logFile: string;

beforeAll(async () => {
  if (!existsSync(join(repoRoot, 'dist/bin/tukit-main.js'))) throw new Error("dist/bin/tukit-main.js is missing: run 'npm run build'");
  sys = await makeSysroot({ snapperConfig: config });
  work = await makeWorkDir();
  layout = join(work, 'layout');
  logFile = join(work, 'plugin.log');
  await writeFile(join(work, 'empty-tukit.conf'), '');
  await buildOsImage(layout, 'v1', { version: '1' });
  v2 = await buildOsImage(layout, 'v2', { version: '2', extraEtc: { 'etc/new-in-v2.conf': 'new\n' } });
  v3 = await buildOsImage(layout, 'v3', { version: '3' });
  // Snapshot 1: v1 deployed by ocisnap; the running system's /etc carried into it.
  await deploy({ paths: sys.paths, image: `oci:${layout}:v1` });
  await writeFile(join(snapshotPath(sys.paths, 1), 'etc/app.conf'), 'setting=admin\n');
  await mkdir(join(sys.paths.root, 'var/log'), { recursive: true });
  await writeFile(join(sys.paths.root, 'var/log/host.log'), 'host log\n');
});

afterAll(async () => {
  await sys?.dispose();
  if (work) await removeDir(work);
});

function env(extra: Record<string, string>): Record<string, string> {
  return {
    ROOT: sys.paths.root,
    CFG: config,
    PLUGIN: plugin,
    LOG: logFile,
    CMD: 'true',
    CMD_SAW: join(work, 'cmd-saw'),
    OCISNAP_SYSROOT: sys.paths.root,
    // Never the host's /etc/ocisnap/tukit.conf.
    OCISNAP_TUKIT_CONFIG: join(work, 'empty-tukit.conf'),
    ...extra,
  };
}

async function pluginLog(): Promise<string> {
  return existsSync(logFile) ? readFile(logFile, 'utf8') : '';
}

async function du(path: string): Promise<[number, number, number]> {
  const out = (await execa('btrfs', ['filesystem', 'du', '-s', '--raw', path])).stdout.trim().split('\n');
  const f = out.at(-1)!.trim().split(/\s+/);
  return [Number(f[0]), Number(f[1]), Number(f[2])];
}

async function records(): Promise<string[]> {
  return readdir(recordsDir(sys.paths.stateDir)).catch(() => []);
}

/** The directories tukit's mounts sit on (created in the snapshot by mounting there). */
const tukitMountDirs = ['./dev', './proc', './sys', './tmp', './run', './.snapshots', './var/log'];

describe('tukit plugin', () => {
  it('ignores unknown stages and rejects a malformed call with one line', async () => {
    const unknown = await execa(plugin, ['some-future-stage', '/x', '7'], { reject: false, stdin: 'ignore', env: env({}) });
    expect(unknown.exitCode).toBe(0);
    const bad = await execa(plugin, ['finalize-post', 'notanumber'], { reject: false, stdin: 'ignore', env: env({}) });
    expect(bad.exitCode).not.toBe(0);
    expect(bad.stderr.trim().split('\n')).toHaveLength(1);
    expect(bad.stderr).toContain('finalize-post: expected a snapshot number');
  });

  it('tukit execute without an image leaves the snapshot as tukit made it', async () => {
    const r = await runTukit('execute', env({ BASE: '1' }));
    const id = Number(/finalized (\d+)/.exec(r.stdout)![1]);
    expect(id).toBe(2);
    const info = await readInfoXml(sys.paths.snapshotsDir, id);
    expect(info.userdata['ocisnap.image']).toBeUndefined();
    expect(await readFile(join(snapshotPath(sys.paths, id), 'etc/os-release'), 'utf8')).toBe('NAME=testos\nVERSION=1\n');
    expect(await readFile(join(work, 'cmd-saw'), 'utf8')).toContain('VERSION=1');
    expect(await records()).toEqual([]);
    // Not ocisnap's deployment: the state does not list it.
    expect((await readState(sys.paths.root)).deployments.map((d) => d.snapshot)).toEqual([1]);
    // Back to snapshot 1 as the default for the next tests.
    await execa('btrfs', ['subvolume', 'set-default', snapshotPath(sys.paths, 1)]);
  });

  it('OCISNAP_IMAGE=REF tukit execute fills the new snapshot with the image, merges /etc and records it', async () => {
    const image = `oci:${layout}:v2`;
    const r = await runTukit('execute', env({ BASE: '1', OCISNAP_IMAGE: image }));
    const id = Number(/finalized (\d+)/.exec(r.stdout)![1]);
    expect(id).toBe(3);
    const log = await pluginLog();
    expect(log).toContain(`ocisnap: snapshot ${id} now holds ${image}`);
    const snap = snapshotPath(sys.paths, id);

    // tukit made it the default; the transaction's command already saw the new image.
    expect(await defaultId(sys.fs.mountpoint)).toBe(await subvolumeId(snap));
    expect(await readFile(join(work, 'cmd-saw'), 'utf8')).toBe('NAME=testos\nVERSION=2\n');

    // The tree is the image's (outside /etc and the directories tukit mounted on).
    const store = await Store.open(sys.paths.storageRoot);
    const record = await store.findImage(v2.configDigest.slice('sha256:'.length));
    const layer = store.layerPath(record!.layer!);
    const exclude = { exclude: (p: string) => p === './etc' || tukitMountDirs.includes(p) };
    expect(diffManifests(await treeManifest(layer, exclude), await treeManifest(snap, exclude), ['image', 'snapshot'])).toEqual([]);
    // Nothing of the host's /var/log was copied in or removed.
    expect(await readdir(join(snap, 'var/log'))).toEqual([]);
    expect(await readFile(join(sys.paths.root, 'var/log/host.log'), 'utf8')).toBe('host log\n');

    // /etc: three-way merge against v1's pristine /etc (snapshot 1's image).
    expect(await readFile(join(snap, 'etc/os-release'), 'utf8')).toBe('NAME=testos\nVERSION=2\n');
    expect(await readFile(join(snap, 'etc/new-in-v2.conf'), 'utf8')).toBe('new\n');
    expect(await readFile(join(snap, 'etc/app.conf'), 'utf8')).toBe('setting=admin\n');
    expect(await readFile(join(snap, 'etc/app.conf.ocisnap-new'), 'utf8')).toBe('setting=image-2\n');
    expect(await readFile(join(snap, 'etc/hostname'), 'utf8')).toBe('testhost\n');
    expect(existsSync(join(snap, '.ocisnap-tukit-local-etc'))).toBe(false);

    // Reflinks: the big file's extents are shared with the store.
    const [total, , shared] = await du(snap);
    expect(total).toBeGreaterThanOrEqual(4 << 20);
    expect(shared).toBeGreaterThanOrEqual(4 << 20);

    // Recorded: userdata for snapper, a pending deployment for ocisnap; tukit's own marker gone.
    const info = await readInfoXml(sys.paths.snapshotsDir, id);
    expect(info.userdata).toMatchObject({ 'ocisnap.image': image, 'ocisnap.digest': v2.manifestDigest });
    expect(info.userdata['transactional-update-in-progress']).toBeUndefined();
    expect(info.description).toBe('Snapshot Update of #1');
    const state = await readState(sys.paths.root);
    expect(state.deployments.find((d) => d.snapshot === id)).toMatchObject({ status: 'pending', image, manifestDigest: v2.manifestDigest, parent: 1 });
    expect(await records()).toEqual([]);
    // snapper itself lists it with the userdata.
    const list = (await execa('snapper', ['--no-dbus', '-c', config, '--csvout', 'list', '--columns', 'number,userdata'])).stdout;
    expect(list).toMatch(new RegExp(`(^|\\n)${id},.*ocisnap\\.digest=${v2.manifestDigest}`));
  });

  it('a failed command discards the snapshot and abort-post leaves nothing of ocisnap behind', async () => {
    const before = await readState(sys.paths.root);
    const def = await defaultId(sys.fs.mountpoint);
    const r = await runTukit('execute', env({ BASE: '3', OCISNAP_IMAGE: `oci:${layout}:v3`, CMD_FAIL: '1' }));
    const id = Number(/aborted (\d+)/.exec(r.stdout)![1]);
    expect(await readFile(join(work, 'cmd-saw'), 'utf8')).toBe('NAME=testos\nVERSION=3\n'); // it was filled
    expect(existsSync(snapshotPath(sys.paths, id))).toBe(false);
    expect((await listSnapshots(sys.paths.snapshotsDir)).map((s) => s.num)).not.toContain(id);
    expect(existsSync(recordPath(sys.paths.stateDir, id))).toBe(false);
    expect(await records()).toEqual([]);
    expect(await readState(sys.paths.root)).toEqual(before);
    expect(await defaultId(sys.fs.mountpoint)).toBe(def);
  });

  it('an image that cannot be had makes init-post fail, and the transaction is aborted cleanly', async () => {
    const before = await readState(sys.paths.root);
    const r = await runTukit('execute', env({ BASE: '3', OCISNAP_IMAGE: `oci:${join(work, 'no-such-layout')}:x` }));
    const id = Number(/aborted (\d+)/.exec(r.stdout)![1]);
    const log = await pluginLog();
    expect(log).toMatch(/ocisnap tukit plugin \(init-post\): .*no-such-layout/);
    expect(existsSync(snapshotPath(sys.paths, id))).toBe(false);
    expect(await records()).toEqual([]);
    expect(await readState(sys.paths.root)).toEqual(before);
  });

  it('a tukit that ignores plugin failures finalizes a failed fill: finalize-post puts the previous default back', async () => {
    const before = await readState(sys.paths.root);
    const def = await defaultId(sys.fs.mountpoint);
    const r = await runTukit('execute', env({ BASE: '3', OCISNAP_IMAGE: `oci:${join(work, 'no-such-layout')}:x`, TUKIT_IGNORE_PLUGIN_ERRORS: '1' }));
    const id = Number(/finalized (\d+)/.exec(r.stdout)![1]);
    expect(r.stdout).toContain('finalize-post failed');
    const log = await pluginLog();
    expect(log).toContain('plugin execute-pre failed (ignored)');
    expect(log).toMatch(new RegExp(`finalize-post\\): snapshot ${id} was finalized although putting image .* failed; the previous default`));
    expect(await defaultId(sys.fs.mountpoint)).toBe(def);
    expect(await records()).toEqual([]);
    expect(await readState(sys.paths.root)).toEqual(before);
    // tukit's snapshot itself stays (it is tukit's); remove it for the next tests.
    await execa('snapper', ['--no-dbus', '-c', config, 'delete', String(id)]);
  });

  it('tukit open with the image in tukit.conf, then tukit close, deploys it', async () => {
    // A record left by a tukit that died (its snapshot is gone) is dropped by the next transaction.
    await mkdir(recordsDir(sys.paths.stateDir), { recursive: true });
    await writeFile(recordPath(sys.paths.stateDir, 999), '{}');
    const conf = join(work, 'tukit.conf');
    await writeFile(conf, `image = "oci:${layout}:v3"\npull = true\n`);
    const opened = await runTukit('open', env({ BASE: '3', OCISNAP_TUKIT_CONFIG: conf }));
    const id = Number(/^ID: (\d+)$/m.exec(opened.stdout)![1]);
    // Between open and close: filled, and the plugin remembers it.
    expect(await readFile(join(snapshotPath(sys.paths, id), 'etc/os-release'), 'utf8')).toBe('NAME=testos\nVERSION=3\n');
    expect(JSON.parse(await readFile(recordPath(sys.paths.stateDir, id), 'utf8'))).toMatchObject({ status: 'filled', base: 3 });
    expect(await records()).toEqual([`${id}.json`]);
    expect((await readInfoXml(sys.paths.snapshotsDir, id)).userdata['transactional-update-in-progress']).toBe('yes');

    // close runs without any image setting: the record carries it.
    const closed = await runTukit('close', env({ ID: String(id) }));
    expect(closed.stdout).toContain(`finalized ${id}`);
    expect(await defaultId(sys.fs.mountpoint)).toBe(await subvolumeId(snapshotPath(sys.paths, id)));
    const info = await readInfoXml(sys.paths.snapshotsDir, id);
    expect(info.userdata).toMatchObject({ 'ocisnap.image': `oci:${layout}:v3`, 'ocisnap.digest': v3.manifestDigest });
    const state = await readState(sys.paths.root);
    expect(state.deployments.find((d) => d.snapshot === id)).toMatchObject({ status: 'pending', parent: 3 });
    expect(state.deployments.find((d) => d.snapshot === 3)?.status).toBe('superseded');
    expect(await records()).toEqual([]);
  });

  it('tukit open then tukit abort leaves nothing behind', async () => {
    const before = await readState(sys.paths.root);
    const opened = await runTukit('open', env({ BASE: '1', OCISNAP_IMAGE: `oci:${layout}:v2`, OCISNAP_PULL: '0' }));
    const id = Number(/^ID: (\d+)$/m.exec(opened.stdout)![1]);
    expect(existsSync(recordPath(sys.paths.stateDir, id))).toBe(true);
    await runTukit('abort', env({ ID: String(id) }));
    expect(existsSync(snapshotPath(sys.paths, id))).toBe(false);
    expect(await records()).toEqual([]);
    expect(await readState(sys.paths.root)).toEqual(before);
  });
});
