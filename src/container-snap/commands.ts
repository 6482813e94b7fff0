/**
 * container-snap's command set (dcermak/container-snap bin/container-snap.go)
 * on ocisnap's layer store and snapper snapshots, so that tukit's
 * container-snap backend (openSUSE/transactional-update
 * lib/Snapshot/ContainerSnap.cpp) can drive ocisnap. Each function returns
 * the lines container-snap prints on stdout; IDs are explained in ids.ts.
 *
 * Where ocisnap does more than container-snap: `create-snapshot IMAGE` makes
 * a snapper snapshot (info.xml, number never reused) with the running
 * system's /etc merged in, as `ocisnap deploy` does; `switch IMAGE` is
 * create-snapshot + switch (the image's store layer never becomes the root,
 * as it does with container-snap); `switch N` records the snapshot as a
 * pending deployment when it holds an image; `delete --id` refuses the
 * default and the booted snapshot.
 */
import {
  getDefaultSubvolume,
  getReadonly,
  isSubvolume,
  setDefaultSubvolume,
  setReadonly,
  showSubvolume,
  snapshotSubvolume,
  syncFilesystem,
} from '../btrfs/index.js';
import { OcisnapError } from '../errors.js';
import {
  currentSystem,
  discardSnapshot,
  IMAGE_ID_USERDATA,
  mergeCurrentEtc,
  openStore,
  pullForDeploy,
  withRecoveredState,
} from '../deploy/deploy.js';
import {
  deploymentSnapshotInfo,
  listSnapshots,
  OCISNAP_USERDATA,
  readInfoXml,
  reserveSnapshotNumber,
  writeInfoXml,
  type SnapshotInfo,
} from '../deploy/snapper.js';
import {
  adoptSnapshot,
  beginDeploy,
  endDeploy,
  findDeployment,
  readState,
  removeDeployment,
  StateTransitionError,
  withStateLock,
  writeState,
} from '../deploy/state.js';
import { bootedSubvolume, checkSysroot, snapshotPath, type SysrootPaths } from '../deploy/sysroot.js';
import type { Digest } from '../oci/types.js';
import { loadPolicyConfig } from '../pull/policy-check.js';
import type { ProgressSink } from '../pull/progress.js';
import type { ImageRecord, Store } from '../store/index.js';
import { formatGoTime, formatSnapshotId, parseSnapshotId, type SnapshotRef } from './ids.js';

/** A container-snap command failed; one line for the user. */
export class ContainerSnapError extends OcisnapError {}

export interface Context {
  paths: SysrootPaths;
  /** Informational lines (stderr in the CLI). */
  log: (line: string) => void;
}

// ---------------------------------------------------------------- resolution

interface ResolvedImage {
  kind: 'image';
  record: ImageRecord & { layer: string };
  path: string;
}

interface ResolvedSnapshot {
  kind: 'snapshot';
  num: number;
  path: string;
  info: SnapshotInfo;
  imageId?: string;
}

type Resolved = ResolvedImage | ResolvedSnapshot;

async function findImageById(store: Store, imageId: string): Promise<ImageRecord & { layer: string }> {
  const record = await store.findImage(imageId).catch(() => undefined);
  if (!record) throw new ContainerSnapError(`No image with id '${imageId}' found in image store`);
  if (record.layer === undefined) throw new ContainerSnapError(`image ${record.id} has no layers`);
  return record as ImageRecord & { layer: string };
}

async function imageIdOf(ctx: Context, num: number, info: SnapshotInfo): Promise<string | undefined> {
  const fromInfo = info.userdata[IMAGE_ID_USERDATA];
  if (fromInfo !== undefined) return fromInfo;
  return findDeployment(await readState(ctx.paths.root), num)?.imageId;
}

