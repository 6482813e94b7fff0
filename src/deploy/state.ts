/**
 * ocisnap's deployment state: `<sysroot>/var/lib/ocisnap/state.json`.
 *
 * /var is a subvolume of its own, shared by every snapshot, so this one file
 * is what a booted snapshot, a rollback target and the health check all see.
 * It records which snapshots ocisnap made and from which image, which one is
 * on trial (pending, with boot tries left), which passed or failed their
 * health checks, which is the last known good, which are pinned, and which
 * image `ocisnap upgrade` follows.
 *
 * Compatibility: after a rollback an OLDER ocisnap reads what a newer one
 * wrote. So fields are only ever added, as optional ones, within `version: 1`,
 * and fields this code does not know are kept when it rewrites the file. A
 * change an older ocisnap would misread gets a new version number; a reader
 * refuses versions it does not know.
 *
 * Writes are atomic (temp file, fsync, rename, fsync dir); writers serialise
 * with withStateLock / updateState. Readers need no lock.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { OcisnapError, describeError } from '../errors.js';
import { isDigest } from '../oci/digest.js';
import type { Digest } from '../oci/types.js';
import { LockFile, LockTimeoutError } from '../store/lockfile.js';
import { writeFileAtomic } from '../sys/atomic-file.js';
import { isoTime } from '../iso-time.js';

/**
 * - pending: deployed, on trial until a boot of it passes the health checks;
 * - good: a boot of it passed the health checks;
 * - bad: its trial failed (checks failed, or it ran out of boot tries);
 * - superseded: left before its trial ended (a newer deploy or a rollback), never judged.
 */
export type DeploymentStatus = 'pending' | 'good' | 'bad' | 'superseded';

/** When, by whom and why a deployment left `pending` (or was judged again). */
export interface Verdict {
  /** ISO 8601, UTC. */
  at: string;
  /** What decided: e.g. `health-check`, `boot-counter`, `deploy`, `rollback`, `admin`. */
  by: string;
  /** One line for a user, e.g. which check failed. */
  reason?: string;
}

export interface Deployment {
  /** snapper number: `/.snapshots/<snapshot>/snapshot`. */
  snapshot: number;
  /** The image reference as the user gave it. */
  image: string;
  manifestDigest: Digest;
  /** The layer store's image ID (config digest hex). */
  imageId: string;
  /** ISO 8601, UTC. */
  createdAt: string;
  status: DeploymentStatus;
  /** Only while pending: boots it may still start before its trial counts as failed. */
  triesLeft?: number;
  /** Kept by `ocisnap gc` whatever its age. */
  pinned?: boolean;
  /** The snapshot that was running when this one was deployed (its image gave the /etc merge base). */
  parent?: number;
  verdict?: Verdict;
  /** What the signature policy said about the image when it was deployed (absent: deployed by an older ocisnap). */
  verification?: DeploymentVerification;
}

/**
 * The signature policy's answer for a deployment's image, from the pull (or,
 * for `deploy --no-pull`, the re-check of the stored image). A subset of
 * src/pull/verification-record.ts ImageVerification: enough to say whether
 * and by which key it was verified, with no store needed.
 */
export interface DeploymentVerification {
  /** Requirement types satisfied, joined with "+" (e.g. "sigstoreSigned", "insecureAcceptAnything"). */
  requirement: string;
  /** The policy scope that applied, e.g. `transports.docker["host/ns"]`, `default`. */
  scope: string;
  /** "sha256:<spki hex>" (sigstore) or a GPG fingerprint; absent when no signature was required. */
  keyId?: string;
  /** ISO 8601, UTC: when the signatures were checked. */
  at: string;
  /**
   * True when the registry could not be reached at deploy time and the
   * verification recorded at pull was accepted instead
   * (`deploy --no-pull --trust-recorded-when-offline`).
   */
  fromRecord?: boolean;
}

/** Who made a snapshot the next boot by a rollback. */
export type RollbackBy = 'admin' | 'health-check' | 'boot-counter';

