/**
 * The VM harness on its own: the cached base OS, a disk in the MicroOS-like
 * layout, an aborted run that leaves no qemu behind, and GRUB's boot counting
 * giving up a snapshot that panics. Booting the default snapshot to
 * multi-user.target, files on /var read back after power-off and a guest
 * reboot into a new default are shown by test/vm/health-e2e.test.ts, which
 * boots images deployed by ocisnap (kept out of here: VM time is dear).
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it, type TestContext } from 'vitest';
import { requireRoot } from '../support/host.js';
import { ensureVmBase } from '../support/vm/base.js';
import {
  copySnapshot,
  createSnapshotFromTar,
  createVmDisk,
  getDefaultSnapshot,
  readGrubEnv,
  setDefaultSnapshot,
  setGrubEnv,
  withMountedDisk,
  type VmDisk,
} from '../support/vm/disk.js';
import { emptyInitramfs } from '../support/vm/faults.js';
import { readBootsLog, runVm, vmArtifacts, type BootRecord } from '../support/vm/machine.js';

const timings: [string, number][] = [];
async function timed<T>(step: string, fn: () => Promise<T>): Promise<T> {
  const started = Date.now();
  try {
    return await fn();
  } finally {
    timings.push([step, Date.now() - started]);
  }
}

function summary(boots: BootRecord[]): string {
  return boots.map((b) => `#${b.index} snapshot ${b.snapshot ?? '?'}${b.grubBoot ? ` (${b.grubBoot})` : ''} → ${b.outcome}` +
    ` (booted ${b.bootedSnapshot ?? '?'}, ready ${b.ready}, log ${b.serialLog})`).join('; ');
}

let work: string;
let disk: VmDisk;
let baseTar: string;
let artifacts: Awaited<ReturnType<typeof vmArtifacts>>;
let keepArtifacts = false;
function keepOnFailure(ctx: TestContext): void {
  ctx.onTestFailed(() => {
    keepArtifacts = true;
  });
}

beforeAll(async () => {
  requireRoot();
  artifacts = await vmArtifacts('boot');
  const base = await timed('base (cached unless the recipe changed)', () => ensureVmBase());
  baseTar = base.tar;
  work = await mkdtemp(join(tmpdir(), 'ocisnap-vmtest-'));
  disk = await timed('create disk', () => createVmDisk({ path: join(work, 'disk.img'), sizeMiB: 4096 }));
  await timed('fill snapshot 1 from the base tar', () => withMountedDisk(disk, async (m) => {
    await createSnapshotFromTar(m, 1, base.tar);
    await setDefaultSnapshot(m, 1);
  }));
});

afterAll(async () => {
  if (work) await rm(work, { recursive: true, force: true });
  if (artifacts && !keepArtifacts) await artifacts.discard();
  else if (artifacts) console.log(`VM serial logs kept in ${artifacts.dir}`);
  console.log(`VM boot test timings:\n${timings.map(([s, ms]) => `  ${(ms / 1000).toFixed(1).padStart(6)} s  ${s}`).join('\n')}`);
});

describe.sequential('a VM booted from the disk', () => {
  it('stops qemu and frees the disk when the run is aborted', async (ctx) => {
    keepOnFailure(ctx);
    // Aborted while the kernel is still loading, before the guest mounts anything.
    const boots = runVm({ disk, artifacts: join(artifacts.dir, 'aborted'), signal: AbortSignal.timeout(2_000) });
    await expect(boots).rejects.toThrow(/the VM was stopped/);
    const left = await execa('pgrep', ['-f', disk.image], { reject: false });
    expect(left.stdout).toBe('');
    expect(await withMountedDisk(disk, (m) => getDefaultSnapshot(m))).toBe(1);
  });
});

describe.sequential('a VM booted through GRUB from the disk', () => {
  it('gives up a trial snapshot that panics once its tries are used, and boots the default', async (ctx) => {
    keepOnFailure(ctx);
    const grubDisk = await timed('GRUB disk: create, install GRUB, fill snapshot 1', async () => {
      const d = await createVmDisk({ path: join(work, 'grub-disk.img'), sizeMiB: 4096, boot: 'grub' });
      await withMountedDisk(d, async (m) => {
        await createSnapshotFromTar(m, 1, baseTar);
        await setDefaultSnapshot(m, 1);
      });
      return d;
    });
    await timed('GRUB disk: snapshot 2 that panics, on trial with 2 tries', () => withMountedDisk(grubDisk, async (m) => {
      const dir = await copySnapshot(m, 1, 2, 'test: snapshot 2, kernel panics');
      // An initramfs without init or drivers: the kernel cannot mount the root.
      await rm(join(dir, 'boot/initrd.img'));
      await writeFile(join(dir, 'boot/initrd.img'), emptyInitramfs());
      // What a deploy does: the new snapshot is the default, on trial.
      await execa('btrfs', ['subvolume', 'set-default', dir]);
      await setGrubEnv(m, { ocisnap_default: '1', ocisnap_trial: '2', ocisnap_tries: '2' });
    }));

    const boots = await timed('GRUB: 2 trial boots that panic, then snapshot 1 to power-off', () =>
      runVm({ disk: grubDisk, artifacts: join(artifacts.dir, 'grub'), maxBoots: 4, signal: ctx.signal }));
    for (const b of boots) timings.push([`  of which: GRUB boot #${b.index} (${b.grubBoot ?? '?'} ${b.outcome})`, b.ms]);
    expect(boots.map((b) => [b.snapshot, b.grubBoot, b.outcome]), summary(boots)).toEqual([
      [2, 'trial', 'panic'],
      [2, 'trial', 'panic'],
      [1, 'default', 'poweroff'],
    ]);
    expect(boots[2]?.bootedSnapshot, summary(boots)).toBe(1);
    expect(boots[2]?.markers.find((m) => m.event === 'ready')?.fields['failed']).toBe('none');
    await withMountedDisk(grubDisk, async (m) => {
      // GRUB's save_env counted the tries down on the ext2 partition.
      expect(await readGrubEnv(m)).toMatchObject({ ocisnap_trial: '2', ocisnap_tries: '0', ocisnap_default: '1' });
      const log = await readBootsLog(m);
      expect(log).toContain('booted snapshot=1');
      expect(log).not.toContain('booted snapshot=2');
    });
  });
});
