/**
 * The deployment commands: deploy, switch, upgrade, status, list, rollback, gc.
 * Thin: parse flags, call src/deploy, print. Every command acts on the
 * sysroot given by the global `--sysroot DIR` (default `/`, the running
 * system); its layer store is DIR/var/lib/ocisnap/storage unless
 * `--storage-root` (or OCISNAP_STORAGE_ROOT) names another on the same
 * btrfs filesystem.
 *
 * Exit status: 0 success; 1 a failure (one line on stderr); 2 a usage error;
 * `upgrade --check`: 0 when an update is available, 77 when there is none.
 */
import { Command, CommanderError, Option } from 'commander';
import { UsageError } from '../errors.js';
import { parsePlatform } from '../oci/platform.js';
import type { Platform } from '../oci/types.js';
import type { SourceConfig } from '../pull/source-config.js';
import { defaultPolicyPath, defaultRegistriesDPath } from '../policy/defaults.js';
import type { DeployOptions, DeployResult } from '../deploy/deploy.js';
import type { rollback } from '../deploy/rollback.js';
import type { VerificationStatus } from '../deploy/status.js';
import type { DeploymentVerification } from '../deploy/state.js';
import { sysrootPaths, type SysrootPaths } from '../deploy/sysroot.js';
import { createRenderer, parseProgressMode } from './progress.js';

// Each command imports what it runs when it runs (see program.ts).
const deployLib = () => import('../deploy/deploy.js');
const statusLib = () => import('../deploy/status.js');

/** A module import started early: its failure surfaces where it is awaited, not as an unhandled rejection. */
function preload<T>(p: Promise<T>): Promise<T> {
  p.catch(() => {});
  return p;
}

/** Exit status of `upgrade --check` when there is no update (as rpm-ostree's `upgrade --check`). */
export const EXIT_NO_UPDATE = 77;

interface Globals {
  sysroot: string;
  storageRoot?: string;
}

/**
 * The sysroot and layer store a command acts on: `--sysroot DIR` (default
 * `/`), its store DIR/var/lib/ocisnap/storage unless `--storage-root` or
 * OCISNAP_STORAGE_ROOT (non-empty) names one explicitly. Shared by every
 * command that opens the store (pull, images, inspect, rmi too).
 */
export function pathsOf(cmd: Command): SysrootPaths {
  const g = cmd.optsWithGlobals() as Globals;
  const source = cmd.getOptionValueSourceWithGlobals('storageRoot');
  const explicit = source === 'cli' || source === 'env';
  return sysrootPaths(g.sysroot ?? '/', explicit && g.storageRoot ? { storageRoot: g.storageRoot } : {});
}

function log(line: string): void {
  process.stderr.write(`${line}\n`);
}

function parseBool(flag: string, value: string): boolean {
  if (value === 'true') return true;
  if (value === 'false') return false;
  throw new UsageError(`${flag} takes true or false, not "${value}"`);
}

function parseCount(flag: string, value: string, min: number): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < min) throw new UsageError(`${flag} takes a whole number >= ${min}, not "${value}"`);
  return n;
}

function parseSnapshotNumber(value: string): number {
  if (!/^[1-9][0-9]*$/.test(value) || Number(value) > 0xffff_ffff) throw new UsageError(`not a snapshot number: "${value}"`);
  return Number(value);
}

/** Options shared by commands that pull. */
function withPullOptions(cmd: Command): Command {
  return cmd
    .option('--platform <os/arch[/variant]>', 'platform to pull (default: this host)')
    .option('--authfile <file>', 'containers-auth.json(5) credentials file')
    .option('--tls-verify <bool>', 'require HTTPS with a verified certificate', 'true')
    .option('--registries-conf <file>', 'registries.conf to use')
    .option('--progress <mode>', 'auto, tty, plain, json or none', 'auto');
}