/** The most recent rollback (`ocisnap rollback`, or the health check's automatic one). */
export interface RollbackRecord {
  /** The snapshot that was the default before, when it was a snapshot. */
  from?: number;
  /** The snapshot that boots next since. */
  to: number;
  /** ISO 8601, UTC. */
  at: string;
  by: RollbackBy;
  /** One line for a user, e.g. which check failed. */
  reason?: string;
}

export interface State {
  version: 1;
  /** The reference `ocisnap upgrade` re-resolves (set by `deploy` and `switch`). */
  followed?: string;
  /** Sorted by snapshot number. */
  deployments: Deployment[];
  /** The snapshot whose boot most recently passed the health checks: the rollback target. */
  lastGood?: number;
  /** Highest snapshot number ocisnap ever used; new numbers go above it, so none is reused. */
  highestSnapshot: number;
  /**
   * A deploy that reserved a snapshot and has not finished (set as the first
   * step, cleared as the last, after set-default). Found by a later run under
   * the lock, it means that deploy died: the later run finishes it (the
   * snapshot is already the default) or removes every trace of it.
   */
  inProgress?: DeployInProgress;
  /** The most recent rollback, manual or automatic. */
  lastRollback?: RollbackRecord;
}

export interface DeployInProgress {
  snapshot: number;
  image: string;
  /** ISO 8601, UTC. */
  startedAt: string;
  /** Kept so that a deploy finished by recovery still records how its image was verified. */
  verification?: DeploymentVerification;
}

export const STATE_VERSION = 1;
export const DEFAULT_TRIES = 3;

/** state.json cannot be parsed, or breaks an invariant. */
export class StateCorruptError extends OcisnapError {}

/** Another ocisnap holds the state lock. */
export class StateLockedError extends OcisnapError {}

/** A status change that the rules do not allow (e.g. a bad deployment made last good). */
export class StateTransitionError extends OcisnapError {}

export function stateDir(sysroot: string): string {
  return join(sysroot, 'var', 'lib', 'ocisnap');
}

export function statePath(sysroot: string): string {
  return join(stateDir(sysroot), 'state.json');
}

export function stateLockPath(sysroot: string): string {
  return join(stateDir(sysroot), 'ocisnap.lock');
}

export function emptyState(): State {
  return { version: STATE_VERSION, deployments: [], highestSnapshot: 0 };
}

// ---------------------------------------------------------------- validation

const statuses: readonly DeploymentStatus[] = ['pending', 'good', 'bad', 'superseded'];
/** Closed like statuses: a new value an older ocisnap would refuse needs a new state version. */
export const rollbackBys: readonly RollbackBy[] = ['admin', 'health-check', 'boot-counter'];
const maxSnapshot = 0xffff_ffff;
const isoDate = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Checks a parsed state.json and returns it typed. `what` names the file in
 * errors. Unknown fields are kept (see the header comment); known ones must be
 * right, and the invariants must hold: unique snapshot numbers, at most one
 * pending deployment (with its tries left), lastGood naming a good deployment.
 */
