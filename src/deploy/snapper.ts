/**
 * snapper-compatible snapshot metadata: `<snapshotsDir>/N/snapshot` (the btrfs
 * subvolume) and `<snapshotsDir>/N/info.xml`, so that snapper, tukit, GRUB's
 * snapshot menu and health-checker see ocisnap's deployments as snapper
 * snapshots. Facts from openSUSE/snapper (snapper/Snapshot.cc: Snapshots::read,
 * Snapshots::nextNumber, Snapshot::writeInfo; snapper/XmlFile.cc; snapper/AppUtil.cc:
 * datetime/scan_datetime; snapper/FileUtils.cc: SDir::number_entries;
 * snapper/Btrfs.cc: checkSnapshot), checked against Debian's snapper 0.10.4.
 *
 * info.xml is what libxml2's xmlDocFormatDump writes for snapper: an XML
 * declaration without encoding, two-space indentation, children of <snapshot>
 * in the order type, num, date, uid (only if not 0), pre_num (only for post),
 * description (only if not empty), cleanup (only if not empty), then one
 * <userdata><key/><value/></userdata> per entry, sorted by key (a std::map).
 * Text escapes &, <, > and CR, and, since no encoding is declared, every
 * non-ASCII character as an upper-case hex character reference (`&#xE4;`).
 * "important" is not an element: snapper's cleanup reads userdata
 * `important=yes` (client/cleanup.cc), see isImportant().
 */
import { constants as fsConstants } from 'node:fs';
import { chmod, lstat, mkdir, open, readdir, rmdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { OcisnapError, describeError } from '../errors.js';
import { syncDir, unlinkDurable, writeFileAtomic } from '../sys/atomic-file.js';
import { isoTime } from '../iso-time.js';

export type SnapshotType = 'single' | 'pre' | 'post';

export interface SnapshotInfo {
  /** Snapshot number, 1 … 2^32-1; equals the directory name. */
  num: number;
  type: SnapshotType;
  /** Only for `post` snapshots (required there): the number of the matching `pre` snapshot, 0 if none. */
  preNum?: number;
  /** Whole seconds; written in UTC. */
  date: Date;
  /** Owner; absent means root (0), which snapper does not write. */
  uid?: number;
  description?: string;
  /** Cleanup algorithm: `number`, `timeline`, `empty-pre-post` or empty. */
  cleanup?: string;
  /** snapper forbids `,` and `=` in keys and values (Snapshots::checkUserdata). */
  userdata: Record<string, string>;
}

/** info.xml is missing, malformed or inconsistent, or cannot be written. */
export class SnapshotMetadataError extends OcisnapError {}

/** Why a directory entry under the snapshots directory is not a snapshot. */
export type SkipReason = 'not-a-number' | 'not-a-directory' | 'no-info-xml' | 'invalid-info-xml' | 'no-subvolume';

export interface SkippedEntry {
  name: string;
  reason: SkipReason;
  /** One line for a user. */
  detail: string;
}

const maxNum = 0xffff_ffff; // snapper's numbers are unsigned int
const maxInfoXmlBytes = 1 << 20;
/** Snapshot 0 is snapper's "current" and never on disk (SDir::number_entries). */
const numberName = /^[1-9][0-9]*$/;
const dateFormat = /^(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})$/;
const snapshotTypes: readonly SnapshotType[] = ['single', 'pre', 'post'];

/** `<snapshotsDir>/N`: snapper's "info directory" of snapshot N. */
export function snapshotDir(snapshotsDir: string, num: number): string {
  return join(snapshotsDir, String(num));
}

/** `<snapshotsDir>/N/snapshot`: the subvolume (snapper's SNAPSHOT_NAME). */
export function snapshotSubvolume(snapshotsDir: string, num: number): string {
  return join(snapshotsDir, String(num), 'snapshot');
}

export function infoXmlPath(snapshotsDir: string, num: number): string {
  return join(snapshotsDir, String(num), 'info.xml');
}

