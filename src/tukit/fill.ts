/**
 * Puts an image from the layer store into a snapshot tukit has made and
 * mounted: the snapshot's tree is replaced by the image's, copied with
 * reflinks (`cp -a --reflink=always`, so the data extents stay shared with
 * the store), and its old /etc is merged in as a deploy does (etc-merge.ts).
 *
 * tukit cannot be given another subvolume (lib/Transaction.cpp: the snapshot
 * is created by the snapshot manager and bind-mounted at a temporary PATH,
 * with /dev, /proc, /sys, /var/log, /var/cache, /.snapshots, tmpfs /tmp, /run,
 * /var/tmp and BINDDIRS mounted below it), so the image goes into tukit's
 * subvolume in place. The copy is written through `/.snapshots/ID/snapshot`,
 * not through PATH, so nothing lands in the host directories mounted under
 * PATH; the directories those mounts sit on are kept (removing a mount point
 * fails with EBUSY) and only get the image's metadata.
 */
import { readdir, readFile, rm, rename } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { isSubvolume, showSubvolume } from '../btrfs/index.js';
import { describeError, OcisnapError } from '../errors.js';
import { acquireImage, imageOfSnapshot, imageUserdata, isDir, openStore, topLayerPath } from '../deploy/deploy.js';
import { formatEtcMergeReport, mergeEtc, type EtcMergeReport } from '../deploy/etc-merge.js';
import { listSnapshots, setUserdata } from '../deploy/snapper.js';
import { parseMountInfo, snapshotPath, type SysrootPaths } from '../deploy/sysroot.js';
import type { PolicyConfig } from '../pull/policy-check.js';
import type { SourceConfig } from '../pull/source-config.js';

/** Where the snapshot's own /etc waits while the image is copied in (inside the snapshot: a rename). */
export const LOCAL_ETC_ASIDE = '.ocisnap-tukit-local-etc';

/** Filling the snapshot failed. */
export class FillError extends OcisnapError {}

export interface FillOptions {
  paths: SysrootPaths;
  /** tukit's snapshot ID (a snapper number). */
  snapshot: number;
  /** tukit's PATH (bind mount of the snapshot): mounts below it are kept. */
  bindPath?: string;
  /** The image as the user named it (docker://REF, oci:DIR[:TAG], oci-archive:FILE[:TAG], REF or a stored image ID). */
  image: string;
  pull: boolean;
  policy?: PolicyConfig;
  sourceConfig?: SourceConfig;
  log?: (line: string) => void;
  mountInfoPath?: string;
}

export interface FillResult {
  image: string;
  manifestDigest: string;
  imageId: string;
  /** The snapshot tukit copied from, when found (by btrfs parent UUID). */
  base?: number;
  etc?: EtcMergeReport;
}

/** Paths (relative to PATH) of the mounts below `bindPath`, from mountinfo. */
export async function mountsBelow(bindPath: string, mountInfoPath = '/proc/self/mountinfo'): Promise<string[]> {
  const prefix = bindPath.replace(/\/+$/, '') + '/';
  const entries = parseMountInfo(await readFile(mountInfoPath, 'utf8'));
  return [...new Set(entries.filter((e) => e.mountPoint.startsWith(prefix)).map((e) => e.mountPoint.slice(prefix.length)))];
}

/** The snapshot `target` was made from: the one whose UUID is its btrfs parent UUID. */
async function baseSnapshotOf(paths: SysrootPaths, num: number): Promise<number | undefined> {
  const parent = (await showSubvolume(snapshotPath(paths, num))).parentUuid;
  if (parent === undefined) return undefined;
  for (const s of await listSnapshots(paths.snapshotsDir)) {
    if (s.num === num) continue;
    const info = await showSubvolume(snapshotPath(paths, s.num)).catch(() => undefined);
    if (info?.uuid === parent) return s.num;
  }
  return undefined;
}

/**
 * Removes everything in `dir` except the kept paths (mount points), going
 * into their parents to remove those parents' other entries.
 */