export function validateState(value: unknown, what: string): State {
  const fail = (msg: string): never => {
    throw new StateCorruptError(`${what}: ${msg}`);
  };
  if (!isObject(value)) fail('not a JSON object');
  const v = value as Json;
  if (typeof v['version'] !== 'number') fail('no version');
  if (v['version'] !== STATE_VERSION) {
    fail(
      (v['version'] as number) > STATE_VERSION
        ? `version ${v['version']} was written by a newer ocisnap (this one reads version ${STATE_VERSION})`
        : `unknown version ${v['version']}`,
    );
  }
  if (v['followed'] !== undefined && !nonEmptyString(v['followed'])) fail('followed: not a non-empty string');
  if (!Array.isArray(v['deployments'])) fail('deployments: not an array');
  const deployments = (v['deployments'] as unknown[]).map((d, i) => validateDeployment(d, `${what}: deployments[${i}]`));
  const seen = new Set<number>();
  for (const d of deployments) {
    if (seen.has(d.snapshot)) fail(`snapshot ${d.snapshot} is listed twice`);
    seen.add(d.snapshot);
  }
  const pending = deployments.filter((d) => d.status === 'pending');
  if (pending.length > 1) fail(`${pending.length} pending deployments (snapshots ${pending.map((d) => d.snapshot).join(', ')}); at most one may be`);
  if (v['lastGood'] !== undefined) {
    if (!isSnapshotNumber(v['lastGood'])) fail('lastGood: not a snapshot number');
    const good = deployments.find((d) => d.snapshot === v['lastGood']);
    if (good?.status !== 'good') fail(`lastGood ${v['lastGood']} is not a good deployment`);
  }
  const highest = v['highestSnapshot'];
  if (typeof highest !== 'number' || !Number.isSafeInteger(highest) || highest < 0 || highest > maxSnapshot) {
    fail('highestSnapshot: not a snapshot number');
  }
  const top = Math.max(0, ...deployments.map((d) => d.snapshot));
  if ((highest as number) < top) fail(`highestSnapshot ${highest} is below snapshot ${top}`);
  const progress = v['inProgress'];
  if (progress !== undefined) {
    if (!isObject(progress) || !isSnapshotNumber(progress['snapshot']) || !nonEmptyString(progress['image']) || !isIsoDate(progress['startedAt'])) {
      fail('inProgress: needs snapshot, image and startedAt');
    }
    const n = (progress as Json)['snapshot'] as number;
    if (n > (highest as number)) fail(`inProgress snapshot ${n} is above highestSnapshot ${highest}`);
    const problem = verificationProblem((progress as Json)['verification']);
    if (problem !== undefined) fail(`inProgress.verification: ${problem}`);
  }
  const rb = v['lastRollback'];
  if (rb !== undefined) {
    if (!isObject(rb)) fail('lastRollback: not an object');
    const r = rb as Json;
    if (!isSnapshotNumber(r['to'])) fail('lastRollback.to: not a snapshot number');
    if (r['from'] !== undefined && !isSnapshotNumber(r['from'])) fail('lastRollback.from: not a snapshot number');
    if (!isIsoDate(r['at'])) fail('lastRollback.at: not an ISO 8601 UTC time');
    if (!rollbackBys.includes(r['by'] as RollbackBy)) fail(`lastRollback.by: not one of ${rollbackBys.join(', ')}`);
    if (r['reason'] !== undefined && typeof r['reason'] !== 'string') fail('lastRollback.reason: not a string');
  }
  return { ...v, deployments: [...deployments].sort((a, b) => a.snapshot - b.snapshot) } as State;
}

function validateDeployment(value: unknown, what: string): Deployment {
  const fail = (msg: string): never => {
    throw new StateCorruptError(`${what}: ${msg}`);
  };
  if (!isObject(value)) fail('not an object');
  const d = value as Json;
  if (!isSnapshotNumber(d['snapshot'])) fail('snapshot: not a snapshot number');
  const at = `${what} (snapshot ${d['snapshot']})`;
  const bad = (msg: string): never => {
    throw new StateCorruptError(`${at}: ${msg}`);
  };
  if (!nonEmptyString(d['image'])) bad('image: not a non-empty string');
  if (!isDigest(d['manifestDigest'])) bad('manifestDigest: not a sha256 digest');
  if (typeof d['imageId'] !== 'string' || !/^[a-f0-9]{64}$/.test(d['imageId'])) bad('imageId: not 64 hex digits');
  if (!isIsoDate(d['createdAt'])) bad('createdAt: not an ISO 8601 UTC time');
  if (!statuses.includes(d['status'] as DeploymentStatus)) bad(`status: not one of ${statuses.join(', ')}`);
  if (d['status'] === 'pending') {
    const tries = d['triesLeft'];
    if (typeof tries !== 'number' || !Number.isSafeInteger(tries) || tries < 0) bad('triesLeft: a pending deployment needs a count >= 0');
  } else if (d['triesLeft'] !== undefined) {
    bad(`triesLeft: only a pending deployment has tries, this one is ${d['status']}`);
  }
  if (d['pinned'] !== undefined && typeof d['pinned'] !== 'boolean') bad('pinned: not a boolean');
  if (d['parent'] !== undefined && !isSnapshotNumber(d['parent'])) bad('parent: not a snapshot number');
  if (d['verdict'] !== undefined) {
    const verdict = d['verdict'];
    if (!isObject(verdict) || !isIsoDate(verdict['at']) || !nonEmptyString(verdict['by'])) bad('verdict: needs at (ISO time) and by');
    const reason = (verdict as Json)['reason'];
    if (reason !== undefined && typeof reason !== 'string') bad('verdict.reason: not a string');
  }
  const problem = verificationProblem(d['verification']);
  if (problem !== undefined) bad(`verification: ${problem}`);
  return d as unknown as Deployment;
}

