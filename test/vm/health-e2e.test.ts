/**
 * Issue 4 end to end: images built from the top-level Containerfile, pushed
 * to a local registry, deployed with `ocisnap --sysroot DIR deploy` onto a VM
 * disk in the MicroOS-like layout, booted with qemu (TCG, the harness loading
 * the default snapshot's kernel and initrd), verdicts read from the serial
 * console and, after power-off, from the disk with `ocisnap status --json`.
 *
 *   1. v1 (good)                     → boot → good.
 *   2. v2 (a required check fails)   → boot → bad → rollback → reboots into v1.
 *   3. v3 (kernel panics early)      → the tries run out → back on v1.
 *   4. v1b (good) → boot → good; inside the VM `ocisnap rollback 1`, reboot → v1.
 *
 * Snapshot numbers: 1 = v1, 2 = v2, 3 = v3, 4 = v1b.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it, type TestContext } from 'vitest';
import { ocisnap } from '../support/cli.js';
import { requireCommands, requireRoot } from '../support/host.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';
import { ensureVmBase, importVmBase, type ImportedBase } from '../support/vm/base.js';
import { createVmDisk, snapshotDir, withMountedDisk, type MountedDisk, type VmDisk } from '../support/vm/disk.js';
import { buildAndPush, stageOcisnap } from '../support/vm/image.js';
import { leaveRunOnce, readBootsLog, runVm, vmArtifacts, type BootRecord } from '../support/vm/machine.js';

interface SnapshotStatus { number: number; status: string | null; triesLeft: number | null }
interface Status {
  default: number | null;
  pending: number | null;
  lastGood: number | null;
  lastRollback: { from: number | null; to: number; by: string; reason: string | null } | null;
  snapshots: SnapshotStatus[];
}

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
  return boots.map((b) => `#${b.index} snapshot ${b.snapshot ?? '?'} → ${b.outcome}` +
    ` (booted ${b.bootedSnapshot ?? '?'}, ready ${b.ready}, log ${b.serialLog})`).join('; ');
}

let work: string;
let disk: VmDisk;
let registry: TestRegistry | undefined;
let imported: ImportedBase | undefined;
let policy: string;
const refs: Record<'v1' | 'v2' | 'v3' | 'v1b', string> = { v1: '', v2: '', v3: '', v1b: '' };
let artifacts: Awaited<ReturnType<typeof vmArtifacts>>;
let keepArtifacts = false;
function keepOnFailure(ctx: TestContext): void {
  ctx.onTestFailed(() => {
    keepArtifacts = true;
  });
}

async function cli(m: MountedDisk, args: string[]): Promise<string> {
  const r = await ocisnap(['--sysroot', m.mountpoint, ...args]);
  if (r.exitCode !== 0) throw new Error(`ocisnap ${args.join(' ')} failed (exit ${r.exitCode}): ${String(r.stderr)}`);
  return String(r.stdout);
}

async function deploy(ref: string, extra: string[] = []): Promise<void> {
  await timed(`deploy ${ref}`, () => withMountedDisk(disk, (m) =>
    cli(m, ['deploy', '--tls-verify=false', '--signature-policy', policy, ...extra, ref])));
}

async function status(): Promise<Status> {
  return withMountedDisk(disk, async (m) => JSON.parse(await cli(m, ['status', '--json'])) as Status);
}

function verdicts(s: Status): Record<number, string | null> {
  return Object.fromEntries(s.snapshots.map((x) => [x.number, x.status]));
}

async function serial(boot: BootRecord | undefined): Promise<string> {
  return boot ? readFile(boot.serialLog, 'utf8') : '';
}

beforeAll(async () => {
  requireRoot();
  await requireCommands('buildah', 'podman', 'docker-registry', 'qemu-system-x86_64');
  artifacts = await vmArtifacts('health-e2e');
  work = await mkdtemp(join(tmpdir(), 'ocisnap-health-e2e-'));
  const base = await timed('base (cached unless the recipe changed)', () => ensureVmBase());
  imported = await timed('import the base image', () =>
    importVmBase(base, { root: join(work, 'store'), runroot: join(work, 'run') }));
  await timed('stage ocisnap', () => stageOcisnap());
  registry = await startRegistry();
  const b = imported;
  const host = registry.host;
  await timed('build and push v1, v2, v3, v1b', async () => {
    refs.v1 = await buildAndPush(b, host, 'example-os', { tag: 'v1' });
    refs.v2 = await buildAndPush(b, host, 'example-os', { tag: 'v2', health: 'broken' });
    refs.v3 = await buildAndPush(b, host, 'example-os', { tag: 'v3', crashOn: 'v1' });
    refs.v1b = await buildAndPush(b, host, 'example-os', { tag: 'v1b' });
  });
  // Signature verification is tested elsewhere (test/integration): accept any.
  policy = join(work, 'policy.json');
  await writeFile(policy, JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
  disk = await createVmDisk({ path: join(work, 'disk.img'), sizeMiB: 4096 });
});

afterAll(async () => {
  await registry?.stop();
  if (imported) await execa('podman', [...imported.storeOptions, 'image', 'unmount', '--all'], { reject: false });
  if (work) await rm(work, { recursive: true, force: true });
  if (artifacts && !keepArtifacts) await artifacts.discard();
  else if (artifacts) console.log(`VM serial logs kept in ${artifacts.dir}`);
  console.log(`VM health e2e timings:\n${timings.map(([s, ms]) => `  ${(ms / 1000).toFixed(1).padStart(6)} s  ${s}`).join('\n')}`);
});

describe.sequential('boot health checks and automatic rollback in a VM', () => {
  it('1: deploys v1, boots it, and marks it good', async (ctx) => {
    keepOnFailure(ctx);
    await deploy(refs.v1);
    await withMountedDisk(disk, async (m) => {
      // The first deployment on an empty disk: /var starts as the image's /var
      // (an installer's job; later deployments share it).
      await execa('cp', ['-a', '-n', '--reflink=auto', `${join(snapshotDir(m, 1), 'var')}/.`, `${join(m.mountpoint, 'var')}/`]);
    });
    let s = await status();
    expect([s.default, s.pending, verdicts(s)[1]]).toEqual([1, 1, 'pending']);

    const boots = await timed('v1: trial boot to power-off', () =>
      runVm({ disk, artifacts: join(artifacts.dir, '1-v1'), signal: ctx.signal }));
    expect(boots.map((b) => [b.snapshot, b.bootedSnapshot, b.outcome]), summary(boots)).toEqual([[1, 1, 'poweroff']]);
    const log = await serial(boots[0]);
    expect(log).toContain('ocisnap-health: trial boot of snapshot 1');
    expect(log).toContain('ocisnap-health: verdict for snapshot 1: GOOD');
    expect(log).toContain('ocisnap-health: snapshot 1 is good');

    s = await status();
    expect({ default: s.default, pending: s.pending, lastGood: s.lastGood, v1: verdicts(s)[1] })
      .toEqual({ default: 1, pending: null, lastGood: 1, v1: 'good' });
  });

  it('2: deploys v2 whose required check fails; the VM rolls back and reboots into v1 by itself', async (ctx) => {
    keepOnFailure(ctx);
    await deploy(refs.v2);
    let s = await status();
    expect([s.default, s.pending, verdicts(s)[2]]).toEqual([2, 2, 'pending']);

    const boots = await timed('v2: trial boot, rollback, reboot into v1, power-off', () =>
      runVm({ disk, artifacts: join(artifacts.dir, '2-v2'), maxBoots: 3, signal: ctx.signal }));
    expect(boots.map((b) => [b.snapshot, b.bootedSnapshot, b.outcome]), summary(boots)).toEqual([
      [2, 2, 'reboot'],
      [1, 1, 'poweroff'],
    ]);
    const log = await serial(boots[0]);
    expect(log).toContain('ocisnap-health: verdict for snapshot 2: BAD (required.d/90-broken-on-purpose');
    expect(log).toContain('ocisnap-health: rolled back: snapshot 1');
    expect(await serial(boots[1])).toContain('ocisnap-health: verdict for snapshot 1: GOOD');

    s = await status();
    expect({ default: s.default, pending: s.pending, lastGood: s.lastGood, v1: verdicts(s)[1], v2: verdicts(s)[2] })
      .toEqual({ default: 1, pending: null, lastGood: 1, v1: 'good', v2: 'bad' });
    expect(s.lastRollback).toMatchObject({ from: 2, to: 1, by: 'health-check' });
  });

  it('3: deploys v3 whose kernel panics early in boot; once its tries are used up the VM is back on v1', async (ctx) => {
    keepOnFailure(ctx);
    // One try keeps the VM time down; test/vm/boot.test.ts counts down
    // several through GRUB.
    await deploy(refs.v3, ['--tries', '1']);
    let s = await status();
    expect([s.default, s.pending, verdicts(s)[3]]).toEqual([3, 3, 'pending']);

    const boots = await timed('v3: a boot that panics, the counter gives up, v1 to power-off', () =>
      runVm({ disk, artifacts: join(artifacts.dir, '3-v3'), maxBoots: 4, bootTimeoutMs: 240_000, signal: ctx.signal }));
    expect(boots.map((b) => [b.snapshot, b.outcome]), summary(boots)).toEqual([
      [3, 'panic'],
      [3, 'reboot'],
      [1, 'poweroff'],
    ]);
    expect(boots[2]?.bootedSnapshot).toBe(1);
    // The trial never reached the health check; the counter gave it up.
    for (const b of boots.slice(0, 2)) expect(b.ready, summary(boots)).toBe(false);
    expect(await serial(boots[0])).toContain('ocisnap-health: trial boot of snapshot 3: 0 more tries');
    expect(await serial(boots[1])).toContain('ocisnap-health: snapshot 3 used up its boot tries');
    expect(await serial(boots[1])).not.toContain('ocisnap-health: checking snapshot 3');

    s = await status();
    expect({ default: s.default, pending: s.pending, lastGood: s.lastGood, v3: verdicts(s)[3] })
      .toEqual({ default: 1, pending: null, lastGood: 1, v3: 'bad' });
    expect(s.lastRollback).toMatchObject({ from: 3, to: 1, by: 'boot-counter' });
  });

  it('4: deploys v1b, boots it good, and `ocisnap rollback 1` inside the VM takes effect after a reboot', async (ctx) => {
    keepOnFailure(ctx);
    await deploy(refs.v1b);
    await withMountedDisk(disk, (m) => leaveRunOnce(m, [
      'set -e',
      'ocisnap status',
      'ocisnap rollback 1',
      'systemctl --no-block reboot',
      '',
    ].join('\n')));

    const boots = await timed('v1b: trial boot, rollback 1 inside, reboot into v1, power-off', () =>
      runVm({ disk, artifacts: join(artifacts.dir, '4-v1b'), maxBoots: 3, signal: ctx.signal }));
    expect(boots.map((b) => [b.snapshot, b.bootedSnapshot, b.outcome]), summary(boots)).toEqual([
      [4, 4, 'reboot'],
      [1, 1, 'poweroff'],
    ]);
    expect(boots[0]?.markers.find((m) => m.event === 'run-once')?.fields['exit'], await serial(boots[0])).toBe('0');

    const s = await status();
    expect({ default: s.default, pending: s.pending, v1: verdicts(s)[1], v1b: verdicts(s)[4] })
      .toEqual({ default: 1, pending: null, v1: 'good', v1b: 'good' });
    expect(s.lastRollback).toMatchObject({ from: 4, to: 1, by: 'admin' });
    expect(await withMountedDisk(disk, readBootsLog)).toMatch(/booted snapshot=4[^]*booted snapshot=1\s[^]*$/);
  });
});
