/**
 * `ocisnap status` and `ocisnap list`: what boots now, what boots next, what
 * is on trial, what is known good, and per snapshot which image it holds.
 *
 * The JSON form is a stable interface, documented by docs/status-schema.json
 * (JSON Schema 2020-12). Compatibility rule: within schemaVersion 1 fields are
 * only added, never removed, renamed or retyped; absent values are `null`, not
 * missing keys.
 *
 * Status only reads (no lock, no recovery): an interrupted deploy is shown as
 * `interruptedDeploy` and cleaned up by the next mutating command.
 */
import { getReadonly } from '../btrfs/index.js';
import { describeVerification } from '../pull/verification-record.js';
import type { DeploymentStatus, RollbackBy } from './state.js';
import { lastGoodDeployment, pendingDeployment, readState } from './state.js';
import { listSnapshots, OCISNAP_USERDATA, type SnapshotType } from './snapper.js';
import { IMAGE_ID_USERDATA } from './deploy.js';
import { bootedSubvolume, checkSysroot, defaultSubvolume, snapshotPath, type SysrootPaths } from './sysroot.js';
import { isoTime } from '../iso-time.js';

export const STATUS_SCHEMA_VERSION = 1;

export interface SnapshotStatus {
  number: number;
  type: SnapshotType;
  /** ISO 8601 UTC, from info.xml. */
  date: string;
  description: string | null;
  /** True when ocisnap's state records it as a deployment. */
  deployment: boolean;
  image: string | null;
  digest: string | null;
  imageId: string | null;
  status: DeploymentStatus | null;
  triesLeft: number | null;
  pinned: boolean;
  booted: boolean;
  default: boolean;
  lastGood: boolean;
  readOnly: boolean;
  /** Snapshot number that was running when this one was deployed. */
  parent: number | null;
  /** How the signature policy accepted its image at deploy time; null when not recorded (not a deployment, or an older ocisnap deployed it). */
  verification: VerificationStatus | null;
  /** When, by whom and why it left `pending` (state.ts Verdict); null while pending or when not a deployment. */
  verdict: VerdictStatus | null;
}

export interface VerdictStatus {
  /** ISO 8601 UTC. */
  at: string;
  /** What decided: `health-check`, `boot-counter`, `deploy`, `rollback`, `admin`, ... */
  by: string;
  reason: string | null;
}

export interface VerificationStatus {
  /** Requirement types satisfied, e.g. "sigstoreSigned", "signedBy", "insecureAcceptAnything". */
  requirement: string;
  scope: string;
  /** The key that verified the signature; null when none was required. */
  keyId: string | null;
  /** ISO 8601 UTC: when the signatures were checked. */
  at: string;
  /** True when the verification recorded at pull was used because the registry was unreachable. */
  fromRecord: boolean;
}

export interface RollbackStatus {
  from: number | null;
  to: number;
  at: string;
  by: RollbackBy;
  reason: string | null;
}

export interface MissingDeployment {
  number: number;
  image: string;
  digest: string;
  status: DeploymentStatus;
}

export interface SubvolumeRef {
  id: number;
  path: string;
}

export interface SystemStatus {
  schemaVersion: 1;
  sysroot: string;
  /** The snapshot running now: null when the sysroot is not the running system or `/` is not a snapshot. */
  booted: number | null;
  bootedSubvolume: SubvolumeRef | null;
  /** The snapshot that boots next (btrfs default subvolume), null when the default is not a snapshot. */
  default: number | null;
  defaultSubvolume: SubvolumeRef;
  pending: number | null;
  lastGood: number | null;
  followed: string | null;
  interruptedDeploy: { snapshot: number; image: string; startedAt: string } | null;
  /** The most recent rollback (manual or automatic); null when none is recorded. */
  lastRollback: RollbackStatus | null;
  snapshots: SnapshotStatus[];
  /** Deployments in the state whose snapshot is gone (e.g. deleted by snapper); gc forgets them. */
  missingDeployments: MissingDeployment[];
}

