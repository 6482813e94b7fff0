/**
 * A streaming tar reader that keeps names, link names and xattr values as the
 * exact bytes of the archive. It follows Go's archive/tar (the reader
 * containers/storage pkg/archive uses) wherever formats are ambiguous, so that
 * ocisnap sees the same entries Podman would: ustar/GNU/PAX headers, GNU long
 * names ('L'/'K'), PAX records (path, linkpath, size, uid, gid, mtime, atime,
 * SCHILY.xattr.*), GNU sparse files (old GNU 'S' and PAX 0.0/0.1/1.0), and
 * header-only types (links, devices, dirs, fifos) whose size field is ignored.
 *
 * Byte strings: names are JavaScript strings in which each char is one byte
 * (latin1), so '/' and '.' can be handled as characters and
 * Buffer.from(name, 'latin1') gives back the archive's bytes exactly.
 */
import { ByteSource } from './byte-source.js';

export type EntryType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';

export interface Timestamp {
  sec: number;
  nsec: number;
}

export interface SparseSegment {
  offset: number;
  length: number;
}

export interface TarEntry {
  /** Raw name (byte string, latin1), not cleaned. */
  name: string;
  type: EntryType;
  /** Permission bits incl. setuid/setgid/sticky (& 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  /** Bytes of content that follow in the archive (for sparse files: the data segments only). */
  size: number;
  /** Raw link target (byte string) for symlinks and hardlinks. */
  linkname: string;
  devmajor: number;
  devminor: number;
  mtime: Timestamp;
  atime: Timestamp | undefined;
  /** [name (byte string), value] from PAX SCHILY.xattr.* records, in archive order. */
  xattrs: Array<[string, Buffer]>;
  /** Present for sparse files: the logical size and where the data segments go. */
  sparse: { realSize: number; segments: SparseSegment[] } | undefined;
}

/** The archive is malformed; `entry` is the raw name when known. */
export class TarFormatError extends Error {
  constructor(
    message: string,
    readonly entry?: string,
  ) {
    super(message);
  }
}

const blockSize = 512;
/** Go archive/tar's limit on PAX and GNU long-name payloads (maxSpecialFileSize). */
const maxSpecialSize = 1 << 20;

interface RawHeader {
  name: string;
  typeflag: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  linkname: string;
  devmajor: number;
  devminor: number;
  gnu: boolean;
  block: Buffer;
}

export class TarReader {
  private remaining = 0;
  private padding = 0;
  private done = false;

  constructor(readonly source: ByteSource) {}

  /** The next entry, or null at the end of the archive. Skips unread content of the previous one. */
  async next(): Promise<TarEntry | null> {
    if (this.done) return null;
    await this.skipRest();
    let pax: Map<string, Buffer> | undefined;
    let sparseMap: number[] | undefined;
    let longName: string | undefined;
    let longLink: string | undefined;
    for (;;) {
      const block = await this.source.read(blockSize);
      if (block === null) {
        // Go's reader accepts a stream that ends exactly between entries.
        if (pax || longName !== undefined || longLink !== undefined) {
          throw new TarFormatError('unexpected end of tar data after an extended header');
        }
        this.done = true;
        return null;
      }
      if (isZero(block)) {
        // End of archive: two zero blocks (POSIX). Go errors on a zero block followed by a non-zero one.
        const second = await this.source.read(blockSize);
        if (second !== null && !isZero(second)) throw new TarFormatError('garbage after a zero block in tar data');
        this.done = true;
        return null;
      }
      const h = parseHeader(block);
      const dataSize = headerOnly(h.typeflag) ? 0 : h.size;
      switch (h.typeflag) {
        case 'x': {
          const records = parsePax(await this.readSpecial(h), h.name);
          pax = records.map;
          sparseMap = records.sparseMap;
          continue;
        }
        case 'g':
          // Global PAX headers are returned and then ignored by pkg/archive.
          await this.readSpecial(h);
          continue;
        case 'L':
          longName = cString(await this.readSpecial(h));
          continue;
        case 'K':
          longLink = cString(await this.readSpecial(h));
          continue;
      }
      const entry = await this.makeEntry(h, dataSize, pax, sparseMap, longName, longLink);
      return entry;
    }
  }

  /** Hands the content of the current entry to `sink`, chunk by chunk. */
  async readContent(sink: (chunk: Buffer) => void | Promise<void>): Promise<void> {
    const n = this.remaining;
    this.remaining = 0;
    await this.source.forEach(n, sink);
  }

  private async skipRest(): Promise<void> {
    const n = this.remaining + this.padding;
    this.remaining = 0;
    this.padding = 0;
    if (n > 0) await this.source.skip(n);
  }