/** snapper's cleanup treats a snapshot with userdata `important=yes` as important. */
export function isImportant(info: SnapshotInfo): boolean {
  return info.userdata['important'] === 'yes';
}

/** The userdata keys ocisnap writes into its snapshots' info.xml. */
export const OCISNAP_USERDATA = {
  /** The image reference as the user gave it. */
  image: 'ocisnap.image',
  /** The manifest digest deployed. */
  digest: 'ocisnap.digest',
  /** The health verdict: `pending`, `good` or `bad`. */
  health: 'ocisnap.health',
} as const;

/**
 * info.xml for a deployment of `image`: a single snapshot described by the
 * image, with its reference and manifest digest as userdata. Cleanup
 * defaults to `number`, as tukit's snapshots have: snapper's number cleanup
 * may then remove it once it is neither default nor active, so keepers
 * (last good, pinned) should be marked important or get cleanup ''.
 */
export function deploymentSnapshotInfo(opts: {
  num: number;
  image: string;
  manifestDigest: string;
  date?: Date;
  cleanup?: string;
  userdata?: Record<string, string>;
}): SnapshotInfo {
  return {
    num: opts.num,
    type: 'single',
    date: opts.date ?? new Date(),
    description: `ocisnap: ${opts.image}`,
    cleanup: opts.cleanup ?? 'number',
    userdata: {
      ...opts.userdata,
      [OCISNAP_USERDATA.image]: opts.image,
      [OCISNAP_USERDATA.digest]: opts.manifestDigest,
    },
  };
}

// ---------------------------------------------------------------- rendering

/** Renders info.xml exactly as snapper writes it. Throws on values snapper could not store. */
export function renderInfoXml(info: SnapshotInfo): string {
  const what = `snapshot ${info.num}`;
  checkNum(info.num, what, 'num');
  if (!snapshotTypes.includes(info.type)) throw new SnapshotMetadataError(`${what}: invalid type ${JSON.stringify(info.type)}`);
  const lines = ['<?xml version="1.0"?>', '<snapshot>'];
  const child = (name: string, value: string, indent = '  '): void => {
    lines.push(`${indent}<${name}>${escapeText(value, what, name)}</${name}>`);
  };
  child('type', info.type);
  child('num', String(info.num));
  child('date', formatDate(info.date, what));
  if (info.uid !== undefined && info.uid !== 0) {
    if (!Number.isSafeInteger(info.uid) || info.uid < 0 || info.uid > maxNum) {
      throw new SnapshotMetadataError(`${what}: invalid uid ${info.uid}`);
    }
    child('uid', String(info.uid));
  }
  if (info.type === 'post') {
    // snapper writes pre_num for every post snapshot; 0 means "no pre snapshot".
    const preNum = info.preNum;
    if (preNum === undefined || !Number.isSafeInteger(preNum) || preNum < 0 || preNum > maxNum) {
      throw new SnapshotMetadataError(`${what}: a post snapshot needs a valid pre number (got ${preNum})`);
    }
    child('pre_num', String(preNum));
  } else if (info.preNum !== undefined) {
    throw new SnapshotMetadataError(`${what}: only a post snapshot has a pre number`);
  }
  if (info.description) child('description', info.description);
  if (info.cleanup) child('cleanup', info.cleanup);
  for (const [key, value] of sortedUserdata(info.userdata)) {
    checkUserdata(key, value, what);
    lines.push('  <userdata>');
    child('key', key, '    ');
    child('value', value, '    ');
    lines.push('  </userdata>');
  }
  lines.push('</snapshot>', '');
  return lines.join('\n');
}

function checkNum(n: number, what: string, field: string): void {
  if (!Number.isSafeInteger(n) || n < 1 || n > maxNum) {
    throw new SnapshotMetadataError(`${what}: invalid ${field} ${n} (must be 1 to ${maxNum})`);
  }
}