async function clearExcept(dir: string, rel: string, keep: Set<string>, parents: Set<string>): Promise<void> {
  for (const name of await readdir(dir)) {
    const r = rel === '' ? name : `${rel}/${name}`;
    if (keep.has(r)) continue;
    const path = join(dir, name);
    if (parents.has(r) && (await isDir(path))) {
      await clearExcept(path, r, keep, parents);
      continue;
    }
    await rm(path, { recursive: true, force: true });
  }
}

/** Replaces the tree of tukit's snapshot `opts.snapshot` with the image's; see the file comment. */
export async function fillSnapshot(opts: FillOptions): Promise<FillResult> {
  const { paths } = opts;
  const log = opts.log ?? (() => undefined);
  const target = snapshotPath(paths, opts.snapshot);
  if (!(await isSubvolume(target))) throw new FillError(`tukit's snapshot ${opts.snapshot} is not a btrfs subvolume at ${target}`);

  const store = await openStore(paths);
  const acquired = await acquireImage(store, { ...opts, log });
  const record = acquired.record;
  const layer = await topLayerPath(store, record, opts.image);

  const base = await baseSnapshotOf(paths, opts.snapshot);
  const baseImage = base === undefined ? undefined : await imageOfSnapshot(paths, store, base);
  const baseEtc = baseImage ? join(store.layerPath(baseImage.layer), 'etc') : undefined;

  const mounted = opts.bindPath === undefined ? [] : await mountsBelow(opts.bindPath, opts.mountInfoPath);
  // Mounts straight on the snapshot's own path too (none under tukit, but be safe).
  mounted.push(...(await mountsBelow(target, opts.mountInfoPath)));
  if (mounted.some((m) => m === 'etc' || m.startsWith('etc/'))) {
    throw new FillError(`/etc of tukit's snapshot ${opts.snapshot} is a separate mount (an /etc overlay?): not supported`);
  }
  const keep = new Set(mounted);
  const parents = new Set<string>();
  for (const m of mounted) {
    const parts = m.split('/');
    for (let i = 1; i < parts.length; i++) parents.add(parts.slice(0, i).join('/'));
  }

  try {
    const aside = join(target, LOCAL_ETC_ASIDE);
    await rm(aside, { recursive: true, force: true });
    const hadEtc = await isDir(join(target, 'etc'));
    if (hadEtc) await rename(join(target, 'etc'), aside);
    keep.add(LOCAL_ETC_ASIDE);
    // tukit's flag file for --discard (lib/Transaction.cpp init/finalize) belongs to tukit.
    keep.add('discardIfNoChange');
    await clearExcept(target, '', keep, parents);

    const cp = await execa('cp', ['-a', '--reflink=always', `${layer}/.`, `${target}/`], { reject: false, stdin: 'ignore' });
    if (cp.exitCode !== 0) {
      const line = cp.stderr.split('\n').find(Boolean) ?? cp.shortMessage;
      throw new FillError(`copying image ${opts.image} into snapshot ${opts.snapshot} failed: ${line}`);
    }

    let etc: EtcMergeReport | undefined;
    if (hadEtc) {
      const targetEtc = join(target, 'etc');
      if (!(await isDir(targetEtc))) throw new FillError(`image ${opts.image} has no /etc directory; refusing to fill a root without one`);
      log(
        baseEtc !== undefined && (await isDir(baseEtc))
          ? `/etc of snapshot ${base} merged against its image's /etc`
          : `/etc merged without a base (the image snapshot ${base ?? '?'} came from is unknown): local wins where they differ`,
      );
      etc = await mergeEtc(baseEtc !== undefined && (await isDir(baseEtc)) ? { base: baseEtc, local: aside, target: targetEtc } : { local: aside, target: targetEtc });
      for (const line of formatEtcMergeReport(etc)) log(line);
    }
    await rm(aside, { recursive: true, force: true });

    await setUserdata(paths.snapshotsDir, opts.snapshot, imageUserdata(opts.image, acquired.manifestDigest, record.id));
    const result: FillResult = { image: opts.image, manifestDigest: acquired.manifestDigest, imageId: record.id };
    if (base !== undefined) result.base = base;
    if (etc) result.etc = etc;
    return result;
  } catch (err) {
    if (err instanceof OcisnapError) throw err;
    throw new FillError(`filling snapshot ${opts.snapshot} with ${opts.image} failed: ${describeError(err)}`, { cause: err });
  }
}