  private async readSpecial(h: RawHeader): Promise<Buffer> {
    if (h.size > maxSpecialSize) throw new TarFormatError(`extended header of ${h.size} bytes is too large`, h.name);
    const data = Buffer.from(await this.source.readExact(h.size));
    await this.source.skip(pad(h.size));
    return data;
  }

  private async makeEntry(
    h: RawHeader,
    dataSize: number,
    pax: Map<string, Buffer> | undefined,
    paxSparseMap: number[] | undefined,
    longName: string | undefined,
    longLink: string | undefined,
  ): Promise<TarEntry> {
    let name = h.name;
    let linkname = h.linkname;
    let size = dataSize;
    let uid = h.uid;
    let gid = h.gid;
    let mtime: Timestamp = { sec: h.mtime, nsec: 0 };
    let atime: Timestamp | undefined;
    const xattrs: Array<[string, Buffer]> = [];
    if (pax) {
      for (const [key, value] of pax) {
        const text = value.toString('latin1');
        switch (key) {
          case 'path':
            name = text;
            break;
          case 'linkpath':
            linkname = text;
            break;
          case 'size':
            size = parseDecimal(text, 'size', name);
            break;
          case 'uid':
            uid = parseId(text, 'uid', name);
            break;
          case 'gid':
            gid = parseId(text, 'gid', name);
            break;
          case 'mtime':
            mtime = parseTime(text, 'mtime', name);
            break;
          case 'atime':
            atime = parseTime(text, 'atime', name);
            break;
          default:
            if (key.startsWith('SCHILY.xattr.')) xattrs.push([key.slice('SCHILY.xattr.'.length), value]);
        }
      }
    }
    if (longName !== undefined) name = longName;
    if (longLink !== undefined) linkname = longLink;
    if (headerOnly(h.typeflag)) size = 0;

    let type: EntryType;
    switch (h.typeflag) {
      case '0':
      case '7':
      case 'S':
        type = 'file';
        break;
      case '\0':
        // Go archive/tar: the old "regular file" flag with a trailing slash is a directory.
        type = name.endsWith('/') ? 'dir' : 'file';
        break;
      case '1':
        type = 'hardlink';
        break;
      case '2':
        type = 'symlink';
        break;
      case '3':
        type = 'char';
        break;
      case '4':
        type = 'block';
        break;
      case '5':
        type = 'dir';
        break;
      case '6':
        type = 'fifo';
        break;
      default:
        // pkg/archive refuses types it does not know ("unhandled tar header type").
        throw new TarFormatError(`unsupported tar entry type ${JSON.stringify(h.typeflag)}`, name);
    }

    let sparse: TarEntry['sparse'];
    this.padding = pad(size);
    this.remaining = size;
    if (h.typeflag === 'S') {
      sparse = await this.readOldGnuSparse(h, name, size);
    } else if (pax && type === 'file' && (pax.has('GNU.sparse.major') || pax.has('GNU.sparse.map') || paxSparseMap)) {
      const r = await this.readPaxSparse(pax, paxSparseMap, name, size);
      sparse = r.sparse;
      name = r.name;
    }

    return {
      name,
      type,
      mode: h.mode & 0o7777,
      uid,
      gid,
      size: this.remaining,
      linkname,
      devmajor: h.devmajor,
      devminor: h.devminor,
      mtime,
      atime,
      xattrs,
      sparse,
    };
  }

  /** Old GNU sparse ('S'): 4 map entries in the header, more in extension blocks. */
  private async readOldGnuSparse(h: RawHeader, name: string, size: number): Promise<TarEntry['sparse']> {
    const segments: SparseSegment[] = [];
    const readEntries = (b: Buffer, start: number, count: number): void => {
      for (let i = 0; i < count; i++) {
        const o = start + i * 24;
        if (b[o] === 0) break;
        segments.push({ offset: parseNumeric(b, o, 12, name), length: parseNumeric(b, o + 12, 12, name) });
      }
    };
    readEntries(h.block, 386, 4);
    let extended = h.block[482] !== 0;
    const realSize = parseNumeric(h.block, 483, 12, name);
    while (extended) {
      // Extension blocks sit between the header and the data; they are not part of the size field.
      const b = await this.source.readExact(blockSize);
      readEntries(b, 0, 21);
      extended = b[504] !== 0;
    }
    return checkSparse({ realSize, segments }, size, name);
  }

