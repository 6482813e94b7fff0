/**
 * Reading btrfs metadata through the native tree-search and inode-lookup
 * ioctls: the root tree's subvolume links and the default subvolume. Item
 * layouts are linux/btrfs_tree.h (all little-endian, packed). The root tree
 * and other trees' lookups need CAP_SYS_ADMIN, as for `btrfs subvolume list`.
 */
import { sys } from '../sys/native.js';

/** linux/btrfs_tree.h object ids and key types. */
export const ROOT_TREE_OBJECTID = 1;
export const FS_TREE_OBJECTID = 5;
const ROOT_TREE_DIR_OBJECTID = 6;
export const FIRST_FREE_OBJECTID = 256;
/** BTRFS_LAST_FREE_OBJECTID (-256ULL), passed to the addon as a negative number. */
const LAST_FREE_OBJECTID = -256;
const U64_MAX = -1;
const DIR_ITEM_KEY = 84;
const ROOT_ITEM_KEY = 132;
const ROOT_BACKREF_KEY = 144;
const ROOT_REF_KEY = 156;

/** A link of subvolume `childId` into directory `dirId` of subvolume `parentId`. */
export interface RootRef {
  parentId: number;
  childId: number;
  dirId: number;
  name: string;
}

/** struct btrfs_root_ref: dirid u64, sequence u64, name_len u16, then the name. */
function parseRootRef(data: Buffer, parentId: number, childId: number): RootRef {
  const nameLen = data.readUInt16LE(16);
  return { parentId, childId, dirId: Number(data.readBigUInt64LE(0)), name: data.toString('utf8', 18, 18 + nameLen) };
}

/** The subvolumes linked directly inside subvolume `id` (ROOT_REF items keyed by the parent). */
export function childRefs(fsPath: string, id: number): RootRef[] {
  return sys
    .btrfsTreeSearch(fsPath, ROOT_TREE_OBJECTID, id, id, ROOT_REF_KEY, ROOT_REF_KEY, 0, U64_MAX)
    .filter((item) => item.type === ROOT_REF_KEY)
    .map((item) => parseRootRef(item.data, id, item.offset));
}

/** Where subvolume `id` is linked (its ROOT_BACKREF item); undefined for the top level or an unlinked one. */
export function parentRef(fsPath: string, id: number): RootRef | undefined {
  const [item] = sys
    .btrfsTreeSearch(fsPath, ROOT_TREE_OBJECTID, id, id, ROOT_BACKREF_KEY, ROOT_BACKREF_KEY, 0, U64_MAX)
    .filter((i) => i.type === ROOT_BACKREF_KEY);
  return item ? parseRootRef(item.data, item.offset, id) : undefined;
}

/** Path of `ref` inside its parent subvolume: the directory path (from INO_LOOKUP) and the name. */
export function pathInParent(fsPath: string, ref: RootRef): string {
  const dir = ref.dirId === FIRST_FREE_OBJECTID ? '' : sys.btrfsInoLookup(fsPath, ref.parentId, ref.dirId).name;
  return `${dir}${ref.name}`;
}

/**
 * Path of subvolume `id` relative to the top-level subvolume ('' for the top
 * level), following ROOT_BACKREF links upwards; undefined when it is not linked.
 * `known` caches paths by id across calls.
 */
export function subvolumeFsPath(fsPath: string, id: number, known = new Map<number, string>()): string | undefined {
  if (id === FS_TREE_OBJECTID) return '';
  const cached = known.get(id);
  if (cached !== undefined) return cached;
  const ref = parentRef(fsPath, id);
  if (!ref) return undefined;
  return fsPathBelow(fsPath, ref, known);
}

/** Path relative to the top level of the subvolume that `ref` links. */
export function fsPathBelow(fsPath: string, ref: RootRef, known = new Map<number, string>()): string | undefined {
  const parent = subvolumeFsPath(fsPath, ref.parentId, known);
  if (parent === undefined) return undefined;
  const own = pathInParent(fsPath, ref);
  const path = parent === '' ? own : `${parent}/${own}`;
  known.set(ref.childId, path);
  return path;
}

/** Every linked subvolume of the filesystem, with the generation of its root item, by id. */
export function allSubvolumes(fsPath: string): Array<{ ref: RootRef; generation: number }> {
  const items = sys.btrfsTreeSearch(
    fsPath,
    ROOT_TREE_OBJECTID,
    FIRST_FREE_OBJECTID,
    LAST_FREE_OBJECTID,
    ROOT_ITEM_KEY,
    ROOT_BACKREF_KEY,
    0,
    U64_MAX,
  );
  const generations = new Map<number, number>();
  const refs: RootRef[] = [];
  for (const item of items) {
    if (item.type === ROOT_ITEM_KEY) generations.set(item.objectId, rootItemGeneration(item.data));
    else if (item.type === ROOT_BACKREF_KEY) refs.push(parseRootRef(item.data, item.offset, item.objectId));
  }
  return refs.map((ref) => ({ ref, generation: generations.get(ref.childId) ?? 0 }));
}

/** struct btrfs_root_item: a 160-byte inode item, then generation u64. */
function rootItemGeneration(data: Buffer): number {
  return Number(data.readBigUInt64LE(160));
}

/** Generation of subvolume `id`'s root item; undefined once it is gone (deleted and cleaned). */
export function subvolumeGeneration(fsPath: string, id: number): number | undefined {
  const [item] = sys
    .btrfsTreeSearch(fsPath, ROOT_TREE_OBJECTID, id, id, ROOT_ITEM_KEY, ROOT_ITEM_KEY, 0, U64_MAX)
    .filter((i) => i.type === ROOT_ITEM_KEY);
  return item ? rootItemGeneration(item.data) : undefined;
}

/**
 * The default subvolume's id: the "default" dir item of the root tree
 * directory, as the kernel reads it at mount (fs/btrfs/super.c) and
 * BTRFS_IOC_DEFAULT_SUBVOL writes it. struct btrfs_dir_item: location key
 * (objectid u64, type u8, offset u64), transid u64, data_len u16, name_len u16,
 * type u8, then the name; several can share one item on a hash collision.
 */
export function defaultSubvolumeId(fsPath: string): number {
  const items = sys.btrfsTreeSearch(
    fsPath,
    ROOT_TREE_OBJECTID,
    ROOT_TREE_DIR_OBJECTID,
    ROOT_TREE_DIR_OBJECTID,
    DIR_ITEM_KEY,
    DIR_ITEM_KEY,
    0,
    U64_MAX,
  );
  for (const item of items) {
    if (item.type !== DIR_ITEM_KEY) continue;
    const d = item.data;
    for (let off = 0; off + 30 <= d.length; ) {
      const dataLen = d.readUInt16LE(off + 25);
      const nameLen = d.readUInt16LE(off + 27);
      if (d.toString('latin1', off + 30, off + 30 + nameLen) === 'default') return Number(d.readBigUInt64LE(off));
      off += 30 + nameLen + dataLen;
    }
  }
  // No "default" item: the kernel mounts the top level.
  return FS_TREE_OBJECTID;
}
