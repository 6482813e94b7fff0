/**
 * Builds test layer tars from entry lists. Written by hand rather than with
 * tar-stream's pack(): tests need exact bytes that tar-stream cannot write
 * (binary PAX values such as security.capability, names that are not UTF-8,
 * GNU 'L'/'K' long names, hand-made malformed headers). Format: POSIX
 * ustar + pax (IEEE 1003.1-2017 "pax"), GNU long names as GNU tar writes them.
 */

export type TarType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'char' | 'block' | 'fifo';

export interface TarSpec {
  /** Raw name; a string is encoded as UTF-8. */
  name: string | Buffer;
  type?: TarType;
  /** Overrides the type flag byte (e.g. 'V' to make an unsupported entry). */
  typeflag?: string;
  content?: Buffer | string;
  mode?: number;
  uid?: number;
  gid?: number;
  /** Seconds; with `mtimeNs` also written as a PAX mtime with nanoseconds. */
  mtime?: number;
  mtimeNs?: number;
  linkname?: string | Buffer;
  devmajor?: number;
  devminor?: number;
  /** Extended attributes, written as PAX SCHILY.xattr.NAME records with raw values. */
  xattrs?: Record<string, Buffer | string>;
  /** Extra PAX records. */
  pax?: Record<string, Buffer | string>;
  /** How to store a name or link name longer than 100 bytes: PAX path/linkpath (default) or GNU 'L'/'K'. */
  longNames?: 'pax' | 'gnu';
}

const typeflags: Record<TarType, string> = {
  file: '0',
  hardlink: '1',
  symlink: '2',
  char: '3',
  block: '4',
  dir: '5',
  fifo: '6',
};

function buf(v: string | Buffer): Buffer {
  return typeof v === 'string' ? Buffer.from(v, 'utf8') : v;
}

function octal(value: number, width: number): string {
  return value.toString(8).padStart(width - 1, '0') + '\0';
}

function header(fields: {
  name: Buffer;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  typeflag: string;
  linkname: Buffer;
  devmajor: number;
  devminor: number;
}): Buffer {
  const h = Buffer.alloc(512);
  fields.name.copy(h, 0, 0, Math.min(100, fields.name.length));
  h.write(octal(fields.mode, 8), 100, 'latin1');
  h.write(octal(fields.uid, 8), 108, 'latin1');
  h.write(octal(fields.gid, 8), 116, 'latin1');
  h.write(octal(fields.size, 12), 124, 'latin1');
  h.write(octal(fields.mtime, 12), 136, 'latin1');
  h.write(fields.typeflag, 156, 'latin1');
  fields.linkname.copy(h, 157, 0, Math.min(100, fields.linkname.length));
  h.write('ustar\u000000', 257, 'latin1');
  h.write('root', 265, 'latin1');
  h.write('root', 297, 'latin1');
  h.write(octal(fields.devmajor, 8), 329, 'latin1');
  h.write(octal(fields.devminor, 8), 337, 'latin1');
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(octal(sum, 7) + ' ', 148, 'latin1');
  return h;
}

function padded(data: Buffer): Buffer[] {
  const pad = (512 - (data.length % 512)) % 512;
  return pad === 0 ? [data] : [data, Buffer.alloc(pad)];
}

/** One PAX record "LEN key=value\n"; LEN counts itself. */
function paxRecord(key: string, value: Buffer): Buffer {
  const body = Buffer.concat([Buffer.from(` ${key}=`, 'utf8'), value, Buffer.from('\n')]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

function specialEntry(typeflag: string, name: string, data: Buffer): Buffer[] {
  return [
    header({
      name: Buffer.from(name),
      mode: 0o644,
      uid: 0,
      gid: 0,
      size: data.length,
      mtime: 0,
      typeflag,
      linkname: Buffer.alloc(0),
      devmajor: 0,
      devminor: 0,
    }),
    ...padded(data),
  ];
}

/** The blocks of one entry (extension headers included), without end-of-archive. */
export function entryBlocks(spec: TarSpec): Buffer[] {
  const type = spec.type ?? 'file';
  const name = buf(spec.name);
  const linkname = buf(spec.linkname ?? '');
  const content = buf(spec.content ?? '');
  const out: Buffer[] = [];
  const pax: Buffer[] = [];
  const long = spec.longNames ?? 'pax';
  let headerName = name;
  let headerLink = linkname;
  if (name.length > 100) {
    headerName = name.subarray(0, 100);
    if (long === 'gnu') out.push(...specialEntry('L', '././@LongLink', Buffer.concat([name, Buffer.alloc(1)])));
    else pax.push(paxRecord('path', name));
  }
  if (linkname.length > 100) {
    headerLink = linkname.subarray(0, 100);
    if (long === 'gnu') out.push(...specialEntry('K', '././@LongLink', Buffer.concat([linkname, Buffer.alloc(1)])));
    else pax.push(paxRecord('linkpath', linkname));
  }
  const mtime = spec.mtime ?? 1_700_000_000;
  if (spec.mtimeNs !== undefined) {
    pax.push(paxRecord('mtime', Buffer.from(`${mtime}.${String(spec.mtimeNs).padStart(9, '0')}`)));
  }
  for (const [k, v] of Object.entries(spec.xattrs ?? {})) pax.push(paxRecord(`SCHILY.xattr.${k}`, buf(v)));
  for (const [k, v] of Object.entries(spec.pax ?? {})) pax.push(paxRecord(k, buf(v)));
  if (pax.length > 0) out.push(...specialEntry('x', 'PaxHeader', Buffer.concat(pax)));
  const hasData = type === 'file';
  out.push(
    header({
      name: headerName,
      mode: spec.mode ?? (type === 'dir' ? 0o755 : 0o644),
      uid: spec.uid ?? 0,
      gid: spec.gid ?? 0,
      size: hasData ? content.length : 0,
      mtime,
      typeflag: spec.typeflag ?? typeflags[type],
      linkname: headerLink,
      devmajor: spec.devmajor ?? 0,
      devminor: spec.devminor ?? 0,
    }),
  );
  if (hasData && content.length > 0) out.push(...padded(content));
  return out;
}

/** A complete tar: the entries, two zero blocks, and optional trailing bytes (e.g. more zero padding). */
export function buildTar(entries: TarSpec[], opts: { trailing?: Buffer } = {}): Buffer {
  const parts = entries.flatMap(entryBlocks);
  parts.push(Buffer.alloc(1024));
  if (opts.trailing) parts.push(opts.trailing);
  return Buffer.concat(parts);
}
