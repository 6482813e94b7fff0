/**
 * What the last health check and the last boot count found, kept beside the
 * deployment state: `<sysroot>/var/lib/ocisnap/health.json` (replaced
 * atomically, under the state lock). The deployments' verdicts themselves are
 * in state.json (state.ts: status and verdict per deployment); this file adds
 * the details an admin asks for after a rollback: which check failed and how.
 * Unknown or damaged content reads as "nothing recorded": it is a log, not
 * state that decisions depend on.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stateDir } from '../deploy/state.js';
import { writeFileAtomic } from '../sys/atomic-file.js';
import type { CheckOutcome } from './builtin.js';

export interface HealthReport {
  /** ISO 8601 UTC. */
  at: string;
  /** /proc/sys/kernel/random/boot_id of the boot that ran it, when the sysroot is the running system. */
  bootId: string | null;
  /** The snapshot judged (the booted one). */
  snapshot: number | null;
  /** It was the trial boot of a pending deployment. */
  trial: boolean;
  verdict: 'good' | 'bad';
  /** One line: why bad (the failed required checks). */
  reason: string | null;
  checks: CheckOutcome[];
  /** What ocisnap did about it, in order (e.g. "marked snapshot 3 bad", "default set to snapshot 2", "reboot"). */
  actions: string[];
}

export interface BootCountReport {
  at: string;
  bootId: string | null;
  snapshot: number | null;
  /** The pending deployment, if any. */
  trial: number | null;
  /** Tries left after this boot (null when no try was counted). */
  triesLeft: number | null;
  /** The trial failed by running out of tries (or GRUB gave it up). */
  exhausted: boolean;
  actions: string[];
}

export interface HealthRecord {
  lastCheck: HealthReport | null;
  lastBootCount: BootCountReport | null;
}

export function healthRecordPath(sysroot: string): string {
  return join(stateDir(sysroot), 'health.json');
}

export async function readHealthRecord(sysroot: string): Promise<HealthRecord> {
  try {
    const v = JSON.parse(await readFile(healthRecordPath(sysroot), 'utf8')) as Partial<HealthRecord>;
    return { lastCheck: v.lastCheck ?? null, lastBootCount: v.lastBootCount ?? null };
  } catch {
    return { lastCheck: null, lastBootCount: null };
  }
}

/** Call under the state lock. */
export async function writeHealthRecord(sysroot: string, change: Partial<HealthRecord>): Promise<void> {
  const next = { ...(await readHealthRecord(sysroot)), ...change };
  await mkdir(stateDir(sysroot), { recursive: true, mode: 0o755 });
  await writeFileAtomic(healthRecordPath(sysroot), `${JSON.stringify(next, null, 2)}\n`, 0o644);
}

export async function currentBootId(running: boolean): Promise<string | null> {
  if (!running) return null;
  try {
    return (await readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
  } catch {
    return null;
  }
}
