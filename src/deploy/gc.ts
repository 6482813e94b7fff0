/**
 * `ocisnap gc`: remove old deployments, then the images and layers nothing
 * kept uses.
 *
 * Kept: the booted snapshot, the default (next boot), the last known good,
 * the pending one and the one it replaced (its fallback), pinned ones, and
 * the newest `keep` deployments. Only ocisnap's deployments (in the state)
 * are candidates: snapper's own snapshots are never touched. Removal order (snapper.ts): info.xml (snapper
 * stops listing it), subvolume, directory, then the state entry; interrupted
 * anywhere, the next gc finishes the job (a deployment whose snapshot is gone
 * is simply forgotten).
 *
 * Then every image in the sysroot's layer store that no kept deployment uses
 * is removed with its layers (Store.removeImage; layers shared with kept
 * images stay). The store under /var/lib/ocisnap is ocisnap's own, so an image
 * pulled but never deployed counts as unused too.
 */
import { deleteSubvolume, isSubvolume } from '../btrfs/index.js';
import { describeError, OcisnapError } from '../errors.js';
import { openStore, withRecoveredState } from './deploy.js';
import { listSnapshots, releaseSnapshotDir, unregisterSnapshot } from './snapper.js';
import { readState, removeDeployment, writeState, type State } from './state.js';
import { bootedSubvolume, checkSysroot, defaultSubvolume, snapshotPath, type SysrootPaths } from './sysroot.js';

export const DEFAULT_KEEP = 3;

export class GcError extends OcisnapError {}

export interface GcOptions {
  paths: SysrootPaths;
  /** Newest deployments kept whatever their status (default DEFAULT_KEEP). */
  keep?: number;
  /** Only report what would go. */
  dryRun?: boolean;
  log?: (line: string) => void;
  lockTimeoutMs?: number;
}

export interface GcResult {
  /** Snapshot numbers kept, with why. */
  kept: Array<{ snapshot: number; reasons: string[] }>;
  removedSnapshots: number[];
  /** Deployments forgotten because their snapshot was already gone. */
  forgotten: number[];
  removedImages: string[];
  removedLayers: number;
}

/** Which deployments stay, and why (pure: for tests and --dry-run). */
export function planGc(
  state: State,
  keep: number,
  facts: { booted?: number; default?: number },
): Map<number, string[]> {
  const reasons = new Map<number, string[]>();
  const add = (n: number | undefined, why: string): void => {
    if (n === undefined) return;
    if (!state.deployments.some((d) => d.snapshot === n)) return;
    reasons.set(n, [...(reasons.get(n) ?? []), why]);
  };
  add(facts.booted, 'booted');
  add(facts.default, 'default');
  add(state.lastGood, 'last good');
  for (const d of state.deployments) {
    if (d.status === 'pending') add(d.snapshot, 'pending');
    // What the pending one replaced: the fallback while its trial runs.
    if (d.status === 'pending') add(d.parent, 'replaced by the pending one');
    if (d.pinned) add(d.snapshot, 'pinned');
  }
  const newest = [...state.deployments].sort((a, b) => b.snapshot - a.snapshot).slice(0, Math.max(0, keep));
  for (const d of newest) add(d.snapshot, `newest ${keep}`);
  return reasons;
}

export async function gc(opts: GcOptions): Promise<GcResult> {
  const { paths } = opts;
  const log = opts.log ?? (() => undefined);
  const keep = opts.keep ?? DEFAULT_KEEP;
  if (!Number.isSafeInteger(keep) || keep < 0) throw new GcError(`--keep takes a count >= 0, not ${keep}`);
  await checkSysroot(paths);
  return withRecoveredState(
    paths,
    log,
    async () => {
      let state = await readState(paths.root);
      const def = await defaultSubvolume(paths);
      const booted = paths.running ? await bootedSubvolume() : undefined;
      const facts: { booted?: number; default?: number } = {};
      if (booted?.snapshot !== undefined) facts.booted = booted.snapshot;
      if (def.snapshot !== undefined) facts.default = def.snapshot;
      const kept = planGc(state, keep, facts);
      const listed = new Set((await listSnapshots(paths.snapshotsDir)).map((s) => s.num));

      const result: GcResult = {
        kept: [...kept].filter(([n]) => listed.has(n)).map(([snapshot, reasons]) => ({ snapshot, reasons })).sort((a, b) => a.snapshot - b.snapshot),
        removedSnapshots: [],
        forgotten: [],
        removedImages: [],
        removedLayers: 0,
      };
      for (const d of state.deployments) {
        const sub = snapshotPath(paths, d.snapshot);
        const exists = listed.has(d.snapshot) || (await isSubvolume(sub));
        // A kept deployment whose snapshot is gone has nothing left to keep; the
        // state still needs a last good and a pending one, though (removeDeployment).
        const forgettable = !exists && d.snapshot !== state.lastGood && d.status !== 'pending';
        if (kept.has(d.snapshot) && !forgettable) continue;
        if (opts.dryRun) {
          (exists ? result.removedSnapshots : result.forgotten).push(d.snapshot);
          continue;
        }
        try {
          await unregisterSnapshot(paths.snapshotsDir, d.snapshot);
          if (await isSubvolume(sub)) await deleteSubvolume(sub, { recursive: true });
          await releaseSnapshotDir(paths.snapshotsDir, d.snapshot);
        } catch (err) {
          throw new GcError(`removing snapshot ${d.snapshot} (${d.image}): ${describeError(err)}`, { cause: err });
        }
        state = removeDeployment(state, d.snapshot, { force: true });
        await writeState(paths.root, state);
        (exists ? result.removedSnapshots : result.forgotten).push(d.snapshot);
        log(exists ? `removed snapshot ${d.snapshot} (${d.image})` : `forgot deployment ${d.snapshot} (${d.image}): its snapshot was already gone`);
      }

      // Images: whatever a kept deployment does not use.
      const store = await openStore(paths);
      const usedIds = new Set(state.deployments.filter((d) => opts.dryRun !== true || kept.has(d.snapshot)).map((d) => d.imageId));
      await store.lock(async () => {
        for (const image of await store.listImages()) {
          if (usedIds.has(image.id)) continue;
          if (opts.dryRun) {
            result.removedImages.push(image.id);
            continue;
          }
          const removed = await store.removeImage(image.id);
          result.removedImages.push(image.id);
          result.removedLayers += removed.removedLayers.length;
          log(`removed image ${image.names?.[0] ?? image.id.slice(0, 12)} (${removed.removedLayers.length} layers)`);
        }
      });
      return result;
    },
    { timeoutMs: opts.lockTimeoutMs ?? 0 },
  );
}
