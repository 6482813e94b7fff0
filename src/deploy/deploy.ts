/**
 * Deploy: make an image from the layer store the root filesystem of the next
 * boot, as a snapper snapshot.
 *
 *   pull (if asked; outside the state lock, under the store's own lock)
 *   ── under the state lock ──
 *   recover an interrupted deploy (see recoverInterruptedDeploy)
 *   reserve snapshot number N (mkdir .snapshots/N; snapper.ts)
 *   state: inProgress = N                               ← from here a crash is undone by the next run
 *   btrfs snapshot of the image's top layer → .snapshots/N/snapshot (O(1), extents shared)
 *   /etc three-way merge (base: the current snapshot's image in the store)
 *   deploy hooks (hooks.ts)
 *   .snapshots/N/info.xml (snapper sees the snapshot from here on)
 *   boot tries: --tries, else `tries` of N's own /etc/ocisnap/health.conf
 *   optional read-only property
 *   btrfs set-default N; sync                           ← the commit point: N boots next
 *   grubenv: N on trial with its tries (health/grubenv.ts; nothing without a grubenv)
 *   state: deployment N pending, inProgress cleared     ← a crash before this is finished by the next run
 *
 * The default of the boot tries comes from the health.conf N boots with: its
 * /etc/ocisnap/health.conf after the /etc merge (read confined to N, as a
 * symlink there must not reach the host). On the running system that is the
 * host's file carried over (unless the admin never changed it and the image
 * ships another); with --sysroot it is the target system's, not that of the
 * machine running ocisnap. A malformed one stops the deploy before the commit
 * point: the trial's health check would fail on it anyway.
 *
 * A failure before the commit point removes every trace of N (except its
 * number, never reused) and leaves the state as it was; the old default is
 * never touched before the commit point.
 */
import { closeSync, readFileSync } from 'node:fs';
import { lstat } from 'node:fs/promises';
import { join } from 'node:path';
import {
  deleteSubvolume,
  isSubvolume,
  setDefaultSubvolume,
  setReadonly,
  showSubvolume,
  snapshotSubvolume as btrfsSnapshot,
  syncFilesystem,
  waitSubvolumeCleaned,
} from '../btrfs/index.js';
import { describeError, OcisnapError } from '../errors.js';
import { digestHex } from '../oci/digest.js';
import { hostPlatform } from '../oci/platform.js';
import { formatReference, parseReference } from '../oci/reference.js';
import type { Digest, Platform } from '../oci/types.js';
import { defaultHealthConfig, parseHealthConfig, type HealthConfig } from '../health/config.js';
import { grubArmTrial, MAX_GRUB_TRIES, type GrubenvUpdate } from '../health/grubenv.js';
import type { ProgressSink } from '../pull/progress.js';
import {
  loadPolicyConfig,
  pullVerifier,
  StoredImageMismatchError,
  verifyStoredImage,
  type ImageVerification,
  type PolicyConfig,
  type StoredImageCheck,
  type StoredVerification,
} from '../pull/policy-check.js';
import { readImageVerifications } from '../pull/verification-record.js';
import { PolicyRejectedError } from '../policy/verify.js';
import type { SourceConfig } from '../pull/source-config.js';
import { imageDigests, Store, type ImageRecord } from '../store/index.js';
import { isErrno, sys } from '../sys/native.js';
import { formatEtcMergeReport, mergeEtc, type EtcMergeReport } from './etc-merge.js';
import { findHooks, hookDirsFor, noHooksNote, runHooks } from './hooks.js';
import {
  deploymentSnapshotInfo,
  infoXmlPath,
  OCISNAP_USERDATA,
  readInfoXml,
  releaseSnapshotDir,
  reserveSnapshotNumber,
  unregisterSnapshot,
  writeInfoXml,
} from './snapper.js';
import {
  addDeployment,
  beginDeploy,
  endDeploy,
  findDeployment,
  readState,
  withStateLock,
  writeState,
  type DeploymentVerification,
  type State,
  type StateLockOptions,
} from './state.js';
import { bootedSubvolume, checkSysroot, defaultSubvolume, pathInSysroot, snapshotPath, type SysrootPaths } from './sysroot.js';
import { isoTime } from '../iso-time.js';

/** Extra userdata ocisnap writes besides OCISNAP_USERDATA: the store's image ID, so an interrupted deploy can be finished. */
export const IMAGE_ID_USERDATA = 'ocisnap.image-id';

