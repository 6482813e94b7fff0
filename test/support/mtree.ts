/**
 * A canonical description of a directory tree, one line per path, for comparing
 * what ocisnap extracted with what Podman extracted.
 *
 * Why not `bsdtar --format=mtree`: libarchive's mtree writer (3.6) has no keyword
 * for extended attributes, and we must compare security.capability and user.*
 * xattrs. So we walk the tree ourselves: lstat with bigint (ns mtimes, 64-bit
 * rdev), llistxattr/lgetxattr from the native addon (src/sys/native.ts).
 *
 * Line format (fields separated by one space, path first, keys sorted as shown):
 *   <path> type=<file|dir|symlink|char|block|fifo|socket> mode=<4 octal digits incl.
 *   suid/sgid/sticky> uid=N gid=N [size=N sha256=HEX] [link=<target>] [dev=MAJ,MIN]
 *   [mtime=SEC.NNNNNNNNN] [xattr.<name>=<sha256 of value>...] [hardlink=<first path>]
 * Paths are relative to the root ("." is the root, then "./etc", ...), sorted by their
 * bytes. Bytes outside printable ASCII that are not UTF-8 letters (control
 * characters, space, backslash) are escaped as \ooo octal, as mtree(5) does.
 * `hardlink=` appears on every member of a group of paths sharing one inode and
 * names the first of them (in sort order), so a missing link shows up on both sides.
 *
 * Left out on purpose: atime/ctime/birth time (never reproducible), directory sizes
 * and block counts (filesystem-specific; Podman writes sparse files densely, an
 * extractor that keeps the holes produces the same content and the same line),
 * `security.selinux` (set by the host policy, not the image), and by default the
 * root's own mtime: the root of an extraction is created by the store (a fresh btrfs
 * subvolume, whose mtime is "now"), and layer tars normally carry no "./" entry, so
 * its mtime says nothing about the image. Pass `{ rootMtime: true }` to include it.
 * The root's mode stays: containers/storage makes a layer root 0555
 * (drivers/btrfs/btrfs.go Create, defaultPerms); use withoutRoot() to drop the line.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir, readlink } from 'node:fs/promises';
import type { BigIntStats } from 'node:fs';
import { join } from 'node:path';
import { sys } from '../../src/sys/native.js';

export interface TreeManifestOptions {
  /** Include the root directory's own mtime (default false, see above). */
  rootMtime?: boolean;
  /** xattr names never listed. Default ['security.selinux']. */
  ignoreXattrs?: string[];
  /** Relative paths ("./a/b") to leave out, with everything below them. */
  exclude?: (relPath: string) => boolean;
}

function escapePath(p: string): string {
  let out = '';
  for (const ch of p) {
    const cp = ch.codePointAt(0)!;
    if (cp <= 0x20 || cp === 0x7f || ch === '\\' || cp === 0xfffd) {
      for (const b of Buffer.from(ch, 'utf8')) out += '\\' + b.toString(8).padStart(3, '0');
    } else {
      out += ch;
    }
  }
  return out;
}

function typeOf(st: BigIntStats): string {
  if (st.isFile()) return 'file';
  if (st.isDirectory()) return 'dir';
  if (st.isSymbolicLink()) return 'symlink';
  if (st.isCharacterDevice()) return 'char';
  if (st.isBlockDevice()) return 'block';
  if (st.isFIFO()) return 'fifo';
  if (st.isSocket()) return 'socket';
  return 'unknown';
}