export async function systemStatus(paths: SysrootPaths): Promise<SystemStatus> {
  await checkSysroot(paths);
  const state = await readState(paths.root);
  const def = await defaultSubvolume(paths);
  const booted = paths.running ? await bootedSubvolume() : undefined;
  const infos = await listSnapshots(paths.snapshotsDir);
  const pending = pendingDeployment(state);
  const lastGood = lastGoodDeployment(state);
  const listed = new Set(infos.map((i) => i.num));

  const snapshots: SnapshotStatus[] = [];
  for (const info of infos) {
    const d = state.deployments.find((x) => x.snapshot === info.num);
    snapshots.push({
      number: info.num,
      type: info.type,
      date: isoTime(info.date),
      description: info.description ?? null,
      deployment: d !== undefined,
      image: d?.image ?? info.userdata[OCISNAP_USERDATA.image] ?? null,
      digest: d?.manifestDigest ?? info.userdata[OCISNAP_USERDATA.digest] ?? null,
      imageId: d?.imageId ?? info.userdata[IMAGE_ID_USERDATA] ?? null,
      status: d?.status ?? null,
      triesLeft: d?.triesLeft ?? null,
      pinned: d?.pinned === true,
      booted: booted?.snapshot === info.num,
      default: def.snapshot === info.num,
      lastGood: state.lastGood === info.num,
      readOnly: await getReadonly(snapshotPath(paths, info.num)).catch(() => false),
      parent: d?.parent ?? null,
      verification: d?.verification
        ? {
            requirement: d.verification.requirement,
            scope: d.verification.scope,
            keyId: d.verification.keyId ?? null,
            at: d.verification.at,
            fromRecord: d.verification.fromRecord === true,
          }
        : null,
      verdict: d?.verdict ? { at: d.verdict.at, by: d.verdict.by, reason: d.verdict.reason ?? null } : null,
    });
  }
  return {
    schemaVersion: STATUS_SCHEMA_VERSION,
    sysroot: paths.root,
    booted: booted?.snapshot ?? null,
    bootedSubvolume: booted ? { id: booted.id, path: booted.fsPath } : null,
    default: def.snapshot ?? null,
    defaultSubvolume: { id: def.id, path: def.fsPath },
    pending: pending?.snapshot ?? null,
    lastGood: lastGood?.snapshot ?? null,
    followed: state.followed ?? null,
    interruptedDeploy: state.inProgress
      ? { snapshot: state.inProgress.snapshot, image: state.inProgress.image, startedAt: state.inProgress.startedAt }
      : null,
    lastRollback: state.lastRollback
      ? {
          from: state.lastRollback.from ?? null,
          to: state.lastRollback.to,
          at: state.lastRollback.at,
          by: state.lastRollback.by,
          reason: state.lastRollback.reason ?? null,
        }
      : null,
    snapshots,
    missingDeployments: state.deployments
      .filter((d) => !listed.has(d.snapshot))
      .map((d) => ({ number: d.snapshot, image: d.image, digest: d.manifestDigest, status: d.status })),
  };
}

function shortDigest(d: string | null): string {
  return d === null ? '-' : d.replace(/^sha256:/, '').slice(0, 12);
}

function describeSnapshot(n: number | null, s: SystemStatus): string {
  if (n === null) return 'none';
  const snap = s.snapshots.find((x) => x.number === n);
  if (!snap) return `${n}`;
  const what = snap.image ?? snap.description ?? '';
  let extra = '';
  if (snap.status === 'pending') extra = ` (pending, ${snap.triesLeft} boot ${snap.triesLeft === 1 ? 'try' : 'tries'} left)`;
  else if (snap.status) extra = ` (${snap.status})`;
  return `${n}${what ? `  ${what}` : ''}${extra}`;
}