/** The info.xml userdata that says which image a snapshot holds (read back by imageOfSnapshot and recovery). */
export function imageUserdata(image: string, manifestDigest: string, imageId: string): Record<string, string> {
  return { [OCISNAP_USERDATA.image]: image, [OCISNAP_USERDATA.digest]: manifestDigest, [IMAGE_ID_USERDATA]: imageId };
}

/** The image is not in the layer store (with --no-pull), or vanished from it. */
export class ImageNotFoundError extends OcisnapError {}

/** The filesystem ran out of space. */
export class NoSpaceError extends OcisnapError {}

/** Something about the deploy itself failed (the snapshot was discarded). */
export class DeployError extends OcisnapError {}

export interface DeployOptions {
  paths: SysrootPaths;
  /** What to deploy, as the user wrote it: docker://REF, oci:DIR[:TAG], oci-archive:FILE[:TAG] or REF. */
  image: string;
  /** Pull the image (default true); false: it must already be in the store. */
  pull?: boolean;
  sourceConfig?: SourceConfig;
  platform?: Platform;
  /**
   * The signature policy (containers-policy.json(5)) the image must satisfy;
   * default: loadPolicyConfig() (/etc/containers/policy.json, whose absence is
   * an error). Checked at pull, or, with `pull: false`, re-checked on the
   * stored image (policy-check.ts verifyStoredImage).
   */
  policy?: PolicyConfig;
  /**
   * With `pull: false`: when the registry cannot be reached to re-read the
   * signatures, accept the verification recorded at pull under the same
   * policy (policy-check.ts StoredImageCheck.trustRecordedWhenOffline).
   * Default false: an unreachable registry stops the deploy.
   */
  trustRecordedWhenOffline?: boolean;
  /** Set the new snapshot read-only, as MicroOS roots are. */
  readOnly?: boolean;
  /**
   * Boot tries before the deployment counts as failed; default: `tries` of
   * the health configuration (see the file comment), else state.ts DEFAULT_TRIES.
   */
  tries?: number;
  /** Use this health configuration instead of the new snapshot's /etc/ocisnap/health.conf. */
  healthConfig?: HealthConfig;
  /**
   * grub-editenv command for grubenv; default: the health configuration's
   * `commands.grub_editenv` on the running system, else grub-editenv or
   * grub2-editenv (with --sysroot the target's configured tools need not
   * exist on this machine).
   */
  grubEditenv?: string[];
  /** Run deploy hooks (default true). */
  hooks?: boolean;
  /** Extra host directories with hooks (after the snapshot's own). */
  hookDirs?: string[];
  /** The reference `ocisnap upgrade` follows from now on (default: `image`). */
  follow?: string;
  progress?: ProgressSink;
  /** Informational lines for a user (stderr in the CLI). */
  log?: (line: string) => void;
  /** How long to wait for another ocisnap holding the state lock (default 0: fail at once). */
  lockTimeoutMs?: number;
}

export interface DeployResult {
  snapshot: number;
  image: string;
  manifestDigest: Digest;
  imageId: string;
  /** The snapshot whose /etc was merged (the running or default one), if it was a snapshot. */
  parent?: number;
  etc?: EtcMergeReport;
  hooksRun: string[];
  /** What the signature policy said, as recorded in the deployment. */
  verification?: DeploymentVerification;
  /** Boot tries the deployment got. */
  tries: number;
  /** Whether grubenv was armed for the trial (not: no grubenv, or no grub-editenv). */
  grubenv: GrubenvUpdate;
}

// ---------------------------------------------------------------- test crash points

/**
 * OCISNAP_TEST_CRASH_AT=<step>[+<ms>] kills this process with SIGKILL when the
 * deploy reaches <step> (or <ms> milliseconds later, to land in the middle of
 * the next step); OCISNAP_TEST_STOP_AT=<step> stops it (SIGSTOP) there. For
 * the fault-injection tests only.
 */
function crashPoint(step: string): void {
  // Stopped (SIGSTOP) rather than killed: a test makes the disk fail, then lets it go on.
  if (process.env['OCISNAP_TEST_STOP_AT'] === step) process.kill(process.pid, 'SIGSTOP');
  const spec = process.env['OCISNAP_TEST_CRASH_AT'];
  if (spec === undefined || spec === '') return;
  const [name, delay] = spec.split('+');
  if (name !== step) return;
  if (delay === undefined) process.kill(process.pid, 'SIGKILL');
  else setTimeout(() => process.kill(process.pid, 'SIGKILL'), Number(delay)).unref();
}

// ---------------------------------------------------------------- errors

function hasNoSpace(err: unknown): boolean {
  for (let e = err, depth = 0; e !== undefined && e !== null && depth < 8; e = (e as { cause?: unknown }).cause, depth++) {
    if (isErrno(e, 'ENOSPC') || isErrno(e, 'EDQUOT')) return true;
    if (e instanceof Error && /no space left on device|ENOSPC/i.test(e.message)) return true;
  }
  return false;
}