/** glibc's gnu_dev_major/gnu_dev_minor. */
function devParts(rdev: bigint): [bigint, bigint] {
  const major = ((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn);
  const minor = (rdev & 0xffn) | ((rdev >> 12n) & ~0xffn);
  return [major, minor];
}

function sha256Hex(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

async function fileSha256(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

interface Node {
  rel: string;
  abs: string;
  st: BigIntStats;
}

async function walk(root: string, exclude: ((p: string) => boolean) | undefined): Promise<Node[]> {
  const nodes: Node[] = [];
  const visit = async (rel: string, abs: string): Promise<void> => {
    const st = await lstat(abs, { bigint: true });
    nodes.push({ rel, abs, st });
    if (!st.isDirectory()) return;
    const names = await readdir(abs, { encoding: 'buffer' });
    for (const nameBuf of names) {
      const name = nameBuf.toString('utf8');
      if (!Buffer.from(name, 'utf8').equals(nameBuf)) {
        throw new Error(`treeManifest: non-UTF-8 file name under ${abs}: ${nameBuf.toString('hex')}`);
      }
      const childRel = `${rel}/${name}`;
      if (exclude?.(childRel) === true) continue;
      await visit(childRel, join(abs, name));
    }
  };
  await visit('.', root);
  return nodes.sort((a, b) => Buffer.compare(Buffer.from(a.rel, 'utf8'), Buffer.from(b.rel, 'utf8')));
}

/** A canonical, sorted, line-per-path description of the tree at `root` (see the file comment). */
export async function treeManifest(root: string, opts: TreeManifestOptions = {}): Promise<string> {
  const ignore = new Set(opts.ignoreXattrs ?? ['security.selinux']);
  const nodes = await walk(root, opts.exclude);

  // Hardlink groups: (dev, ino) of non-directories seen more than once in the tree.
  const byInode = new Map<string, string[]>();
  for (const n of nodes) {
    if (n.st.isDirectory() || n.st.nlink < 2n) continue;
    const key = `${n.st.dev}:${n.st.ino}`;
    const group = byInode.get(key) ?? [];
    group.push(n.rel);
    byInode.set(key, group);
  }

  const lines: string[] = [];
  for (const n of nodes) {
    const { st } = n;
    const type = typeOf(st);
    const f: string[] = [
      escapePath(n.rel),
      `type=${type}`,
      `mode=${(Number(st.mode) & 0o7777).toString(8).padStart(4, '0')}`,
      `uid=${st.uid}`,
      `gid=${st.gid}`,
    ];
    if (type === 'file') {
      f.push(`size=${st.size}`, `sha256=${await fileSha256(n.abs)}`);
    } else if (type === 'symlink') {
      f.push(`link=${escapePath(await readlink(n.abs))}`);
    } else if (type === 'char' || type === 'block') {
      const [maj, min] = devParts(st.rdev);
      f.push(`dev=${maj},${min}`);
    }
    if (n.rel !== '.' || opts.rootMtime === true) {
      const sec = st.mtimeNs / 1_000_000_000n;
      const nsec = st.mtimeNs % 1_000_000_000n;
      f.push(`mtime=${sec}.${nsec.toString().padStart(9, '0')}`);
    }
    for (const name of sys.llistxattr(n.abs).sort()) {
      if (ignore.has(name)) continue;
      const value = sys.lgetxattr(n.abs, name);
      f.push(`xattr.${escapePath(name)}=${value === null ? 'absent' : sha256Hex(value)}`);
    }
    if (!st.isDirectory() && st.nlink >= 2n) {
      const group = byInode.get(`${st.dev}:${st.ino}`);
      if (group !== undefined && group.length >= 2) f.push(`hardlink=${escapePath(group[0]!)}`);
    }
    lines.push(f.join(' '));
  }
  return lines.join('\n') + '\n';
}

/** The manifest without the root's line (the root of an extraction belongs to the extractor: see above). */
export function withoutRoot(manifest: string): string {
  return manifest
    .split('\n')
    .filter((l) => !l.startsWith('. '))
    .join('\n');
}

/** Parses a manifest into path → (key → value); the path is the first field. */
export function parseManifest(manifest: string): Map<string, Map<string, string>> {
  const out = new Map<string, Map<string, string>>();
  for (const line of manifest.split('\n')) {
    if (line === '') continue;
    const [path, ...fields] = line.split(' ');
    const kv = new Map<string, string>();
    for (const field of fields) {
      const i = field.indexOf('=');
      kv.set(field.slice(0, i), field.slice(i + 1));
    }
    out.set(path!, kv);
  }
  return out;
}

/**
 * The differences between two manifests, one human-readable line each, for a
 * test failure message; empty when they are equal.
 */
export function diffManifests(a: string, b: string, names: [string, string] = ['a', 'b']): string[] {
  const ma = parseManifest(a);
  const mb = parseManifest(b);
  const paths = [...new Set([...ma.keys(), ...mb.keys()])].sort((x, y) =>
    Buffer.compare(Buffer.from(x, 'utf8'), Buffer.from(y, 'utf8')),
  );
  const out: string[] = [];
  for (const p of paths) {
    const fa = ma.get(p);
    const fb = mb.get(p);
    if (fa === undefined) {
      out.push(`only in ${names[1]}: ${p} ${[...fb!].map(([k, v]) => `${k}=${v}`).join(' ')}`);
      continue;
    }
    if (fb === undefined) {
      out.push(`only in ${names[0]}: ${p} ${[...fa].map(([k, v]) => `${k}=${v}`).join(' ')}`);
      continue;
    }
    const keys = [...new Set([...fa.keys(), ...fb.keys()])].sort();
    const diffs = keys
      .filter((k) => fa.get(k) !== fb.get(k))
      .map((k) => `${k}: ${fa.get(k) ?? '(none)'} ≠ ${fb.get(k) ?? '(none)'}`);
    if (diffs.length > 0) out.push(`${p}: ${diffs.join('; ')}`);
  }
  return out;
}