/** snapper's Snapshots::checkUserdata; ocisnap also refuses empty values, which snapper's CLI treats as "remove". */
function checkUserdata(key: string, value: string, what: string): void {
  if (key === '' || /[,=]/.test(key)) {
    throw new SnapshotMetadataError(`${what}: invalid userdata key ${JSON.stringify(key)} (empty, or has ',' or '=')`);
  }
  if (value === '' || /[,=]/.test(value)) {
    throw new SnapshotMetadataError(
      `${what}: invalid value for userdata ${key}: ${JSON.stringify(value)} (empty, or has ',' or '=')`,
    );
  }
}

/** std::map<string, string> order: bytewise on UTF-8. */
function sortedUserdata(userdata: Record<string, string>): [string, string][] {
  return Object.entries(userdata).sort(([a], [b]) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
}

/** snapper's datetime(t, utc=true, classic=true): strftime "%F %T" of gmtime. */
function formatDate(date: Date, what: string): string {
  const t = date.getTime();
  if (!Number.isFinite(t)) throw new SnapshotMetadataError(`${what}: invalid date`);
  const year = date.getUTCFullYear();
  if (year < 1970 || year > 9999) throw new SnapshotMetadataError(`${what}: date out of range: ${isoTime(date)}`);
  const p = (n: number): string => String(n).padStart(2, '0');
  return (
    `${year}-${p(date.getUTCMonth() + 1)}-${p(date.getUTCDate())} ` +
    `${p(date.getUTCHours())}:${p(date.getUTCMinutes())}:${p(date.getUTCSeconds())}`
  );
}

/** libxml2's text escaping for a document without a declared encoding. */
function escapeText(value: string, what: string, field: string): string {
  let out = '';
  for (const ch of value) {
    const cp = ch.codePointAt(0)!;
    if (ch === '&') out += '&amp;';
    else if (ch === '<') out += '&lt;';
    else if (ch === '>') out += '&gt;';
    else if (ch === '\r') out += '&#xD;';
    else if (!isXmlChar(cp)) {
      throw new SnapshotMetadataError(`${what}: ${field} has a character XML cannot hold (U+${cp.toString(16).toUpperCase().padStart(4, '0')})`);
    } else if (cp < 0x80) out += ch;
    else out += `&#x${cp.toString(16).toUpperCase()};`;
  }
  return out;
}

/** XML 1.0 Char production (lone surrogates come out of for-of as themselves and fail here). */
function isXmlChar(cp: number): boolean {
  return (
    cp === 0x9 ||
    cp === 0xa ||
    cp === 0xd ||
    (cp >= 0x20 && cp <= 0xd7ff) ||
    (cp >= 0xe000 && cp <= 0xfffd) ||
    (cp >= 0x10000 && cp <= 0x10ffff)
  );
}

// ---------------------------------------------------------------- parsing

interface XmlElement {
  name: string;
  children: (XmlElement | string)[];
}

/**
 * Parses an info.xml (from snapper, ocisnap or a human). `what` names the file
 * in error messages. Like snapper, unknown elements are ignored and userdata
 * with an empty key is dropped; unlike snapper, a repeated element, stray
 * text, a DOCTYPE or an entity other than XML's predefined ones is an error.
 */
export function parseInfoXml(xml: string, what: string): SnapshotInfo {
  const root = new XmlReader(xml, what).document();
  const fail = (msg: string): never => {
    throw new SnapshotMetadataError(`${what}: ${msg}`);
  };
  if (root.name !== 'snapshot') fail(`root element is <${root.name}>, expected <snapshot>`);
  const scalars = new Map<string, string>();
  const userdata: Record<string, string> = {};
  for (const node of root.children) {
    if (typeof node === 'string') {
      if (node.trim() !== '') fail(`unexpected text in <snapshot>: ${JSON.stringify(node.trim().slice(0, 40))}`);
      continue;
    }
    if (node.name === 'userdata') {
      const fields = textChildren(node, what, ['key', 'value']);
      const key = fields.get('key') ?? '';
      if (key !== '') userdata[key] = fields.get('value') ?? '';
      continue;
    }
    if (scalars.has(node.name)) fail(`<${node.name}> appears twice`);
    scalars.set(node.name, elementText(node, what));
  }
  const type = scalars.get('type');
  if (type === undefined) fail('<type> missing');
  if (!snapshotTypes.includes(type as SnapshotType)) fail(`invalid <type> ${JSON.stringify(type)}`);
  const num = parseNumber(scalars.get('num'), 'num', what, true);
  if (num === undefined) fail('<num> missing');
  const dateText = scalars.get('date');
  if (dateText === undefined) fail('<date> missing');
  const info: SnapshotInfo = {
    num: num!,
    type: type as SnapshotType,
    date: parseDate(dateText!, what),
    userdata,
  };
  const uid = parseNumber(scalars.get('uid'), 'uid', what, false);
  if (uid !== undefined && uid !== 0) info.uid = uid;
  const preNum = parseNumber(scalars.get('pre_num'), 'pre_num', what, false);
  if (info.type === 'post') info.preNum = preNum ?? 0;
  const description = scalars.get('description');
  if (description) info.description = description;
  const cleanup = scalars.get('cleanup');
  if (cleanup) info.cleanup = cleanup;
  return info;
}

function parseNumber(text: string | undefined, field: string, what: string, positive: boolean): number | undefined {
  if (text === undefined) return undefined;
  const ok = positive ? numberName.test(text) : /^(0|[1-9][0-9]*)$/.test(text);
  const n = Number(text);
  if (!ok || n > maxNum) throw new SnapshotMetadataError(`${what}: invalid <${field}> ${JSON.stringify(text.slice(0, 40))}`);
  return n;
}

/** snapper's scan_datetime: strptime "%Y-%m-%d %T", then timegm. */
function parseDate(text: string, what: string): Date {
  const m = dateFormat.exec(text);
  const bad = (): never => {
    throw new SnapshotMetadataError(`${what}: invalid <date> ${JSON.stringify(text.slice(0, 40))} (expected UTC "YYYY-MM-DD HH:MM:SS")`);
  };
  if (!m) bad();
  const [y, mo, d, h, mi, s] = m!.slice(1).map(Number) as [number, number, number, number, number, number];
  const date = new Date(Date.UTC(y, mo - 1, d, h, mi, s));
  // Rejects 2024-02-30 and 25:00:00, which Date.UTC would silently roll over.
  if (
    date.getUTCFullYear() !== y ||
    date.getUTCMonth() !== mo - 1 ||
    date.getUTCDate() !== d ||
    date.getUTCHours() !== h ||
    date.getUTCMinutes() !== mi ||
    date.getUTCSeconds() !== s
  ) {
    bad();
  }
  return date;
}

/** The text of an element that must hold only text. */
function elementText(el: XmlElement, what: string): string {
  let text = '';
  for (const c of el.children) {
    if (typeof c !== 'string') throw new SnapshotMetadataError(`${what}: <${el.name}> must hold text, not <${c.name}>`);
    text += c;
  }
  return text;
}

/** The text children of an element such as <userdata>, each at most once. */
function textChildren(el: XmlElement, what: string, names: string[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const c of el.children) {
    if (typeof c === 'string') {
      if (c.trim() !== '') throw new SnapshotMetadataError(`${what}: unexpected text in <${el.name}>`);
      continue;
    }
    if (!names.includes(c.name)) continue;
    if (out.has(c.name)) throw new SnapshotMetadataError(`${what}: <${c.name}> appears twice in <${el.name}>`);
    out.set(c.name, elementText(c, what));
  }
  return out;
}

/**
 * A small non-validating XML reader for documents like info.xml: elements,
 * attributes (read and ignored), text with the predefined and numeric
 * entities, CDATA, comments, one leading XML declaration. No DOCTYPE, so no
 * entity expansion. Bounded nesting.
 */
class XmlReader {
  private pos = 0;

  constructor(
    private readonly src: string,
    private readonly what: string,
  ) {}

  document(): XmlElement {
    if (this.src.startsWith('\uFEFF')) this.pos = 1;
    if (this.src.startsWith('<?xml', this.pos)) {
      const end = this.src.indexOf('?>', this.pos);
      if (end < 0) this.fail('unterminated XML declaration');
      this.pos = end + 2;
    }
    this.misc();
    if (!this.src.startsWith('<', this.pos) || this.src.startsWith('</', this.pos)) this.fail('no root element');
    const root = this.element(0);
    this.misc();
    if (this.pos < this.src.length) this.fail('content after the root element');
    return root;
  }

  /** Whitespace and comments outside the root element. */
  private misc(): void {
    for (;;) {
      this.skipSpace();
      if (this.src.startsWith('<!--', this.pos)) this.comment();
      else if (this.src.startsWith('<!', this.pos)) this.fail('DOCTYPE and declarations are not allowed');
      else if (this.src.startsWith('<?', this.pos)) this.fail('processing instructions are not allowed');
      else return;
    }
  }

  private element(depth: number): XmlElement {
    if (depth > 16) this.fail('elements nested too deeply');
    this.pos++; // '<'
    const name = this.name();
    for (;;) {
      const hadSpace = this.skipSpace();
      if (this.src.startsWith('/>', this.pos)) {
        this.pos += 2;
        return { name, children: [] };
      }
      if (this.src.startsWith('>', this.pos)) {
        this.pos++;
        break;
      }
      if (!hadSpace) this.fail(`malformed tag <${name}>`);
      this.attribute();
    }
    const children: (XmlElement | string)[] = [];
    let text = '';
    for (;;) {
      if (this.pos >= this.src.length) this.fail(`<${name}> is not closed`);
      if (this.src.startsWith('</', this.pos)) {
        this.pos += 2;
        const closing = this.name();
        this.skipSpace();
        if (closing !== name || !this.src.startsWith('>', this.pos)) this.fail(`<${name}> closed by </${closing}>`);
        this.pos++;
        if (text !== '') children.push(text);
        return { name, children };
      }
      if (this.src.startsWith('<!--', this.pos)) this.comment();
      else if (this.src.startsWith('<![CDATA[', this.pos)) {
        const end = this.src.indexOf(']]>', this.pos);
        if (end < 0) this.fail('unterminated CDATA section');
        text += this.src.slice(this.pos + 9, end);
        this.pos = end + 3;
      } else if (this.src.startsWith('<!', this.pos) || this.src.startsWith('<?', this.pos)) {
        this.fail(`unexpected markup in <${name}>`);
      } else if (this.src.startsWith('<', this.pos)) {
        if (text !== '') children.push(text);
        text = '';
        children.push(this.element(depth + 1));
      } else {
        text += this.charData();
      }
    }
  }

  private attribute(): void {
    this.name();
    this.skipSpace();
    if (this.src[this.pos] !== '=') this.fail('malformed attribute');
    this.pos++;
    this.skipSpace();
    const quote = this.src[this.pos];
    if (quote !== '"' && quote !== "'") this.fail('malformed attribute');
    const end = this.src.indexOf(quote!, this.pos + 1);
    if (end < 0 || this.src.slice(this.pos + 1, end).includes('<')) this.fail('malformed attribute');
    this.pos = end + 1;
  }

  /** Text up to the next '<', with references decoded. */
  private charData(): string {
    let out = '';
    while (this.pos < this.src.length && this.src[this.pos] !== '<') {
      const ch = this.src[this.pos]!;
      if (ch === '&') {
        out += this.reference();
        continue;
      }
      const cp = this.src.codePointAt(this.pos)!;
      if (!isXmlChar(cp)) this.fail(`character U+${cp.toString(16).toUpperCase()} is not allowed in XML`);
      // XML end-of-line handling: CRLF and lone CR read as LF (a CR survives only as &#xD;).
      if (ch === '\r') {
        out += '\n';
        this.pos += this.src[this.pos + 1] === '\n' ? 2 : 1;
        continue;
      }
      const s = String.fromCodePoint(cp);
      out += s;
      this.pos += s.length;
    }
    return out;
  }

  private reference(): string {
    const end = this.src.indexOf(';', this.pos);
    if (end < 0 || end - this.pos > 12) this.fail('malformed character reference');
    const ref = this.src.slice(this.pos + 1, end);
    this.pos = end + 1;
    const predefined: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };
    const known = predefined[ref];
    if (known !== undefined) return known;
    const m = /^#(?:x([0-9a-fA-F]+)|([0-9]+))$/.exec(ref);
    if (!m) this.fail(`unknown entity &${ref};`);
    const cp = m![1] !== undefined ? parseInt(m![1], 16) : parseInt(m![2]!, 10);
    if (!isXmlChar(cp)) this.fail(`character reference &${ref}; is not an XML character`);
    return String.fromCodePoint(cp);
  }

  private comment(): void {
    const end = this.src.indexOf('-->', this.pos + 4);
    if (end < 0) this.fail('unterminated comment');
    this.pos = end + 3;
  }

  private name(): string {
    const m = /^[A-Za-z_:][-A-Za-z0-9_.:]*/.exec(this.src.slice(this.pos, this.pos + 256));
    if (!m) this.fail('malformed element or attribute name');
    this.pos += m![0].length;
    return m![0];
  }

  private skipSpace(): boolean {
    const start = this.pos;
    while (this.pos < this.src.length && ' \t\r\n'.includes(this.src[this.pos]!)) this.pos++;
    return this.pos > start;
  }

  private fail(msg: string): never {
    const line = this.src.slice(0, this.pos).split('\n').length;
    throw new SnapshotMetadataError(`${this.what}: not valid info.xml (line ${line}): ${msg}`);
  }
}