async function resolveSnapshot(ctx: Context, num: number, named?: string): Promise<ResolvedSnapshot> {
  const path = snapshotPath(ctx.paths, num);
  if (!(await isSubvolume(path))) throw new ContainerSnapError(`snapshot ${num} does not exist (${path} is not a btrfs subvolume)`);
  const info = await readInfoXml(ctx.paths.snapshotsDir, num).catch((err: unknown) => {
    throw new ContainerSnapError(`snapshot ${num} is not a valid snapper snapshot: ${(err as Error).message}`, { cause: err });
  });
  const imageId = await imageIdOf(ctx, num, info);
  if (named !== undefined && named !== imageId) {
    throw new ContainerSnapError(`snapshot ${num} does not hold image ${named}` + (imageId ? ` (its ID is ${formatSnapshotId(num, imageId)})` : ''));
  }
  const r: ResolvedSnapshot = { kind: 'snapshot', num, path, info };
  if (imageId !== undefined) r.imageId = imageId;
  return r;
}

async function resolve(ctx: Context, id: string, store?: Store): Promise<Resolved> {
  const ref: SnapshotRef = parseSnapshotId(id);
  if (ref.kind === 'snapshot') return resolveSnapshot(ctx, ref.num, ref.imageId);
  const s = store ?? (await openStore(ctx.paths));
  const record = await findImageById(s, ref.imageId);
  return { kind: 'image', record, path: s.layerPath(record.layer) };
}

/** The container-snap ID of the subvolume with btrfs ID `subvolId`. */
async function idOfSubvolume(ctx: Context, subvolId: number): Promise<string> {
  for (const s of await listSnapshots(ctx.paths.snapshotsDir)) {
    const sub = await showSubvolume(snapshotPath(ctx.paths, s.num)).catch(() => undefined);
    if (sub?.id === subvolId) return formatSnapshotId(s.num, await imageIdOf(ctx, s.num, s));
  }
  const store = await openStore(ctx.paths);
  for (const image of await store.listImages()) {
    if (image.layer === undefined) continue;
    const sub = await showSubvolume(store.layerPath(image.layer)).catch(() => undefined);
    if (sub?.id === subvolId) return image.id;
  }
  throw new ContainerSnapError(`No matching snapshot with subvolume ID ${subvolId} found`);
}

// ---------------------------------------------------------------- images

const progressLines =
  (out: (line: string) => void): ProgressSink =>
  (event) => {
    if (event.type === 'layer-downloaded') out(`Pulled layer ${event.digest}`);
  };

/** `pull URL`: a registry reference (docker:// optional) or any source ocisnap reads. */
export async function pull(ctx: Context, url: string, out: (line: string) => void): Promise<void> {
  await checkSysroot(ctx.paths);
  const store = await openStore(ctx.paths);
  const policy = await loadPolicyConfig();
  const { record } = await pullForDeploy(store, url, policy, { progress: progressLines(out) });
  ctx.log(`Pulled image with ID ${record.id}, saved as ${record.layer ?? '(no layers)'}`);
}

/** `load [URL] [-i ARCHIVE]`: URL with a transport, or an OCI archive file. */
export async function load(ctx: Context, url: string | undefined, input: string | undefined, out: (line: string) => void): Promise<void> {
  let spec: string;
  if (input !== undefined && input !== '') spec = `oci-archive:${input}`;
  else if (url !== undefined && url !== '') spec = url;
  else throw new ContainerSnapError('Either URL argument or --input/-i flag must be provided');
  if (!/^(docker:\/\/|oci:|oci-archive:|dir:)/.test(spec)) {
    throw new ContainerSnapError(`${spec}: the image must be prefixed with a transport (docker://, oci:, oci-archive:, dir:)`);
  }
  await pull(ctx, spec, out);
}

/** `list-images`: `ID,Created,Name` lines (Created as Go prints a time, Name the first name or "unknown-name"). */
export async function listImages(ctx: Context): Promise<string[]> {
  const store = await openStore(ctx.paths);
  return (await store.listImages()).map((i) => `${i.id},${formatGoTime(i.created)},${i.names?.[0] ?? 'unknown-name'}`);
}

// ---------------------------------------------------------------- snapshots

