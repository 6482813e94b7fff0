/**
 * The test machine: power-ons of qemu (qemu.ts) on a VM disk (disk.ts) until
 * it powers off, with the harness playing the firmware and bootloader.
 *
 * Before each power-on the harness mounts the disk, asks `selectBoot` which
 * snapshot to boot (by default the btrfs default subvolume, which is what
 * MicroOS's GRUB ends up booting), copies that snapshot's /boot/vmlinuz and
 * /boot/initrd.img out, unmounts, and boots them with
 * `rootflags=subvol=/.snapshots/N/snapshot`. A guest reboot or kernel panic
 * ends qemu (-no-reboot), and the next power-on chooses again, so a rollback
 * that changes the default subvolume and reboots is followed as on real
 * hardware. A boot that passes the watchdog timeout counts as a reset (a
 * hardware watchdog would reset a hung machine). `selectBoot` is where a test
 * emulates a bootloader-side fallback (e.g. boot counting in a grubenv).
 *
 * On a GRUB disk (disk.ts, boot 'grub') the harness does not choose: the VM
 * boots through SeaBIOS and GRUB (plugins/grub/grub.cfg), which picks the
 * snapshot from grubenv and counts trial boots; the harness only passes its
 * kernel command line words through grubenv's ocisnap_cmdline.
 */
