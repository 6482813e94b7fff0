/**
 * `ocisnap upgrade`: re-resolve the followed reference (state.followed, set
 * by `deploy` and `switch`) at its source and deploy it when its manifest
 * digest differs from what the system runs next.
 *
 * "What the system runs next" is the default snapshot's deployment when it
 * follows the same reference, else the newest deployment of that reference.
 * A digest whose deployment failed its health checks (bad) is not deployed
 * again by upgrade (an explicit `ocisnap deploy` still can).
 */
import { OcisnapError } from '../errors.js';
import { hostPlatform } from '../oci/platform.js';
import type { Digest, Platform } from '../oci/types.js';
import { openConfiguredSource, type SourceConfig } from '../pull/source-config.js';
import { resolveImage } from '../registry/source.js';
import { deploy, type DeployOptions, type DeployResult } from './deploy.js';
import { readState } from './state.js';
import { checkSysroot, defaultSubvolume, type SysrootPaths } from './sysroot.js';

export class NothingFollowedError extends OcisnapError {}

export interface UpdateCheck {
  followed: string;
  latest: Digest;
  /** Digest of what boots next from this reference (undefined: never deployed). */
  current?: Digest;
  currentSnapshot?: number;
  available: boolean;
  /** The latest digest was deployed before and failed its health checks. */
  knownBad?: number;
}

export async function checkForUpdate(
  paths: SysrootPaths,
  opts: { sourceConfig?: SourceConfig; platform?: Platform } = {},
): Promise<UpdateCheck> {
  await checkSysroot(paths);
  const state = await readState(paths.root);
  const followed = state.followed;
  if (followed === undefined) {
    throw new NothingFollowedError('no image is followed yet: use "ocisnap switch REF" or "ocisnap deploy REF" first');
  }
  const { source } = await openConfiguredSource(followed, opts.sourceConfig ?? {});
  let latest: Digest;
  try {
    latest = (await resolveImage(source, opts.platform ?? hostPlatform())).manifestDigest;
  } finally {
    await source.close();
  }
  const def = await defaultSubvolume(paths);
  const same = state.deployments.filter((d) => d.image === followed);
  const current = same.find((d) => d.snapshot === def.snapshot) ?? same.at(-1);
  const check: UpdateCheck = { followed, latest, available: current?.manifestDigest !== latest };
  if (current) {
    check.current = current.manifestDigest;
    check.currentSnapshot = current.snapshot;
  }
  const bad = same.filter((d) => d.manifestDigest === latest && d.status === 'bad').at(-1);
  if (check.available && bad) {
    check.available = false;
    check.knownBad = bad.snapshot;
  }
  return check;
}

export interface UpgradeResult {
  check: UpdateCheck;
  deployed?: DeployResult;
}

/** Deploys the followed reference if it changed. `opts.image` is ignored (the followed reference is used). */
export async function upgrade(opts: Omit<DeployOptions, 'image'>): Promise<UpgradeResult> {
  const lookup: { sourceConfig?: SourceConfig; platform?: Platform } = {};
  if (opts.sourceConfig) lookup.sourceConfig = opts.sourceConfig;
  if (opts.platform) lookup.platform = opts.platform;
  const check = await checkForUpdate(opts.paths, lookup);
  if (!check.available) return { check };
  return { check, deployed: await deploy({ ...opts, image: check.followed, pull: true }) };
}
