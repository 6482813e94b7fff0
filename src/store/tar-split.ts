/**
 * Records a layer's tar stream as tar-split metadata (vbatts/tar-split,
 * tar/storage entry.go + packer.go, tar/asm disassemble.go), the
 * `<layer-id>.tar-split.gz` containers/storage keeps next to layers.json.
 * With it podman rebuilds the exact original tar from the layer's files
 * (layers.go Diff -> asm.NewOutputTarStream), so `podman push`/`podman save`
 * of an image ocisnap stored reproduce the recorded DiffIDs; without it podman
 * falls back to a naive diff whose digest differs and the copy fails.
 *
 * The format: gzip of JSON lines, in stream order,
 *   {"type":2,"payload":"<base64 raw bytes>","position":N}       headers, padding, trailer
 *   {"type":1,"name":"<path>","size":S,"payload":"<base64 crc64>","position":N}  file content
 * where the file's bytes are not stored (podman reads them from the layer) but
 * checked against the CRC-64 (ISO polynomial, as Go's hash/crc64) of the content.
 *
 * The recorder is a pass-through Transform to put between decompression and
 * the layer applier. It never fails the stream: on anything it does not
 * handle (sparse files, duplicate paths, oversized metadata) it gives up and
 * result() returns undefined, so the layer is stored without tar-split.
 * It also computes the stream's sha256 (on the thread pool) and hands it to
 * the applier downstream as a DigestingStream, so every byte is hashed once.
 */
import { Transform, type TransformCallback } from 'node:stream';
import { createGzip, type Gzip } from 'node:zlib';
import { posix } from 'node:path';
import type { Digest } from '../oci/types.js';
import { emittedDigest, StreamHasher, type DigestingStream } from '../layers/hasher.js';
import { sys } from '../sys/native.js';

export interface TarSplit {
  /** The gzip-compressed tar-split JSON lines. */
  gz: Buffer;
  /** sha256 and length of the tar stream it describes (the DiffID and diff size). */
  tarDigest: Digest;
  tarSize: number;
}

const block = 512;
const maxMetadataBytes = 1024 * 1024;
const maxSegmentBytes = 1024 * 1024;

/**
 * CRC-64 with the ISO polynomial, reflected (Go hash/crc64 MakeTable(crc64.ISO)),
 * computed by the native addon (a JS version cost a third of the recorder's time).
 */
export class Crc64 {
  // Go's crc64.Update inverts before and after; keep the inverted state.
  private readonly state = Buffer.alloc(8, 0xff);

  update(data: Uint8Array): void {
    sys.crc64(this.state, data);
  }

  /** The 8 big-endian bytes Go's Hash64.Sum appends. */
  digest(): Buffer {
    const out = Buffer.alloc(8);
    for (let i = 0; i < 8; i++) out[i] = ~this.state[7 - i]! & 0xff;
    return out;
  }
}

class GiveUp extends Error {}

type State = 'header' | 'meta' | 'data' | 'padding' | 'trailer';

export class TarSplitRecorder extends Transform implements DigestingStream {
  /**
   * The JSON lines are compressed as they come (on the thread pool), so a
   * layer of many files never holds its whole tar-split as text.
   */
  private readonly gzip: Gzip = createGzip();
  private readonly gzipped: Buffer[] = [];
  private text = '';
  /**
   * sha256 of the stream, on the thread pool; the applier downstream takes it
   * as the diffID. 8 MiB in flight: with 2 MiB the stream waited 2 s of a
   * 12 s cold pull for the hasher, whose jobs start from a busy main thread.
   */
  private readonly hash = new StreamHasher(8 * 1024 * 1024);
  private tarDigest: Digest | undefined;
  private position = 0;
  private failed: string | undefined;
  private ended = false;

  private state: State = 'header';
  /** A header that straddles chunks, gathered here. */
  private header: Buffer = Buffer.alloc(0);
  private headerBytes = 0;
  private segment: Buffer = Buffer.allocUnsafe(16 * 1024);
  private segmentBytes = 0;
  private remaining = 0;
  private padding = 0;
  private meta: Buffer[] = [];
  private metaType = '';
  private metaHeader: Buffer = Buffer.alloc(0);
  private crc: Crc64 | undefined;
  private pendingName: Buffer | undefined;
  private pendingPax = new Map<string, Buffer>();
  private readonly seen = new PathSet();

  constructor() {
    super();
    this.gzip.on('data', (chunk: Buffer) => this.gzipped.push(chunk));
  }

