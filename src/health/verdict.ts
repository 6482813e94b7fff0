/**
 * The health verdict of a boot, and what follows from it.
 *
 * `runHealthCheck` (ocisnap-health.service, or by hand): built-in checks,
 * then required.d and wanted.d scripts. All required ones pass → good. On the
 * trial boot of a pending deployment (the booted snapshot is the pending one):
 *   good → state: good and last known good; snapshot userdata ocisnap.health=good;
 *          grubenv: it is GRUB's default, no trial;
 *   bad  → state: bad; the last good snapshot becomes the btrfs default again;
 *          userdata ocisnap.health=bad; grubenv: default = last good, no trial;
 *          then the configured action (reboot, poweroff, none).
 * Any other boot: the checks only report (or are skipped: `non_trial`).
 * green.d/red.d hooks run after every verdict, before the action.
 *
 * `countBoot` (ocisnap-boot-counter.service, early in boot): a boot of the
 * pending deployment uses up one of its tries; with none left its trial has
 * failed and it is rolled back as above, so a boot that hangs or crashes
 * before the health check still ends on the last good snapshot after
 * `tries` attempts (if something resets the machine: a watchdog, a panic
 * with panic=N, a person). Crashes before / is mounted are the bootloader's
 * part (grubenv.ts, plugins/grub/).
 *
 * Order of the rollback steps, for crash safety: state first (bad), then
 * set-default. A crash between the two boots the bad snapshot once more; its
 * boot counter sees a bad deployment that is still the default and finishes
 * the rollback (`repairBadDefault`). This is health-checker's order too
 * (openSUSE/health-checker sbin/health-checker.in: it records the state and
 * then sets the default to the last working snapshot).
 */
import { isSubvolume, setDefaultSubvolume, showSubvolume } from '../btrfs/index.js';
import { describeError, OcisnapError } from '../errors.js';
import { OCISNAP_USERDATA, setUserdata } from '../deploy/snapper.js';
import {
  consumeTry,
  findDeployment,
  markBad,
  markGood,
  pendingDeployment,
  readState,
  recordRollback,
  withStateLock,
  writeState,
  type State,
} from '../deploy/state.js';
import { checkSysroot, defaultSubvolume, snapshotPath, type SysrootPaths } from '../deploy/sysroot.js';
import { identifyBoot } from './boot.js';
import { checkFailedUnits, checkTarget, type CheckOutcome } from './builtin.js';
import type { HealthConfig } from './config.js';
import { GRUB_VARS, grubSettledVars, readGrubenv, findGrubenv, updateGrubenv } from './grubenv.js';
import type { HealthLog } from './log.js';
import { currentBootId, writeHealthRecord, type BootCountReport, type HealthReport } from './report.js';
import { describeRun, findScripts, runWithTimeout, succeeded, type ScriptDirs, type ScriptKind } from './scripts.js';
import { isoTime } from '../iso-time.js';

export class HealthError extends OcisnapError {}

export interface HealthRunOptions {
  paths: SysrootPaths;
  config: HealthConfig;
  /** Where required.d, wanted.d, green.d, red.d are found (scripts.ts scriptDirs). */
  scripts: ScriptDirs;
  log: HealthLog;
  /** The booted snapshot, when known better than mountinfo (boot.ts). */
  booted?: number;
  /** The kernel command line (default: /proc/cmdline on the running system). */
  cmdline?: string;
  /** Run and report, change nothing, run no hooks and no action. */
  reportOnly?: boolean;
  /** Wait for another ocisnap holding the state lock (default 5 min: a deploy may be running). */
  lockTimeoutMs?: number;
}

export interface HealthCheckResult {
  /** `skipped`: not a trial boot and non_trial = "skip". */
  verdict: 'good' | 'bad' | 'skipped';
  report?: HealthReport;
}

const defaultLockTimeoutMs = 5 * 60_000;

function scriptEnv(paths: SysrootPaths, snapshot: number | undefined, trial: boolean, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  return {
    ...process.env,
    OCISNAP_SYSROOT: paths.root,
    OCISNAP_SNAPSHOT: snapshot === undefined ? '' : String(snapshot),
    OCISNAP_TRIAL: trial ? '1' : '0',
    ...extra,
  };
}