/** Re-labels an out-of-space failure as one clear message; others pass unchanged. */
function explainNoSpace(err: unknown, what: string, paths: SysrootPaths): unknown {
  if (err instanceof NoSpaceError || !hasNoSpace(err)) return err;
  return new NoSpaceError(
    `${what}: the filesystem of ${paths.root} is full (${describeError(err)}); free space, e.g. with "ocisnap gc", and try again`,
    { cause: err },
  );
}

// ---------------------------------------------------------------- image lookup

/** Opens the sysroot's layer store. */
export async function openStore(paths: SysrootPaths): Promise<Store> {
  return Store.open(paths.storageRoot);
}

export interface AcquiredImage {
  record: ImageRecord;
  manifestDigest: Digest;
  /** What the signature policy said (set by pullForDeploy, and by deploy for a stored image). */
  verification?: ImageVerification & { fromRecord?: boolean };
}

/** The part of a policy verification a deployment keeps (state.ts DeploymentVerification). */
export function deploymentVerificationOf(v: ImageVerification & { fromRecord?: boolean }, now: Date = new Date()): DeploymentVerification {
  // A recorded time comes from the store; only a well-formed one is kept.
  const time = Date.parse(v.time);
  const out: DeploymentVerification = {
    requirement: v.requirement,
    scope: v.scope,
    at: isoTime(Number.isNaN(time) ? now : new Date(time)),
  };
  if (v.keyId !== undefined && v.keyId !== '') out.keyId = v.keyId;
  if (v.fromRecord === true) out.fromRecord = true;
  return out;
}

/** Pulls `spec` into the store (skipping layers it has), enforcing `policy`, and returns the stored image. */
export async function pullForDeploy(
  store: Store,
  spec: string,
  policy: PolicyConfig,
  opts: { sourceConfig?: SourceConfig; platform?: Platform; progress?: ProgressSink },
): Promise<AcquiredImage> {
  // Loaded only to pull: the registry client (undici) and the layer pipeline
  // (decompressors, tar, applier) are most of the module graph, and
  // `deploy --no-pull` of a stored image needs none of it.
  const [{ pullImage }, { openConfiguredSource }] = await Promise.all([import('../pull/pull.js'), import('../pull/source-config.js')]);
  const opened = await openConfiguredSource(spec, opts.sourceConfig ?? {});
  try {
    const pullOpts: Parameters<typeof pullImage>[3] = { verify: pullVerifier(opened, policy) };
    if (opts.platform) pullOpts.platform = opts.platform;
    if (opts.progress) pullOpts.progress = opts.progress;
    const result = await pullImage(opened.source, opened.reference, store, pullOpts);
    const acquired: AcquiredImage = { record: result.image, manifestDigest: result.resolved.manifestDigest };
    if (result.verification !== undefined) acquired.verification = result.verification;
    return acquired;
  } finally {
    await opened.source.close();
  }
}

/** Transports of local copies (containers-transports(5)). */
const localTransports = ['dir:', 'oci:', 'oci-archive:'];

/**
 * Finds `spec` in the store without pulling. A registry reference is looked
 * up by name (or digest); a `dir:`/`oci:`/`oci-archive:` source is read locally
 * to learn its image ID; anything else may be an image ID or ID prefix.
 */
export async function findStoredImage(
  store: Store,
  spec: string,
  opts: { platform?: Platform; sourceConfig?: SourceConfig } = {},
): Promise<AcquiredImage> {
  let record: ImageRecord | undefined;
  if (localTransports.some((p) => spec.startsWith(p))) {
    const [{ openConfiguredSource }, { resolveImage }] = await Promise.all([import('../pull/source-config.js'), import('../registry/source.js')]);
    const { source } = await openConfiguredSource(spec, opts.sourceConfig ?? {});
    try {
      const resolved = await resolveImage(source, opts.platform ?? hostPlatform());
      record = await store.findImage(digestHex(resolved.configDigest));
    } finally {
      await source.close();
    }
  } else {
    const bare = spec.startsWith('docker://') ? spec.slice('docker://'.length) : spec;
    record = await store.findImage(bare).catch(() => undefined);
    if (!record) {
      let ref;
      try {
        ref = parseReference(bare);
      } catch {
        ref = undefined;
      }
      if (ref) {
        if (ref.digest !== undefined) {
          record = (await store.listImages()).find((i) => i.digest === ref.digest);
        } else {
          record = await store.findImage(formatReference({ ...ref, digest: undefined }));
        }
      }
    }
  }
  if (!record) {
    throw new ImageNotFoundError(`image ${spec} is not in the layer store ${store.graphRoot}; pull it first or leave out --no-pull`);
  }
  if (record.digest === undefined) throw new ImageNotFoundError(`image ${spec} (${record.id}) has no manifest digest in the layer store`);
  return { record, manifestDigest: record.digest as Digest };
}