/** The human form of `ocisnap status`. */
export function formatStatus(s: SystemStatus): string {
  const lines: string[] = [];
  lines.push(`Sysroot:     ${s.sysroot}`);
  if (s.sysroot === '/') lines.push(`Booted:      ${s.booted === null ? `not a snapshot (${s.bootedSubvolume?.path ?? 'not btrfs'})` : describeSnapshot(s.booted, s)}`);
  lines.push(`Next boot:   ${s.default === null ? `not a snapshot (subvolume ${s.defaultSubvolume.path || 'top level'})` : describeSnapshot(s.default, s)}`);
  lines.push(`Pending:     ${describeSnapshot(s.pending, s)}`);
  lines.push(`Last good:   ${describeSnapshot(s.lastGood, s)}`);
  lines.push(`Following:   ${s.followed ?? 'nothing (ocisnap switch REF)'}`);
  if (s.lastRollback) {
    const r = s.lastRollback;
    lines.push(
      `Rollback:    ${r.from === null ? '' : `${r.from} -> `}${r.to} by ${r.by} at ${r.at}${r.reason === null ? '' : `: ${r.reason}`}`,
    );
  }
  if (s.interruptedDeploy) {
    lines.push(`Interrupted: deploy of ${s.interruptedDeploy.image} as snapshot ${s.interruptedDeploy.snapshot} (cleaned up by the next ocisnap command)`);
  }
  const deployments = s.snapshots.filter((x) => x.deployment).reverse();
  if (deployments.length > 0) {
    lines.push('', 'Deployments (newest first):');
    for (const d of deployments) {
      const marks = [d.booted ? 'booted' : '', d.default ? 'default' : '', d.lastGood ? 'last-good' : '', d.pinned ? 'pinned' : '', d.readOnly ? 'ro' : '']
        .filter(Boolean)
        .join(',');
      lines.push(`  ${d.default ? '*' : ' '} ${String(d.number).padStart(4)}  ${(d.status ?? '').padEnd(10)} ${d.image ?? ''}`);
      lines.push(`          digest ${d.digest ?? '-'}  ${d.date}${marks ? `  [${marks}]` : ''}`);
      lines.push(`          ${verificationLine(d.verification)}`);
      if (d.verdict) lines.push(`          ${verdictLine(d.status, d.verdict)}`);
    }
  }
  for (const m of s.missingDeployments) lines.push(`  missing snapshot ${m.number} (${m.image}, ${m.status}): forgotten by the next ocisnap gc`);
  return `${lines.join('\n')}\n`;
}

/** "verified: sigstoreSigned by key sha256:… (scope …)" / "not verified: insecureAcceptAnything …". */
export function verificationLine(v: VerificationStatus | null): string {
  if (v === null) return 'signature: not recorded';
  const what = describeVerification(v.keyId === null ? { requirement: v.requirement } : { requirement: v.requirement, keyId: v.keyId });
  const verified = v.keyId !== null ? 'verified' : 'not verified';
  return `${verified}: ${what}, policy scope ${v.scope}, at ${v.at}${v.fromRecord ? ' (recorded at pull; registry unreachable at deploy)' : ''}`;
}

/** "verdict: bad at 2026-…Z by health-check: required check 10-app failed". */
export function verdictLine(status: DeploymentStatus | null, v: VerdictStatus): string {
  return `verdict: ${status ?? '-'} at ${v.at} by ${v.by}${v.reason === null ? '' : `: ${v.reason}`}`;
}

/** The table of `ocisnap list`: every snapper snapshot, ocisnap's and others. */
export function formatList(s: SystemStatus): string {
  const rows: string[][] = [['#', 'DATE', 'STATUS', 'FLAGS', 'DIGEST', 'IMAGE / DESCRIPTION']];
  for (const x of s.snapshots) {
    const flags = [x.booted ? 'B' : '', x.default ? 'D' : '', x.lastGood ? 'G' : '', x.pinned ? 'P' : '', x.readOnly ? 'R' : ''].join('') || '-';
    rows.push([
      String(x.number),
      x.date.replace('T', ' ').replace(/\.\d+Z$/, 'Z'),
      x.status ?? (x.deployment ? '-' : 'snapper'),
      flags,
      shortDigest(x.digest),
      x.image ?? x.description ?? '',
    ]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  const out = rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ').trimEnd());
  out.push('flags: B booted, D default (next boot), G last good, P pinned, R read-only');
  return `${out.join('\n')}\n`;
}
