/**
 * The VM harness on its own: the cached base OS, a disk in the MicroOS-like
 * layout, qemu booting the default snapshot, markers on the serial console,
 * files the guest wrote read back after power-off, and a guest-initiated
 * reboot into a new default (the path an automatic rollback takes).
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
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
  snapshotDir,
  withMountedDisk,
  type VmDisk,
} from '../support/vm/disk.js';
import { emptyInitramfs } from '../support/vm/faults.js';
import { leaveRunOnce, readBootsLog, runVm, vmArtifacts, type BootRecord } from '../support/vm/machine.js';

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

  it('boots snapshot 1 to multi-user.target, powers off, and leaves its files on /var', async (ctx) => {
    keepOnFailure(ctx);
    const boots = await timed('boot snapshot 1 to power-off', () => runVm({ disk, artifacts: join(artifacts.dir, 'snapshot-1'), signal: ctx.signal }));
    const boot = boots[0];
    if (boot?.readyMs !== undefined) timings.push(['  of which: power-on to multi-user.target', boot.readyMs]);
    expect(boots, summary(boots)).toHaveLength(1);
    expect(boot?.outcome, summary(boots)).toBe('poweroff');
    expect(boot?.bootedSnapshot, summary(boots)).toBe(1);
    const ready = boot?.markers.find((m) => m.event === 'ready');
    expect(ready?.fields, summary(boots)).toMatchObject({ snapshot: '1', target: 'multi-user', failed: 'none' });

    const log = await timed('mount and read the disk', () => withMountedDisk(disk, readBootsLog));
    const bootId = boot?.markers.find((m) => m.event === 'booted')?.fields['boot_id'];
    expect(bootId).toMatch(/^[0-9a-f-]{36}$/);
    expect(log).toContain(`booted snapshot=1 version=12 boot_id=${bootId}`);
    expect(log).toContain('ready snapshot=1');
  });

  it('boots snapshot 2 once it is the default, and follows a reboot into the next default', async (ctx) => {
    keepOnFailure(ctx);
    await timed('snapshot 2 as a copy of 1, set default', () => withMountedDisk(disk, async (m) => {
      const dir = await copySnapshot(m, 1, 2, 'test: snapshot 2');
      // /etc/os-release is a link to ../usr/lib/os-release on Debian: replace
      // the link, not the file it points to in both snapshots' shared extents.
      await rm(join(dir, 'etc/os-release'));
      const os = await readFile(join(dir, 'usr/lib/os-release'), 'utf8');
      await writeFile(join(dir, 'etc/os-release'), os.replace(/^VERSION_ID=.*$/m, 'VERSION_ID="ocisnap-test-2"'));
      await setDefaultSnapshot(m, 2);
      expect(await getDefaultSnapshot(m)).toBe(2);
      // What a rollback does from inside the guest: make 1 the default, reboot.
      await leaveRunOnce(m, 'btrfs subvolume set-default /.snapshots/1/snapshot\nsystemctl --no-block reboot\n');
      expect(await readFile(join(snapshotDir(m, 1), 'etc/os-release'), 'utf8')).toContain('VERSION_ID="12"');
    }));

    const boots = await timed('boot snapshot 2, guest reboots into 1, power-off', () =>
      // The run-once script reboots the first boot; the second powers off.
      runVm({ disk, artifacts: join(artifacts.dir, 'snapshot-2'), maxBoots: 3, signal: ctx.signal }));
    expect(boots.map((b) => [b.snapshot, b.bootedSnapshot, b.outcome]), summary(boots)).toEqual([
      [2, 2, 'reboot'],
      [1, 1, 'poweroff'],
    ]);
    expect(boots[0]?.markers.find((m) => m.event === 'booted')?.fields['version']).toBe('ocisnap-test-2');
    expect(boots[0]?.markers.find((m) => m.event === 'run-once')?.fields['exit']).toBe('0');
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