/** What is wrong with an optional DeploymentVerification (undefined: absent or right). */
function verificationProblem(value: unknown): string | undefined {
  if (value === undefined) return undefined;
  if (!isObject(value)) return 'not an object';
  if (!nonEmptyString(value['requirement'])) return 'requirement: not a non-empty string';
  if (!nonEmptyString(value['scope'])) return 'scope: not a non-empty string';
  if (value['keyId'] !== undefined && !nonEmptyString(value['keyId'])) return 'keyId: not a non-empty string';
  if (!isIsoDate(value['at'])) return 'at: not an ISO 8601 UTC time';
  if (value['fromRecord'] !== undefined && typeof value['fromRecord'] !== 'boolean') return 'fromRecord: not a boolean';
  return undefined;
}

function nonEmptyString(v: unknown): v is string {
  return typeof v === 'string' && v.length > 0;
}

function isSnapshotNumber(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 1 && v <= maxSnapshot;
}

function isIsoDate(v: unknown): v is string {
  return typeof v === 'string' && isoDate.test(v) && !Number.isNaN(Date.parse(v));
}

// ---------------------------------------------------------------- files

/** Reads the state; a missing file is an empty state (nothing deployed yet). */
export async function readState(sysroot: string): Promise<State> {
  const path = statePath(sysroot);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as { code?: unknown }).code === 'ENOENT') return emptyState();
    throw new StateCorruptError(`cannot read ${path}: ${describeError(err)}`, { cause: err });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new StateCorruptError(`${path}: not valid JSON (${describeError(err)})`, { cause: err });
  }
  return validateState(json, path);
}

/** Validates, then replaces the state file atomically. Hold withStateLock around read-modify-write. */
export async function writeState(sysroot: string, state: State): Promise<void> {
  const path = statePath(sysroot);
  const checked = validateState(JSON.parse(JSON.stringify(state)), `state to be written to ${path}`);
  try {
    await mkdir(stateDir(sysroot), { recursive: true, mode: 0o755 });
    await writeFileAtomic(path, `${JSON.stringify(checked, null, 2)}\n`, 0o644);
  } catch (err) {
    throw new OcisnapError(`cannot write ${path}: ${describeError(err)}`, { cause: err });
  }
}

export interface StateLockOptions {
  /** How long to wait for another ocisnap to finish (default 30 s; 0: do not wait). */
  timeoutMs?: number;
}

/**
 * Runs `fn` holding ocisnap's exclusive lock on this sysroot: an fcntl write
 * lock on `var/lib/ocisnap/ocisnap.lock`, polled with backoff (the addon's
 * setlk never blocks), serialised within this process too (fcntl locks belong
 * to the process; src/store/lockfile.ts handles both). Not re-entrant: `fn`
 * must not take it again.
 */
export async function withStateLock<T>(sysroot: string, fn: () => Promise<T>, opts: StateLockOptions = {}): Promise<T> {
  const path = stateLockPath(sysroot);
  const timeoutMs = opts.timeoutMs ?? 30_000;
  let entered = false;
  // 0755 so that `ocisnap status` works for everyone; the lock helper would make it 0700.
  await mkdir(stateDir(sysroot), { recursive: true, mode: 0o755 });
  try {
    return await LockFile.for(path).with(
      'write',
      () => {
        entered = true;
        return fn();
      },
      { timeoutMs },
    );
  } catch (err) {
    if (!entered && err instanceof LockTimeoutError) {
      throw new StateLockedError(
        `another ocisnap is working on ${sysroot} (lock ${path} still held after ${Math.round(timeoutMs / 1000)} s); try again when it has finished`,
        { cause: err },
      );
    }
    throw err;
  }
}

