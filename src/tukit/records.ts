/**
 * What the plugin remembers about one tukit transaction between its calls
 * (each stage is a separate process): `<stateDir>/tukit/<snapshot>.json`,
 * written atomically. Made at init-post when an image is put into the
 * snapshot; read at finalize to record the deployment; removed at
 * finalize-post and abort-post, so an aborted transaction leaves nothing.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describeError, OcisnapError } from '../errors.js';
import { isErrno } from '../sys/native.js';
import { unlinkDurable, writeFileAtomic } from '../sys/atomic-file.js';

export interface TransactionRecord {
  snapshot: number;
  /** The image as asked for (OCISNAP_IMAGE or tukit.conf). */
  image: string;
  /** `filling` until the snapshot holds the whole image; a record left `filling` means the fill failed. */
  status: 'filling' | 'filled';
  manifestDigest?: string;
  imageId?: string;
  /** The snapshot tukit copied the new one from, when known (its /etc was merged). */
  base?: number;
  /** btrfs ID of the default subvolume when the transaction began: restored if a failed fill got finalized. */
  previousDefault: number;
  /** ISO 8601, UTC. */
  startedAt: string;
}

export class TransactionRecordError extends OcisnapError {}

export function recordsDir(stateDir: string): string {
  return join(stateDir, 'tukit');
}

export function recordPath(stateDir: string, snapshot: number): string {
  return join(recordsDir(stateDir), `${snapshot}.json`);
}

export async function readRecord(stateDir: string, snapshot: number): Promise<TransactionRecord | undefined> {
  const path = recordPath(stateDir, snapshot);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if (isErrno(err, 'ENOENT')) return undefined;
    throw new TransactionRecordError(`cannot read ${path}: ${describeError(err)}`, { cause: err });
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new TransactionRecordError(`${path}: not JSON`);
  }
  const r = value as Partial<TransactionRecord>;
  if (
    typeof value !== 'object' || value === null ||
    r.snapshot !== snapshot ||
    typeof r.image !== 'string' ||
    (r.status !== 'filling' && r.status !== 'filled') ||
    typeof r.previousDefault !== 'number' ||
    typeof r.startedAt !== 'string'
  ) {
    throw new TransactionRecordError(`${path}: not a transaction record of snapshot ${snapshot}`);
  }
  return value as TransactionRecord;
}

export async function writeRecord(stateDir: string, record: TransactionRecord): Promise<void> {
  const path = recordPath(stateDir, record.snapshot);
  try {
    await mkdir(recordsDir(stateDir), { recursive: true, mode: 0o700 });
    await writeFileAtomic(path, `${JSON.stringify(record, null, 2)}\n`, 0o600);
  } catch (err) {
    throw new TransactionRecordError(`cannot write ${path}: ${describeError(err)}`, { cause: err });
  }
}

export async function removeRecord(stateDir: string, snapshot: number): Promise<void> {
  try {
    await unlinkDurable(recordPath(stateDir, snapshot));
  } catch (err) {
    throw new TransactionRecordError(`cannot remove ${recordPath(stateDir, snapshot)}: ${describeError(err)}`, { cause: err });
  }
}
