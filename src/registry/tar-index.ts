/**
 * A one-pass index of an uncompressed tar file: the name, type, data offset
 * and size of each member, read from the 512-byte headers only (POSIX.1-2001
 * pax / ustar, and GNU long names). Member data is never read here; an
 * `oci-archive:` source serves blobs straight from these byte ranges.
 */
import type { FileHandle } from 'node:fs/promises';
import { LayoutError } from './errors.js';

export type TarMemberType = 'file' | 'directory' | 'symlink' | 'hardlink' | 'other';

export interface TarMember {
  name: string;
  type: TarMemberType;
  /** Byte offset of the member's data in the tar file. */
  offset: number;
  size: number;
}

const block = 512;
/** Longest pax or GNU long-name record we accept; real ones are a few hundred bytes. */
const maxMetaBytes = 1024 * 1024;

function field(h: Buffer, start: number, length: number): string {
  const raw = h.subarray(start, start + length);
  const nul = raw.indexOf(0);
  return raw.subarray(0, nul === -1 ? length : nul).toString('utf8');
}

/** Numeric header field: octal text, or GNU base-256 when the high bit of the first byte is set. */
function numeric(h: Buffer, start: number, length: number, what: string): number {
  const raw = h.subarray(start, start + length);
  if (((raw[0] as number) & 0x80) !== 0) {
    if (((raw[0] as number) & 0x40) !== 0) throw new LayoutError(`${what}: negative number in tar header`);
    let v = (raw[0] as number) & 0x3f;
    for (let i = 1; i < raw.length; i++) v = v * 256 + (raw[i] as number);
    if (!Number.isSafeInteger(v)) throw new LayoutError(`${what}: number too large in tar header`);
    return v;
  }
  const text = raw.toString('latin1').replace(/[\0 ]+$/, '').replace(/^[ ]+/, '');
  if (text === '') return 0;
  if (!/^[0-7]+$/.test(text)) throw new LayoutError(`${what}: bad number ${JSON.stringify(text)} in tar header`);
  return parseInt(text, 8);
}

function checksumOk(h: Buffer, what: string): boolean {
  const stored = numeric(h, 148, 8, what);
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < block; i++) {
    const b = i >= 148 && i < 156 ? 0x20 : (h[i] as number);
    unsigned += b;
    signed += b > 127 ? b - 256 : b;
  }
  // Old tars summed signed chars; accept either (GNU tar does too).
  return stored === unsigned || stored === signed;
}

