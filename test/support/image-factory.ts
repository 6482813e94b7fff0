/**
 * Builds OCI images for tests from declarative layer specs, without
 * `buildah run` / `podman run` (they do not work on the test machines).
 *
 * Each layer is a tar written byte by byte here (ustar headers + PAX extended
 * headers, POSIX.1-2001 pax format), so every feature the acceptance tests need is
 * under our control and the output is deterministic (same spec ⇒ same digests,
 * which is what layer-sharing tests rely on):
 * - PAX `path`/`linkpath` for long and non-ASCII names, `mtime` with ns,
 *   `SCHILY.xattr.NAME` with raw binary values (GNU tar and Go's archive/tar
 *   both read them; Go's validPAXRecord allows NUL bytes in xattr values),
 * - GNU sparse format 1.0 inside PAX (GNU.sparse.major/minor/name/realsize and a
 *   sparse map at the start of the data), the format `tar --sparse --format=posix`
 *   writes and Go's archive/tar (Podman) reads (reader.go readGNUSparsePAXHeaders,
 *   readGNUSparseMap1x0). tar-stream can write neither binary PAX values nor sparse
 *   entries, and GNU tar from a staging dir would make the digests depend on the
 *   host (PaxHeaders names, atime/ctime records, PIDs in GNUSparseFile.%p), so we
 *   write the format ourselves; the self-test checks GNU tar extracts it.
 *
 * The output is an OCI image layout directory (image-spec image-layout.md):
 * `oci-layout`, `index.json` with an `org.opencontainers.image.ref.name`
 * annotation per tag, `blobs/sha256/<hex>`; several images may share one layout.
 * Docker schema2 images go to a skopeo `dir:` directory instead (see buildDockerImage).
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { execa } from 'execa';
import { compress as zstdCompress } from 'zstd-napi';

export type Compression = 'gzip' | 'zstd' | 'none';

/** A modification time: whole seconds, or seconds + nanoseconds (written as a PAX `mtime`). */
export type Mtime = number | { sec: number; nsec: number };

export interface EntryMeta {
  /** Permission bits incl. setuid/setgid/sticky (07777); default 0644 files, 0755 dirs, 0777 symlinks. */
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: Mtime;
  /** Extended attributes, written as PAX `SCHILY.xattr.<name>`; strings are UTF-8. */
  xattrs?: Record<string, string | Uint8Array>;
}

/** File content: bytes, a string (UTF-8), or a generator of chunks for large content. */
export type Content = string | Uint8Array | (() => Iterable<Uint8Array>);

export type LayerEntry =
  | ({ type: 'file'; path: string; content?: Content } & EntryMeta)
  /** A sparse file: `size` bytes apparent, only `data` segments stored (GNU sparse 1.0). */
  | ({ type: 'sparse'; path: string; size: number; data: Array<{ offset: number; bytes: Uint8Array }> } & EntryMeta)
  | ({ type: 'dir'; path: string } & EntryMeta)
  | ({ type: 'symlink'; path: string; target: string } & EntryMeta)
  /**
   * `target` is a path in the image (no leading slash), written earlier in this layer
   * or in a lower one. Unset metadata is copied from a target in the same layer; for
   * a target in a lower layer give it explicitly (the header's metadata wins, see
   * buildLayerTar).
   */
  | ({ type: 'hardlink'; path: string; target: string } & EntryMeta)
  | ({ type: 'char' | 'block'; path: string; major: number; minor: number } & EntryMeta)
  | ({ type: 'fifo'; path: string } & EntryMeta)
  /** `.wh.<name>` next to `path`: deletes `path` from lower layers (image-spec layer.md "Whiteouts"). */
  | { type: 'whiteout'; path: string }
  /** `<path>/.wh..wh..opq`: drops what lower layers put in directory `path`. */
  | { type: 'opaque'; path: string }
  /** Escape hatch for malformed-input tests: a raw entry name written as given. */
  | ({ type: 'raw-file'; name: string; content?: Content } & EntryMeta);

