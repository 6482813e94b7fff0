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
 */
import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { posix } from 'node:path';
import type { Digest } from '../oci/types.js';

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

// CRC-64 with the ISO polynomial, reflected (Go hash/crc64 MakeTable(crc64.ISO)),
// kept in two signed 32-bit halves so V8 stays on small integers, sliced by 8
// (table k = the CRC of a byte followed by k zero bytes) like Go's update.
const polyHi = 0xd8000000 | 0;
const tables: Array<{ hi: Int32Array; lo: Int32Array }> = [];
{
  const hi0 = new Int32Array(256);
  const lo0 = new Int32Array(256);
  for (let i = 0; i < 256; i++) {
    let hi = 0;
    let lo = i;
    for (let j = 0; j < 8; j++) {
      const carry = lo & 1;
      lo = (lo >>> 1) | (hi << 31);
      hi = hi >>> 1;
      if (carry) hi ^= polyHi;
    }
    hi0[i] = hi;
    lo0[i] = lo;
  }
  tables.push({ hi: hi0, lo: lo0 });
  for (let k = 1; k < 8; k++) {
    const prev = tables[k - 1]!;
    const hi = new Int32Array(256);
    const lo = new Int32Array(256);
    for (let i = 0; i < 256; i++) {
      const ph = prev.hi[i]!;
      const pl = prev.lo[i]!;
      const idx = pl & 0xff;
      lo[i] = ((pl >>> 8) | (ph << 24)) ^ lo0[idx]!;
      hi[i] = (ph >>> 8) ^ hi0[idx]!;
    }
    tables.push({ hi, lo });
  }
}
const [t0, t1, t2, t3, t4, t5, t6, t7] = tables as [
  { hi: Int32Array; lo: Int32Array },
  { hi: Int32Array; lo: Int32Array },
  { hi: Int32Array; lo: Int32Array },
  { hi: Int32Array; lo: Int32Array },
  { hi: Int32Array; lo: Int32Array },
  { hi: Int32Array; lo: Int32Array },
  { hi: Int32Array; lo: Int32Array },
  { hi: Int32Array; lo: Int32Array },
];

export class Crc64 {
  // Go's crc64.Update inverts before and after; keep the inverted state.
  private hi = -1;
  private lo = -1;

  update(data: Uint8Array): void {
    let hi = this.hi;
    let lo = this.lo;
    let i = 0;
    const n = data.length;
    for (; i + 8 <= n; i += 8) {
      // The 8 input bytes XORed into the low-order (first-processed) end of the state.
      const a = lo ^ (data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24));
      const b = hi ^ (data[i + 4]! | (data[i + 5]! << 8) | (data[i + 6]! << 16) | (data[i + 7]! << 24));
      lo =
        t7.lo[a & 0xff]! ^ t6.lo[(a >>> 8) & 0xff]! ^ t5.lo[(a >>> 16) & 0xff]! ^ t4.lo[a >>> 24]! ^
        t3.lo[b & 0xff]! ^ t2.lo[(b >>> 8) & 0xff]! ^ t1.lo[(b >>> 16) & 0xff]! ^ t0.lo[b >>> 24]!;
      hi =
        t7.hi[a & 0xff]! ^ t6.hi[(a >>> 8) & 0xff]! ^ t5.hi[(a >>> 16) & 0xff]! ^ t4.hi[a >>> 24]! ^
        t3.hi[b & 0xff]! ^ t2.hi[(b >>> 8) & 0xff]! ^ t1.hi[(b >>> 16) & 0xff]! ^ t0.hi[b >>> 24]!;
    }
    for (; i < n; i++) {
      const idx = (lo ^ data[i]!) & 0xff;
      lo = ((lo >>> 8) | (hi << 24)) ^ t0.lo[idx]!;
      hi = (hi >>> 8) ^ t0.hi[idx]!;
    }
    this.hi = hi;
    this.lo = lo;
  }

  /** The 8 big-endian bytes Go's Hash64.Sum appends. */
  digest(): Buffer {
    const out = Buffer.alloc(8);
    out.writeUInt32BE(~this.hi >>> 0, 0);
    out.writeUInt32BE(~this.lo >>> 0, 4);
    return out;
  }
}

class GiveUp extends Error {}

type State = 'header' | 'meta' | 'data' | 'padding' | 'trailer';

export class TarSplitRecorder extends Transform {
  private readonly lines: string[] = [];
  private readonly hash: Hash = createHash('sha256');
  private size = 0;
  private position = 0;
  private failed: string | undefined;
  private ended = false;

  private state: State = 'header';
  private header = Buffer.alloc(0);
  private segment: Buffer[] = [];
  private segmentBytes = 0;
  private remaining = 0;
  private padding = 0;
  private meta: Buffer[] = [];
  private metaType = '';
  private metaHeader = Buffer.alloc(0);
  private crc: Crc64 | undefined;
  private pendingName: Buffer | undefined;
  private pendingPax = new Map<string, Buffer>();
  private readonly seen = new Set<string>();

  /** Why the recorder gave up, if it did. */
  get failure(): string | undefined {
    return this.failed;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.size += chunk.length;
    if (this.failed === undefined) {
      try {
        this.consume(chunk);
      } catch (err) {
        if (!(err instanceof GiveUp)) throw err;
        this.failed = err.message;
      }
    }
    cb(null, chunk);
  }

  override _flush(cb: TransformCallback): void {
    if (this.failed === undefined) {
      if (this.state !== 'trailer') this.failed = 'the tar stream ended before its end-of-archive marker';
      else this.flushSegment();
    }
    this.ended = true;
    cb();
  }

  /** The tar-split of the whole stream, or undefined when it gave up; only after the stream ended. */
  result(): TarSplit | undefined {
    if (!this.ended) throw new Error('TarSplitRecorder.result() before the stream ended');
    if (this.failed !== undefined) return undefined;
    return {
      gz: gzipSync(this.lines.join('')),
      tarDigest: `sha256:${this.hash.copy().digest('hex')}`,
      tarSize: this.size,
    };
  }

  private consume(chunk: Buffer): void {
    let off = 0;
    while (off < chunk.length) {
      switch (this.state) {
        case 'header': {
          const take = Math.min(block - this.header.length, chunk.length - off);
          this.header = Buffer.concat([this.header, chunk.subarray(off, off + take)]);
          off += take;
          if (this.header.length === block) this.onHeader();
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

  private addSegment(bytes: Buffer): void {
    if (bytes.length === 0) return;
    this.segment.push(Buffer.from(bytes));
    this.segmentBytes += bytes.length;
  }

  private flushSegment(): void {
    if (this.segmentBytes === 0) return;
    const payload = Buffer.concat(this.segment).toString('base64');
    this.segment = [];
    this.segmentBytes = 0;
    this.lines.push(`{"type":2,"payload":"${payload}","position":${this.position++}}\n`);
  }

  private onHeader(): void {
    const h = this.header;
    this.header = Buffer.alloc(0);
    this.addSegment(h);
    if (h.every((b) => b === 0)) {
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
    if (this.seen.has(key)) throw new GiveUp(`duplicate path in the layer tar: ${text}`);
    this.seen.add(key);
    const parts = [`"type":1`];
    parts.push(valid ? `"name":${JSON.stringify(text)}` : `"name_raw":"${name.toString('base64')}"`);
    if (size > 0) parts.push(`"size":${size}`);
    parts.push(`"payload":${crc ? `"${crc.toString('base64')}"` : 'null'}`);
    parts.push(`"position":${this.position++}`);
    this.lines.push(`{${parts.join(',')}}\n`);
  }
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