/** The signature policy options of `ocisnap pull`, for commands that deploy. */
function withPolicyOptions(cmd: Command): Command {
  return cmd
    .option('--signature-policy <file>', `containers-policy.json(5) to enforce (default ${defaultPolicyPath})`)
    .option('--registries-d <dir>', `containers-registries.d(5) lookaside configuration (default ${defaultRegistriesDPath})`);
}

/** Options shared by commands that deploy. */
function withDeployOptions(cmd: Command): Command {
  return withPolicyOptions(withPullOptions(cmd))
    .option('--read-only', 'make the new snapshot read-only (as MicroOS roots are)')
    .option('--tries <n>', "boots the new deployment may try before it counts as failed (default: `tries` of the new snapshot's /etc/ocisnap/health.conf, else 3)")
    .option('--no-hooks', 'do not run deploy hooks')
    .option('--hook-dir <dir>', 'extra host directory of deploy hooks (repeatable)', (v: string, acc: string[]) => [...acc, v], [] as string[])
    .option('--wait <seconds>', 'wait this long for another ocisnap command to finish', '0');
}

interface PullFlags {
  platform?: string;
  authfile?: string;
  tlsVerify: string;
  registriesConf?: string;
  progress: string;
}

function sourceConfigOf(o: PullFlags): { sourceConfig: SourceConfig; platform?: Platform } {
  const sourceConfig: SourceConfig = { tlsVerify: parseBool('--tls-verify', o.tlsVerify), onNote: log };
  if (o.authfile) sourceConfig.authFile = o.authfile;
  if (o.registriesConf) sourceConfig.registriesConf = o.registriesConf;
  const out: { sourceConfig: SourceConfig; platform?: Platform } = { sourceConfig };
  if (o.platform) out.platform = parsePlatform(o.platform);
  return out;
}

interface DeployFlags extends PullFlags {
  signaturePolicy?: string;
  registriesD?: string;
  readOnly?: boolean;
  tries?: string;
  hooks: boolean;
  hookDir: string[];
  wait: string;
  pull?: boolean;
  trustRecordedWhenOffline?: boolean;
}

async function deployOptionsOf(cmd: Command, o: DeployFlags): Promise<Omit<DeployOptions, 'image'> & { finish: () => void }> {
  const policyFiles: { signaturePolicy?: string; registriesD?: string } = {};
  if (o.signaturePolicy) policyFiles.signaturePolicy = o.signaturePolicy;
  if (o.registriesD) policyFiles.registriesD = o.registriesD;
  const { loadPolicyConfig } = await import('../pull/policy-check.js');
  const policy = await loadPolicyConfig(policyFiles);
  const renderer = createRenderer(parseProgressMode(o.progress));
  const opts: Omit<DeployOptions, 'image'> & { finish: () => void } = {
    paths: pathsOf(cmd),
    policy,
    ...sourceConfigOf(o),
    readOnly: o.readOnly === true,
    hooks: o.hooks,
    hookDirs: o.hookDir,
    progress: renderer.sink,
    log,
    lockTimeoutMs: parseCount('--wait', o.wait, 0) * 1000,
    finish: () => renderer.finish(),
  };
  if (o.tries !== undefined) opts.tries = parseCount('--tries', o.tries, 1);
  if (o.pull === false) opts.pull = false;
  if (o.trustRecordedWhenOffline) {
    if (o.pull !== false) throw new UsageError('--trust-recorded-when-offline only applies with --no-pull (a pull checks the signatures at the registry)');
    opts.trustRecordedWhenOffline = true;
  }
  return opts;
}

function statusVerification(v: DeploymentVerification): VerificationStatus {
  return { requirement: v.requirement, scope: v.scope, keyId: v.keyId ?? null, at: v.at, fromRecord: v.fromRecord === true };
}