/** Read-modify-write under the lock; returns the state written. */
export async function updateState(
  sysroot: string,
  change: (state: State) => State | Promise<State>,
  opts: StateLockOptions = {},
): Promise<State> {
  return withStateLock(
    sysroot,
    async () => {
      const next = await change(await readState(sysroot));
      await writeState(sysroot, next);
      return next;
    },
    opts,
  );
}

// ---------------------------------------------------------------- queries

export function findDeployment(state: State, snapshot: number): Deployment | undefined {
  return state.deployments.find((d) => d.snapshot === snapshot);
}

export function pendingDeployment(state: State): Deployment | undefined {
  return state.deployments.find((d) => d.status === 'pending');
}

export function lastGoodDeployment(state: State): Deployment | undefined {
  return state.lastGood === undefined ? undefined : findDeployment(state, state.lastGood);
}

// ---------------------------------------------------------------- transitions (pure)

export interface NewDeployment {
  snapshot: number;
  image: string;
  manifestDigest: Digest;
  imageId: string;
  parent?: number;
  pinned?: boolean;
  verification?: DeploymentVerification;
}

export interface Judgement {
  by: string;
  reason?: string;
  now?: Date;
}

function verdictOf(j: Judgement): Verdict {
  const v: Verdict = { at: isoTime(j.now ?? new Date()), by: j.by };
  if (j.reason !== undefined) v.reason = j.reason;
  return v;
}

function replace(state: State, snapshot: number, change: (d: Deployment) => Deployment): State {
  if (!findDeployment(state, snapshot)) throw new StateTransitionError(`snapshot ${snapshot} is not an ocisnap deployment`);
  return { ...state, deployments: state.deployments.map((d) => (d.snapshot === snapshot ? change(d) : d)) };
}

function withoutTries(d: Deployment): Deployment {
  const { triesLeft: _, ...rest } = d;
  return rest;
}

/**
 * Records a new deployment, on trial with `tries` boots (default 3). A
 * deployment still pending is superseded: it never got its verdict.
 */
export function addDeployment(state: State, d: NewDeployment, opts: { tries?: number; now?: Date; followed?: string } = {}): State {
  if (findDeployment(state, d.snapshot)) throw new StateTransitionError(`snapshot ${d.snapshot} is already a deployment`);
  if (d.snapshot <= state.highestSnapshot && d.snapshot !== state.inProgress?.snapshot) {
    throw new StateTransitionError(`snapshot number ${d.snapshot} is not above ${state.highestSnapshot}, the highest ocisnap has used`);
  }
  return insertDeployment(state, d, opts);
}

/**
 * Records as a deployment a snapshot that already exists and was made
 * outside a deploy: one container-snap's create-snapshot reserved earlier
 * (its number is at most highestSnapshot) or one snapper made for tukit.
 * Unlike addDeployment the number need not be new, as the snapshot is the
 * one it names; refused when it already is a deployment, or is the snapshot
 * of a deploy in progress (that one is finished or undone by recovery).
 */
export function adoptSnapshot(state: State, d: NewDeployment, opts: { tries?: number; now?: Date; followed?: string } = {}): State {
  if (findDeployment(state, d.snapshot)) throw new StateTransitionError(`snapshot ${d.snapshot} is already a deployment`);
  if (d.snapshot === state.inProgress?.snapshot) {
    throw new StateTransitionError(`snapshot ${d.snapshot} belongs to an interrupted deploy of ${state.inProgress.image}, which must be finished or undone first`);
  }
  if (!isSnapshotNumber(d.snapshot)) throw new StateTransitionError(`${d.snapshot} is not a snapshot number`);
  return insertDeployment(state, d, opts);
}

