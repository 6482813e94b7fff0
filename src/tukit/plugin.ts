/**
 * ocisnap as a tukit plugin (installed as /usr/lib/tukit/plugins/ocisnap, see
 * plugins/tukit/). tukit runs every plugin as `<plugin> <stage> [args]`,
 * without stdin, logging its stdout (openSUSE/transactional-update
 * lib/Plugins.cpp, doc/tukit-plugins.md). Stages and their arguments:
 *
 *   init-pre | init-post PATH ID | resume-pre ID | resume-post PATH ID
 *   execute-pre|execute-post PATH ID ARGV... | callExt-pre|callExt-post PATH ID ARGV...
 *   finalize-pre PATH ID | finalize-post ID [discarded] | abort-post ID
 *   keep-pre PATH ID | keep-post ID | reboot-pre
 *
 * PATH is tukit's bind mount of the new snapshot, ID its snapper number.
 * Unknown stages are ignored (exit 0), so newer tukit versions keep working.
 *
 * When the transaction asks for an image (OCISNAP_IMAGE=REF in tukit's
 * environment, or `image` in /etc/ocisnap/tukit.conf; config.ts):
 *   init-post      fills the new snapshot with the image (fill.ts), /etc
 *                  merged, userdata ocisnap.image/ocisnap.digest recorded;
 *                  so the transaction's command runs in the new image;
 *   execute-pre, callExt-pre, finalize-pre
 *                  fail while the fill failed (a tukit that honours plugin
 *                  exit codes then aborts the transaction);
 *   finalize-post  records the snapshot, now tukit's default, as a pending
 *                  ocisnap deployment (health checks, `ocisnap status`); if a
 *                  failed fill got finalized anyway (tukit since 2024 only
 *                  logs plugin failures), it puts the previous default back;
 *   abort-post     forgets the transaction: nothing of ocisnap's is left.
 * Without an image every stage does nothing.
 */
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { getDefaultSubvolume, isSubvolume, setDefaultSubvolume, showSubvolume } from '../btrfs/index.js';
import { describeError, OcisnapError, UsageError } from '../errors.js';
import { imageUserdata } from '../deploy/deploy.js';
import { setUserdata } from '../deploy/snapper.js';
import { adoptSnapshot, readState, StateTransitionError, withStateLock, writeState, type NewDeployment } from '../deploy/state.js';
import { checkSysroot, snapshotPath, sysrootPaths, type SysrootPaths } from '../deploy/sysroot.js';
import type { Digest } from '../oci/types.js';
import { loadTukitConfig } from './config.js';
import { fillSnapshot, LOCAL_ETC_ASIDE } from './fill.js';
import { readRecord, recordsDir, removeRecord, writeRecord, type TransactionRecord } from './records.js';
import { isoTime } from '../iso-time.js';

export type Env = Record<string, string | undefined>;

export interface PluginIo {
  /** tukit logs a plugin's stdout. */
  out: (line: string) => void;
  err: (line: string) => void;
}

const defaultIo: PluginIo = {
  out: (line) => void process.stdout.write(`${line}\n`),
  err: (line) => void process.stderr.write(`${line}\n`),
};

/** The stages of doc/tukit-plugins.md. */
export const TUKIT_STAGES = [
  'init-pre', 'init-post', 'resume-pre', 'resume-post', 'execute-pre', 'execute-post', 'callExt-pre', 'callExt-post',
  'finalize-pre', 'finalize-post', 'abort-post', 'keep-pre', 'keep-post', 'reboot-pre',
] as const;

function snapshotId(value: string | undefined, stage: string): number {
  if (value === undefined || !/^[1-9][0-9]{0,9}$/.test(value)) {
    throw new UsageError(`${stage}: expected a snapshot number as ID, got ${JSON.stringify(value ?? '')}`);
  }
  return Number(value);
}

function pathArg(value: string | undefined, stage: string): string {
  if (value === undefined || !value.startsWith('/')) throw new UsageError(`${stage}: expected tukit's mount PATH, got ${JSON.stringify(value ?? '')}`);
  return value;
}

/** Refuses to go on while the fill of this transaction's snapshot failed. */
async function requireFilled(paths: SysrootPaths, num: number, stage: string): Promise<void> {
  const record = await readRecord(paths.stateDir, num);
  if (record?.status === 'filling') {
    throw new OcisnapError(`${stage}: putting image ${record.image} into snapshot ${num} failed; abort this transaction (tukit abort ${num})`);
  }
}

/** Records of transactions whose snapshot is gone (tukit died, or was killed, before abort-post) are dropped. */
async function forgetVanishedTransactions(paths: SysrootPaths): Promise<void> {
  for (const name of await readdir(recordsDir(paths.stateDir)).catch(() => [] as string[])) {
    const m = /^([1-9][0-9]*)\.json$/.exec(name);
    if (m && !(await isSubvolume(snapshotPath(paths, Number(m[1]))))) await removeRecord(paths.stateDir, Number(m[1]));
  }
}