async function printDeployed(r: DeployResult): Promise<void> {
  const { verificationLine } = await statusLib();
  process.stdout.write(`Deployed ${r.image} (${r.manifestDigest}) as snapshot ${r.snapshot}; it boots next.\n`);
  if (r.verification) process.stdout.write(`Signature: ${verificationLine(statusVerification(r.verification))}\n`);
  if (r.etc && r.etc.conflicts.length > 0) {
    process.stdout.write(`${r.etc.conflicts.length} /etc conflict(s) need a look (listed above).\n`);
  }
}

/** The global `--sysroot DIR` option (added once; program.ts adds it first). */
export function addSysrootOption(program: Command): void {
  if (!program.options.some((opt) => opt.long === '--sysroot')) {
    program.addOption(
      new Option('--sysroot <dir>', 'act on the btrfs filesystem mounted at DIR instead of the running system (its layer store too)').default('/'),
    );
  }
}

export function registerDeployCommands(program: Command): void {
  addSysrootOption(program);

  withDeployOptions(
    program
      .command('deploy')
      .description('deploy an image as the next boot snapshot (pulls it first unless --no-pull)')
      .argument('<image>', 'docker://REF, oci:DIR[:TAG], oci-archive:FILE[:TAG] or REF')
      .option('--no-pull', 'use the image already in the layer store (its signatures are re-checked at the registry)')
      .option(
        '--trust-recorded-when-offline',
        'with --no-pull: if the registry cannot be reached, accept the verification recorded at pull under the same policy',
      ),
  ).action(async (image: string, o: DeployFlags, cmd: Command) => {
    // Load the deploy code while the policy is read: both wait for the disk when the page cache is cold.
    const lib = preload(deployLib());
    preload(statusLib());
    const { finish, ...opts } = await deployOptionsOf(cmd, o);
    try {
      await printDeployed(await (await lib).deploy({ ...opts, image }));
    } finally {
      finish();
    }
  });

  withDeployOptions(
    program
      .command('switch')
      .description('follow another image from now on (ocisnap upgrade re-resolves it) and deploy it')
      .argument('<image>', 'docker://REF, oci:DIR[:TAG], oci-archive:FILE[:TAG] or REF')
      .option('--follow-only', 'only change the followed image; deploy it with the next ocisnap upgrade'),
  ).action(async (image: string, o: DeployFlags & { followOnly?: boolean }, cmd: Command) => {
    const { finish, ...opts } = await deployOptionsOf(cmd, o);
    try {
      if (o.followOnly) {
        const { setFollowed, updateState } = await import('../deploy/state.js');
        await updateState(opts.paths.root, (s) => setFollowed(s, image), { timeoutMs: opts.lockTimeoutMs ?? 0 });
        process.stdout.write(`Now following ${image}; "ocisnap upgrade" deploys it.\n`);
        return;
      }
      await printDeployed(await (await deployLib()).deploy({ ...opts, image, follow: image }));
    } finally {
      finish();
    }
  });

  withDeployOptions(
    program
      .command('upgrade')
      .description(`deploy the followed image if its digest changed (--check: exit 0 if an update is available, ${EXIT_NO_UPDATE} if not)`)
      .option('--check', 'only say whether an update is available'),
  ).action(async (o: DeployFlags & { check?: boolean }, cmd: Command) => {
    const { finish, ...opts } = await deployOptionsOf(cmd, o);
    const { checkForUpdate, upgrade } = await import('../deploy/upgrade.js');
    try {
      if (o.check) {
        const lookup: { sourceConfig?: SourceConfig; platform?: Platform } = {};
        if (opts.sourceConfig) lookup.sourceConfig = opts.sourceConfig;
        if (opts.platform) lookup.platform = opts.platform;
        const c = await checkForUpdate(opts.paths, lookup);
        if (c.available) {
          process.stdout.write(`Update available for ${c.followed}: ${c.current ?? 'nothing deployed'} -> ${c.latest}\n`);
          return;
        }
        process.stdout.write(
          c.knownBad !== undefined
            ? `No update for ${c.followed}: ${c.latest} failed its health checks as snapshot ${c.knownBad}\n`
            : `No update for ${c.followed}: ${c.latest} is deployed\n`,
        );
        throw new CommanderError(EXIT_NO_UPDATE, 'ocisnap.noUpdate', '');
      }
      const r = await upgrade(opts);
      if (r.deployed) await printDeployed(r.deployed);
      else process.stdout.write(`No update for ${r.check.followed}: ${r.check.latest} is ${r.check.knownBad !== undefined ? `known bad (snapshot ${r.check.knownBad})` : 'deployed'}\n`);
    } finally {
      finish();
    }
  });

  program
    .command('status')
    .description('show the booted, next-boot, pending and last good snapshots and their images')
    .option('--json', 'machine-readable output (schema: docs/status-schema.json)')
    .action(async (o: { json?: boolean }, cmd: Command) => {
      const { formatStatus, systemStatus } = await statusLib();
      const s = await systemStatus(pathsOf(cmd));
      process.stdout.write(o.json ? `${JSON.stringify(s, null, 2)}\n` : formatStatus(s));
    });

  program
    .command('list')
    .description("list every snapshot (ocisnap's deployments and snapper's own)")
    .option('--json', 'the snapshots array of status --json')
    .action(async (o: { json?: boolean }, cmd: Command) => {
      const { formatList, systemStatus } = await statusLib();
      const s = await systemStatus(pathsOf(cmd));
      process.stdout.write(o.json ? `${JSON.stringify(s.snapshots, null, 2)}\n` : formatList(s));
    });

  program
    .command('rollback')
    .description('boot the last good deployment (or snapshot N) next')
    .argument('[snapshot]', 'snapshot number (default: the last known good deployment)')
    .option('--force', "allow a snapshot ocisnap did not deploy, or one marked bad")
    .option('--wait <seconds>', 'wait this long for another ocisnap command to finish', '0')
    .action(async (n: string | undefined, o: { force?: boolean; wait: string }, cmd: Command) => {
      const opts: Parameters<typeof rollback>[0] = { paths: pathsOf(cmd), force: o.force === true, log, lockTimeoutMs: parseCount('--wait', o.wait, 0) * 1000 };
      if (n !== undefined) opts.target = parseSnapshotNumber(n);
      const r = await (await import('../deploy/rollback.js')).rollback(opts);
      process.stdout.write(
        r.unchanged ? `Snapshot ${r.snapshot} already boots next.\n` : `Snapshot ${r.snapshot} boots next (was ${r.previous ?? 'not a snapshot'}).\n`,
      );
    });

  program
    .command('gc')
    .description('remove old deployments and the images only they used; keeps booted, next boot, last good, pending (and what it replaced), pinned and the newest N')
    .option('--keep <n>', 'newest deployments to keep (default 3)')
    .option('--dry-run', 'only show what would be removed')
    .option('--wait <seconds>', 'wait this long for another ocisnap command to finish', '0')
    .action(async (o: { keep?: string; dryRun?: boolean; wait: string }, cmd: Command) => {
      const { DEFAULT_KEEP, gc } = await import('../deploy/gc.js');
      const r = await gc({
        paths: pathsOf(cmd),
        keep: o.keep === undefined ? DEFAULT_KEEP : parseCount('--keep', o.keep, 0),
        dryRun: o.dryRun === true,
        log,
        lockTimeoutMs: parseCount('--wait', o.wait, 0) * 1000,
      });
      const verb = o.dryRun ? 'Would remove' : 'Removed';
      process.stdout.write(
        `${verb} ${r.removedSnapshots.length} snapshot(s)${r.removedSnapshots.length ? ` (${r.removedSnapshots.join(', ')})` : ''} ` +
          `and ${r.removedImages.length} image(s); kept ${r.kept.map((k) => `${k.snapshot} [${k.reasons.join(', ')}]`).join('; ') || 'none'}.\n`,
      );
    });
}
