/**
 * Shared setup of the health tests: a real loop-mounted btrfs laid out as a
 * sysroot (DIR/.snapshots, DIR/var/lib/ocisnap), two snapper snapshots made
 * with src/deploy's own pieces (btrfs, snapper.ts, state.ts): snapshot 1 good
 * and last good, snapshot 2 pending (on trial) and the btrfs default. A
 * "health root" beside it holds health.d and health.conf; systemctl and the
 * reboot/poweroff commands are stand-in scripts (the test host has no
 * systemd as PID 1) that leave marker files.
 */
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { createSubvolume, getDefaultSubvolume, setDefaultSubvolume, showSubvolume } from '../../src/btrfs/index.js';
import { deploymentSnapshotInfo, readInfoXml, writeInfoXml } from '../../src/deploy/snapper.js';
import { addDeployment, emptyState, markGood, writeState, type State } from '../../src/deploy/state.js';
import { snapshotPath, sysrootPaths, type SysrootPaths } from '../../src/deploy/sysroot.js';
import { defaultHealthConfig, type HealthConfig } from '../../src/health/config.js';
import { scriptDirs, type ScriptDirs } from '../../src/health/scripts.js';
import type { HealthLog, Priority } from '../../src/health/log.js';
import { createBtrfs, type BtrfsFixture } from '../support/btrfs.js';

const digest = (n: number): `sha256:${string}` => `sha256:${String(n).repeat(64).slice(0, 64)}`;

export interface HealthFixture {
  fs: BtrfsFixture;
  paths: SysrootPaths;
  /** Root of etc/ocisnap/health.d and usr/lib/ocisnap/health.d. */
  healthRoot: string;
  scripts: ScriptDirs;
  config: HealthConfig;
  /** health.conf written into the health root (for the CLI). */
  configFile: string;
  /** Files the stand-in commands write. */
  markers: { reboot: string; poweroff: string; failedUnits: string; targetState: string };
  lines: { priority: Priority; line: string }[];
  log: HealthLog;
  dispose(): Promise<void>;
}

/** Writes an executable script. */
export async function script(path: string, body: string): Promise<string> {
  await mkdir(join(path, '..'), { recursive: true });
  await writeFile(path, `#!/bin/sh\n${body}\n`);
  await chmod(path, 0o755);
  return path;
}

export async function makeSnapshot(paths: SysrootPaths, num: number, image: string): Promise<void> {
  await mkdir(join(paths.snapshotsDir, String(num)));
  await createSubvolume(snapshotPath(paths, num));
  await writeFile(join(snapshotPath(paths, num), 'marker'), `snapshot ${num}\n`);
  await writeInfoXml(paths.snapshotsDir, deploymentSnapshotInfo({ num, image, manifestDigest: digest(num), userdata: { 'ocisnap.health': 'pending' } }));
}

export async function setDefaultSnapshot(paths: SysrootPaths, num: number): Promise<void> {
  await setDefaultSubvolume((await showSubvolume(snapshotPath(paths, num))).id, paths.root);
}

/** The snapshot number of the btrfs default subvolume. */
export async function defaultSnapshot(paths: SysrootPaths): Promise<number | undefined> {
  const m = /\.snapshots\/(\d+)\/snapshot$/.exec((await getDefaultSubvolume(paths.root)).fsPath);
  return m ? Number(m[1]) : undefined;
}

export async function userdataHealth(paths: SysrootPaths, num: number): Promise<string | undefined> {
  return (await readInfoXml(paths.snapshotsDir, num)).userdata['ocisnap.health'];
}

export async function exists(path: string): Promise<boolean> {
  return readFile(path).then(
    () => true,
    () => false,
  );
}

/**
 * Snapshot 1: good, last good. Snapshot 2: pending with `tries` tries left,
 * the default. Required/wanted checks: none yet (add with `script`).
 */
export async function makeHealthFixture(opts: { tries?: number } = {}): Promise<HealthFixture> {
  const fs = await createBtrfs({ sizeMiB: 256 });
  const work = await mkdtemp(join(tmpdir(), 'ocisnap-health-'));
  try {
    const paths = sysrootPaths(fs.mountpoint);
    await execa('btrfs', ['-q', 'subvolume', 'create', paths.snapshotsDir]);
    await execa('btrfs', ['-q', 'subvolume', 'create', join(paths.root, 'var')]);
    await makeSnapshot(paths, 1, 'registry.test/os:v1');
    await makeSnapshot(paths, 2, 'registry.test/os:v2');
    let state: State = emptyState();
    state = addDeployment(state, { snapshot: 1, image: 'registry.test/os:v1', manifestDigest: digest(1), imageId: 'a'.repeat(64) });
    state = markGood(state, 1, { by: 'health-check' });
    state = addDeployment(state, { snapshot: 2, image: 'registry.test/os:v2', manifestDigest: digest(2), imageId: 'b'.repeat(64), parent: 1 }, { tries: opts.tries ?? 3 });
    if (opts.tries === 0) state = { ...state, deployments: state.deployments.map((d) => (d.snapshot === 2 ? { ...d, triesLeft: 0 } : d)) };
    await writeState(paths.root, state);
    await setDefaultSnapshot(paths, 2);

    const healthRoot = join(work, 'root');
    const markers = {
      reboot: join(work, 'rebooted'),
      poweroff: join(work, 'powered-off'),
      failedUnits: join(work, 'failed-units'),
      targetState: join(work, 'target-state'),
    };
    await writeFile(markers.failedUnits, '');
    await writeFile(markers.targetState, 'active\n');
    // systemctl's output formats: `is-active UNIT` prints the state (exit 0
    // only when active); `--failed --plain --no-legend` one unit per line.
    const systemctl = await script(
      join(work, 'bin/systemctl'),
      [
        'case "$1" in',
        `  is-active) s=$(cat ${markers.targetState}); echo "$s"; [ "$s" = active ];;`,
        `  --failed) cat ${markers.failedUnits};;`,
        '  *) echo "unexpected: $*" >&2; exit 3;;',
        'esac',
      ].join('\n'),
    );
    const reboot = await script(join(work, 'bin/reboot'), `echo "$@" > ${markers.reboot}`);
    const poweroff = await script(join(work, 'bin/poweroff'), `echo "$@" > ${markers.poweroff}`);
    const config = defaultHealthConfig();
    config.action = 'none';
    config.checkTimeoutMs = 5_000;
    config.hookTimeoutMs = 5_000;
    config.builtin.targetDeadlineSec = 0;
    config.commands = { ...config.commands, systemctl: [systemctl], reboot: [reboot, 'now'], poweroff: [poweroff] };
    const configFile = join(healthRoot, 'etc/ocisnap/health.conf');
    await mkdir(join(configFile, '..'), { recursive: true });
    await writeFile(
      configFile,
      [
        'action = "none"',
        'check_timeout = 5',
        '[builtin]',
        'target_deadline = 0',
        '[commands]',
        `systemctl = ["${systemctl}"]`,
        `reboot = ["${reboot}", "now"]`,
        `poweroff = "${poweroff}"`,
        '',
      ].join('\n'),
    );
    const lines: { priority: Priority; line: string }[] = [];
    return {
      fs,
      paths,
      healthRoot,
      scripts: scriptDirs(healthRoot),
      config,
      configFile,
      markers,
      lines,
      log: (priority, line) => void lines.push({ priority, line }),
      async dispose() {
        await fs.dispose();
        await rm(work, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await fs.dispose();
    await rm(work, { recursive: true, force: true });
    throw err;
  }
}
