/**
 * Built-in checks, both through systemctl (its argv is configurable, so a
 * test host without systemd as PID 1 can put a stand-in there):
 *
 * - target: the boot reached its target (`systemctl is-active TARGET` says
 *   "active") by the deadline, counted in seconds since the kernel started
 *   (/proc/uptime); before that the check waits, polling once a second.
 * - failed-units: no unit is in the failed state (`systemctl --failed
 *   --plain --no-legend`, first column), except the ignored ones; what
 *   systemd-boot-check-no-failures.service checks for boot assessment.
 *
 * The target check runs first: units still starting are not yet failed.
 */
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import type { HealthConfig } from './config.js';
import { describeRun, runWithTimeout, succeeded } from './scripts.js';

export interface CheckOutcome {
  /** `builtin:target`, `builtin:failed-units`, or `required.d/NAME`, `wanted.d/NAME`. */
  name: string;
  required: boolean;
  passed: boolean;
  /** One line. */
  detail: string;
  durationMs: number;
}

async function uptimeSec(): Promise<number> {
  try {
    return Number((await readFile('/proc/uptime', 'utf8')).split(' ')[0]);
  } catch {
    return Number.POSITIVE_INFINITY;
  }
}

export async function checkTarget(
  cfg: HealthConfig,
  opts: { pollMs?: number; uptime?: () => Promise<number> } = {},
): Promise<CheckOutcome> {
  const uptime = opts.uptime ?? uptimeSec;
  const started = Date.now();
  const { target, targetDeadlineSec } = cfg.builtin;
  const name = 'builtin:target';
  for (;;) {
    const r = await runWithTimeout([...cfg.commands.systemctl, 'is-active', target], { timeoutMs: cfg.checkTimeoutMs });
    const state = r.output.split('\n').at(-1)?.trim() ?? '';
    if (succeeded(r) && state === 'active') {
      return { name, required: true, passed: true, detail: `${target} is active`, durationMs: Date.now() - started };
    }
    if (r.spawnError !== undefined || r.timedOut) {
      return { name, required: true, passed: false, detail: `systemctl is-active ${target}: ${describeRun(r)}`, durationMs: Date.now() - started };
    }
    const up = await uptime();
    if (up >= targetDeadlineSec) {
      return {
        name,
        required: true,
        passed: false,
        detail: `${target} not reached ${targetDeadlineSec} s after boot (state: ${state || 'unknown'})`,
        durationMs: Date.now() - started,
      };
    }
    await sleep(Math.min(opts.pollMs ?? 1000, (targetDeadlineSec - up) * 1000 + 10));
  }
}

/** The unit that runs `ocisnap health check` (plugins/systemd/). */
export const SELF_UNIT = 'ocisnap-health.service';

export function parseFailedUnits(output: string): string[] {
  return output
    .split('\n')
    .map((l) => l.trim().replace(/^[●*×]\s*/, '').split(/\s+/)[0] ?? '')
    .filter((u) => u !== '');
}

export async function checkFailedUnits(cfg: HealthConfig): Promise<CheckOutcome> {
  const started = Date.now();
  const name = 'builtin:failed-units';
  const r = await runWithTimeout([...cfg.commands.systemctl, '--failed', '--plain', '--no-legend', '--full'], { timeoutMs: cfg.checkTimeoutMs });
  if (!succeeded(r)) {
    return { name, required: true, passed: false, detail: `systemctl --failed: ${describeRun(r)}`, durationMs: Date.now() - started };
  }
  // ocisnap-health.service itself is failed after an earlier bad verdict of this boot; a re-run by hand must not count it.
  const failed = parseFailedUnits(r.output).filter((u) => u !== SELF_UNIT && !cfg.builtin.ignoreUnits.includes(u));
  return {
    name,
    required: true,
    passed: failed.length === 0,
    detail: failed.length === 0 ? 'no failed units' : `failed units: ${failed.join(' ')}`,
    durationMs: Date.now() - started,
  };
}