/** Does `spec` name a registry (docker://…, or a reference whose first component is a host)? */
function namesRegistry(spec: string): boolean {
  if (spec.startsWith('docker://')) return true;
  const slash = spec.indexOf('/');
  const first = slash === -1 ? '' : spec.slice(0, slash);
  return /[.:]/.test(first) || first === 'localhost';
}

/** The stored image has a name the registry policy can be checked under (a name, or a registry verification). */
function hasRegistryName(record: ImageRecord, recorded: ImageVerification[]): boolean {
  return (record.names ?? []).length > 0 || recorded.some((v) => v.transport === 'docker');
}

/**
 * policy-check.ts verifyStoredImage for a deploy without pull, also for an
 * image named by its ID that has no registry name (pulled from a dir:, oci:
 * or oci-archive: copy). containers-policy.json(5) checks such an image under
 * its copy's transport and real path, with the copy's signatures (dir:
 * signature-N files; oci: layouts and archives carry none): so the copy the
 * pull recorded (verification-record.ts: transport and path) is read again
 * and must still hold the image. Without such a record, or when the copy is
 * gone or changed, the deploy is refused with what to do instead.
 */
export async function reverifyStoredImage(store: Store, record: ImageRecord, spec: string, check: StoredImageCheck): Promise<StoredVerification> {
  if (localTransports.some((p) => spec.startsWith(p)) || namesRegistry(spec)) return verifyStoredImage(store, record, spec, check);
  const recorded = await readImageVerifications(store, record);
  if (hasRegistryName(record, recorded)) return verifyStoredImage(store, record, spec, check);
  const digests = imageDigests(record);
  const copy = recorded.find((v) => v.transport !== 'docker' && digests.includes(v.signedDigest));
  const instead = 'deploy it from the copy that holds it now (dir:DIR, oci:DIR[:TAG] or oci-archive:FILE[:TAG]) or pull it by a registry name';
  if (copy === undefined) {
    throw new StoredImageMismatchError(
      `image ${spec} (${record.id}) has no registry name and no record of the copy it was pulled from, so the signature policy cannot be checked for it; ${instead}`,
    );
  }
  const from = `${copy.transport}:${copy.reference}`;
  try {
    return await verifyStoredImage(store, record, from, check);
  } catch (err) {
    if (err instanceof PolicyRejectedError) throw err;
    throw new StoredImageMismatchError(
      `image ${spec} (${record.id}) was pulled from ${from}, which the signature policy check needs to read again: ${describeError(err)}; ${instead}`,
      { cause: err },
    );
  }
}

export interface AcquireOptions {
  /** What to deploy, as the user wrote it (DeployOptions.image), or a stored image ID with `pull: false`. */
  image: string;
  /** Pull the image (default true); false: it must already be in the store, and is re-checked. */
  pull?: boolean;
  /** default: loadPolicyConfig() */
  policy?: PolicyConfig;
  sourceConfig?: SourceConfig;
  platform?: Platform;
  progress?: ProgressSink;
  /** DeployOptions.trustRecordedWhenOffline */
  trustRecordedWhenOffline?: boolean;
  log?: (line: string) => void;
}

/**
 * The image to deploy, checked against the signature policy: pulled (skipping
 * what the store has), or found in the store and re-checked there
 * (reverifyStoredImage), so a policy tightened, or a signature withdrawn,
 * since the pull counts.
 */
export async function acquireImage(store: Store, opts: AcquireOptions): Promise<AcquiredImage> {
  // The policy first: one that cannot be read stops before anything is fetched.
  const policy = opts.policy ?? (await loadPolicyConfig());
  const lookup: { platform?: Platform; sourceConfig?: SourceConfig; progress?: ProgressSink } = {};
  if (opts.platform) lookup.platform = opts.platform;
  if (opts.sourceConfig) lookup.sourceConfig = opts.sourceConfig;
  if (opts.progress) lookup.progress = opts.progress;
  if (opts.pull !== false) return pullForDeploy(store, opts.image, policy, lookup);
  const acquired = await findStoredImage(store, opts.image, lookup);
  const verification = await reverifyStoredImage(store, acquired.record, opts.image, {
    config: policy,
    sourceConfig: opts.sourceConfig ?? {},
    trustRecordedWhenOffline: opts.trustRecordedWhenOffline === true,
  });
  if (verification.fromRecord) {
    opts.log?.(`note: the registry could not be reached; using the verification recorded at pull (${verification.time}): ${verification.details}`);
  }
  acquired.verification = verification;
  return acquired;
}