/** `list-snapshots`: `# snapshot-id,ro`, then the images and the snapper snapshots. */
export async function listSnapshotIds(ctx: Context): Promise<string[]> {
  const lines = ['# snapshot-id,ro'];
  const store = await openStore(ctx.paths);
  for (const image of await store.listImages()) {
    if (image.layer === undefined) continue;
    const path = store.layerPath(image.layer);
    if (!(await isSubvolume(path))) continue;
    lines.push(`${image.id},${await getReadonly(path)}`);
  }
  for (const s of await listSnapshots(ctx.paths.snapshotsDir)) {
    lines.push(`${formatSnapshotId(s.num, await imageIdOf(ctx, s.num, s))},${await getReadonly(snapshotPath(ctx.paths, s.num))}`);
  }
  return lines;
}

/** `get-root ID`: the directory holding the snapshot's (or image's) tree, with a trailing slash as container-snap prints it. */
export async function getRoot(ctx: Context, id: string): Promise<string> {
  return `${(await resolve(ctx, id)).path}/`;
}

export async function getReadonlyState(ctx: Context, id: string): Promise<string> {
  return String(await getReadonly((await resolve(ctx, id)).path));
}

export async function setReadonlyState(ctx: Context, id: string, readonly: boolean): Promise<void> {
  const r = await resolve(ctx, id);
  if (r.kind === 'image') throw new ContainerSnapError(`${id} is an image in the layer store; only snapshots change their read-only state`);
  await setReadonly(r.path, readonly);
}

export async function getDefault(ctx: Context): Promise<string> {
  return idOfSubvolume(ctx, (await getDefaultSubvolume(ctx.paths.root)).id);
}

/** `get-current`: the booted subvolume (`subvolid=` of `/`); with --sysroot, which boots nothing, the default. */
export async function getCurrent(ctx: Context): Promise<string> {
  if (!ctx.paths.running) return getDefault(ctx);
  const booted = await bootedSubvolume();
  if (!booted) throw new ContainerSnapError('/ is not a btrfs subvolume');
  return idOfSubvolume(ctx, booted.id);
}

/**
 * `create-snapshot ID`: a new writable snapper snapshot from an image (its
 * top layer, /etc merged from the current system) or from a snapshot (plain
 * copy). Returns the new ID. Crash-safe like a deploy: the state's inProgress
 * marker lets the next ocisnap command remove a half-made snapshot.
 */
export async function createSnapshot(ctx: Context, id: string): Promise<string> {
  const { paths } = ctx;
  await checkSysroot(paths);
  const store = await openStore(paths);
  return withRecoveredState(paths, ctx.log, async () => {
    const base = await resolve(ctx, id, store);
    const state = await readState(paths.root);
    const num = await reserveSnapshotNumber(paths.snapshotsDir, { above: state.highestSnapshot });
    await writeState(paths.root, beginDeploy(state, num, id));
    const target = snapshotPath(paths, num);
    try {
      let info: SnapshotInfo;
      let imageId: string | undefined;
      if (base.kind === 'image') {
        imageId = base.record.id;
        await snapshotSubvolume(base.path, target);
        const name = base.record.names?.[0] ?? base.record.id;
        const current = await currentSystem(paths, state, store);
        if (current.etc) ctx.log(current.describe);
        await mergeCurrentEtc(current, target, name, ctx.log);
        info = deploymentSnapshotInfo({
          num,
          image: name,
          manifestDigest: base.record.digest ?? '',
          cleanup: '',
          userdata: { [IMAGE_ID_USERDATA]: base.record.id },
        });
        info.description = `container-snap: ${name}`;
      } else {
        imageId = base.imageId;
        await snapshotSubvolume(base.path, target);
        const userdata: Record<string, string> = {};
        for (const key of [OCISNAP_USERDATA.image, OCISNAP_USERDATA.digest, IMAGE_ID_USERDATA]) {
          const v = base.info.userdata[key];
          if (v !== undefined) userdata[key] = v;
        }
        if (imageId !== undefined) userdata[IMAGE_ID_USERDATA] = imageId;
        info = { num, type: 'single', date: new Date(), description: `container-snap: snapshot of #${base.num}`, cleanup: '', userdata };
      }
      if (info.userdata[OCISNAP_USERDATA.digest] === '') delete info.userdata[OCISNAP_USERDATA.digest];
      await writeInfoXml(paths.snapshotsDir, info);
      await writeState(paths.root, endDeploy(await readState(paths.root)));
      return formatSnapshotId(num, imageId);
    } catch (err) {
      await discardSnapshot(paths, num);
      await writeState(paths.root, endDeploy(await readState(paths.root)));
      throw err;
    }
  });
}