function compressionMagic(h: Buffer): string | undefined {
  if (h[0] === 0x1f && h[1] === 0x8b) return 'gzip';
  if (h.readUInt32LE(0) === 0xfd2fb528) return 'zstd';
  if (h.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return 'xz';
  if (h.subarray(0, 3).toString('latin1') === 'BZh') return 'bzip2';
  return undefined;
}

/** pax extended header records: "LEN key=value\n" (POSIX.1-2001 pax, "pax Extended Header"). */
function parsePax(data: Buffer, what: string): Map<string, string> {
  const out = new Map<string, string>();
  let i = 0;
  while (i < data.length) {
    const space = data.indexOf(0x20, i);
    if (space === -1) break;
    const len = Number(data.subarray(i, space).toString('latin1'));
    if (!Number.isSafeInteger(len) || len <= 0 || i + len > data.length) {
      throw new LayoutError(`${what}: malformed pax header record`);
    }
    const record = data.subarray(space + 1, i + len - 1).toString('utf8'); // drop the trailing \n
    const eq = record.indexOf('=');
    if (eq > 0) out.set(record.slice(0, eq), record.slice(eq + 1));
    i += len;
  }
  return out;
}

function memberType(flag: string): TarMemberType {
  switch (flag) {
    case '0':
    case '':
    case '7':
      return 'file';
    case '5':
      return 'directory';
    case '2':
      return 'symlink';
    case '1':
      return 'hardlink';
    default:
      return 'other';
  }
}

/** `./blobs/sha256/x` and `blobs/sha256/x` name the same member. */
export function normalizeMemberName(name: string): string {
  let n = name;
  while (n.startsWith('./')) n = n.slice(2);
  while (n.endsWith('/')) n = n.slice(0, -1);
  return n;
}

/**
 * Scans the headers of the tar in `fh`. Later duplicates of a regular file
 * are refused rather than resolved: an archive that names one blob twice is
 * ambiguous. `what` names the archive in errors.
 */
export async function indexTar(fh: FileHandle, what: string): Promise<Map<string, TarMember>> {
  const fileSize = (await fh.stat()).size;
  const members = new Map<string, TarMember>();
  const header = Buffer.alloc(block);
  let pos = 0;
  let pax = new Map<string, string>();
  let longName: string | undefined;

  const readAt = async (buf: Buffer, at: number): Promise<void> => {
    const { bytesRead } = await fh.read(buf, 0, buf.length, at);
    if (bytesRead !== buf.length) throw new LayoutError(`${what}: truncated tar file at byte ${at}`);
  };

  for (;;) {
    if (pos + block > fileSize) {
      // A tar without its end-of-archive blocks: accept only at a member boundary.
      if (pos === fileSize) break;
      throw new LayoutError(`${what}: truncated tar file at byte ${pos}`);
    }
    await readAt(header, pos);
    if (header.every((b) => b === 0)) break; // end of archive
    if (pos === 0) {
      const compression = compressionMagic(header);
      if (compression !== undefined) {
        throw new LayoutError(`${what}: a ${compression}-compressed file; oci-archive must be an uncompressed tar`);
      }
    }
    let valid: boolean;
    try {
      valid = checksumOk(header, what);
    } catch {
      valid = false;
    }
    if (!valid) throw new LayoutError(`${what}: not a tar file, or corrupt header at byte ${pos}`);
    const flag = String.fromCharCode(header[156] as number).replace('\0', '');
    const size = numeric(header, 124, 12, what);
    const dataOffset = pos + block;
    const next = dataOffset + Math.ceil(size / block) * block;
    if (dataOffset + size > fileSize) throw new LayoutError(`${what}: member at byte ${pos} runs past the end of the file`);

    if (flag === 'x' || flag === 'L') {
      if (size > maxMetaBytes) throw new LayoutError(`${what}: oversized ${flag === 'x' ? 'pax' : 'long-name'} header`);
      const data = Buffer.alloc(size);
      await readAt(data, dataOffset);
      if (flag === 'x') pax = parsePax(data, what);
      else longName = field(data, 0, data.length);
      pos = next;
      continue;
    }
    if (flag === 'g' || flag === 'K') {
      // Global pax headers carry nothing we use; GNU long link names neither.
      pos = next;
      continue;
    }

    let name = field(header, 0, 100);
    const magic = header.subarray(257, 263).toString('latin1');
    if (magic === 'ustar\0') {
      const prefix = field(header, 345, 155);
      if (prefix !== '') name = `${prefix}/${name}`;
    }
    if (longName !== undefined) name = longName;
    const paxPath = pax.get('path');
    if (paxPath !== undefined) name = paxPath;
    let memberSize = size;
    const paxSize = pax.get('size');
    if (paxSize !== undefined) {
      if (!/^\d+$/.test(paxSize)) throw new LayoutError(`${what}: bad pax size ${JSON.stringify(paxSize)}`);
      memberSize = Number(paxSize);
    }
    pax = new Map();
    longName = undefined;

    const type = memberType(flag);
    const dataEnd = dataOffset + memberSize;
    if (dataEnd > fileSize) throw new LayoutError(`${what}: member ${JSON.stringify(name)} runs past the end of the file`);
    const normalized = normalizeMemberName(name);
    if (type === 'file' && members.get(normalized)?.type === 'file') {
      throw new LayoutError(`${what}: member ${JSON.stringify(normalized)} appears twice; refused as ambiguous`);
    }
    members.set(normalized, { name: normalized, type, offset: dataOffset, size: type === 'file' ? memberSize : 0 });
    pos = type === 'file' ? dataOffset + Math.ceil(memberSize / block) * block : next;
  }
  return members;
}
