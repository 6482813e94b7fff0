/**
 * `ocisnap health check|status|boot-count`: boot health checks and the boot
 * counter (src/health). Thin. Acts on the global `--sysroot` (default `/`).
 *
 *   --config FILE       health.conf (default /etc/ocisnap/health.conf; env OCISNAP_HEALTH_CONF)
 *   --health-root DIR   where <DIR>/etc/ocisnap/health.d and <DIR>/usr/lib/ocisnap/health.d
 *                       are (default /; env OCISNAP_HEALTH_ROOT); with it, the default
 *                       config is <DIR>/etc/ocisnap/health.conf
 *   --booted N          the snapshot this boot runs (default: the one mounted at /, or
 *                       with --sysroot the btrfs default subvolume)
 *
 * Exit status of `check`: 0 good (or skipped), 1 bad.
 */
import { join } from 'node:path';
import { Command, Option } from 'commander';
import { UsageError } from '../errors.js';
import { sysrootPaths, type SysrootPaths } from '../deploy/sysroot.js';
import { OcisnapError } from '../errors.js';
import type { HealthConfig, ScriptDirs, runHealthCheck } from '../health/index.js';

/** health.conf of the running system (src/health/config.ts DEFAULT_HEALTH_CONF). */
const DEFAULT_HEALTH_CONF = '/etc/ocisnap/health.conf';
// The health code is imported when a health command runs (see program.ts).
const healthLib = () => import('../health/index.js');

interface HealthGlobals {
  sysroot?: string;
  config?: string;
  healthRoot: string;
  booted?: string;
}

/** Exit status 1 with one line: the boot is unhealthy. */
export class UnhealthyError extends OcisnapError {}

function parseSnapshot(value: string): number {
  if (!/^[1-9][0-9]*$/.test(value) || Number(value) > 0xffff_ffff) throw new UsageError(`--booted takes a snapshot number, not "${value}"`);
  return Number(value);
}

async function contextOf(cmd: Command): Promise<{ paths: SysrootPaths; config: HealthConfig; scripts: ScriptDirs; booted?: number }> {
  const g = cmd.optsWithGlobals() as HealthGlobals;
  const root = g.healthRoot || '/';
  const { loadHealthConfig, scriptDirs } = await healthLib();
  const config = await loadHealthConfig(g.config ?? (root === '/' ? DEFAULT_HEALTH_CONF : join(root, 'etc/ocisnap/health.conf')));
  const out: { paths: SysrootPaths; config: HealthConfig; scripts: ScriptDirs; booted?: number } = {
    paths: sysrootPaths(g.sysroot ?? '/'),
    config,
    scripts: scriptDirs(root),
  };
  if (g.booted !== undefined) out.booted = parseSnapshot(g.booted);
  return out;
}

export function registerHealthCommands(program: Command): void {
  if (!program.options.some((opt) => opt.long === '--sysroot')) {
    program.addOption(new Option('--sysroot <dir>', 'act on the btrfs filesystem mounted at DIR instead of the running system').default('/'));
  }
  const health = program
    .command('health')
    .description('boot health checks: mark a deployment on trial good, or roll it back')
    .addOption(new Option('--config <file>', `health configuration (default ${DEFAULT_HEALTH_CONF})`).env('OCISNAP_HEALTH_CONF'))
    .addOption(new Option('--health-root <dir>', 'root of etc/ocisnap/health.d and usr/lib/ocisnap/health.d').default('/').env('OCISNAP_HEALTH_ROOT'))
    .option('--booted <n>', 'the snapshot this boot runs (default: mounted at /, or the default subvolume with --sysroot)');

  health
    .command('check')
    .description('run the health checks; on the trial boot of a new deployment mark it good, or bad and roll back')
    .option('--report-only', 'only run and report the checks: change nothing, run no hooks')
    .action(async (o: { reportOnly?: boolean }, cmd: Command) => {
      const ctx = await contextOf(cmd);
      const { createHealthLog, runHealthCheck } = await healthLib();
      const opts: Parameters<typeof runHealthCheck>[0] = { ...ctx, log: createHealthLog() };
      if (o.reportOnly) opts.reportOnly = true;
      const r = await runHealthCheck(opts);
      if (r.verdict === 'bad') {
        throw new UnhealthyError(`snapshot ${r.report?.snapshot ?? '?'} is unhealthy: ${r.report?.reason ?? 'required checks failed'}`);
      }
    });

  health
    .command('boot-count')
    .description('early in boot: count a boot try of the deployment on trial; with none left, roll it back')
    .action(async (_o, cmd: Command) => {
      const ctx = await contextOf(cmd);
      const { countBoot, createHealthLog } = await healthLib();
      await countBoot({ ...ctx, log: createHealthLog() });
    });

  health
    .command('status')
    .description('show the trial, the last good deployment, verdicts and the last check')
    .option('--json', 'machine-readable output (shape in src/health/status.ts)')
    .action(async (o: { json?: boolean }, cmd: Command) => {
      const ctx = await contextOf(cmd);
      const { formatHealthStatus, healthStatus } = await healthLib();
      const s = await healthStatus(ctx.paths, ctx.booted === undefined ? {} : { booted: ctx.booted });
      process.stdout.write(o.json ? `${JSON.stringify(s, null, 2)}\n` : formatHealthStatus(s));
    });
}
