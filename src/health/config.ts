/**
 * Health-check configuration: `/etc/ocisnap/health.conf`, TOML (smol-toml).
 * Every key is optional; a missing file means all defaults. Unknown keys are
 * an error (a typo must not silently disable a rollback).
 *
 *   # What to do after a trial boot failed and the last good snapshot was
 *   # made the default again: "reboot" (default), "poweroff" or "none".
 *   action = "reboot"
 *   # Boots that are not the trial of a pending deployment: "report" (run
 *   # the checks, log the result, change nothing; default) or "skip".
 *   non_trial = "report"
 *   # Boots a new deployment gets before its trial counts as failed (the
 *   # default of `ocisnap deploy --tries`; GRUB counts at most 9).
 *   tries = 3
 *   # Seconds one check script (required.d, wanted.d) may run; then it is
 *   # killed (its whole process group) and counts as failed.
 *   check_timeout = 120
 *   # Seconds a green.d/red.d hook may run.
 *   hook_timeout = 60
 *
 *   [builtin]
 *   # No unit in the "failed" state (systemctl --failed).
 *   failed_units = true
 *   # Failed units that do not count (exact names).
 *   ignore_units = ["example.service"]
 *   # The target the boot must reach, and by when (seconds since the kernel
 *   # started, /proc/uptime): the check waits for it until then.
 *   # basic.target by default: multi-user.target wants ocisnap-health.service
 *   # and so is ordered after it (systemd.target(5)); waiting for it would deadlock.
 *   target = "basic.target"
 *   target_deadline = 300
 *   # Set to false to skip the target check.
 *   reach_target = true
 *
 *   [commands]
 *   # argv arrays; overridable for tests and unusual systems.
 *   systemctl = ["systemctl"]
 *   reboot = ["systemctl", "--no-block", "reboot"]
 *   poweroff = ["systemctl", "--no-block", "poweroff"]
 *   grub_editenv = ["grub2-editenv"]  # default: grub-editenv, else grub2-editenv
 *
 * The keys mirror greenboot's /etc/greenboot/greenboot.conf
 * (GREENBOOT_MAX_BOOT_ATTEMPTS, ...) in spirit, not in syntax.
 */
import { readFile } from 'node:fs/promises';
import { parse, TomlError } from 'smol-toml';
import { describeError, UsageError } from '../errors.js';
import { DEFAULT_TRIES } from '../deploy/state.js';

export type HealthAction = 'reboot' | 'poweroff' | 'none';
export type NonTrialMode = 'report' | 'skip';

export interface HealthConfig {
  action: HealthAction;
  nonTrial: NonTrialMode;
  /** Boot tries of a new deployment (deploy's default). */
  tries: number;
  /** Milliseconds. */
  checkTimeoutMs: number;
  /** Milliseconds. */
  hookTimeoutMs: number;
  builtin: {
    failedUnits: boolean;
    ignoreUnits: string[];
    reachTarget: boolean;
    target: string;
    /** Seconds since boot. */
    targetDeadlineSec: number;
  };
  commands: {
    systemctl: string[];
    reboot: string[];
    poweroff: string[];
    /** Default: grub-editenv, else grub2-editenv. */
    grubEditenv?: string[];
  };
}

export const DEFAULT_HEALTH_CONF = '/etc/ocisnap/health.conf';

/** The configuration file is malformed. */
export class HealthConfigError extends UsageError {}

export function defaultHealthConfig(): HealthConfig {
  return {
    action: 'reboot',
    nonTrial: 'report',
    tries: DEFAULT_TRIES,
    checkTimeoutMs: 120_000,
    hookTimeoutMs: 60_000,
    builtin: { failedUnits: true, ignoreUnits: [], reachTarget: true, target: 'basic.target', targetDeadlineSec: 300 },
    commands: {
      systemctl: ['systemctl'],
      reboot: ['systemctl', '--no-block', 'reboot'],
      poweroff: ['systemctl', '--no-block', 'poweroff'],
    },
  };
}

type Table = Record<string, unknown>;