import { copyFile, lstat, mkdir, mkdtemp, readFile, readlink, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, posix, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { requireCommands, requireRoot } from '../host.js';
import { getDefaultSnapshot, mountVmDisk, setGrubEnv, snapshotDir, type MountedDisk, type VmDisk } from './disk.js';
import { runQemu } from './qemu.js';
import type { BootOutcome, Marker } from './serial.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

export interface BootRecord {
  /** 1 for the first power-on of this run. */
  index: number;
  /**
   * The snapshot the harness booted (direct boot) or GRUB chose (from its
   * console line); undefined if GRUB never got that far.
   */
  snapshot: number | undefined;
  /** How GRUB booted it (trial, default, fallback); undefined for direct boot. */
  grubBoot: string | undefined;
  outcome: BootOutcome;
  /** Markers in the order the guest printed them. */
  markers: Marker[];
  /** Snapshot number from the guest's `booted` marker, if it got that far. */
  bootedSnapshot: number | undefined;
  /** Whether the guest reached multi-user.target (the `ready` marker). */
  ready: boolean;
  serialLog: string;
  /** Wall time of this power-on (qemu start to exit). */
  ms: number;
  /** Time from qemu start to the `ready` marker. */
  readyMs: number | undefined;
}

export interface VmRunOptions {
  disk: VmDisk;
  /** Directory for the serial logs (boot-K.log). */
  artifacts: string;
  /** Power-ons at most (a reboot loop stops here). Default 1. */
  maxBoots?: number;
  /** Watchdog per power-on. Default 5 minutes. */
  bootTimeoutMs?: number;
  /**
   * What the guest does once multi-user.target is reached
   * (ocisnap.test.action on the kernel command line). Default 'poweroff'.
   */
  action?: 'poweroff' | 'reboot' | 'none';
  /** More kernel command line words. */
  append?: string[];
  /** The firmware/bootloader: which snapshot this power-on boots. */
  selectBoot?: (disk: MountedDisk, bootIndex: number) => Promise<number>;
  /** Runs with the disk mounted before each power-on (e.g. leave a run-once script). */
  beforeBoot?: (disk: MountedDisk, bootIndex: number) => Promise<void>;
  /** Called for each marker as the guest prints it. */
  onMarker?: (marker: Marker, bootIndex: number) => void;
  memMiB?: number;
  smp?: number;
  /** Stops the VM when aborted: pass vitest's `ctx.signal`, so a timed-out test leaves no qemu behind. */
  signal?: AbortSignal;
}

/** Boots the disk until the guest powers off (or maxBoots). Returns every power-on. */
export async function runVm(opts: VmRunOptions): Promise<BootRecord[]> {
  requireRoot();
  await requireCommands('qemu-system-x86_64', 'mount', 'umount', 'btrfs');
  if (opts.disk.boot === 'grub' && opts.selectBoot) {
    throw new Error('selectBoot is for direct kernel boot; on a GRUB disk, GRUB chooses (grubenv)');
  }
  const maxBoots = opts.maxBoots ?? 1;
  const work = await mkdtemp(join(tmpdir(), 'ocisnap-vm-'));
  await mkdir(opts.artifacts, { recursive: true });
  // What the harness needs on every kernel command line.
  const words = [
    'console=ttyS0,115200', 'panic=1',
    `ocisnap.test.action=${opts.action ?? 'poweroff'}`,
    ...(opts.append ?? []),
  ];
  const boots: BootRecord[] = [];
  try {
    for (let index = 1; index <= maxBoots; index++) {
      opts.signal?.throwIfAborted();
      const kernel = join(work, 'vmlinuz');
      const initrd = join(work, 'initrd.img');
      const m = await mountVmDisk(opts.disk);
      let chosen: number | undefined;
      try {
        if (opts.disk.boot === 'direct') {
          chosen = await (opts.selectBoot ?? defaultBoot)(m, index);
          const root = snapshotDir(m, chosen);
          await copyFile(await resolveInRoot(root, '/boot/vmlinuz'), kernel);
          await copyFile(await resolveInRoot(root, '/boot/initrd.img'), initrd);
        } else {
          await setGrubEnv(m, { ocisnap_cmdline: words.join(' ') });
        }
        await opts.beforeBoot?.(m, index);
      } finally {
        await m.dispose();
      }
      const direct = chosen === undefined ? undefined : {
        kernel, initrd,
        append: [`root=${opts.disk.rootDevice}`, 'rootfstype=btrfs',
          `rootflags=subvol=/.snapshots/${chosen}/snapshot`, 'rw', ...words].join(' '),
      };
      const markers: Marker[] = [];
      let readyMs: number | undefined;
      const started = Date.now();
      const serialLog = join(opts.artifacts, `boot-${index}.log`);
      const r = await runQemu({
        diskImage: opts.disk.image, serialLog,
        ...(direct ? { direct } : {}),
        timeoutMs: opts.bootTimeoutMs ?? 300_000,
        ...(opts.memMiB !== undefined ? { memMiB: opts.memMiB } : {}),
        ...(opts.smp !== undefined ? { smp: opts.smp } : {}),
        ...(opts.signal ? { signal: opts.signal } : {}),
        onMarker: (marker) => {
          markers.push(marker);
          if (marker.event === 'ready' && readyMs === undefined) readyMs = Date.now() - started;
          opts.onMarker?.(marker, index);
        },
      });
      if (r.exitCode !== 0 && r.outcome === 'exit') {
        throw new Error(`qemu failed (exit ${r.exitCode}): ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`);
      }
      const grub = grubChoice(r.serial);
      const booted = markers.find((x) => x.event === 'booted')?.fields['snapshot'];
      boots.push({
        index, snapshot: chosen ?? grub?.snapshot, grubBoot: grub?.boot, outcome: r.outcome, markers,
        bootedSnapshot: booted !== undefined && /^\d+$/.test(booted) ? Number(booted) : undefined,
        ready: markers.some((x) => x.event === 'ready'),
        serialLog, ms: r.ms, readyMs,
      });
      if (r.outcome === 'poweroff' || r.outcome === 'halt' || r.outcome === 'exit') break;
    }
    return boots;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

/** The last "ocisnap: booting snapshot N (MODE, ...)" line plugins/grub/grub.cfg printed. */
export function grubChoice(serial: string): { snapshot: number; boot: string } | undefined {
  let found: { snapshot: number; boot: string } | undefined;
  for (const m of serial.matchAll(/ocisnap: booting snapshot (\d+) \((\w+),/g)) {
    found = { snapshot: Number(m[1]), boot: m[2] ?? '' };
  }
  return found;
}

async function defaultBoot(m: MountedDisk): Promise<number> {
  const n = await getDefaultSnapshot(m);
  if (n === undefined) throw new Error(`the default subvolume of ${m.disk.image} is not a snapshot`);
  return n;
}

/**
 * Resolves `path` inside `root` the way the guest would: symlinks (relative or
 * absolute) stay inside the snapshot, never reaching the host's files.
 */
export async function resolveInRoot(root: string, path: string): Promise<string> {
  let rel = posix.normalize(path);
  for (let hops = 0; hops < 16; hops++) {
    const parts = rel.split('/').filter((p) => p !== '');
    let resolved = '/';
    let i = 0;
    let relinked = false;
    for (; i < parts.length; i++) {
      const candidate = posix.join(resolved, parts[i] ?? '');
      const st = await lstat(join(root, candidate));
      if (st.isSymbolicLink()) {
        const target = await readlink(join(root, candidate));
        const base = target.startsWith('/') ? target : posix.join(resolved, target);
        rel = posix.normalize(posix.join('/', base, ...parts.slice(i + 1)));
        relinked = true;
        break;
      }
      resolved = candidate;
    }
    if (!relinked) return join(root, resolved);
  }
  throw new Error(`too many symlinks resolving ${path} in ${root}`);
}

/** Where the guest's marker units keep their files, relative to the disk's top level (the /var subvolume). */
export const GUEST_STATE = 'var/lib/ocisnap-test';

/**
 * Leaves a shell script for the next boot: the guest runs it once after
 * multi-user.target (as root, output on the serial console as
 * `OCISNAP-TEST-OUT:` lines, then `OCISNAP-TEST: run-once exit=N`), instead
 * of the power-off/reboot action; the script decides how the boot ends.
 */
export async function leaveRunOnce(m: MountedDisk, script: string): Promise<void> {
  await mkdir(join(m.mountpoint, GUEST_STATE), { recursive: true });
  await writeFile(join(m.mountpoint, GUEST_STATE, 'run-once.sh'), script);
}

/** The guest's boot log (one line per `booted`/`ready` marker), or '' if none. */
export async function readBootsLog(m: MountedDisk): Promise<string> {
  try {
    return await readFile(join(m.mountpoint, GUEST_STATE, 'boots.log'), 'utf8');
  } catch {
    return '';
  }
}

/** A directory for one test's VM logs under test-artifacts/vm/ (gitignored). */
export async function vmArtifacts(name: string): Promise<{ dir: string; discard(): Promise<void> }> {
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const dir = join(REPO, 'test-artifacts', 'vm', `${name.replace(/[^A-Za-z0-9_.-]+/g, '-')}-${stamp}`);
  await mkdir(dir, { recursive: true });
  return {
    dir,
    async discard() {
      await rm(dir, { recursive: true, force: true });
    },
  };
}
