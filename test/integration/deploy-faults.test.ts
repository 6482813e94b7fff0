/**
 * Faults, through the built CLI in child processes (run `npm run build`
 * first): a deploy SIGKILLed at every step leaves the old default booting
 * (or, once set-default ran, the new one fully registered) and no
 * half-registered snapshot after the next ocisnap run; a full filesystem, a
 * non-btrfs sysroot, a missing image and a concurrent deploy each give one
 * clear line and lose nothing; a disk that fails at the commit point gives
 * one line that says so.
 */
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listSnapshots } from '../../src/deploy/snapper.js';
import { readState, withStateLock } from '../../src/deploy/state.js';
import { snapshotPath } from '../../src/deploy/sysroot.js';
import { buildImage } from '../support/image-factory.js';
import {
  buildOsImage,
  cli,
  cliPath,
  defaultId,
  makeSysroot,
  makeWorkDir,
  noise,
  removeDir,
  subvolumeId,
  type TestSysroot,
} from './deploy-support.js';

let work: string;
let layout: string;

beforeAll(async () => {
  if (!existsSync(cliPath)) throw new Error(`${cliPath} is missing: run "npm run build" first`);
  work = await makeWorkDir();
  layout = join(work, 'layout');
  await buildOsImage(layout, 'v1', { version: '1', bigSize: 1 << 20 });
  await buildOsImage(layout, 'v2', { version: '2', bigSize: 1 << 20 });
});

afterAll(async () => {
  if (work) await removeDir(work);
});

/** Resolves once process `pid` is stopped (state T in /proc/PID/stat). */
async function waitStopped(pid: number): Promise<void> {
  for (let i = 0; i < 600; i++) {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    if (state === 'T') return;
    if (stat === '') throw new Error(`process ${pid} ended before it stopped`);
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`process ${pid} did not stop within 60 s`);
}

/** Every snapshot snapper lists that carries ocisnap userdata is a deployment in the state; nothing is left in progress. */
async function expectConsistent(sys: TestSysroot): Promise<void> {
  const state = await readState(sys.paths.root);
  expect(state.inProgress).toBeUndefined();
  const listed = await listSnapshots(sys.paths.snapshotsDir);
  const deployed = new Set(state.deployments.map((d) => d.snapshot));
  for (const s of listed) {
    if (s.userdata['ocisnap.digest'] !== undefined) expect(deployed.has(s.num), `snapshot ${s.num} registered but not in the state`).toBe(true);
  }
  for (const d of state.deployments) expect(listed.map((s) => s.num)).toContain(d.snapshot);
  // No numbered directory holds a subvolume or info.xml that snapper would not list.
  for (const name of await readdir(sys.paths.snapshotsDir)) {
    if (!/^\d+$/.test(name) || listed.some((s) => s.num === Number(name))) continue;
    expect(await readdir(join(sys.paths.snapshotsDir, name)), `leftover in .snapshots/${name}`).toEqual([]);
  }
}