/** The top layer's subvolume of a stored image; refuses images without layers or with missing ones. */
export async function topLayerPath(store: Store, record: ImageRecord, spec: string): Promise<string> {
  if (record.layer === undefined) throw new DeployError(`image ${spec} (${record.id}) has no layers: nothing to boot`);
  const layer = await store.getLayer(record.layer);
  const path = store.layerPath(record.layer);
  if (!layer || !(await isSubvolume(path))) {
    throw new ImageNotFoundError(`image ${spec}: its top layer ${record.layer} is missing from the layer store ${store.graphRoot}`);
  }
  return path;
}

// ---------------------------------------------------------------- the system being replaced

export interface CurrentSystem {
  /** The /etc holding the admin's changes (running system's, or the default snapshot's). */
  etc?: string;
  /** Its snapshot number, when it is a snapper snapshot. */
  snapshot?: number;
  /** The pristine /etc of the image it came from, when known. */
  baseEtc?: string;
  /** One line on where base and local come from (for the log). */
  describe: string;
}

/** A directory, not a link to one. */
export async function isDir(path: string): Promise<boolean> {
  try {
    return (await lstat(path)).isDirectory();
  } catch {
    return false;
  }
}

/**
 * The system whose /etc is carried over: on the running system (`/`) the
 * booted one; with another sysroot the default subvolume (what would boot).
 */
export async function currentSystem(paths: SysrootPaths, state: State, store: Store): Promise<CurrentSystem> {
  let snapshot: number | undefined;
  let root: string | undefined;
  if (paths.running) {
    const booted = await bootedSubvolume();
    snapshot = booted?.snapshot;
    root = paths.root;
  } else {
    const def = await defaultSubvolume(paths);
    snapshot = def.snapshot;
    root = snapshot !== undefined ? snapshotPath(paths, snapshot) : await pathInSysroot(paths, def.fsPath);
    if (root === undefined) {
      throw new DeployError(
        `the default subvolume ${def.fsPath || '(top level)'} of ${paths.root} is not visible under it; mount the filesystem's top level as the sysroot`,
      );
    }
  }
  const etc = join(root, 'etc');
  const current: CurrentSystem = { describe: '' };
  if (await isDir(etc)) current.etc = etc;
  if (snapshot !== undefined) current.snapshot = snapshot;
  const base = snapshot === undefined ? undefined : await imageOfSnapshot(paths, store, snapshot, state);
  if (base) {
    const baseEtc = join(store.layerPath(base.layer), 'etc');
    if (await isDir(baseEtc)) current.baseEtc = baseEtc;
  }
  const who = snapshot === undefined ? root : `snapshot ${snapshot}`;
  current.describe = !current.etc
    ? `${who} has no /etc: the new snapshot keeps the image's /etc`
    : `/etc of ${who}` + (current.baseEtc ? ` merged against its image's /etc` : ` merged without a base (its image is unknown or gone): local wins where they differ`);
  return current;
}

/**
 * The stored image snapshot `num` holds (with its top layer): by the state
 * (read when not given), else by its info.xml userdata (image ID, then
 * manifest digest). Undefined when unknown or gone from the store.
 */
export async function imageOfSnapshot(
  paths: SysrootPaths,
  store: Store,
  num: number,
  state?: State,
): Promise<(ImageRecord & { layer: string }) | undefined> {
  const d = findDeployment(state ?? (await readState(paths.root)), num);
  let image: ImageRecord | undefined;
  if (d) image = await store.findImage(d.imageId).catch(() => undefined);
  if (!image) {
    const info = await readInfoXml(paths.snapshotsDir, num).catch(() => undefined);
    const id = info?.userdata[IMAGE_ID_USERDATA];
    const digest = info?.userdata[OCISNAP_USERDATA.digest];
    if (id !== undefined) image = await store.findImage(id).catch(() => undefined);
    if (!image && digest !== undefined) image = (await store.listImages()).find((i) => i.digest === digest);
  }
  return image?.layer === undefined ? undefined : (image as ImageRecord & { layer: string });
}

/**
 * Merges the current system's /etc into the image's in `target`, a new
 * snapshot of the image (etc-merge.ts), logging the report; undefined when
 * the current system has no /etc. An image without /etc is refused.
 */