  private async readPaxSparse(
    pax: Map<string, Buffer>,
    sparseMap: number[] | undefined,
    name: string,
    size: number,
  ): Promise<{ sparse: TarEntry['sparse']; name: string }> {
    const get = (k: string): string | undefined => pax.get(k)?.toString('latin1');
    const major = get('GNU.sparse.major');
    const minor = get('GNU.sparse.minor');
    const realName = get('GNU.sparse.name') ?? name;
    const realText = get('GNU.sparse.realsize') ?? get('GNU.sparse.size');
    if (realText === undefined) throw new TarFormatError('sparse file without GNU.sparse.realsize', name);
    const realSize = parseDecimal(realText, 'GNU.sparse.realsize', name);
    let numbers: number[];
    if (major === '1' && minor === '0') {
      // PAX sparse 1.0: the map is decimal lines at the start of the data, padded to a block.
      const lines: number[] = [];
      let pending = '';
      let count: number | undefined;
      let consumed = 0;
      while (count === undefined || lines.length < 2 * count) {
        if (consumed + blockSize > size) throw new TarFormatError('truncated sparse map', name);
        const block = (await this.source.readExact(blockSize)).toString('latin1');
        consumed += blockSize;
        const parts = (pending + block).split('\n');
        pending = parts.pop() ?? '';
        for (const p of parts) {
          if (count === undefined) {
            count = parseDecimal(p, 'sparse map', name);
            if (count > 1_000_000) throw new TarFormatError('sparse map too large', name);
          } else if (lines.length < 2 * count) lines.push(parseDecimal(p, 'sparse map', name));
        }
        if (pending.length > 64 && !/^\0*$/.test(pending)) throw new TarFormatError('malformed sparse map', name);
      }
      this.remaining -= consumed;
      numbers = lines;
    } else if (sparseMap) {
      numbers = sparseMap;
    } else {
      const text = get('GNU.sparse.map') ?? '';
      numbers = text === '' ? [] : text.split(',').map((t) => parseDecimal(t, 'GNU.sparse.map', name));
    }
    if (numbers.length % 2 !== 0) throw new TarFormatError('odd number of values in sparse map', name);
    const segments: SparseSegment[] = [];
    for (let i = 0; i < numbers.length; i += 2) segments.push({ offset: numbers[i]!, length: numbers[i + 1]! });
    return { sparse: checkSparse({ realSize, segments }, this.remaining, name), name: realName };
  }
}

/** Go archive/tar validateSparseEntries, plus: the data must be exactly the segments. */
function checkSparse(s: { realSize: number; segments: SparseSegment[] }, dataSize: number, name: string) {
  let end = 0;
  let total = 0;
  for (const seg of s.segments) {
    if (seg.offset < end || seg.offset + seg.length > s.realSize) {
      throw new TarFormatError('sparse map has overlapping or out-of-range segments', name);
    }
    end = seg.offset + seg.length;
    total += seg.length;
  }
  if (total !== dataSize) {
    throw new TarFormatError(`sparse map covers ${total} bytes but the entry holds ${dataSize}`, name);
  }
  return s;
}

function headerOnly(typeflag: string): boolean {
  // Go archive/tar isHeaderOnlyType: these carry no data whatever the size field says.
  return '123456'.includes(typeflag) && typeflag.length === 1;
}

function pad(n: number): number {
  return (blockSize - (n % blockSize)) % blockSize;
}

function isZero(b: Buffer): boolean {
  for (let i = 0; i < b.length; i++) if (b[i] !== 0) return false;
  return true;
}

function cString(b: Buffer): string {
  const nul = b.indexOf(0);
  return b.toString('latin1', 0, nul === -1 ? b.length : nul);
}

function field(b: Buffer, off: number, len: number): string {
  const end = b.indexOf(0, off);
  return b.toString('latin1', off, end === -1 || end > off + len ? off + len : end);
}

/**
 * Octal (padded with NULs or spaces on either side, as Go archive/tar's
 * parseOctal trims them) or base-256 (high bit set) numeric field.
 */
function parseNumeric(b: Buffer, off: number, len: number, entry: string): number {
  const end = off + len;
  if ((b[off]! & 0x80) !== 0) {
    if (b[off] === 0xff) throw new TarFormatError('negative number in tar header', entry);
    let v = b[off]! & 0x7f;
    for (let i = off + 1; i < end; i++) v = v * 256 + b[i]!;
    if (!Number.isSafeInteger(v)) throw new TarFormatError('number too large in tar header', entry);
    return v;
  }
  let i = off;
  while (i < end && (b[i] === 0 || b[i] === 0x20)) i++;
  let v = 0;
  for (; i < end; i++) {
    const ch = b[i]!;
    if (ch === 0 || ch === 0x20) break;
    if (ch < 0x30 || ch > 0x37) throw badNumber(b, off, len, entry);
    v = v * 8 + (ch - 0x30);
  }
  for (; i < end; i++) if (b[i] !== 0 && b[i] !== 0x20) throw badNumber(b, off, len, entry);
  if (!Number.isSafeInteger(v)) throw new TarFormatError('number too large in tar header', entry);
  return v;
}