describe('deploy killed with SIGKILL', () => {
  let sys: TestSysroot;
  beforeAll(async () => {
    sys = await makeSysroot();
    const r = await cli(['--sysroot', sys.paths.root, 'deploy', '--progress', 'none', `oci:${layout}:v1`]);
    expect(r.stderr).not.toContain('internal error');
    expect(r.exitCode, r.stderr).toBe(0);
    // v2 in the store too, so the crash runs need no pull.
    const pull = await cli(['--storage-root', sys.paths.storageRoot, 'pull', '-q', `oci:${layout}:v2`]);
    expect(pull.exitCode, pull.stderr).toBe(0);
  });
  afterAll(async () => sys?.dispose());

  const beforeCommit = ['pulled', 'reserved', 'begun', 'snapshotted', 'merging+2', 'merged', 'hooks-done', 'registered', 'before-set-default'];
  for (const step of beforeCommit) {
    it(`at ${step}: the old default stays and the next run removes every trace`, async () => {
      const oldDefault = await defaultId(sys.paths.root);
      const stateBefore = await readState(sys.paths.root);
      // --read-only: the snapshot to remove may already be read-only.
      const r = await cli(['--sysroot', sys.paths.root, 'deploy', '--read-only', '--progress', 'none', `oci:${layout}:v2`], {
        OCISNAP_TEST_CRASH_AT: step,
      });
      expect(r.signal, `${step}: ${r.stderr}`).toBe('SIGKILL');
      expect(await defaultId(sys.paths.root)).toBe(oldDefault);
      const interrupted = (await readState(sys.paths.root)).inProgress;
      if (step !== 'pulled' && step !== 'reserved') expect(interrupted).toBeDefined();

      // The next ocisnap run (any mutating command) cleans up.
      const next = await cli(['--sysroot', sys.paths.root, 'gc', '--dry-run', '--keep', '100']);
      expect(next.exitCode, next.stderr).toBe(0);
      if (interrupted) expect(next.stderr).toContain('removed the interrupted deploy');
      expect(await defaultId(sys.paths.root)).toBe(oldDefault);
      await expectConsistent(sys);
      const stateAfter = await readState(sys.paths.root);
      expect(stateAfter.deployments).toEqual(stateBefore.deployments);
      expect(stateAfter.followed).toBe(stateBefore.followed);
    });
  }

  for (const step of ['default-set', 'done']) {
    it(`at ${step}: the new snapshot boots next and the next run finishes its registration`, async () => {
      const r = await cli(['--sysroot', sys.paths.root, 'deploy', '--progress', 'none', `oci:${layout}:v2`], {
        OCISNAP_TEST_CRASH_AT: step,
      });
      expect(r.signal, r.stderr).toBe('SIGKILL');
      const state = await readState(sys.paths.root);
      const num = step === 'done' ? state.highestSnapshot : state.inProgress!.snapshot;
      expect(await defaultId(sys.paths.root)).toBe(await subvolumeId(snapshotPath(sys.paths, num)));
      const next = await cli(['--sysroot', sys.paths.root, 'gc', '--dry-run', '--keep', '100']);
      expect(next.exitCode, next.stderr).toBe(0);
      if (step === 'default-set') expect(next.stderr).toContain('finished the interrupted deploy');
      await expectConsistent(sys);
      const after = await readState(sys.paths.root);
      // The policy's verdict survives the crash (kept in the in-progress marker until recovery records it).
      expect(after.deployments.find((d) => d.snapshot === num)).toMatchObject({
        status: 'pending',
        image: `oci:${layout}:v2`,
        verification: { requirement: 'insecureAcceptAnything', scope: 'default' },
      });
    });
  }

  it('a second deploy while one holds the lock fails at once with a clear message and changes nothing', async () => {
    const before = await readState(sys.paths.root);
    const oldDefault = await defaultId(sys.paths.root);
    await withStateLock(sys.paths.root, async () => {
      const r = await cli(['--sysroot', sys.paths.root, 'deploy', '--no-pull', `oci:${layout}:v1`]);
      expect(r.exitCode).toBe(1);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/^ocisnap: another ocisnap is working on /);
    });
    expect(await readState(sys.paths.root)).toEqual(before);
    expect(await defaultId(sys.paths.root)).toBe(oldDefault);
  });

  it('an image the signature policy rejects: refused at pull and when re-checked from the store', async () => {
    const policy = join(work, 'reject-policy.json');
    await writeFile(policy, JSON.stringify({ default: [{ type: 'reject' }] }));
    const before = await readState(sys.paths.root);
    const oldDefault = await defaultId(sys.paths.root);
    for (const extra of [[], ['--no-pull']]) {
      const r = await cli(['--sysroot', sys.paths.root, 'deploy', '--progress', 'none', '--signature-policy', policy, ...extra, `oci:${layout}:v2`]);
      expect(r.exitCode, r.stderr).toBe(1);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/^ocisnap: .*rejected by policy/);
    }
    expect(await readState(sys.paths.root)).toEqual(before);
    expect(await defaultId(sys.paths.root)).toBe(oldDefault);
  });

  it('a missing image: one line, nothing changed', async () => {
    const before = await readState(sys.paths.root);
    const r = await cli(['--sysroot', sys.paths.root, 'deploy', '--no-pull', 'localhost:5999/nothing/here:1']);
    expect(r.exitCode).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/image localhost:5999\/nothing\/here:1 is not in the layer store/);
    const r2 = await cli(['--sysroot', sys.paths.root, 'deploy', `oci:${layout}:no-such-tag`]);
    expect(r2.exitCode).toBe(1);
    expect(r2.stderr.trim().split('\n')).toHaveLength(1);
    expect(r2.stderr).toContain('no-such-tag');
    expect(r2.stderr).not.toContain('internal error');
    expect(await readState(sys.paths.root)).toEqual(before);
    await expectConsistent(sys);
  });
});