function insertDeployment(state: State, d: NewDeployment, opts: { tries?: number; now?: Date; followed?: string }): State {
  const tries = opts.tries ?? DEFAULT_TRIES;
  if (!Number.isSafeInteger(tries) || tries < 1) throw new StateTransitionError(`tries must be at least 1, not ${tries}`);
  const now = opts.now ?? new Date();
  const old = pendingDeployment(state);
  let next = state;
  if (old) next = supersede(next, old.snapshot, { by: 'deploy', reason: `replaced by snapshot ${d.snapshot} before its trial ended`, now });
  const deployment: Deployment = { ...d, createdAt: isoTime(now), status: 'pending', triesLeft: tries };
  next = {
    ...next,
    deployments: [...next.deployments, deployment].sort((a, b) => a.snapshot - b.snapshot),
    highestSnapshot: Math.max(next.highestSnapshot, d.snapshot),
  };
  if (opts.followed !== undefined) next.followed = opts.followed;
  return next;
}

/**
 * First step of a deploy, right after reserving `snapshot`: records the
 * intention (and the number as used). Refused while another deploy's marker
 * is there: that one must be finished or undone first.
 */
export function beginDeploy(
  state: State,
  snapshot: number,
  image: string,
  now: Date = new Date(),
  opts: { verification?: DeploymentVerification } = {},
): State {
  if (state.inProgress) {
    throw new StateTransitionError(
      `an interrupted deploy of ${state.inProgress.image} (snapshot ${state.inProgress.snapshot}) must be finished or undone first`,
    );
  }
  if (snapshot <= state.highestSnapshot) {
    throw new StateTransitionError(`snapshot number ${snapshot} is not above ${state.highestSnapshot}, the highest ocisnap has used`);
  }
  const inProgress: DeployInProgress = { snapshot, image, startedAt: isoTime(now) };
  if (opts.verification !== undefined) inProgress.verification = opts.verification;
  return { ...state, highestSnapshot: snapshot, inProgress };
}

/** Last step of a deploy (or of undoing an interrupted one): clears the marker. */
export function endDeploy(state: State): State {
  const { inProgress: _, ...rest } = state;
  return rest;
}

/**
 * One boot of the pending deployment starts: uses up a try. When none is left
 * the trial has failed (the boot counter's verdict) and `exhausted` is true:
 * the caller rolls back.
 */
export function consumeTry(state: State, snapshot: number, now?: Date): { state: State; exhausted: boolean; triesLeft: number } {
  const d = findDeployment(state, snapshot);
  if (d?.status !== 'pending') {
    throw new StateTransitionError(`snapshot ${snapshot} is not on trial (${d ? d.status : 'not an ocisnap deployment'})`);
  }
  const left = d.triesLeft ?? 0;
  if (left <= 0) {
    const judged: Judgement = { by: 'boot-counter', reason: 'no boot tries left: earlier boots never passed the health checks' };
    if (now) judged.now = now;
    return { state: markBad(state, snapshot, judged), exhausted: true, triesLeft: 0 };
  }
  return { state: replace(state, snapshot, (x) => ({ ...x, triesLeft: left - 1 })), exhausted: false, triesLeft: left - 1 };
}

/**
 * A boot of `snapshot` passed the health checks: it is good and the last
 * known good. Allowed for pending, good (a later healthy boot) and superseded
 * ones (booted by hand); a bad one only with `force` (an admin's decision).
 */
export function markGood(state: State, snapshot: number, j: Judgement & { force?: boolean }): State {
  const d = findDeployment(state, snapshot);
  if (d?.status === 'bad' && !j.force) {
    throw new StateTransitionError(`snapshot ${snapshot} was marked bad; marking it good needs force`);
  }
  const next = replace(state, snapshot, (x) => ({ ...withoutTries(x), status: 'good', verdict: verdictOf(j) }));
  return { ...next, lastGood: snapshot };
}

/**
 * The trial of `snapshot` failed. Allowed for a pending one; a good one only
 * with `force`, and then the last known good falls back to the most recently
 * judged other good deployment (or none).
 */