function isTable(v: unknown): v is Table {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

/** Parses the text of health.conf; `what` names it in errors. */
export function parseHealthConfig(text: string, what: string): HealthConfig {
  let doc: Table;
  try {
    doc = parse(text) as Table;
  } catch (err) {
    const line = err instanceof TomlError ? ` (line ${err.line})` : '';
    throw new HealthConfigError(`${what}: not valid TOML${line}: ${describeError(err).split('\n')[0]}`, { cause: err });
  }
  const cfg = defaultHealthConfig();
  const fail = (key: string, msg: string): never => {
    throw new HealthConfigError(`${what}: ${key}: ${msg}`);
  };
  const known = (table: Table, keys: string[], prefix: string): void => {
    for (const k of Object.keys(table)) if (!keys.includes(k)) fail(`${prefix}${k}`, `unknown key (known: ${keys.join(', ')})`);
  };
  const seconds = (v: unknown, key: string, min: number): number => {
    if (typeof v !== 'number' && typeof v !== 'bigint') fail(key, 'not a number of seconds');
    const n = Number(v);
    if (!Number.isFinite(n) || n < min) fail(key, `must be at least ${min}`);
    return n;
  };
  const argv = (v: unknown, key: string): string[] => {
    if (typeof v === 'string' && v !== '') return [v];
    if (!Array.isArray(v) || v.length === 0 || !v.every((x) => typeof x === 'string' && x !== '')) {
      fail(key, 'not a command (a string or an array of non-empty strings)');
    }
    return v as string[];
  };
  const bool = (v: unknown, key: string): boolean => {
    if (typeof v !== 'boolean') fail(key, 'not true or false');
    return v as boolean;
  };

  known(doc, ['action', 'non_trial', 'tries', 'check_timeout', 'hook_timeout', 'builtin', 'commands'], '');
  if (doc['action'] !== undefined) {
    if (!['reboot', 'poweroff', 'none'].includes(doc['action'] as string)) fail('action', 'must be "reboot", "poweroff" or "none"');
    cfg.action = doc['action'] as HealthAction;
  }
  if (doc['non_trial'] !== undefined) {
    if (!['report', 'skip'].includes(doc['non_trial'] as string)) fail('non_trial', 'must be "report" or "skip"');
    cfg.nonTrial = doc['non_trial'] as NonTrialMode;
  }
  if (doc['tries'] !== undefined) {
    const t = doc['tries'];
    if ((typeof t !== 'number' && typeof t !== 'bigint') || !Number.isSafeInteger(Number(t)) || Number(t) < 1) fail('tries', 'must be a whole number >= 1');
    cfg.tries = Number(t);
  }
  if (doc['check_timeout'] !== undefined) cfg.checkTimeoutMs = seconds(doc['check_timeout'], 'check_timeout', 0.001) * 1000;
  if (doc['hook_timeout'] !== undefined) cfg.hookTimeoutMs = seconds(doc['hook_timeout'], 'hook_timeout', 0.001) * 1000;

  const builtin = doc['builtin'];
  if (builtin !== undefined) {
    if (!isTable(builtin)) fail('builtin', 'not a table');
    const b = builtin as Table;
    known(b, ['failed_units', 'ignore_units', 'reach_target', 'target', 'target_deadline'], 'builtin.');
    if (b['failed_units'] !== undefined) cfg.builtin.failedUnits = bool(b['failed_units'], 'builtin.failed_units');
    if (b['reach_target'] !== undefined) cfg.builtin.reachTarget = bool(b['reach_target'], 'builtin.reach_target');
    if (b['ignore_units'] !== undefined) {
      const u = b['ignore_units'];
      if (!Array.isArray(u) || !u.every((x) => typeof x === 'string')) fail('builtin.ignore_units', 'not an array of unit names');
      cfg.builtin.ignoreUnits = u as string[];
    }
    if (b['target'] !== undefined) {
      if (typeof b['target'] !== 'string' || !/^[\w:.@\\-]+\.target$/.test(b['target'])) fail('builtin.target', 'not a target unit name');
      cfg.builtin.target = b['target'] as string;
    }
    if (b['target_deadline'] !== undefined) cfg.builtin.targetDeadlineSec = seconds(b['target_deadline'], 'builtin.target_deadline', 0);
  }

  const commands = doc['commands'];
  if (commands !== undefined) {
    if (!isTable(commands)) fail('commands', 'not a table');
    const c = commands as Table;
    known(c, ['systemctl', 'reboot', 'poweroff', 'grub_editenv'], 'commands.');
    if (c['systemctl'] !== undefined) cfg.commands.systemctl = argv(c['systemctl'], 'commands.systemctl');
    if (c['reboot'] !== undefined) cfg.commands.reboot = argv(c['reboot'], 'commands.reboot');
    if (c['poweroff'] !== undefined) cfg.commands.poweroff = argv(c['poweroff'], 'commands.poweroff');
    if (c['grub_editenv'] !== undefined) cfg.commands.grubEditenv = argv(c['grub_editenv'], 'commands.grub_editenv');
  }
  return cfg;
}

/** Reads health.conf; a missing file gives the defaults. */
export async function loadHealthConfig(path: string = DEFAULT_HEALTH_CONF): Promise<HealthConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as { code?: unknown }).code === 'ENOENT') return defaultHealthConfig();
    throw new HealthConfigError(`cannot read ${path}: ${describeError(err)}`, { cause: err });
  }
  return parseHealthConfig(text, path);
}