async function runCheckScripts(
  opts: HealthRunOptions,
  kind: 'required.d' | 'wanted.d',
  env: NodeJS.ProcessEnv,
): Promise<CheckOutcome[]> {
  const { scripts, skipped } = await findScripts(opts.scripts, kind);
  for (const s of skipped) opts.log('warning', `skipping ${s.path}: ${s.why}`);
  const out: CheckOutcome[] = [];
  for (const s of scripts) {
    const r = await runWithTimeout([s.path], { timeoutMs: opts.config.checkTimeoutMs, env });
    const lastLine = r.output.split('\n').at(-1) ?? '';
    out.push({
      name: `${kind}/${s.name}`,
      required: kind === 'required.d',
      passed: succeeded(r),
      detail: succeeded(r) ? 'passed' : `${describeRun(r)}${lastLine ? `: ${lastLine}` : ''}`,
      durationMs: r.durationMs,
    });
  }
  return out;
}

async function runHooks(opts: HealthRunOptions, kind: 'green.d' | 'red.d', env: NodeJS.ProcessEnv): Promise<void> {
  const { scripts, skipped } = await findScripts(opts.scripts, kind as ScriptKind);
  for (const s of skipped) opts.log('warning', `skipping ${s.path}: ${s.why}`);
  for (const s of scripts) {
    const r = await runWithTimeout([s.path], { timeoutMs: opts.config.hookTimeoutMs, env });
    // A hook cannot change the verdict; its failure is only reported.
    const last = succeeded(r) ? '' : r.output.split('\n').at(-1) ?? '';
    opts.log(succeeded(r) ? 'info' : 'warning', `hook ${kind}/${s.name}: ${describeRun(r)}${last ? `: ${last}` : ''}`);
  }
}

/** Best effort: the verdict in the snapshot's info.xml, for snapper users. */
async function recordUserdata(paths: SysrootPaths, snapshot: number, health: 'good' | 'bad', log: HealthLog, actions: string[]): Promise<void> {
  try {
    await setUserdata(paths.snapshotsDir, snapshot, { [OCISNAP_USERDATA.health]: health });
    actions.push(`userdata ${OCISNAP_USERDATA.health}=${health} on snapshot ${snapshot}`);
  } catch (err) {
    log('warning', `cannot record ${OCISNAP_USERDATA.health}=${health} in snapshot ${snapshot}'s info.xml: ${describeError(err)}`);
  }
}

async function settleGrub(opts: { paths: SysrootPaths; config: HealthConfig; log: HealthLog }, snapshot: number | undefined, actions: string[]): Promise<void> {
  try {
    const r = await updateGrubenv(opts.paths, grubSettledVars(snapshot), opts.config.commands.grubEditenv);
    if (r.updated) actions.push(`grubenv: ${GRUB_VARS.default}=${snapshot ?? '(unchanged)'}, no trial`);
  } catch (err) {
    opts.log('err', describeError(err));
  }
}

/**
 * Makes the last good snapshot the default again (call under the state lock,
 * after the state says bad). Returns the snapshot now booting next, or
 * undefined when there is none to go back to.
 */
async function restoreLastGood(
  opts: { paths: SysrootPaths; config: HealthConfig; log: HealthLog },
  state: State,
  bad: number,
  actions: string[],
  why: { by: 'health-check' | 'boot-counter'; reason: string },
): Promise<number | undefined> {
  const { paths, log } = opts;
  await recordUserdata(paths, bad, 'bad', log, actions);
  // No deployment judged good yet (the first deploy on a system installed
  // otherwise): the snapshot it was deployed from is the one known to boot.
  const parent = findDeployment(state, bad)?.parent;
  const good = state.lastGood ?? (parent !== bad ? parent : undefined);
  if (good === undefined) {
    log('err', `snapshot ${bad} is bad, but no deployment is known good: leaving the default as it is`);
    await settleGrub(opts, undefined, actions);
    return undefined;
  }
  if (state.lastGood === undefined) log('warning', `no deployment is known good yet: going back to snapshot ${good}, which snapshot ${bad} was deployed from`);
  const sub = snapshotPath(paths, good);
  if (!(await isSubvolume(sub))) {
    log('err', `snapshot ${bad} is bad, but snapshot ${good} to go back to is gone (${sub}): leaving the default as it is`);
    await settleGrub(opts, undefined, actions);
    return undefined;
  }
  const id = (await showSubvolume(sub)).id;
  const def = await defaultSubvolume(paths);
  if (def.id !== id) {
    await setDefaultSubvolume(id, paths.root);
    actions.push(`default set to snapshot ${good}`);
  }
  // `state` is what the caller last wrote; the rollback joins it (status shows lastRollback).
  await writeState(paths.root, recordRollback(state, { from: bad, to: good, by: why.by, reason: why.reason }));
  await settleGrub(opts, good, actions);
  log('notice', `rolled back: snapshot ${good} (${state.lastGood === undefined ? 'the one it was deployed from' : 'last known good'}) boots next`);
  return good;
}