// ---------------------------------------------------------------- files

/** Reads and checks `<snapshotsDir>/N/info.xml`; its <num> must be N (as snapper checks). */
export async function readInfoXml(snapshotsDir: string, num: number): Promise<SnapshotInfo> {
  const path = infoXmlPath(snapshotsDir, num);
  let text: string;
  try {
    text = await readSmallFile(path);
  } catch (err) {
    if (err instanceof SnapshotMetadataError) throw err;
    throw new SnapshotMetadataError(`cannot read ${path}: ${describeError(err)}`, { cause: err });
  }
  const info = parseInfoXml(text, path);
  if (info.num !== num) throw new SnapshotMetadataError(`${path}: <num> is ${info.num}, but the directory is ${num}`);
  return info;
}

/**
 * Reads a UTF-8 file without following a final symlink (snapper opens info.xml
 * O_NOFOLLOW), at most 1 MiB; O_NONBLOCK so a FIFO in its place cannot hang us.
 */
async function readSmallFile(path: string): Promise<string> {
  const fh = await open(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new SnapshotMetadataError(`${path}: not a regular file`);
    if (st.size > maxInfoXmlBytes) throw new SnapshotMetadataError(`${path}: larger than ${maxInfoXmlBytes} bytes`);
    const buf = Buffer.alloc(st.size);
    const { bytesRead } = await fh.read(buf, 0, st.size, 0);
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(buf.subarray(0, bytesRead));
    } catch {
      throw new SnapshotMetadataError(`${path}: not UTF-8`);
    }
  } finally {
    await fh.close();
  }
}