export async function mergeCurrentEtc(
  current: CurrentSystem,
  target: string,
  image: string,
  log: (line: string) => void,
): Promise<EtcMergeReport | undefined> {
  if (!current.etc) return undefined;
  const targetEtc = join(target, 'etc');
  if (!(await isDir(targetEtc))) throw new DeployError(`image ${image} has no /etc directory; refusing to deploy a root without one`);
  crashPoint('merging');
  const report = await mergeEtc(current.baseEtc ? { base: current.baseEtc, local: current.etc, target: targetEtc } : { local: current.etc, target: targetEtc });
  for (const line of formatEtcMergeReport(report)) log(line);
  return report;
}

// ---------------------------------------------------------------- recovery

/**
 * Undoes a reserved snapshot that never became the default: info.xml first
 * (snapper stops listing it), then the subvolume, then the directory.
 */
export async function discardSnapshot(paths: SysrootPaths, num: number): Promise<void> {
  await unregisterSnapshot(paths.snapshotsDir, num);
  const sub = snapshotPath(paths, num);
  if (await isSubvolume(sub)) {
    const id = (await showSubvolume(sub)).id;
    await deleteSubvolume(sub, { recursive: true });
    // Deletion frees space in the background, once a transaction commits; on a
    // full filesystem the state write that follows needs that space. So commit
    // now (else the cleaner waits for the 30 s commit interval), then wait for it.
    await syncFilesystem(paths.root).catch(() => undefined);
    await waitSubvolumeCleaned(paths.root, id).catch(() => undefined);
  }
  await releaseSnapshotDir(paths.snapshotsDir, num);
}

/**
 * Finishes or undoes a deploy that died (state.inProgress), holding the state
 * lock: if its snapshot already is the default it is recorded as the pending
 * deployment it was about to become; otherwise every trace of it is removed.
 * Returns a line for the user, or undefined when there was nothing to do.
 */
export async function recoverInterruptedDeployLocked(paths: SysrootPaths): Promise<string | undefined> {
  const state = await readState(paths.root);
  const ip = state.inProgress;
  if (!ip) return undefined;
  const num = ip.snapshot;
  const sub = snapshotPath(paths, num);
  const def = await defaultSubvolume(paths);
  const isDefault = (await isSubvolume(sub)) && (await showSubvolume(sub)).id === def.id;
  if (isDefault && !findDeployment(state, num)) {
    const info = await readInfoXml(paths.snapshotsDir, num);
    const digest = info.userdata[OCISNAP_USERDATA.digest];
    const imageId = info.userdata[IMAGE_ID_USERDATA];
    const image = info.userdata[OCISNAP_USERDATA.image] ?? ip.image;
    if (digest === undefined || imageId === undefined) {
      throw new DeployError(`${infoXmlPath(paths.snapshotsDir, num)}: an interrupted deploy's snapshot is the default but lacks ocisnap userdata`);
    }
    const deployment: Parameters<typeof addDeployment>[1] = { snapshot: num, image, manifestDigest: digest as Digest, imageId };
    if (ip.verification !== undefined) deployment.verification = ip.verification;
    // The deploy's --tries is not recorded: the snapshot's health.conf decides.
    const health = await loadHealthConfigIn(sub).catch(() => defaultHealthConfig());
    const note = await armGrub(paths, num, health.tries, paths.running ? health.commands.grubEditenv : undefined).then(
      () => '',
      (err: unknown) => `; ${describeError(err)}`,
    );
    await writeState(paths.root, endDeploy(addDeployment(state, deployment, { followed: image, tries: health.tries })));
    return `finished the interrupted deploy of ${image}: snapshot ${num} is the next boot${note}`;
  }
  if (isDefault) {
    await writeState(paths.root, endDeploy(state));
    return undefined;
  }
  await discardSnapshot(paths, num);
  await writeState(paths.root, endDeploy(state));
  return `removed the interrupted deploy of ${ip.image} (snapshot ${num}); the default is unchanged`;
}

/**
 * Runs `fn` holding the state lock, after recovering an interrupted deploy
 * (its line goes to `log`): what every command that changes snapshots or
 * deployments does first.
 */
export async function withRecoveredState<T>(
  paths: SysrootPaths,
  log: (line: string) => void,
  fn: () => Promise<T>,
  lock: StateLockOptions = {},
): Promise<T> {
  return withStateLock(
    paths.root,
    async () => {
      const recovered = await recoverInterruptedDeployLocked(paths);
      if (recovered) log(recovered);
      return fn();
    },
    lock,
  );
}