describe('deploy onto unsuitable targets', () => {
  it('a sysroot that is not btrfs: one clear line', async () => {
    const dir = await makeWorkDir(); // /tmp: ext4 on these machines
    try {
      const r = await cli(['--sysroot', dir, 'deploy', `oci:${layout}:v1`]);
      expect(r.exitCode).toBe(1);
      expect(r.stderr.trim()).toBe(`ocisnap: sysroot ${dir} is not on a btrfs filesystem`);
      expect(await readdir(dir)).toEqual([]);
    } finally {
      await removeDir(dir);
    }
  });

  it('a full filesystem: one clear line, state and default unchanged', async () => {
    const sys = await makeSysroot({ sizeMiB: 256 });
    try {
      const big = join(work, 'big-layout');
      await buildImage(big, 'big', { compression: 'none', layers: [{ entries: [{ type: 'file', path: 'usr/lib/huge.bin', content: noise(96 << 20, 3) }, { type: 'file', path: 'etc/os-release', content: 'x\n' }] }] });
      // Leave about 40 MiB: less than the 96 MiB layer.
      const avail = Number((await execa('df', ['--output=avail', '-B1', sys.paths.root])).stdout.split('\n')[1]);
      await execa('fallocate', ['-l', String(Math.max(0, avail - (40 << 20))), join(sys.paths.root, 'filler')]);
      const oldDefault = await defaultId(sys.paths.root);
      const r = await cli(['--sysroot', sys.paths.root, 'deploy', '--progress', 'none', `oci:${big}:big`]);
      expect(r.exitCode, r.stderr).toBe(1);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/^ocisnap: pulling oci:.*: the filesystem of .* is full \(.*\); free space, e\.g\. with "ocisnap gc", and try again$/m);
      expect(await defaultId(sys.paths.root)).toBe(oldDefault);
      await expect(stat(join(sys.paths.stateDir, 'state.json'))).rejects.toThrow(/ENOENT/);
      expect((await readdir(sys.paths.snapshotsDir)).length).toBe(0);
      const store = await readFile(join(sys.paths.storageRoot, 'btrfs-images/images.json'), 'utf8').catch(() => '[]');
      expect(JSON.parse(store)).toEqual([]);
    } finally {
      await sys.dispose();
    }
  });

  it('a disk that fails right after set-default: one clear line that says so', async () => {
    // The filesystem's image file lives on a small tmpfs; filling the tmpfs
    // makes every later write of the loop device fail (EIO), a real fault.
    const disk = await makeWorkDir();
    await execa('mount', ['-t', 'tmpfs', '-o', 'size=400M', 'tmpfs', disk]);
    let sys: TestSysroot | undefined;
    try {
      sys = await makeSysroot({ imageDir: disk });
      const root = sys.paths.root;
      const first = await cli(['--sysroot', root, 'deploy', '--progress', 'none', `oci:${layout}:v1`]);
      expect(first.exitCode, first.stderr).toBe(0);
      const child = execa('node', [cliPath, '--sysroot', root, 'deploy', '--progress', 'none', `oci:${layout}:v2`], {
        reject: false,
        stdin: 'ignore',
        env: { OCISNAP_STORAGE_ROOT: '', OCISNAP_TEST_STOP_AT: 'default-set' },
        extendEnv: true,
      });
      await waitStopped(child.pid!);
      const num = (await readState(root)).inProgress!.snapshot;
      await execa('sh', ['-c', `cat /dev/zero > ${join(disk, 'filler')}`], { reject: false });
      process.kill(child.pid!, 'SIGCONT');
      const r = await child;
      expect(r.exitCode, r.stderr).toBe(1);
      // The /etc merge report and the hooks note come before it, as in any deploy.
      const errors = r.stderr.split('\n').filter((l) => l.startsWith('ocisnap: '));
      expect(errors, r.stderr).toHaveLength(1);
      expect(errors[0]).toMatch(
        new RegExp(`^ocisnap: snapshot ${num} is set as the default, but writing it to disk failed \\(btrfs filesystem sync .+\\): check the disk; the next ocisnap run finishes the deploy if the filesystem recovers$`),
      );
    } finally {
      await sys?.dispose();
      await execa('umount', ['-l', disk], { reject: false });
      await removeDir(disk);
    }
  });

  it('running out of space after the pull (a hook fills the disk): the snapshot is discarded, the default stays', async () => {
    const sys = await makeSysroot({ sizeMiB: 256 });
    try {
      const hooks = join(work, 'filling-hooks');
      await mkdir(hooks, { recursive: true });
      await writeFile(join(hooks, '50-fill'), '#!/bin/sh\ncat /dev/zero > "$1/fill"\n', { mode: 0o755 });
      // Leave about 40 MiB: enough for the pull, quick for the hook to fill.
      const avail = Number((await execa('df', ['--output=avail', '-B1', sys.paths.root])).stdout.split('\n')[1]);
      await execa('fallocate', ['-l', String(Math.max(0, avail - (40 << 20))), join(sys.paths.root, 'filler')]);
      const oldDefault = await defaultId(sys.paths.root);
      const r = await cli(['--sysroot', sys.paths.root, 'deploy', '--progress', 'none', '--hook-dir', hooks, `oci:${layout}:v1`]);
      expect(r.exitCode, r.stderr).toBe(1);
      const errors = r.stderr.split('\n').filter((l) => l.startsWith('ocisnap: '));
      expect(errors).toHaveLength(1);
      expect(errors[0]).toMatch(
        /^ocisnap: deploying oci:.*: the filesystem of .* is full \(deploy hook .*50-fill failed \(exit status 1\): cat: write error: No space left on device\); free space/,
      );
      expect(await defaultId(sys.paths.root)).toBe(oldDefault);
      const state = await readState(sys.paths.root);
      expect(state.deployments).toEqual([]);
      expect(state.inProgress).toBeUndefined();
      expect(await listSnapshots(sys.paths.snapshotsDir)).toEqual([]);
      expect(existsSync(snapshotPath(sys.paths, 1))).toBe(false);
    } finally {
      await sys.dispose();
    }
  });
});