/**
 * The snapshots snapper would list, sorted by number: numbered directories
 * with a valid info.xml and a subvolume `snapshot` (Snapshots::read). Anything
 * else is skipped and passed to `onSkip`, like snapper's "not adding snapshot"
 * log lines; a reserved number whose deployment is still being made, or was
 * interrupted, shows up as `no-info-xml`.
 */
export async function listSnapshots(
  snapshotsDir: string,
  onSkip: (entry: SkippedEntry) => void = () => undefined,
): Promise<SnapshotInfo[]> {
  const entries = await readSnapshotsDir(snapshotsDir);
  const found: SnapshotInfo[] = [];
  for (const entry of entries) {
    const skip = (reason: SkipReason, detail: string): void => onSkip({ name: entry.name, reason, detail });
    if (!numberName.test(entry.name) || Number(entry.name) > maxNum) {
      if (entry.isDirectory()) skip('not-a-number', `${join(snapshotsDir, entry.name)}: not a snapshot number`);
      continue;
    }
    const num = Number(entry.name);
    if (!entry.isDirectory()) {
      skip('not-a-directory', `${join(snapshotsDir, entry.name)}: not a directory`);
      continue;
    }
    let info: SnapshotInfo;
    try {
      info = await readInfoXml(snapshotsDir, num);
    } catch (err) {
      const missing = err instanceof SnapshotMetadataError && (err.cause as { code?: string } | undefined)?.code === 'ENOENT';
      skip(missing ? 'no-info-xml' : 'invalid-info-xml', missing ? `${infoXmlPath(snapshotsDir, num)}: missing` : describeError(err));
      continue;
    }
    if (!(await isSubvolume(snapshotSubvolume(snapshotsDir, num)))) {
      skip('no-subvolume', `${snapshotSubvolume(snapshotsDir, num)}: not a btrfs subvolume`);
      continue;
    }
    found.push(info);
  }
  return found.sort((a, b) => a.num - b.num);
}