  /** Why the recorder gave up, if it did. */
  get failure(): string | undefined {
    return this.failed;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    // Hashed by reference while it travels on: stream chunks are never modified once emitted.
    this.hash.update(chunk);
    if (this.failed === undefined) {
      try {
        this.consume(chunk);
      } catch (err) {
        if (!(err instanceof GiveUp)) throw err;
        this.failed = err.message;
        this.gzip.destroy();
      }
    }
    this.push(chunk);
    if (this.hash.saturated) this.hash.ready().then(() => cb(), cb);
    else cb();
  }

  override _flush(cb: TransformCallback): void {
    if (this.failed === undefined) {
      if (this.state !== 'trailer') {
        this.failed = 'the tar stream ended before its end-of-archive marker';
        this.gzip.destroy();
      } else this.flushSegment();
    }
    const compressed =
      this.failed === undefined
        ? new Promise<void>((resolve, reject) => {
            this.gzip.once('end', resolve);
            this.gzip.once('error', reject);
            this.gzip.end(this.text);
            this.text = '';
          })
        : undefined;
    Promise.all([this.hash.digest(), compressed]).then(([digest]) => {
      this.tarDigest = digest;
      this.ended = true;
      cb();
    }, cb);
  }

  override _destroy(err: Error | null, cb: (error?: Error | null) => void): void {
    this.gzip.destroy();
    cb(err);
  }

  /** Adds a JSON line; text goes to the compressor in batches (a write per line costs more than the copy). */
  private line(text: string): void {
    this.text += text;
    if (this.text.length >= 64 * 1024) {
      this.gzip.write(this.text);
      this.text = '';
    }
  }

  /** The digest of everything emitted (DigestingStream), so the applier need not hash it again. */
  async [emittedDigest](): Promise<{ digest: Digest; size: number }> {
    if (this.tarDigest === undefined) throw new Error('TarSplitRecorder: digest asked for before the stream ended');
    return { digest: this.tarDigest, size: this.hash.size };
  }

  /** The tar-split of the whole stream, or undefined when it gave up; only after the stream ended. */
  result(): TarSplit | undefined {
    if (!this.ended) throw new Error('TarSplitRecorder.result() before the stream ended');
    if (this.failed !== undefined) return undefined;
    return {
      gz: Buffer.concat(this.gzipped),
      tarDigest: this.tarDigest!,
      tarSize: this.hash.size,
    };
  }

  private consume(chunk: Buffer): void {
    let off = 0;
    while (off < chunk.length) {
      switch (this.state) {
        case 'header': {
          if (this.headerBytes === 0 && chunk.length - off >= block) {
            // The usual case: the whole header is in this chunk (which is never modified), no copy.
            this.onHeader(chunk.subarray(off, off + block));
            off += block;
            break;
          }
          if (this.headerBytes === 0) this.header = Buffer.allocUnsafe(block);
          const take = Math.min(block - this.headerBytes, chunk.length - off);
          chunk.copy(this.header, this.headerBytes, off, off + take);
          this.headerBytes += take;
          off += take;
          if (this.headerBytes === block) {
            this.headerBytes = 0;
            this.onHeader(this.header);
          }
          break;
        }
        case 'meta': {
          const take = Math.min(this.remaining, chunk.length - off);
          const part = chunk.subarray(off, off + take);
          this.meta.push(Buffer.from(part));
          this.addSegment(part);
          this.remaining -= take;
          off += take;
          if (this.remaining === 0) this.onMetaDone();
          break;
        }
        case 'data': {
          const take = Math.min(this.remaining, chunk.length - off);
          this.crc?.update(chunk.subarray(off, off + take));
          this.remaining -= take;
          off += take;
          if (this.remaining === 0) this.onDataDone();
          break;
        }
        case 'padding': {
          const take = Math.min(this.padding, chunk.length - off);
          this.addSegment(chunk.subarray(off, off + take));
          this.padding -= take;
          off += take;
          if (this.padding === 0) this.state = 'header';
          break;
        }
        case 'trailer': {
          this.addSegment(chunk.subarray(off));
          off = chunk.length;
          if (this.segmentBytes >= maxSegmentBytes) this.flushSegment();
          break;
        }
      }
    }
  }