async function initPost(paths: SysrootPaths, bindPath: string, num: number, env: Env, io: PluginIo): Promise<void> {
  const config = await loadTukitConfig(env);
  const image = config.image;
  if (image === undefined) return;
  await checkSysroot(paths);
  const record: TransactionRecord = {
    snapshot: num,
    image,
    status: 'filling',
    previousDefault: (await getDefaultSubvolume(paths.root)).id,
    startedAt: isoTime(),
  };
  await forgetVanishedTransactions(paths);
  await writeRecord(paths.stateDir, record);
  // Under ocisnap's state lock: no gc or deploy between choosing the image and copying it.
  const result = await withStateLock(
    paths.root,
    () =>
      fillSnapshot({
        paths,
        snapshot: num,
        bindPath,
        image,
        pull: config.pull,
        log: (line) => io.out(`ocisnap: ${line}`),
      }),
    { timeoutMs: 60_000 },
  );
  const filled: TransactionRecord = { ...record, status: 'filled', manifestDigest: result.manifestDigest, imageId: result.imageId };
  if (result.base !== undefined) filled.base = result.base;
  await writeRecord(paths.stateDir, filled);
  io.out(`ocisnap: snapshot ${num} now holds ${image} (${result.manifestDigest})`);
}

async function finalizePost(paths: SysrootPaths, num: number, discarded: boolean, io: PluginIo): Promise<void> {
  const record = await readRecord(paths.stateDir, num);
  if (!record) return;
  if (discarded) {
    await removeRecord(paths.stateDir, num);
    return;
  }
  const sub = snapshotPath(paths, num);
  const isDefault = (await isSubvolume(sub)) && (await showSubvolume(sub)).id === (await getDefaultSubvolume(paths.root)).id;
  if (record.status !== 'filled' || record.manifestDigest === undefined || record.imageId === undefined) {
    if (isDefault) await setDefaultSubvolume(record.previousDefault, paths.root);
    await removeRecord(paths.stateDir, num);
    throw new OcisnapError(
      `snapshot ${num} was finalized although putting image ${record.image} into it failed` +
        (isDefault ? `; the previous default subvolume (ID ${record.previousDefault}) boots next again` : ''),
    );
  }
  // tukit's close rewrote info.xml (snapper modify); make sure the image is still recorded.
  await setUserdata(paths.snapshotsDir, num, imageUserdata(record.image, record.manifestDigest, record.imageId));
  if (isDefault) {
    await withStateLock(
      paths.root,
      async () => {
        const state = await readState(paths.root);
        const d: NewDeployment = {
          snapshot: num,
          image: record.image,
          manifestDigest: record.manifestDigest as Digest,
          imageId: record.imageId!,
        };
        if (record.base !== undefined) d.parent = record.base;
        try {
          // snapper chose the number (tukit's snapshot exists already): adopt it.
          await writeState(paths.root, adoptSnapshot(state, d));
          io.out(`ocisnap: snapshot ${num} (${record.image}) is the pending deployment`);
        } catch (err) {
          if (!(err instanceof StateTransitionError)) throw err;
          io.out(`ocisnap: snapshot ${num} not recorded as a deployment: ${err.message}`);
        }
      },
      { timeoutMs: 30_000 },
    );
  }
  await removeRecord(paths.stateDir, num);
}

async function abortPost(paths: SysrootPaths, num: number): Promise<void> {
  // tukit deletes the snapshot itself; if it could not, take ocisnap's leftovers out of it.
  const sub = snapshotPath(paths, num);
  if (await isSubvolume(sub)) await rm(join(sub, LOCAL_ETC_ASIDE), { recursive: true, force: true }).catch(() => undefined);
  await removeRecord(paths.stateDir, num);
}

/** Runs one stage; returns the exit status (non-zero: tukit should abort). */
export async function runTukitPlugin(argv: readonly string[], env: Env = process.env, io: PluginIo = defaultIo): Promise<number> {
  const [stage, ...args] = argv;
  try {
    const paths = sysrootPaths(env['OCISNAP_SYSROOT'] || '/');
    switch (stage) {
      case undefined:
        throw new UsageError(`usage: ocisnap-tukit-plugin STAGE [ARGS...] (stages: ${TUKIT_STAGES.join(', ')})`);
      case 'init-post':
        await initPost(paths, pathArg(args[0], stage), snapshotId(args[1], stage), env, io);
        break;
      case 'execute-pre':
      case 'callExt-pre':
      case 'finalize-pre':
      case 'keep-pre':
        await requireFilled(paths, snapshotId(args[1], stage), stage);
        break;
      case 'finalize-post':
        await finalizePost(paths, snapshotId(args[0], stage), args[1] === 'discarded', io);
        break;
      case 'abort-post':
        await abortPost(paths, snapshotId(args[0], stage));
        break;
      default:
        // init-pre, resume-*, *-post of execute/callExt/keep, reboot-pre and stages a newer tukit adds.
        break;
    }
    return 0;
  } catch (err) {
    const message = err instanceof OcisnapError ? err.message : `internal error: ${describeError(err)}`;
    io.err(`ocisnap tukit plugin (${stage ?? 'no stage'}): ${message.split('\n')[0]}`);
    return err instanceof OcisnapError ? err.exitCode : 70;
  }
}