export interface LayerSpec {
  entries: LayerEntry[];
  /** Overrides the image's compression for this layer. */
  compression?: Compression;
  /** history[].created_by */
  createdBy?: string;
  /**
   * Insert entries for missing parent directories (mode 0755, root, `defaultMtime`)
   * before their first child, as real layer builders do. Default true.
   */
  autoParents?: boolean;
  /** mtime of entries that give none (and of auto parents). Default 2024-01-01T00:00:00Z. */
  defaultMtime?: Mtime;
}

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface ImageSpec {
  layers: LayerSpec[];
  /** Default layer compression. Default 'gzip'. */
  compression?: Compression;
  /** Default: the host (GOARCH naming). */
  platform?: Platform;
  /** config.created and history[].created. Default 2024-01-01T00:00:00Z. */
  created?: string;
  /** The runtime part of the config (`config` field): Env, Cmd, Labels, ... */
  runConfig?: Record<string, unknown>;
  /** Manifest annotations (OCI only). */
  annotations?: Record<string, string>;
}

export interface BuiltLayer {
  digest: string;
  size: number;
  mediaType: string;
  compression: Compression;
  diffId: string;
  /** Uncompressed tar size. */
  tarSize: number;
}

export interface BuiltImage {
  manifestDigest: string;
  manifestMediaType: string;
  manifestBytes: Buffer;
  configDigest: string;
  configBytes: Buffer;
  layers: BuiltLayer[];
  platform: Platform;
}

export interface BuiltIndex {
  indexDigest: string;
  indexMediaType: string;
  indexBytes: Buffer;
  images: BuiltImage[];
}

export const OciMedia = {
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  index: 'application/vnd.oci.image.index.v1+json',
  config: 'application/vnd.oci.image.config.v1+json',
  layer: {
    none: 'application/vnd.oci.image.layer.v1.tar',
    gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
    zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  },
} as const;

export const DockerMedia = {
  manifest: 'application/vnd.docker.distribution.manifest.v2+json',
  list: 'application/vnd.docker.distribution.manifest.list.v2+json',
  config: 'application/vnd.docker.container.image.v1+json',
  layer: {
    gzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
    none: 'application/vnd.docker.image.rootfs.diff.tar',
  },
} as const;

const defaultCreated = '2024-01-01T00:00:00Z';
const defaultMtimeSec = Date.parse(defaultCreated) / 1000;
const refNameAnnotation = 'org.opencontainers.image.ref.name';

/** The host platform in Go's GOOS/GOARCH naming (what Podman matches against). */
export function hostPlatform(): Platform {
  const archMap: Record<string, string> = {
    x64: 'amd64',
    arm64: 'arm64',
    arm: 'arm',
    ia32: '386',
    ppc64: 'ppc64le',
    s390x: 's390x',
    riscv64: 'riscv64',
    loong64: 'loong64',
  };
  const architecture = archMap[process.arch];
  if (architecture === undefined) throw new Error(`image-factory: unknown host arch ${process.arch}`);
  if (architecture === 'arm64') return { os: 'linux', architecture, variant: 'v8' };
  return { os: 'linux', architecture };
}

// ---------------------------------------------------------------------------
// Capability blob

/** Linux capability numbers (linux/capability.h) used by fixtures. */
export const Cap = { CAP_CHOWN: 0, CAP_NET_BIND_SERVICE: 10, CAP_NET_RAW: 13, CAP_SYS_ADMIN: 21 } as const;

/**
 * A `security.capability` value: struct vfs_cap_data revision 2 (linux/capability.h):
 * le32 magic_etc = VFS_CAP_REVISION_2 (0x02000000) | VFS_CAP_FLAGS_EFFECTIVE (1 if
 * effective), then two {le32 permitted, le32 inheritable} words. `fileCapability([13], true)`
 * is `cap_net_raw+ep`.
 */
export function fileCapability(permitted: number[], effective: boolean, inheritable: number[] = []): Buffer {
  const buf = Buffer.alloc(20);
  buf.writeUInt32LE(0x02000000 | (effective ? 1 : 0), 0);
  const words = (caps: number[]): [number, number] => {
    const w: [number, number] = [0, 0];
    for (const c of caps) w[c >> 5] = (w[c >> 5]! | (1 << (c & 31))) >>> 0;
    return w;
  };
  const p = words(permitted);
  const i = words(inheritable);
  buf.writeUInt32LE(p[0], 4);
  buf.writeUInt32LE(i[0], 8);
  buf.writeUInt32LE(p[1], 12);
  buf.writeUInt32LE(i[1], 16);
  return buf;
}