  /** Raw bytes go into one reused buffer until the next file entry (allocating per header cost GC time). */
  private addSegment(bytes: Buffer): void {
    if (bytes.length === 0) return;
    const need = this.segmentBytes + bytes.length;
    if (need > this.segment.length) {
      const bigger = Buffer.allocUnsafe(Math.max(need, this.segment.length * 2));
      this.segment.copy(bigger, 0, 0, this.segmentBytes);
      this.segment = bigger;
    }
    bytes.copy(this.segment, this.segmentBytes);
    this.segmentBytes = need;
  }

  private flushSegment(): void {
    if (this.segmentBytes === 0) return;
    const payload = this.segment.toString('base64', 0, this.segmentBytes);
    this.segmentBytes = 0;
    this.line(`{"type":2,"payload":"${payload}","position":${this.position++}}\n`);
  }

  /** `h` is a view of the stream's chunk (never modified) or a buffer of its own: either may be kept. */
  private onHeader(h: Buffer): void {
    this.addSegment(h);
    if (isZeroBlock(h)) {
      // End-of-archive: the zero blocks and anything after them are raw bytes.
      this.state = 'trailer';
      return;
    }
    const type = String.fromCharCode(h[156]!);
    const size = this.paxSize() ?? parseNumeric(h.subarray(124, 136));
    if (size < 0 || !Number.isSafeInteger(size)) throw new GiveUp('bad size field in a tar header');
    if (type === 'L' || type === 'K' || type === 'x' || type === 'g') {
      if (size > maxMetadataBytes) throw new GiveUp('oversized tar metadata entry');
      this.metaType = type;
      this.metaHeader = h;
      this.meta = [];
      this.remaining = size;
      this.padding = (block - (size % block)) % block;
      this.state = 'meta';
      if (size === 0) this.onMetaDone();
      return;
    }
    if (type === 'S' || this.pendingPax.has('GNU.sparse.map') || this.pendingPax.has('GNU.sparse.size')) {
      throw new GiveUp('sparse files are not supported');
    }
    const name = this.pendingPax.get('path') ?? this.pendingName ?? headerName(h);
    this.pendingName = undefined;
    this.pendingPax.clear();
    // Header-only types carry no data whatever their size field says (Go archive/tar isHeaderOnlyType).
    const headerOnly = '1256'.includes(type) || type === '3' || type === '4';
    if (headerOnly && size !== 0) throw new GiveUp('header-only tar entry with a non-zero size');
    this.startFile(name, size);
  }

  private paxSize(): number | undefined {
    const v = this.pendingPax.get('size');
    if (v === undefined) return undefined;
    const n = Number(v.toString('utf8'));
    if (!Number.isSafeInteger(n) || n < 0) throw new GiveUp('bad PAX size record');
    return n;
  }

  private onMetaDone(): void {
    const content = Buffer.concat(this.meta);
    this.meta = [];
    if (this.metaType === 'L') {
      this.pendingName = trimNul(content);
    } else if (this.metaType === 'x') {
      for (const [k, v] of parsePax(content)) this.pendingPax.set(k, v);
    } else if (this.metaType === 'g') {
      // Go's reader returns a global header as an entry of its own, with no data.
      this.emitFile(headerName(this.metaHeader), 0, undefined);
    }
    this.state = this.padding > 0 ? 'padding' : 'header';
  }

  private fileName: Buffer = Buffer.alloc(0);
  private fileSize = 0;

  private startFile(name: Buffer, size: number): void {
    if (size === 0) {
      this.emitFile(name, 0, undefined);
      this.state = 'header';
      return;
    }
    this.fileName = name;
    this.fileSize = size;
    this.crc = new Crc64();
    this.remaining = size;
    this.padding = (block - (size % block)) % block;
    this.state = 'data';
  }

  private onDataDone(): void {
    this.emitFile(this.fileName, this.fileSize, this.crc?.digest());
    this.crc = undefined;
    this.state = this.padding > 0 ? 'padding' : 'header';
  }

  private emitFile(name: Buffer, size: number, crc: Buffer | undefined): void {
    this.flushSegment();
    const text = name.toString('utf8');
    const valid = Buffer.from(text, 'utf8').equals(name);
    const key = posix.normalize(valid ? text : name.toString('latin1'));
    // tar-split's packer and unpacker refuse duplicate paths (storage/packer.go ErrDuplicatePath).
    if (!this.seen.add(Buffer.from(key, 'utf8'))) throw new GiveUp(`duplicate path in the layer tar: ${text}`);
    const parts = [`"type":1`];
    parts.push(valid ? `"name":${JSON.stringify(text)}` : `"name_raw":"${name.toString('base64')}"`);
    if (size > 0) parts.push(`"size":${size}`);
    parts.push(`"payload":${crc ? `"${crc.toString('base64')}"` : 'null'}`);
    parts.push(`"position":${this.position++}`);
    this.line(`{${parts.join(',')}}\n`);
  }
}