/**
 * `switch ID`: an image gets a new snapshot (create-snapshot) which is switched to;
 * a snapshot becomes the btrfs default, and when it holds an image and is
 * not yet a deployment, the pending one.
 */
export async function switchTo(ctx: Context, id: string): Promise<void> {
  const { paths } = ctx;
  await checkSysroot(paths);
  const ref = parseSnapshotId(id);
  if (ref.kind === 'image') {
    // As create-snapshot + switch: the image was checked against the policy when pulled.
    const made = await createSnapshot(ctx, id);
    ctx.log(`deployed ${ref.imageId} as ${made}`);
    return switchTo(ctx, made);
  }
  await withRecoveredState(paths, ctx.log, async () => {
    const snap = await resolveSnapshot(ctx, ref.num, ref.imageId);
    await setDefaultSubvolume((await showSubvolume(snap.path)).id, paths.root);
    await syncFilesystem(paths.root);
    const state = await readState(paths.root);
    const digest = snap.info.userdata[OCISNAP_USERDATA.digest];
    if (findDeployment(state, snap.num) || snap.imageId === undefined || digest === undefined) return;
    const image = snap.info.userdata[OCISNAP_USERDATA.image] ?? snap.imageId;
    try {
      // create-snapshot (or snapper, for tukit) already took this number.
      await writeState(paths.root, adoptSnapshot(state, { snapshot: snap.num, image, manifestDigest: digest as Digest, imageId: snap.imageId }));
    } catch (err) {
      if (!(err instanceof StateTransitionError)) throw err;
      ctx.log(`snapshot ${snap.num} not recorded as a deployment: ${err.message}`);
    }
  });
}

/** `delete --id ID`: an image leaves the store; a snapshot is removed (not the default nor the booted one). */
export async function deleteById(ctx: Context, id: string): Promise<void> {
  const { paths } = ctx;
  const ref = parseSnapshotId(id);
  if (ref.kind === 'image') {
    const store = await openStore(paths);
    const record = await findImageById(store, ref.imageId);
    await store.removeImage(record.id);
    return;
  }
  await withStateLock(paths.root, async () => {
    const snap = await resolveSnapshot(ctx, ref.num, ref.imageId);
    const subId = (await showSubvolume(snap.path)).id;
    if ((await getDefaultSubvolume(paths.root)).id === subId) throw new ContainerSnapError(`snapshot ${snap.num} is the default subvolume (what boots next); switch to another first`);
    if (paths.running && (await bootedSubvolume())?.id === subId) throw new ContainerSnapError(`snapshot ${snap.num} is the running system`);
    const state = await readState(paths.root);
    if (findDeployment(state, snap.num)) {
      try {
        await writeState(paths.root, removeDeployment(state, snap.num));
      } catch (err) {
        if (err instanceof StateTransitionError) throw new ContainerSnapError(`cannot delete ${id}: ${err.message}`, { cause: err });
        throw err;
      }
    }
    await discardSnapshot(paths, snap.num);
  });
}

/** `delete --url NAME`: every image with that name leaves the store. */
export async function deleteByUrl(ctx: Context, name: string): Promise<void> {
  const store = await openStore(ctx.paths);
  const images = (await store.listImages()).filter((i) => i.names?.includes(name));
  if (images.length === 0) throw new ContainerSnapError(`no image named ${name} in the layer store`);
  for (const image of images) await store.removeImage(image.id);
}