async function performAction(opts: { config: HealthConfig; log: HealthLog }, actions: string[]): Promise<void> {
  const { action, commands } = opts.config;
  if (action === 'none') {
    opts.log('notice', 'action "none": not restarting; the last good snapshot boots next time');
    return;
  }
  const argv = action === 'reboot' ? commands.reboot : commands.poweroff;
  opts.log('notice', `${action}: ${argv.join(' ')}`);
  actions.push(action);
  const r = await runWithTimeout(argv, { timeoutMs: 60_000 });
  if (!succeeded(r)) throw new HealthError(`${action} (${argv.join(' ')}) failed: ${describeRun(r)}${r.output ? `: ${r.output.split('\n').at(-1)}` : ''}`);
}

function failedReason(checks: CheckOutcome[]): string {
  const failed = checks.filter((c) => c.required && !c.passed);
  return failed.map((c) => `${c.name}: ${c.detail}`).join('; ');
}

export async function runHealthCheck(opts: HealthRunOptions): Promise<HealthCheckResult> {
  const { paths, config, log } = opts;
  await checkSysroot(paths);
  const bootOpts: { booted?: number; cmdline?: string } = {};
  if (opts.booted !== undefined) bootOpts.booted = opts.booted;
  if (opts.cmdline !== undefined) bootOpts.cmdline = opts.cmdline;
  const boot = await identifyBoot(paths, bootOpts);
  const before = await readState(paths.root);
  const pending = pendingDeployment(before);
  const trial = pending !== undefined && boot.snapshot !== undefined && pending.snapshot === boot.snapshot;
  const what = boot.snapshot === undefined ? 'this boot (not a snapshot)' : `snapshot ${boot.snapshot}`;
  if (!trial && config.nonTrial === 'skip' && !opts.reportOnly) {
    log('info', `${what} is not on trial; checks skipped (non_trial = "skip")`);
    return { verdict: 'skipped' };
  }
  log('info', `checking ${what}${trial ? ` (trial boot of a new deployment, ${pending?.triesLeft ?? 0} tries left)` : ''}`);

  const env = scriptEnv(paths, boot.snapshot, trial);
  const checks: CheckOutcome[] = [];
  if (config.builtin.reachTarget) checks.push(await checkTarget(config));
  if (config.builtin.failedUnits) checks.push(await checkFailedUnits(config));
  checks.push(...(await runCheckScripts(opts, 'required.d', env)));
  checks.push(...(await runCheckScripts(opts, 'wanted.d', env)));
  for (const c of checks) {
    const priority = c.passed ? 'info' : c.required ? 'err' : 'warning';
    log(priority, `${c.passed ? 'PASS' : 'FAIL'} ${c.name}${c.required ? '' : ' (wanted)'}: ${c.detail}`);
  }
  const good = checks.every((c) => c.passed || !c.required);
  const reason = good ? null : failedReason(checks);
  const report: HealthReport = {
    at: isoTime(),
    bootId: await currentBootId(paths.running),
    snapshot: boot.snapshot ?? null,
    trial,
    verdict: good ? 'good' : 'bad',
    reason,
    checks,
    actions: [],
  };
  log(good ? 'notice' : 'err', `verdict for ${what}: ${good ? 'GOOD' : `BAD (${reason})`}`);

  if (opts.reportOnly) return { verdict: report.verdict, report };

  let rolledBackTo: number | undefined;
  await withStateLock(
    paths.root,
    async () => {
      let state = await readState(paths.root);
      const current = boot.snapshot === undefined ? undefined : findDeployment(state, boot.snapshot);
      // Judge only what is still on trial (a deploy or rollback may have happened meanwhile).
      if (trial && current?.status === 'pending') {
        if (good) {
          state = markGood(state, current.snapshot, { by: 'health-check' });
          await writeState(paths.root, state);
          report.actions.push(`marked snapshot ${current.snapshot} good`);
          await recordUserdata(paths, current.snapshot, 'good', log, report.actions);
          await settleGrub(opts, current.snapshot, report.actions);
          log('notice', `snapshot ${current.snapshot} is good: it is the last known good deployment now`);
        } else {
          state = markBad(state, current.snapshot, { by: 'health-check', reason: reason ?? 'health checks failed' });
          await writeState(paths.root, state);
          report.actions.push(`marked snapshot ${current.snapshot} bad`);
          rolledBackTo = await restoreLastGood(opts, state, current.snapshot, report.actions, { by: 'health-check', reason: reason ?? 'health checks failed' });
        }
      } else if (trial) {
        report.trial = false;
        log('warning', `snapshot ${boot.snapshot} is no longer on trial (${current?.status ?? 'not a deployment'}): verdict only reported`);
      }
      await writeHealthRecord(paths.root, { lastCheck: report });
    },
    { timeoutMs: opts.lockTimeoutMs ?? defaultLockTimeoutMs },
  );

  const hookEnv = scriptEnv(paths, boot.snapshot, report.trial, {
    OCISNAP_VERDICT: report.verdict,
    OCISNAP_VERDICT_SNAPSHOT: boot.snapshot === undefined ? '' : String(boot.snapshot),
    OCISNAP_REASON: reason ?? '',
    OCISNAP_ROLLBACK_TO: rolledBackTo === undefined ? '' : String(rolledBackTo),
  });
  await runHooks(opts, good ? 'green.d' : 'red.d', hookEnv);
  if (rolledBackTo !== undefined) {
    await performAction(opts, report.actions);
    // Recorded once the command returned (systemctl --no-block only queues the job).
    await withStateLock(paths.root, () => writeHealthRecord(paths.root, { lastCheck: report }), { timeoutMs: opts.lockTimeoutMs ?? defaultLockTimeoutMs });
  }
  return { verdict: report.verdict, report };
}