// ---------------------------------------------------------------------------
// Tar writer (POSIX.1-2001 ustar + pax; see pax(1) "pax Interchange Format")

const block = 512;

function octal(value: number, width: number): string {
  // width includes the terminating NUL.
  const s = value.toString(8);
  if (s.length > width - 1) throw new Error(`tar: value ${value} does not fit in ${width} bytes`);
  return s.padStart(width - 1, '0');
}

function isPlainAscii(s: string): boolean {
  return /^[\x20-\x7e]*$/.test(s);
}

function paxRecord(key: string, value: string | Uint8Array): Buffer {
  const v = typeof value === 'string' ? Buffer.from(value, 'utf8') : Buffer.from(value);
  const body = Buffer.concat([Buffer.from(` ${key}=`, 'utf8'), v, Buffer.from('\n')]);
  // The length prefix counts itself: find the fixed point.
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

function pad(size: number): Buffer {
  const rem = size % block;
  return Buffer.alloc(rem === 0 ? 0 : block - rem);
}

interface RawHeader {
  name: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtimeSec: number;
  typeflag: string;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
}

function ustarHeader(h: RawHeader): Buffer {
  const buf = Buffer.alloc(block);
  const put = (s: string | Buffer, off: number, width: number): void => {
    const b = typeof s === 'string' ? Buffer.from(s, 'utf8') : s;
    if (b.length > width) throw new Error(`tar: field too long at ${off}: ${String(s)}`);
    b.copy(buf, off);
  };
  put(h.name, 0, 100);
  put(octal(h.mode & 0o7777, 8), 100, 8);
  put(octal(h.uid, 8), 108, 8);
  put(octal(h.gid, 8), 116, 8);
  put(octal(h.size, 12), 124, 12);
  put(octal(Math.max(0, h.mtimeSec), 12), 136, 12);
  put(h.typeflag, 156, 1);
  if (h.linkname !== undefined) put(h.linkname, 157, 100);
  put('ustar\0', 257, 6);
  put('00', 263, 2);
  put(h.uid === 0 ? 'root' : '', 265, 32);
  put(h.gid === 0 ? 'root' : '', 297, 32);
  put(octal(h.devmajor ?? 0, 8), 329, 8);
  put(octal(h.devminor ?? 0, 8), 337, 8);
  buf.fill(0x20, 148, 156);
  let sum = 0;
  for (const byte of buf) sum += byte;
  put(`${octal(sum, 7)}\0`, 148, 8);
  return buf;
}

/** The name for the ustar field: the name itself when it fits, else a short stand-in (PAX path carries the real one). */
function ustarName(name: string): string {
  if (isPlainAscii(name) && Buffer.byteLength(name) <= 100) return name;
  const ascii = name.replace(/[^\x20-\x7e]/g, '_');
  return ascii.length <= 100 ? ascii : ascii.slice(ascii.length - 100);
}

function mtimeParts(m: Mtime): { sec: number; nsec: number } {
  return typeof m === 'number' ? { sec: m, nsec: 0 } : m;
}

function paxTime(m: { sec: number; nsec: number }): string {
  return m.nsec === 0 ? String(m.sec) : `${m.sec}.${String(m.nsec).padStart(9, '0')}`;
}

function contentBytes(c: Content | undefined): Buffer {
  if (c === undefined) return Buffer.alloc(0);
  if (typeof c === 'string') return Buffer.from(c, 'utf8');
  if (c instanceof Uint8Array) return Buffer.from(c);
  return Buffer.concat([...c()].map((chunk) => Buffer.from(chunk)));
}

interface TarRecord {
  header: RawHeader;
  pax: Array<[string, string | Uint8Array]>;
  data: Buffer;
}

function splitPath(p: string): { dir: string; base: string } {
  const i = p.lastIndexOf('/');
  return i < 0 ? { dir: '', base: p } : { dir: p.slice(0, i), base: p.slice(i + 1) };
}

function normalizeImagePath(p: string): string {
  const trimmed = p.replace(/^\/+/, '').replace(/\/+$/, '');
  if (trimmed === '' || trimmed.split('/').some((c) => c === '' || c === '.' || c === '..')) {
    throw new Error(`image-factory: bad path ${JSON.stringify(p)} (use clean relative paths)`);
  }
  return trimmed;
}

function toRecord(e: LayerEntry, defaultMtime: Mtime): TarRecord {
  if (e.type === 'whiteout') {
    const { dir, base } = splitPath(normalizeImagePath(e.path));
    const name = dir === '' ? `.wh.${base}` : `${dir}/.wh.${base}`;
    return plainRecord(name, '0', { mode: 0o644, uid: 0, gid: 0, mtime: defaultMtime }, Buffer.alloc(0));
  }
  if (e.type === 'opaque') {
    const name = `${normalizeImagePath(e.path)}/.wh..wh..opq`;
    return plainRecord(name, '0', { mode: 0o644, uid: 0, gid: 0, mtime: defaultMtime }, Buffer.alloc(0));
  }
  const meta: Required<Omit<EntryMeta, 'xattrs'>> & Pick<EntryMeta, 'xattrs'> = {
    mode: e.mode ?? (e.type === 'dir' ? 0o755 : e.type === 'symlink' ? 0o777 : 0o644),
    uid: e.uid ?? 0,
    gid: e.gid ?? 0,
    mtime: e.mtime ?? defaultMtime,
    xattrs: e.xattrs,
  };
  switch (e.type) {
    case 'raw-file':
      return plainRecord(e.name, '0', meta, contentBytes(e.content));
    case 'file':
      return plainRecord(normalizeImagePath(e.path), '0', meta, contentBytes(e.content));
    case 'dir':
      return plainRecord(`${normalizeImagePath(e.path)}/`, '5', meta, Buffer.alloc(0));
    case 'symlink':
      return plainRecord(normalizeImagePath(e.path), '2', meta, Buffer.alloc(0), e.target);
    case 'hardlink':
      return plainRecord(normalizeImagePath(e.path), '1', meta, Buffer.alloc(0), normalizeImagePath(e.target));
    case 'char':
    case 'block':
      return plainRecord(normalizeImagePath(e.path), e.type === 'char' ? '3' : '4', meta, Buffer.alloc(0), undefined, {
        major: e.major,
        minor: e.minor,
      });
    case 'fifo':
      return plainRecord(normalizeImagePath(e.path), '6', meta, Buffer.alloc(0));
    case 'sparse':
      return sparseRecord(normalizeImagePath(e.path), e.size, e.data, meta);
  }
}

function metaPax(meta: EntryMeta & { mtime: Mtime }): Array<[string, string | Uint8Array]> {
  const pax: Array<[string, string | Uint8Array]> = [];
  const m = mtimeParts(meta.mtime);
  if (m.nsec !== 0) pax.push(['mtime', paxTime(m)]);
  for (const [k, v] of Object.entries(meta.xattrs ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    pax.push([`SCHILY.xattr.${k}`, v]);
  }
  return pax;
}

function plainRecord(
  name: string,
  typeflag: string,
  meta: EntryMeta & { mode: number; uid: number; gid: number; mtime: Mtime },
  data: Buffer,
  linkname?: string,
  dev?: { major: number; minor: number },
): TarRecord {
  const pax = metaPax(meta);
  const uName = ustarName(name);
  if (uName !== name) pax.unshift(['path', name]);
  let uLink = linkname;
  if (linkname !== undefined && ustarName(linkname) !== linkname) {
    pax.unshift(['linkpath', linkname]);
    uLink = ustarName(linkname);
  }
  return {
    header: {
      name: uName,
      mode: meta.mode,
      uid: meta.uid,
      gid: meta.gid,
      size: data.length,
      mtimeSec: mtimeParts(meta.mtime).sec,
      typeflag,
      linkname: uLink,
      devmajor: dev?.major,
      devminor: dev?.minor,
    },
    pax,
    data,
  };
}

/**
 * GNU sparse 1.0 in PAX (GNU tar manual "Storing Sparse Files", Go archive/tar
 * readGNUSparseMap1x0): PAX GNU.sparse.{major=1,minor=0,name,realsize}; the ustar
 * name is `<dir>/GNUSparseFile.0/<base>`; the data starts with the map (decimal
 * lines: count, then offset and length per segment) padded to 512, then the segments.
 */
function sparseRecord(
  name: string,
  size: number,
  data: Array<{ offset: number; bytes: Uint8Array }>,
  meta: EntryMeta & { mode: number; uid: number; gid: number; mtime: Mtime },
): TarRecord {
  const segs = [...data].sort((a, b) => a.offset - b.offset);
  let end = 0;
  for (const s of segs) {
    if (s.offset < end || s.offset + s.bytes.length > size) throw new Error(`image-factory: bad sparse map for ${name}`);
    // GNU tar only writes block-aligned segments and its reader consumes each
    // segment in whole 512-byte blocks, while Go's reader takes them back to back:
    // the two agree only on aligned maps, so only those are allowed here.
    if (s.offset % block !== 0 || s.bytes.length % block !== 0) {
      throw new Error(`image-factory: sparse segments of ${name} must be 512-byte aligned`);
    }
    end = s.offset + s.bytes.length;
  }
  // GNU tar ends the map with a zero-length segment at the real size when the file ends in a hole.
  const map: Array<[number, number]> = segs.map((s) => [s.offset, s.bytes.length]);
  if (end < size) map.push([size, 0]);
  const mapText = Buffer.from(`${map.length}\n${map.map(([o, l]) => `${o}\n${l}\n`).join('')}`, 'ascii');
  const payload = Buffer.concat([mapText, pad(mapText.length), ...segs.map((s) => Buffer.from(s.bytes))]);
  const { dir, base } = splitPath(name);
  const stand = ustarName(dir === '' ? `GNUSparseFile.0/${base}` : `${dir}/GNUSparseFile.0/${base}`);
  const pax: Array<[string, string | Uint8Array]> = [
    ['GNU.sparse.major', '1'],
    ['GNU.sparse.minor', '0'],
    ['GNU.sparse.name', name],
    ['GNU.sparse.realsize', String(size)],
    ...metaPax(meta),
  ];
  return {
    header: {
      name: stand,
      mode: meta.mode,
      uid: meta.uid,
      gid: meta.gid,
      size: payload.length,
      mtimeSec: mtimeParts(meta.mtime).sec,
      typeflag: '0',
    },
    pax,
    data: payload,
  };
}

function encodeRecord(r: TarRecord): Buffer[] {
  const out: Buffer[] = [];
  if (r.pax.length > 0) {
    const body = Buffer.concat(r.pax.map(([k, v]) => paxRecord(k, v)));
    out.push(
      ustarHeader({
        name: 'PaxHeaders/' + splitPath(r.header.name.replace(/\/$/, '')).base.slice(0, 80),
        mode: 0o644,
        uid: 0,
        gid: 0,
        size: body.length,
        mtimeSec: r.header.mtimeSec,
        typeflag: 'x',
      }),
      body,
      pad(body.length),
    );
  }
  out.push(ustarHeader(r.header), r.data, pad(r.data.length));
  return out;
}

function entryPath(e: LayerEntry): string | undefined {
  if (e.type === 'raw-file' || e.type === 'whiteout' || e.type === 'opaque') return undefined;
  return normalizeImagePath(e.path);
}

function parentsOf(e: LayerEntry): string[] {
  const p =
    e.type === 'raw-file'
      ? undefined
      : e.type === 'opaque'
        ? `${normalizeImagePath(e.path)}/x`
        : normalizeImagePath(e.path);
  if (p === undefined) return [];
  const parts = p.split('/');
  const out: string[] = [];
  for (let i = 1; i < parts.length; i++) out.push(parts.slice(0, i).join('/'));
  return out;
}

/** The uncompressed tar of a layer. */
export function buildLayerTar(spec: LayerSpec): Buffer {
  const defaultMtime = spec.defaultMtime ?? defaultMtimeSec;
  const entries: LayerEntry[] = [];
  if (spec.autoParents ?? true) {
    const explicitDirs = new Set(spec.entries.filter((e) => e.type === 'dir').map((e) => entryPath(e)));
    const seen = new Set<string>();
    for (const e of spec.entries) {
      for (const parent of parentsOf(e)) {
        if (seen.has(parent) || explicitDirs.has(parent)) continue;
        seen.add(parent);
        entries.push({ type: 'dir', path: parent });
      }
      const own = entryPath(e);
      if (e.type === 'dir' && own !== undefined) seen.add(own);
      entries.push(e);
    }
  } else {
    entries.push(...spec.entries);
  }
  // A hardlink header without metadata takes its target's, as Go's tar writer
  // does: containers/storage applies the header to the shared inode (chown, chmod,
  // times after link(2)), so a bare default would silently change the target.
  const files = new Map<string, LayerEntry>();
  for (const e of entries) if (e.type === 'file' || e.type === 'sparse') files.set(normalizeImagePath(e.path), e);
  const chunks: Buffer[] = [];
  for (const e of entries) {
    let entry = e;
    if (e.type === 'hardlink') {
      const target = files.get(normalizeImagePath(e.target));
      if (target !== undefined && target.type !== 'whiteout' && target.type !== 'opaque') {
        entry = {
          ...e,
          mode: e.mode ?? target.mode,
          uid: e.uid ?? target.uid,
          gid: e.gid ?? target.gid,
          mtime: e.mtime ?? target.mtime,
        };
      }
    }
    chunks.push(...encodeRecord(toRecord(entry, defaultMtime)));
  }
  chunks.push(Buffer.alloc(2 * block));
  return Buffer.concat(chunks);
}

// ---------------------------------------------------------------------------
// Compression

/** Compresses a layer tar. zstd uses zstd-napi (the project's dependency); the CLI is not needed. */
export function compressLayer(tar: Buffer, compression: Compression): Buffer {
  switch (compression) {
    case 'none':
      return tar;
    case 'gzip':
      // Node's gzip header has mtime 0 and no file name: deterministic output.
      return gzipSync(tar, { level: 6 });
    case 'zstd':
      return zstdCompress(tar);
  }
}

// ---------------------------------------------------------------------------
// OCI layout

function sha256(b: Uint8Array): string {
  return 'sha256:' + createHash('sha256').update(b).digest('hex');
}

function canonicalJson(v: unknown): Buffer {
  return Buffer.from(JSON.stringify(v), 'utf8');
}

/**
 * Where blobs go. An OCI image layout keeps every blob under blobs/sha256/<hex>;
 * skopeo's `dir:` transport (containers/image directory/directory_dest.go, version
 * 1.1) keeps layers and configs as <hex>, the top manifest as manifest.json and the
 * manifests of a list as <hex>.manifest.json.
 */
interface BlobSink {
  blob(bytes: Buffer): Promise<string>;
  manifest(bytes: Buffer): Promise<string>;
}

async function writeIfMissing(path: string, bytes: Buffer): Promise<void> {
  const existing = await stat(path).catch(() => undefined);
  if (existing === undefined || existing.size !== bytes.length) await writeFile(path, bytes);
}

async function ociSink(layoutDir: string): Promise<BlobSink> {
  await mkdir(join(layoutDir, 'blobs', 'sha256'), { recursive: true });
  await writeFile(join(layoutDir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const indexPath = join(layoutDir, 'index.json');
  if ((await stat(indexPath).catch(() => undefined)) === undefined) {
    await writeFile(indexPath, JSON.stringify({ schemaVersion: 2, mediaType: OciMedia.index, manifests: [] }));
  }
  const blob = async (bytes: Buffer): Promise<string> => {
    const digest = sha256(bytes);
    await writeIfMissing(join(layoutDir, 'blobs', 'sha256', digest.slice('sha256:'.length)), bytes);
    return digest;
  };
  return { blob, manifest: blob };
}

async function dirSink(dir: string): Promise<BlobSink> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'version'), 'Directory Transport Version: 1.1\n');
  return {
    async blob(bytes) {
      const digest = sha256(bytes);
      await writeIfMissing(join(dir, digest.slice('sha256:'.length)), bytes);
      return digest;
    },
    async manifest(bytes) {
      const digest = sha256(bytes);
      await writeIfMissing(join(dir, `${digest.slice('sha256:'.length)}.manifest.json`), bytes);
      return digest;
    },
  };
}

interface IndexJson {
  schemaVersion: 2;
  mediaType?: string;
  manifests: Array<{
    mediaType: string;
    digest: string;
    size: number;
    annotations?: Record<string, string>;
    platform?: Platform;
  }>;
}

/** Points `tag` (ref.name) at a descriptor in the layout's index.json, replacing an older entry with that tag. */
async function tagDescriptor(
  layoutDir: string,
  tag: string,
  desc: { mediaType: string; digest: string; size: number },
): Promise<void> {
  const indexPath = join(layoutDir, 'index.json');
  const index = JSON.parse(await readFile(indexPath, 'utf8')) as IndexJson;
  index.manifests = index.manifests.filter((m) => m.annotations?.[refNameAnnotation] !== tag);
  index.manifests.push({ ...desc, annotations: { [refNameAnnotation]: tag } });
  await writeFile(indexPath, JSON.stringify(index));
}

function layerMediaType(format: 'oci' | 'docker', c: Compression): string {
  if (format === 'oci') return OciMedia.layer[c];
  if (c === 'zstd') throw new Error('image-factory: Docker schema2 has no zstd layer media type');
  return DockerMedia.layer[c];
}

async function writeImage(sink: BlobSink, spec: ImageSpec, format: 'oci' | 'docker'): Promise<BuiltImage> {
  const created = spec.created ?? defaultCreated;
  const platform = spec.platform ?? hostPlatform();
  const layers: BuiltLayer[] = [];
  for (const l of spec.layers) {
    const compression = l.compression ?? spec.compression ?? 'gzip';
    const tar = buildLayerTar(l);
    const blob = compressLayer(tar, compression);
    const digest = await sink.blob(blob);
    layers.push({
      digest,
      size: blob.length,
      mediaType: layerMediaType(format, compression),
      compression,
      diffId: sha256(tar),
      tarSize: tar.length,
    });
  }
  const config = {
    created,
    architecture: platform.architecture,
    ...(platform.variant !== undefined ? { variant: platform.variant } : {}),
    os: platform.os,
    config: spec.runConfig ?? { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['/bin/sh'] },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    history: spec.layers.map((l, i) => ({ created, created_by: l.createdBy ?? `image-factory layer ${i}` })),
  };
  const configBytes = canonicalJson(config);
  const configDigest = await sink.blob(configBytes);
  const manifestMediaType = format === 'oci' ? OciMedia.manifest : DockerMedia.manifest;
  const manifest = {
    schemaVersion: 2,
    mediaType: manifestMediaType,
    config: { mediaType: format === 'oci' ? OciMedia.config : DockerMedia.config, digest: configDigest, size: configBytes.length },
    layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
    ...(format === 'oci' && spec.annotations !== undefined ? { annotations: spec.annotations } : {}),
  };
  const manifestBytes = canonicalJson(manifest);
  const manifestDigest = await sink.manifest(manifestBytes);
  return { manifestDigest, manifestMediaType, manifestBytes, configDigest, configBytes, layers, platform };
}

function indexOf(images: BuiltImage[], format: 'oci' | 'docker'): { mediaType: string; bytes: Buffer } {
  const mediaType = format === 'oci' ? OciMedia.index : DockerMedia.list;
  const index = {
    schemaVersion: 2,
    mediaType,
    manifests: images.map((i) => ({
      mediaType: i.manifestMediaType,
      digest: i.manifestDigest,
      size: i.manifestBytes.length,
      platform: i.platform,
    })),
  };
  return { mediaType, bytes: canonicalJson(index) };
}

/** Builds one image (OCI media types) into an OCI image layout directory and tags it. */
export async function buildImage(layoutDir: string, tag: string, spec: ImageSpec): Promise<BuiltImage> {
  const sink = await ociSink(layoutDir);
  const img = await writeImage(sink, spec, 'oci');
  await tagDescriptor(layoutDir, tag, {
    mediaType: img.manifestMediaType,
    digest: img.manifestDigest,
    size: img.manifestBytes.length,
  });
  return img;
}

/**
 * A multi-platform image: each spec becomes an OCI manifest, listed in an OCI image
 * index tagged `tag` in the layout.
 */
export async function buildMultiPlatformImage(layoutDir: string, tag: string, specs: ImageSpec[]): Promise<BuiltIndex> {
  const sink = await ociSink(layoutDir);
  const images: BuiltImage[] = [];
  for (const s of specs) images.push(await writeImage(sink, s, 'oci'));
  const { mediaType, bytes } = indexOf(images, 'oci');
  const indexDigest = await sink.blob(bytes);
  await tagDescriptor(layoutDir, tag, { mediaType, digest: indexDigest, size: bytes.length });
  return { indexDigest, indexMediaType: mediaType, indexBytes: bytes, images };
}

/**
 * One image with a Docker schema2 manifest (gzip or uncompressed layers) in a skopeo
 * `dir:` directory (one image per directory). Why not an OCI layout: containers/image's
 * oci: transport only resolves index.json entries with OCI media types ("no descriptor
 * found for reference"), so skopeo cannot read a schema2 manifest from there.
 */
export async function buildDockerImage(dir: string, spec: ImageSpec): Promise<BuiltImage> {
  const sink = await dirSink(dir);
  const img = await writeImage(sink, spec, 'docker');
  await writeFile(join(dir, 'manifest.json'), img.manifestBytes);
  return img;
}

/** A Docker manifest list (schema2 manifests per platform) in a skopeo `dir:` directory. */
export async function buildDockerManifestList(dir: string, specs: ImageSpec[]): Promise<BuiltIndex> {
  const sink = await dirSink(dir);
  const images: BuiltImage[] = [];
  for (const s of specs) images.push(await writeImage(sink, s, 'docker'));
  const { mediaType, bytes } = indexOf(images, 'docker');
  await writeFile(join(dir, 'manifest.json'), bytes);
  return { indexDigest: sha256(bytes), indexMediaType: mediaType, indexBytes: bytes, images };
}

/** A one-layer image for another platform (e.g. the fake arm64 half of a multi-platform index). */
export function fakePlatformImage(platform: Platform, compression: Compression = 'gzip'): ImageSpec {
  const name = [platform.os, platform.architecture, platform.variant].filter((x) => x !== undefined).join('/');
  return {
    platform,
    compression,
    layers: [{ entries: [{ type: 'file', path: 'etc/platform', content: `${name}\n` }], createdBy: `fake ${name}` }],
  };
}

// ---------------------------------------------------------------------------
// Registry

/**
 * Copies an image with skopeo byte for byte: `--preserve-digests` makes skopeo refuse
 * any change to manifests and layers (no recompression, no format conversion; checked
 * in test/integration/fixtures.test.ts), `--all` keeps every manifest of an index.
 * `source` is a containers-transports(5) name: "oci:DIR:TAG", "dir:DIR".
 */
export async function copyImage(
  source: string,
  dest: string,
  opts: { all?: boolean; authfile?: string } = {},
): Promise<void> {
  const args = ['copy', '--quiet', '--dest-tls-verify=false', '--preserve-digests'];
  if (opts.all === true) args.push('--all');
  if (opts.authfile !== undefined) args.push('--dest-authfile', opts.authfile);
  args.push(source, dest);
  await execa('skopeo', args);
}

/** Pushes `oci:<layoutDir>:<tag>` to `dest` ("docker://127.0.0.1:PORT/repo:tag") unchanged. */
export async function pushLayout(
  layoutDir: string,
  tag: string,
  dest: string,
  opts: { all?: boolean; authfile?: string } = {},
): Promise<void> {
  await copyImage(`oci:${layoutDir}:${tag}`, dest, opts);
}

/** Pushes a `dir:` directory (buildDockerImage, buildDockerManifestList) to `dest` unchanged. */
export async function pushDir(dir: string, dest: string, opts: { all?: boolean; authfile?: string } = {}): Promise<void> {
  await copyImage(`dir:${dir}`, dest, opts);
}
