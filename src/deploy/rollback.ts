/**
 * Manual rollback: make an earlier snapshot the default subvolume (what boots
 * next), as health-checker does on MicroOS (`btrfs subvolume set-default
 * <last good>`), and record it in the state.
 *
 * Target: snapshot N, or the last known good deployment. Refused without
 * `force`: a snapshot ocisnap did not deploy (snapper's own, tukit's), and a
 * deployment whose trial failed (bad). A pending deployment rolled away from
 * is superseded (its trial ends without a verdict).
 *
 * The state records the rollback as `lastRollback` (who, from, to, why), for
 * `ocisnap status`. An automatic rollback by the health module passes `by`
 * and `reason`; one that sets the default under its own state lock uses
 * state.ts recordRollback instead.
 *
 * GRUB ignores the btrfs default and boots what grubenv names
 * (plugins/grub/grub.cfg), so grubenv follows: the target becomes
 * `ocisnap_default`, with no trial (health/grubenv.ts grubSetDefault; nothing
 * without a grubenv). Also when the target already was the default, which
 * repairs a grubenv left behind, unless the target is the deployment on
 * trial: its GRUB trial stays as it is.
 */
import { isSubvolume, setDefaultSubvolume, showSubvolume } from '../btrfs/index.js';
import { describeError, OcisnapError } from '../errors.js';
import { DEFAULT_HEALTH_CONF, loadHealthConfig } from '../health/config.js';
import { grubSetDefault, type GrubenvUpdate } from '../health/grubenv.js';
import { withRecoveredState } from './deploy.js';
import { readInfoXml } from './snapper.js';
import { findDeployment, pendingDeployment, readState, recordRollback, supersede, writeState, type RollbackBy } from './state.js';
import { checkSysroot, defaultSubvolume, snapshotPath, type SysrootPaths } from './sysroot.js';

export class RollbackError extends OcisnapError {}

export interface RollbackOptions {
  paths: SysrootPaths;
  /** Snapshot number; default: the last known good deployment. */
  target?: number;
  force?: boolean;
  log?: (line: string) => void;
  lockTimeoutMs?: number;
  /** Who rolls back, recorded in state.lastRollback (default 'admin'). */
  by?: RollbackBy;
  /** One line on why, recorded in state.lastRollback (e.g. the failed check). */
  reason?: string;
  /**
   * grub-editenv command for grubenv; default: `commands.grub_editenv` of
   * /etc/ocisnap/health.conf on the running system, else grub-editenv or
   * grub2-editenv.
   */
  grubEditenv?: string[];
}

export interface RollbackResult {
  /** The new default. */
  snapshot: number;
  /** The snapshot that was the default before (when it was a snapshot). */
  previous?: number;
  /** Nothing changed: the target already was the default. */
  unchanged: boolean;
  /** Whether grubenv was set to boot the target (not: no grubenv, no grub-editenv, or the target is on trial). */
  grubenv: GrubenvUpdate;
}

/** The configured grub-editenv of the running system; a broken health.conf must not stop a rollback. */
async function grubEditenvOf(opts: RollbackOptions, log: (line: string) => void): Promise<string[] | undefined> {
  if (opts.grubEditenv !== undefined || !opts.paths.running) return opts.grubEditenv;
  try {
    return (await loadHealthConfig(DEFAULT_HEALTH_CONF)).commands.grubEditenv;
  } catch (err) {
    log(`warning: ${describeError(err)}; using grub-editenv or grub2-editenv`);
    return undefined;
  }
}

export async function rollback(opts: RollbackOptions): Promise<RollbackResult> {
  const { paths } = opts;
  const log = opts.log ?? (() => undefined);
  await checkSysroot(paths);
  const editenv = await grubEditenvOf(opts, log);
  return withRecoveredState(
    paths,
    log,
    async () => {
      let state = await readState(paths.root);
      const num = opts.target ?? state.lastGood;
      if (num === undefined) {
        throw new RollbackError('no deployment is known good yet; name the snapshot to roll back to: ocisnap rollback N');
      }
      const sub = snapshotPath(paths, num);
      if (!(await isSubvolume(sub))) throw new RollbackError(`snapshot ${num} does not exist (${sub} is not a btrfs subvolume)`);
      await readInfoXml(paths.snapshotsDir, num).catch((err: unknown) => {
        throw new RollbackError(`snapshot ${num} is not a valid snapper snapshot: ${(err as Error).message}`, { cause: err });
      });
      const d = findDeployment(state, num);
      if (!d && !opts.force) {
        throw new RollbackError(`snapshot ${num} was not deployed by ocisnap (snapper's or tukit's own); use --force to boot it anyway`);
      }
      if (d?.status === 'bad' && !opts.force) {
        throw new RollbackError(`snapshot ${num} failed its health checks (marked bad); use --force to boot it anyway`);
      }
      const def = await defaultSubvolume(paths);
      const id = (await showSubvolume(sub)).id;
      const result: RollbackResult = { snapshot: num, unchanged: id === def.id, grubenv: { updated: false, why: 'not changed' } };
      if (def.snapshot !== undefined) result.previous = def.snapshot;
      if (!result.unchanged) await setDefaultSubvolume(id, paths.root);
      const before = state;
      const pending = pendingDeployment(state);
      if (pending && pending.snapshot !== num) {
        state = supersede(state, pending.snapshot, { by: 'rollback', reason: `rolled back to snapshot ${num}` });
      }
      // A rollback to what already boots next changed nothing worth recording.
      if (!result.unchanged) {
        const event: Parameters<typeof recordRollback>[1] = { to: num, by: opts.by ?? 'admin' };
        if (def.snapshot !== undefined) event.from = def.snapshot;
        if (opts.reason !== undefined) event.reason = opts.reason;
        state = recordRollback(state, event);
      }
      if (state !== before) await writeState(paths.root, state);
      if (!result.unchanged || d?.status !== 'pending') {
        try {
          result.grubenv = await grubSetDefault(paths, num, editenv);
        } catch (err) {
          throw new RollbackError(
            `snapshot ${num} is the btrfs default now, but GRUB was not told to boot it: ${describeError(err)}; fix that and run ocisnap rollback ${num} again`,
            { cause: err },
          );
        }
        if (result.grubenv.updated) log(`grubenv ${result.grubenv.file}: snapshot ${num} boots by default, no trial`);
      } else {
        result.grubenv = { updated: false, why: `snapshot ${num} is on trial: its GRUB trial is kept` };
      }
      return result;
    },
    { timeoutMs: opts.lockTimeoutMs ?? 0 },
  );
}