function badNumber(b: Buffer, off: number, len: number, entry: string): TarFormatError {
  return new TarFormatError(`invalid number ${JSON.stringify(b.toString('latin1', off, off + len))} in tar header`, entry);
}

function parseHeader(block: Buffer): RawHeader {
  const magic = block.toString('latin1', 257, 263);
  const version = block.toString('latin1', 263, 265);
  const ustar = magic === 'ustar\0';
  const gnu = magic === 'ustar ' && version === ' \0';
  let name = field(block, 0, 100);
  if (ustar) {
    const prefix = field(block, 345, 155);
    if (prefix !== '') name = `${prefix}/${name}`;
  }
  const stored = parseNumeric(block, 148, 8, name);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < blockSize; i++) {
    const v = i >= 148 && i < 156 ? 32 : block[i]!;
    unsigned += v;
    signed += v > 127 ? v - 256 : v;
  }
  if (stored !== unsigned && stored !== signed) throw new TarFormatError('tar header checksum mismatch', name);
  const typeflag = String.fromCharCode(block[156]!);
  return {
    name,
    typeflag,
    mode: parseNumeric(block, 100, 8, name),
    uid: parseNumeric(block, 108, 8, name),
    gid: parseNumeric(block, 116, 8, name),
    size: parseNumeric(block, 124, 12, name),
    mtime: parseNumeric(block, 136, 12, name),
    linkname: field(block, 157, 100),
    devmajor: ustar || gnu ? parseNumeric(block, 329, 8, name) : 0,
    devminor: ustar || gnu ? parseNumeric(block, 337, 8, name) : 0,
    gnu,
    block,
  };
}

/**
 * PAX records "LEN KEY=VALUE\n" (POSIX pax format). Values stay bytes (xattr
 * values are binary). Repeated GNU.sparse.offset/numbytes pairs (sparse 0.0)
 * are collected in order, as Go archive/tar does.
 */
function parsePax(data: Buffer, entry: string): { map: Map<string, Buffer>; sparseMap: number[] | undefined } {
  const map = new Map<string, Buffer>();
  let sparseMap: number[] | undefined;
  let pos = 0;
  while (pos < data.length) {
    const space = data.indexOf(0x20, pos);
    if (space === -1 || space - pos > 20) throw new TarFormatError('malformed PAX record', entry);
    const lenText = data.toString('latin1', pos, space);
    if (!/^[0-9]+$/.test(lenText)) throw new TarFormatError('malformed PAX record length', entry);
    const len = parseInt(lenText, 10);
    const end = pos + len;
    if (len <= space - pos + 1 || end > data.length || data[end - 1] !== 0x0a) {
      throw new TarFormatError('malformed PAX record', entry);
    }
    const eq = data.indexOf(0x3d, space + 1);
    if (eq === -1 || eq >= end - 1) throw new TarFormatError('malformed PAX record (no "=")', entry);
    const key = data.toString('latin1', space + 1, eq);
    const value = data.subarray(eq + 1, end - 1);
    if (key === 'GNU.sparse.offset' || key === 'GNU.sparse.numbytes') {
      sparseMap ??= [];
      sparseMap.push(parseDecimal(value.toString('latin1'), key, entry));
    } else if (value.length === 0) {
      // An empty value deletes the keyword (POSIX pax "keyword=").
      map.delete(key);
    } else {
      map.set(key, value);
    }
    pos = end;
  }
  return { map, sparseMap };
}

function parseDecimal(text: string, what: string, entry: string): number {
  if (!/^[0-9]{1,16}$/.test(text)) throw new TarFormatError(`invalid ${what} ${JSON.stringify(text.slice(0, 40))}`, entry);
  const v = parseInt(text, 10);
  if (!Number.isSafeInteger(v)) throw new TarFormatError(`${what} too large`, entry);
  return v;
}

function parseId(text: string, what: string, entry: string): number {
  const v = parseDecimal(text, what, entry);
  if (v > 0xfffffffe) throw new TarFormatError(`${what} ${v} out of range`, entry);
  return v;
}

/** PAX time "SEC[.FRAC]" (may be negative) → seconds + nanoseconds (0 ≤ nsec < 1e9). */
function parseTime(text: string, what: string, entry: string): Timestamp {
  const m = /^(-?)([0-9]{1,15})(?:\.([0-9]*))?$/.exec(text);
  if (!m) throw new TarFormatError(`invalid ${what} ${JSON.stringify(text.slice(0, 40))}`, entry);
  let sec = parseInt(m[2]!, 10);
  let nsec = parseInt(((m[3] ?? '') + '000000000').slice(0, 9), 10);
  if (m[1] === '-') {
    sec = -sec;
    if (nsec > 0) {
      sec -= 1;
      nsec = 1_000_000_000 - nsec;
    }
  }
  return { sec, nsec };
}