/**
 * A set of byte strings in two flat arrays (open addressing over an arena).
 * A JS Set holding one string per file made V8 run a full collection every
 * few megabytes of a layer (tens of them per layer, a sixth of the CPU time).
 */
export class PathSet {
  /** Entries: [u32 hash][u32 length][bytes], back to back. */
  private arena = Buffer.allocUnsafe(64 * 1024);
  private used = 0;
  /** 0 = empty, else 1 + the entry's offset in the arena. */
  private slots = new Int32Array(4096);
  private count = 0;

  /** Adds `key`; false when it was already there. */
  add(key: Buffer): boolean {
    const hash = fnv1a(key);
    const mask = this.slots.length - 1;
    let i = hash & mask;
    for (let s = this.slots[i]!; s !== 0; s = this.slots[i]!) {
      const off = s - 1;
      if (
        this.arena.readInt32LE(off) === hash &&
        this.arena.readUInt32LE(off + 4) === key.length &&
        this.arena.compare(key, 0, key.length, off + 8, off + 8 + key.length) === 0
      ) {
        return false;
      }
      i = (i + 1) & mask;
    }
    const need = this.used + 8 + key.length;
    if (need > this.arena.length) {
      const bigger = Buffer.allocUnsafe(Math.max(need, this.arena.length * 2));
      this.arena.copy(bigger, 0, 0, this.used);
      this.arena = bigger;
    }
    this.arena.writeInt32LE(hash, this.used);
    this.arena.writeUInt32LE(key.length, this.used + 4);
    key.copy(this.arena, this.used + 8);
    this.slots[i] = this.used + 1;
    this.used = need;
    if (++this.count * 2 > this.slots.length) this.grow();
    return true;
  }

  private grow(): void {
    const slots = new Int32Array(this.slots.length * 2);
    const mask = slots.length - 1;
    for (const s of this.slots) {
      if (s === 0) continue;
      let i = this.arena.readInt32LE(s - 1) & mask;
      while (slots[i] !== 0) i = (i + 1) & mask;
      slots[i] = s;
    }
    this.slots = slots;
  }
}

function fnv1a(b: Buffer): number {
  let h = 0x811c9dc5 | 0;
  for (let i = 0; i < b.length; i++) h = Math.imul(h ^ b[i]!, 0x01000193);
  return h;
}

function isZeroBlock(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

function trimNul(b: Buffer): Buffer {
  const i = b.indexOf(0);
  return i >= 0 ? b.subarray(0, i) : b;
}

/** Name of a ustar/GNU/v7 header: POSIX ustar joins prefix and name; GNU has no prefix field. */
function headerName(h: Buffer): Buffer {
  const name = trimNul(h.subarray(0, 100));
  const magic = h.subarray(257, 263).toString('latin1');
  if (magic === 'ustar\0') {
    const prefix = trimNul(h.subarray(345, 500));
    if (prefix.length > 0) return Buffer.concat([prefix, Buffer.from('/'), name]);
  }
  return name;
}

/** Octal (NUL/space terminated) or GNU base-256 numeric field. */
function parseNumeric(field: Buffer): number {
  if ((field[0]! & 0x80) !== 0) {
    let n = field[0]! & 0x7f;
    for (let i = 1; i < field.length; i++) n = n * 256 + field[i]!;
    return n;
  }
  const text = field.toString('latin1').replace(/[\0 ]+$/g, '').trim();
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw new GiveUp('bad numeric field in a tar header');
  return parseInt(text, 8);
}

/** PAX records "<len> <key>=<value>\n" (POSIX pax extended header). */
function parsePax(content: Buffer): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  let off = 0;
  while (off < content.length) {
    const space = content.indexOf(0x20, off);
    if (space < 0) break;
    const len = Number(content.subarray(off, space).toString('latin1'));
    if (!Number.isSafeInteger(len) || len <= 0 || off + len > content.length) throw new GiveUp('bad PAX record');
    const record = content.subarray(space + 1, off + len - 1);
    const eq = record.indexOf(0x3d);
    if (eq < 0) throw new GiveUp('bad PAX record');
    out.set(record.subarray(0, eq).toString('utf8'), Buffer.from(record.subarray(eq + 1)));
    off += len;
  }
  return out;
}