/** Takes the state lock and recovers (for commands that only need recovery). */
export async function recoverInterruptedDeploy(paths: SysrootPaths, opts: { lockTimeoutMs?: number } = {}): Promise<string | undefined> {
  return withStateLock(paths.root, () => recoverInterruptedDeployLocked(paths), { timeoutMs: opts.lockTimeoutMs ?? 0 });
}

// ---------------------------------------------------------------- boot tries

/** Where a system keeps its health configuration (health/config.ts DEFAULT_HEALTH_CONF, relative). */
const HEALTH_CONF_IN_ROOT = 'etc/ocisnap/health.conf';

/**
 * The health configuration of the system rooted at `root`, read with every
 * path component resolved inside `root` (openat2 RESOLVE_IN_ROOT), so an
 * image's symlink cannot make us read a host file. Missing: the defaults.
 */
export async function loadHealthConfigIn(root: string): Promise<HealthConfig> {
  const c = sys.constants;
  const what = join(root, HEALTH_CONF_IN_ROOT);
  let text: string;
  const rootFd = sys.openat2(c.AT_FDCWD, root, c.O_PATH | c.O_DIRECTORY, 0, 0);
  try {
    // O_RDONLY is 0.
    const fd = sys.openat2(rootFd, HEALTH_CONF_IN_ROOT, 0, 0, c.RESOLVE_IN_ROOT | c.RESOLVE_NO_MAGICLINKS | c.RESOLVE_NO_XDEV);
    try {
      text = readFileSync(fd, 'utf8');
    } finally {
      closeSync(fd);
    }
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return defaultHealthConfig();
    throw new DeployError(`cannot read ${what}: ${describeError(err)}`, { cause: err });
  } finally {
    closeSync(rootFd);
  }
  return parseHealthConfig(text, what);
}

/**
 * Puts `num` on trial in grubenv: GRUB ignores the btrfs default and boots
 * what grubenv names (plugins/grub/grub.cfg), so without this N would not
 * boot there. Throws a DeployError that says N is deployed nonetheless.
 */
async function armGrub(paths: SysrootPaths, num: number, tries: number, editenv: string[] | undefined): Promise<GrubenvUpdate> {
  try {
    return await grubArmTrial(paths, num, tries, editenv);
  } catch (err) {
    throw new DeployError(
      `snapshot ${num} is deployed and the btrfs default, but GRUB was not told to try it: ${describeError(err)}; fix that and deploy again`,
      { cause: err },
    );
  }
}

function checkTries(tries: number): void {
  if (!Number.isSafeInteger(tries) || tries < 1) throw new DeployError(`boot tries must be a whole number of at least 1, not ${tries}`);
}

// ---------------------------------------------------------------- deploy

