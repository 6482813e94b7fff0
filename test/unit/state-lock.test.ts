import { mkdir, mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  StateLockedError,
  addDeployment,
  readState,
  stateDir,
  stateLockPath,
  updateState,
  withStateLock,
} from '../../src/deploy/state.js';

const addon = resolve('build/Release/ocisnap_sys.node');

/** Another process that takes the fcntl write lock, says "locked", holds it for `ms`. */
function holdLock(path: string, ms: number): ResultPromise {
  const script = `
    const sys = require(${JSON.stringify(addon)});
    const fs = require('fs');
    const fd = fs.openSync(${JSON.stringify(path)}, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o644);
    if (!sys.setlk(fd, 1)) { console.log('busy'); process.exit(3); }
    console.log('locked');
    setTimeout(() => process.exit(0), ${ms});`;
  return execa('node', ['-e', script]);
}

/** Whether another process could take the lock right now. */
async function lockIsFree(path: string): Promise<boolean> {
  const script = `
    const sys = require(${JSON.stringify(addon)});
    const fs = require('fs');
    const fd = fs.openSync(${JSON.stringify(path)}, fs.constants.O_RDWR);
    console.log(sys.setlk(fd, 1) ? 'free' : 'held');`;
  return (await execa('node', ['-e', script])).stdout.trim() === 'free';
}

async function waitForLine(child: ResultPromise, line: string): Promise<void> {
  await new Promise<void>((resolveWait, reject) => {
    child.stdout!.on('data', (chunk: Buffer) => {
      if (chunk.toString().includes(line)) resolveWait();
    });
    child.catch(reject);
  });
}

let sysroot: string;
beforeEach(async () => {
  sysroot = await mkdtemp(join(tmpdir(), 'ocisnap-lock-'));
  await mkdir(join(sysroot, 'var/lib/ocisnap'), { recursive: true });
  await writeFile(stateLockPath(sysroot), '');
});
afterEach(async () => {
  await rm(sysroot, { recursive: true, force: true });
});

describe('withStateLock', () => {
  it('serialises read-modify-write within one process: no update is lost', async () => {
    const dep = (n: number) => ({
      snapshot: n,
      image: `example/os:${n}`,
      manifestDigest: `sha256:${'c'.repeat(64)}` as const,
      imageId: 'd'.repeat(64),
    });
    await Promise.all(
      Array.from({ length: 8 }, () =>
        updateState(sysroot, async (s) => {
          await new Promise((r) => setTimeout(r, 5)); // widen the race window
          return addDeployment(s, dep(s.highestSnapshot + 1));
        }),
      ),
    );
    const s = await readState(sysroot);
    expect(s.deployments.map((d) => d.snapshot)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    expect(s.deployments.filter((d) => d.status === 'pending')).toHaveLength(1);
  });

  it('fails clearly while another process holds the lock, and gets it once released', async () => {
    const child = holdLock(stateLockPath(sysroot), 800);
    await waitForLine(child, 'locked');
    const err = await withStateLock(sysroot, async () => 'ran', { timeoutMs: 100 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StateLockedError);
    expect((err as Error).message).toMatch(new RegExp(`^another ocisnap is working on ${sysroot} \\(lock .*ocisnap\\.lock`));
    const started = Date.now();
    expect(await withStateLock(sysroot, async () => 'ran', { timeoutMs: 10_000 })).toBe('ran');
    expect(Date.now() - started).toBeGreaterThan(200); // it had to wait for the other process
    await child;
  });

  it('holds the lock while fn runs and releases it when fn throws', async () => {
    let heldInside = false;
    await expect(
      withStateLock(sysroot, async () => {
        heldInside = !(await lockIsFree(stateLockPath(sysroot)));
        throw new Error('deploy failed');
      }),
    ).rejects.toThrow('deploy failed');
    expect(heldInside).toBe(true);
    expect(await lockIsFree(stateLockPath(sysroot))).toBe(true);
  });

  it('creates the state directory and lock file on a fresh sysroot', async () => {
    const fresh = await mkdtemp(join(tmpdir(), 'ocisnap-lock-fresh-'));
    try {
      expect(await withStateLock(fresh, async () => 42)).toBe(42);
      expect((await stat(stateDir(fresh))).mode & 0o777).toBe(0o755);
      expect(await lockIsFree(stateLockPath(fresh))).toBe(true);
    } finally {
      await rm(fresh, { recursive: true, force: true });
    }
  });
});