export function markBad(state: State, snapshot: number, j: Judgement & { force?: boolean }): State {
  const d = findDeployment(state, snapshot);
  if (d && d.status !== 'pending' && d.status !== 'bad' && !(d.status === 'good' && j.force)) {
    throw new StateTransitionError(`snapshot ${snapshot} is ${d.status}; only a pending deployment can fail its trial`);
  }
  const next = replace(state, snapshot, (x) => ({ ...withoutTries(x), status: 'bad', verdict: verdictOf(j) }));
  return next.lastGood === snapshot ? withLastGood(next, newestGood(next)) : next;
}

/** Ends the trial of a pending deployment without a verdict (a newer deploy, a rollback away from it). */
export function supersede(state: State, snapshot: number, j: Judgement): State {
  const d = findDeployment(state, snapshot);
  if (d && d.status !== 'pending') throw new StateTransitionError(`snapshot ${snapshot} is ${d.status}, not pending`);
  return replace(state, snapshot, (x) => ({ ...withoutTries(x), status: 'superseded', verdict: verdictOf(j) }));
}

export interface RollbackEvent {
  from?: number;
  to: number;
  by: RollbackBy;
  reason?: string;
  now?: Date;
}

/**
 * Records that `to` was made the next boot by a rollback (replacing the
 * previous record). Pure: the caller writes the state under its lock, after
 * set-default (the health module does so for its automatic rollbacks).
 */
export function recordRollback(state: State, e: RollbackEvent): State {
  if (!isSnapshotNumber(e.to)) throw new StateTransitionError(`rollback target ${e.to} is not a snapshot number`);
  if (e.from !== undefined && !isSnapshotNumber(e.from)) throw new StateTransitionError(`rollback source ${e.from} is not a snapshot number`);
  if (!rollbackBys.includes(e.by)) throw new StateTransitionError(`rollback by "${e.by}": not one of ${rollbackBys.join(', ')}`);
  const record: RollbackRecord = { to: e.to, at: isoTime(e.now ?? new Date()), by: e.by };
  if (e.from !== undefined) record.from = e.from;
  if (e.reason !== undefined) record.reason = e.reason;
  return { ...state, lastRollback: record };
}

export function setPinned(state: State, snapshot: number, pinned: boolean): State {
  return replace(state, snapshot, (x) => {
    const { pinned: _, ...rest } = x;
    return pinned ? { ...rest, pinned: true } : rest;
  });
}

export function setFollowed(state: State, reference: string | undefined): State {
  const { followed: _, ...rest } = state;
  return reference === undefined ? rest : { ...rest, followed: reference };
}

/**
 * Forgets a deployment whose snapshot was removed. Never the last known good
 * or a pending one; a pinned one only with `force`. highestSnapshot stays.
 */
export function removeDeployment(state: State, snapshot: number, opts: { force?: boolean } = {}): State {
  const d = findDeployment(state, snapshot);
  if (!d) throw new StateTransitionError(`snapshot ${snapshot} is not an ocisnap deployment`);
  if (state.lastGood === snapshot) throw new StateTransitionError(`snapshot ${snapshot} is the last known good deployment`);
  if (d.status === 'pending') throw new StateTransitionError(`snapshot ${snapshot} is on trial`);
  if (d.pinned && !opts.force) throw new StateTransitionError(`snapshot ${snapshot} is pinned`);
  return { ...state, deployments: state.deployments.filter((x) => x.snapshot !== snapshot) };
}

/** The good deployment judged most recently (by verdict time, then number). */
function newestGood(state: State): number | undefined {
  const good = state.deployments.filter((d) => d.status === 'good');
  // ISO 8601 UTC times order as strings; code-unit order, not localeCompare (which loads ICU's collator).
  const at = (d: Deployment): string => d.verdict?.at ?? '';
  good.sort((a, b) => (at(a) < at(b) ? -1 : at(a) > at(b) ? 1 : a.snapshot - b.snapshot));
  return good.at(-1)?.snapshot;
}

function withLastGood(state: State, snapshot: number | undefined): State {
  const { lastGood: _, ...rest } = state;
  return snapshot === undefined ? rest : { ...rest, lastGood: snapshot };
}