/** A btrfs subvolume's root directory has inode number 256 (snapper/BtrfsUtils.cc is_subvolume). */
async function isSubvolume(path: string): Promise<boolean> {
  try {
    const st = await lstat(path);
    return st.isDirectory() && st.ino === 256;
  } catch {
    return false;
  }
}

async function readSnapshotsDir(snapshotsDir: string) {
  try {
    return await readdir(snapshotsDir, { withFileTypes: true });
  } catch (err) {
    throw new SnapshotMetadataError(`cannot read snapshots directory ${snapshotsDir}: ${describeError(err)}`, { cause: err });
  }
}

/** The highest number among the numbered entries (directories or not), 0 if none. */
async function highestNumber(snapshotsDir: string): Promise<number> {
  let highest = 0;
  for (const entry of await readSnapshotsDir(snapshotsDir)) {
    if (numberName.test(entry.name) && Number(entry.name) <= maxNum) highest = Math.max(highest, Number(entry.name));
  }
  return highest;
}

/**
 * Reserves the next snapshot number by creating its empty directory: 1 + the
 * highest numbered entry present (with or without info.xml), and above
 * `opts.above` (the highest number ocisnap has ever used, so that numbers stay
 * unique even after snapper removed the top directory). mkdir is the atomic
 * claim: EEXIST means a concurrent snapper or ocisnap took it, so try the
 * next. snapper (Snapshots::nextNumber) claims numbers the same way; since
 * 0.13 it also starts above every numbered entry, while 0.10 (Debian's) starts
 * above the highest listed snapshot and steps over existing directories.
 *
 * The caller should create `N/snapshot` at once: a snapper newer than 0.13
 * removes empty numbered directories it does not know while picking its own
 * number (then the snapshot command fails with ENOENT and nothing is lost).
 */