// ---------------------------------------------------------------- boot counting

export interface BootCountOptions {
  paths: SysrootPaths;
  config: HealthConfig;
  scripts: ScriptDirs;
  log: HealthLog;
  booted?: number;
  cmdline?: string;
  lockTimeoutMs?: number;
}

export interface BootCountResult {
  report: BootCountReport;
  /** The snapshot that boots next after a rollback this run made. */
  rolledBackTo?: number;
}

/**
 * One boot starts. See the header comment; also:
 * - booted another snapshot while one is pending (GRUB fell back to its
 *   default): when grubenv says GRUB used up the trial's tries, or the kernel
 *   command line says `ocisnap.boot=fallback`, the trial has failed;
 * - booted a bad deployment that is still the default (a rollback cut short):
 *   finish the rollback.
 */
export async function countBoot(opts: BootCountOptions): Promise<BootCountResult> {
  const { paths, log } = opts;
  await checkSysroot(paths);
  const bootOpts: { booted?: number; cmdline?: string } = {};
  if (opts.booted !== undefined) bootOpts.booted = opts.booted;
  if (opts.cmdline !== undefined) bootOpts.cmdline = opts.cmdline;
  const boot = await identifyBoot(paths, bootOpts);
  const report: BootCountReport = {
    at: isoTime(),
    bootId: await currentBootId(paths.running),
    snapshot: boot.snapshot ?? null,
    trial: null,
    triesLeft: null,
    exhausted: false,
    actions: [],
  };
  let rolledBackTo: number | undefined;
  let reboot = false;

  await withStateLock(
    paths.root,
    async () => {
      let state = await readState(paths.root);
      const pending = pendingDeployment(state);
      report.trial = pending?.snapshot ?? null;
      const booted = boot.snapshot === undefined ? undefined : findDeployment(state, boot.snapshot);

      if (pending && booted && pending.snapshot === booted.snapshot) {
        const r = consumeTry(state, pending.snapshot);
        state = r.state;
        await writeState(paths.root, state);
        report.triesLeft = r.triesLeft;
        if (!r.exhausted) {
          report.actions.push(`counted a boot try of snapshot ${pending.snapshot}`);
          log('notice', `trial boot of snapshot ${pending.snapshot}: ${r.triesLeft} more ${r.triesLeft === 1 ? 'try' : 'tries'} after this one`);
          return;
        }
        report.exhausted = true;
        report.actions.push(`marked snapshot ${pending.snapshot} bad (no boot tries left)`);
        log('err', `snapshot ${pending.snapshot} used up its boot tries without passing the health checks: rolling back`);
        rolledBackTo = await restoreLastGood(opts, state, pending.snapshot, report.actions, { by: 'boot-counter', reason: 'no boot tries left' });
        reboot = rolledBackTo !== undefined;
        return;
      }

      if (pending && boot.snapshot !== pending.snapshot) {
        const grubGaveUp = await grubUsedUpTrial(paths, pending.snapshot);
        if (grubGaveUp || boot.grubBoot === 'fallback') {
          const why = grubGaveUp ? 'GRUB used up its boot tries' : 'GRUB could not load its kernel and fell back';
          state = markBad(state, pending.snapshot, { by: 'boot-counter', reason: `${why}; booted snapshot ${boot.snapshot ?? '?'} instead` });
          await writeState(paths.root, state);
          report.exhausted = true;
          report.actions.push(`marked snapshot ${pending.snapshot} bad (${why})`);
          log('err', `snapshot ${pending.snapshot} never booted to its health check (${why}): marked bad`);
          // We already run on another snapshot: no reboot, but the default must not stay on the bad one.
          rolledBackTo = await restoreLastGood(opts, state, pending.snapshot, report.actions, { by: 'boot-counter', reason: why });
          return;
        }
        log('info', `booted snapshot ${boot.snapshot ?? '(not a snapshot)'}, not snapshot ${pending.snapshot} on trial: no try counted`);
        return;
      }

      if (booted?.status === 'bad') {
        const def = await defaultSubvolume(paths);
        if (def.snapshot === booted.snapshot && (state.lastGood ?? booted.parent) !== undefined) {
          log('warning', `booted snapshot ${booted.snapshot}, marked bad but still the default: finishing its rollback`);
          rolledBackTo = await restoreLastGood(opts, state, booted.snapshot, report.actions, { by: 'boot-counter', reason: 'finishing an interrupted rollback' });
          reboot = rolledBackTo !== undefined;
          return;
        }
      }
      log('info', 'no deployment on trial: nothing to count');
    },
    { timeoutMs: opts.lockTimeoutMs ?? defaultLockTimeoutMs },
  ).finally(async () => {
    await withStateLock(paths.root, () => writeHealthRecord(paths.root, { lastBootCount: report }), {
      timeoutMs: opts.lockTimeoutMs ?? defaultLockTimeoutMs,
    }).catch((err: unknown) => log('warning', `cannot record the boot count: ${describeError(err)}`));
  });

  if (report.exhausted || reboot) {
    const env = scriptEnv(paths, boot.snapshot, true, {
      OCISNAP_VERDICT: 'bad',
      OCISNAP_VERDICT_SNAPSHOT: String(report.trial ?? report.snapshot ?? ''),
      OCISNAP_REASON: 'no boot tries left',
      OCISNAP_ROLLBACK_TO: rolledBackTo === undefined ? '' : String(rolledBackTo),
    });
    await runHooks({ ...opts, reportOnly: false }, 'red.d', env);
  }
  if (reboot) {
    await performAction(opts, report.actions);
    await withStateLock(paths.root, () => writeHealthRecord(paths.root, { lastBootCount: report }), {
      timeoutMs: opts.lockTimeoutMs ?? defaultLockTimeoutMs,
    });
  }
  const result: BootCountResult = { report };
  if (rolledBackTo !== undefined) result.rolledBackTo = rolledBackTo;
  return result;
}

async function grubUsedUpTrial(paths: SysrootPaths, pending: number): Promise<boolean> {
  const file = await findGrubenv(paths);
  if (file === undefined) return false;
  const env = await readGrubenv(file).catch(() => ({}) as Record<string, string>);
  return env[GRUB_VARS.trial] === String(pending) && env[GRUB_VARS.tries] === '0';
}