/** Deploys `opts.image` as the next boot; see the file comment for the steps. */
export async function deploy(opts: DeployOptions): Promise<DeployResult> {
  const { paths } = opts;
  const log = opts.log ?? (() => undefined);
  if (opts.tries !== undefined) checkTries(opts.tries);
  await checkSysroot(paths);
  const store = await openStore(paths);

  let acquired: AcquiredImage;
  try {
    acquired = await acquireImage(store, { ...opts, log });
  } catch (err) {
    throw explainNoSpace(err, `pulling ${opts.image}`, paths);
  }
  crashPoint('pulled');
  const verification = acquired.verification && deploymentVerificationOf(acquired.verification);

  return withRecoveredState(
    paths,
    log,
    async () => {
      const state = await readState(paths.root);
      // Re-read under the lock: a gc may have removed the image since the pull.
      const record = await store.findImage(acquired.record.id);
      if (!record) throw new ImageNotFoundError(`image ${opts.image} (${acquired.record.id}) vanished from the layer store; try again`);
      const layer = await topLayerPath(store, record, opts.image);
      const current = await currentSystem(paths, state, store);

      const num = await reserveSnapshotNumber(paths.snapshotsDir, { above: state.highestSnapshot });
      crashPoint('reserved');
      await writeState(paths.root, beginDeploy(state, num, opts.image, new Date(), verification ? { verification } : {}));
      crashPoint('begun');

      const target = snapshotPath(paths, num);
      let etcReport: EtcMergeReport | undefined;
      let hooksRun: string[] = [];
      let tries: number;
      let grubEditenv: string[] | undefined;
      try {
        await btrfsSnapshot(layer, target);
        crashPoint('snapshotted');

        log(current.describe);
        etcReport = await mergeCurrentEtc(current, target, opts.image, log);
        crashPoint('merged');

        if (opts.hooks !== false) {
          const found = await findHooks(hookDirsFor(target, opts.hookDirs ?? []));
          for (const line of found.ignored) log(`ignored hook: ${line}`);
          if (found.hooks.length === 0) log(noHooksNote(found.searched));
          hooksRun = await runHooks(
            found.hooks,
            { snapshotPath: target, snapshot: num, image: opts.image, manifestDigest: acquired.manifestDigest, sysroot: paths.root },
            { log },
          );
        } else {
          log('note: deploy hooks disabled: the new snapshot\'s kernel, initrd and boot loader configuration were not regenerated');
        }
        crashPoint('hooks-done');

        // cleanup '': ocisnap's gc decides when a deployment goes, not snapper's
        // number cleanup, which may remove the last known good (snapper.ts).
        await writeInfoXml(
          paths.snapshotsDir,
          deploymentSnapshotInfo({
            num,
            image: opts.image,
            manifestDigest: acquired.manifestDigest,
            cleanup: '',
            userdata: { [IMAGE_ID_USERDATA]: record.id },
          }),
        );
        crashPoint('registered');
        // After the merge and the hooks: the configuration N will boot with.
        const health = opts.healthConfig ?? (await loadHealthConfigIn(target));
        tries = opts.tries ?? health.tries;
        checkTries(tries);
        grubEditenv = opts.grubEditenv ?? (paths.running ? health.commands.grubEditenv : undefined);
        if (opts.readOnly) await setReadonly(target, true);

        const id = (await showSubvolume(target)).id;
        crashPoint('before-set-default');
        await setDefaultSubvolume(id, paths.root);
      } catch (err) {
        try {
          // set-default may have taken effect and still reported a failure: then N
          // is what boots next and must stay; the next run's recovery records it.
          if ((await defaultSubvolume(paths)).snapshot !== num) {
            await discardSnapshot(paths, num);
            await writeState(paths.root, endDeploy(await readState(paths.root)));
          }
        } catch (undoErr) {
          throw new DeployError(
            `deploying ${opts.image} failed (${describeError(explainNoSpace(err, 'deploy', paths))}) and snapshot ${num} could not be removed (${describeError(undoErr)}); the next ocisnap command retries`,
            { cause: err },
          );
        }
        throw explainNoSpace(err, `deploying ${opts.image}`, paths);
      }
      crashPoint('default-set');
      // The commit point must survive a power cut before the state says so.
      // If the disk fails here, stop: N is the default (the kernel may have
      // it in memory only), and the in-progress marker lets the next run
      // finish the registration, as after a crash at this point.
      try {
        await syncFilesystem(paths.root);
      } catch (err) {
        throw new DeployError(
          `snapshot ${num} is set as the default, but writing it to disk failed (${describeError(err)}): check the disk; the next ocisnap run finishes the deploy if the filesystem recovers`,
          { cause: err },
        );
      }

      // Before the state: while inProgress is set, a crash here is finished
      // by the next run's recovery, which arms grubenv again. A failure is
      // reported once the state records N (N is the default either way).
      let grubenv: GrubenvUpdate | undefined;
      let grubError: unknown;
      try {
        grubenv = await armGrub(paths, num, tries, grubEditenv);
      } catch (err) {
        grubError = err;
      }
      crashPoint('grub-armed');

      const next: { tries?: number; followed?: string } = { followed: opts.follow ?? opts.image, tries };
      const deployment: Parameters<typeof addDeployment>[1] = {
        snapshot: num,
        image: opts.image,
        manifestDigest: acquired.manifestDigest,
        imageId: record.id,
      };
      if (current.snapshot !== undefined) deployment.parent = current.snapshot;
      if (verification) deployment.verification = verification;
      await writeState(paths.root, endDeploy(addDeployment(await readState(paths.root), deployment, next)));
      crashPoint('done');
      if (grubenv === undefined) throw grubError;
      if (grubenv.updated) {
        const grubTries = Math.min(tries, MAX_GRUB_TRIES);
        log(`grubenv ${grubenv.file}: snapshot ${num} on trial, ${grubTries} GRUB boot ${grubTries === 1 ? 'try' : 'tries'}`);
      }

      const result: DeployResult = {
        snapshot: num,
        image: opts.image,
        manifestDigest: acquired.manifestDigest,
        imageId: record.id,
        hooksRun,
        tries,
        grubenv,
      };
      if (current.snapshot !== undefined) result.parent = current.snapshot;
      if (etcReport) result.etc = etcReport;
      if (verification) result.verification = verification;
      return result;
    },
    { timeoutMs: opts.lockTimeoutMs ?? 0 },
  ).catch((err: unknown) => {
    throw explainNoSpace(err, `deploying ${opts.image}`, paths);
  });
}