export async function reserveSnapshotNumber(snapshotsDir: string, opts: { above?: number } = {}): Promise<number> {
  let num = Math.max(await highestNumber(snapshotsDir), opts.above ?? 0);
  for (;;) {
    num++;
    if (num > maxNum) throw new SnapshotMetadataError(`${snapshotsDir}: no snapshot numbers left`);
    const dir = snapshotDir(snapshotsDir, num);
    try {
      await mkdir(dir, 0o755);
    } catch (err) {
      if ((err as { code?: unknown }).code === 'EEXIST') continue;
      throw new SnapshotMetadataError(`cannot reserve snapshot number ${num} in ${snapshotsDir}: ${describeError(err)}`, {
        cause: err,
      });
    }
    await chmod(dir, 0o755); // as snapper does; mkdir's mode is filtered by the umask
    await syncDir(snapshotsDir);
    return num;
  }
}

/**
 * Writes `<snapshotsDir>/N/info.xml` atomically (temp file, fsync, rename,
 * fsync dir, as Snapshot::writeInfo does), mode 0644 like current snapper
 * (0.10 wrote 0600).
 */
export async function writeInfoXml(snapshotsDir: string, info: SnapshotInfo): Promise<void> {
  const xml = renderInfoXml(info);
  const path = infoXmlPath(snapshotsDir, info.num);
  try {
    await writeFileAtomic(path, xml, 0o644);
  } catch (err) {
    throw new SnapshotMetadataError(`cannot write ${path}: ${describeError(err)}`, { cause: err });
  }
}

