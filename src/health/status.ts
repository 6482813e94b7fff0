/**
 * `ocisnap health status [--json]`: the trial, the last good deployment, each
 * deployment's verdict, the last check and boot count (report.ts), and the
 * bootloader's view (grubenv). Reads only.
 *
 * JSON shape (schemaVersion 1; fields are only added; absent values are null):
 *   { schemaVersion: 1, sysroot, booted, trial: {snapshot, triesLeft} | null,
 *     lastGood, deployments: [{snapshot, image, status, triesLeft, verdict}],
 *     lastCheck: HealthReport | null, lastBootCount: BootCountReport | null,
 *     grubenv: {file, default, trial, tries} | null }
 */
import type { DeploymentStatus, Verdict } from '../deploy/state.js';
import { pendingDeployment, readState } from '../deploy/state.js';
import { checkSysroot, type SysrootPaths } from '../deploy/sysroot.js';
import { identifyBoot } from './boot.js';
import { findGrubenv, GRUB_VARS, readGrubenv } from './grubenv.js';
import { readHealthRecord, type BootCountReport, type HealthReport } from './report.js';

export const HEALTH_STATUS_SCHEMA_VERSION = 1;

export interface HealthStatus {
  schemaVersion: 1;
  sysroot: string;
  booted: number | null;
  trial: { snapshot: number; triesLeft: number } | null;
  lastGood: number | null;
  deployments: { snapshot: number; image: string; status: DeploymentStatus; triesLeft: number | null; verdict: Verdict | null }[];
  lastCheck: HealthReport | null;
  lastBootCount: BootCountReport | null;
  grubenv: { file: string; default: string | null; trial: string | null; tries: string | null } | null;
}

export async function healthStatus(paths: SysrootPaths, opts: { booted?: number } = {}): Promise<HealthStatus> {
  await checkSysroot(paths);
  const state = await readState(paths.root);
  const boot = await identifyBoot(paths, opts.booted === undefined ? {} : { booted: opts.booted });
  const pending = pendingDeployment(state);
  const record = await readHealthRecord(paths.root);
  const file = await findGrubenv(paths);
  let grubenv: HealthStatus['grubenv'] = null;
  if (file !== undefined) {
    const env = await readGrubenv(file).catch(() => ({}) as Record<string, string>);
    grubenv = { file, default: env[GRUB_VARS.default] ?? null, trial: env[GRUB_VARS.trial] ?? null, tries: env[GRUB_VARS.tries] ?? null };
  }
  return {
    schemaVersion: HEALTH_STATUS_SCHEMA_VERSION,
    sysroot: paths.root,
    booted: boot.snapshot ?? null,
    trial: pending ? { snapshot: pending.snapshot, triesLeft: pending.triesLeft ?? 0 } : null,
    lastGood: state.lastGood ?? null,
    deployments: state.deployments.map((d) => ({
      snapshot: d.snapshot,
      image: d.image,
      status: d.status,
      triesLeft: d.triesLeft ?? null,
      verdict: d.verdict ?? null,
    })),
    lastCheck: record.lastCheck,
    lastBootCount: record.lastBootCount,
    grubenv,
  };
}

export function formatHealthStatus(s: HealthStatus): string {
  const lines: string[] = [];
  lines.push(`Booted:     ${s.booted ?? 'not a snapshot'}`);
  lines.push(`On trial:   ${s.trial ? `snapshot ${s.trial.snapshot} (${s.trial.triesLeft} boot tries left)` : 'none'}`);
  lines.push(`Last good:  ${s.lastGood ?? 'none'}`);
  if (s.grubenv) {
    lines.push(`GRUB:       default ${s.grubenv.default ?? '-'}, trial ${s.grubenv.trial ?? '-'}, tries ${s.grubenv.tries ?? '-'} (${s.grubenv.file})`);
  }
  const c = s.lastCheck;
  if (c) {
    lines.push('', `Last check: ${c.at}, snapshot ${c.snapshot ?? '-'}${c.trial ? ' (trial)' : ''}: ${c.verdict.toUpperCase()}${c.reason ? ` (${c.reason})` : ''}`);
    for (const x of c.checks) lines.push(`  ${x.passed ? 'PASS' : 'FAIL'} ${x.name}${x.required ? '' : ' (wanted)'}: ${x.detail}`);
    if (c.actions.length > 0) lines.push(`  done: ${c.actions.join('; ')}`);
  } else {
    lines.push('', 'Last check: never');
  }
  const b = s.lastBootCount;
  if (b && (b.trial !== null || b.actions.length > 0)) {
    lines.push(`Last boot count: ${b.at}, snapshot ${b.snapshot ?? '-'}: ${b.actions.join('; ') || 'nothing to do'}`);
  }
  const judged = s.deployments.filter((d) => d.verdict);
  if (judged.length > 0) {
    lines.push('', 'Verdicts:');
    for (const d of [...judged].reverse()) {
      lines.push(`  ${String(d.snapshot).padStart(4)}  ${d.status.padEnd(10)} ${d.verdict!.at} by ${d.verdict!.by}${d.verdict!.reason ? `: ${d.verdict!.reason}` : ''}`);
    }
  }
  return `${lines.join('\n')}\n`;
}