/**
 * Read-modify-write of snapshot N's userdata: a string sets a key, null removes
 * it. Atomic per file; callers serialise writers (ocisnap's state lock).
 */
export async function setUserdata(
  snapshotsDir: string,
  num: number,
  changes: Record<string, string | null>,
): Promise<SnapshotInfo> {
  const info = await readInfoXml(snapshotsDir, num);
  const userdata = { ...info.userdata };
  for (const [key, value] of Object.entries(changes)) {
    if (value === null) delete userdata[key];
    else userdata[key] = value;
  }
  const updated = { ...info, userdata };
  await writeInfoXml(snapshotsDir, updated);
  return updated;
}

/**
 * Step 1 of removing snapshot N: delete its info.xml, so snapper and ocisnap
 * stop listing it. Then the caller deletes the subvolume, then calls
 * releaseSnapshotDir. Interrupted anywhere, what is left is an unlisted
 * directory, never a listed snapshot without its subvolume.
 */
export async function unregisterSnapshot(snapshotsDir: string, num: number): Promise<void> {
  checkNum(num, snapshotsDir, 'snapshot number');
  await unlinkDurable(infoXmlPath(snapshotsDir, num));
}

/**
 * Last step of removing snapshot N (after its subvolume is gone): removes the
 * info directory, its snapper file lists (`filelist-M.txt[.gz]`) and stale temp
 * files, and the lists other snapshots keep against N, as snapper's
 * deleteSnapshot does. Like snapper since 0.13, the directory of the highest
 * number stays (empty), so the number is not handed out again. Refuses while
 * the subvolume or info.xml is still there. Missing directory: nothing to do.
 */
export async function releaseSnapshotDir(snapshotsDir: string, num: number): Promise<void> {
  checkNum(num, snapshotsDir, 'snapshot number');
  const dir = snapshotDir(snapshotsDir, num);
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as { code?: unknown }).code === 'ENOENT') return;
    throw new SnapshotMetadataError(`cannot read ${dir}: ${describeError(err)}`, { cause: err });
  }
  if (names.includes('snapshot') || names.includes('info.xml')) {
    throw new SnapshotMetadataError(`${dir}: still holds its subvolume or info.xml; unregister and delete it first`);
  }
  for (const name of names) {
    if (/^filelist-[0-9]+\.txt(\.gz)?$/.test(name) || /^\.?info\.xml\.tmp-/.test(name)) await unlink(join(dir, name));
  }
  for (const entry of await readSnapshotsDir(snapshotsDir)) {
    if (!numberName.test(entry.name) || !entry.isDirectory() || Number(entry.name) === num) continue;
    for (const suffix of ['.txt', '.txt.gz']) {
      await unlink(join(snapshotsDir, entry.name, `filelist-${num}${suffix}`)).catch(() => undefined);
    }
  }
  if ((await highestNumber(snapshotsDir)) === num) {
    await syncDir(dir);
    return;
  }
  try {
    await rmdir(dir);
  } catch (err) {
    throw new SnapshotMetadataError(`cannot remove ${dir}: ${describeError(err)}`, { cause: err });
  }
  await syncDir(snapshotsDir);
}
