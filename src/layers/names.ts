/**
 * Entry names → path components inside the layer root, and whiteout
 * classification (image-spec layer.md "Whiteouts"; containers/storage
 * pkg/archive archive.go UnpackLayer / whiteouts.go). Names are byte strings
 * (one char per byte, see tar-reader.ts).
 */

/** A name that is refused outright; the message is the reason. */
export class BadNameError extends Error {}

export const whiteoutPrefix = '.wh.';
/** AUFS metadata prefix (pkg/archive WhiteoutMetaPrefix); such entries are skipped. */
export const whiteoutMetaPrefix = '.wh..wh.';
export const opaqueMarker = '.wh..wh..opq';

/**
 * The components of `name` inside the root, as pkg/archive computes them:
 * filepath.Clean, then Join(root, name) must stay inside root. So a leading
 * "/" is dropped ("/etc/x" → etc/x; "/../x" → x), while a relative name
 * climbing above the root ("../x", "a/../../x") is refused. [] is the root.
 */
export function cleanName(name: string, what = 'name'): string[] {
  if (name.includes('\0')) throw new BadNameError(`${what} contains a NUL byte`);
  const absolute = name.startsWith('/');
  const out: string[] = [];
  for (const part of name.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (out.length > 0) out.pop();
      else if (!absolute) throw new BadNameError(`${what} escapes the layer root`);
      continue;
    }
    out.push(part);
  }
  return out;
}

export type NameKind =
  | { kind: 'plain' }
  /** `.wh.NAME`: remove NAME from the entry's directory. */
  | { kind: 'whiteout'; target: string }
  /** `.wh..wh..opq`: the entry's directory hides what lower layers put there. */
  | { kind: 'opaque' }
  /** AUFS metadata (`.wh..wh.plnk`, `.wh..wh.aufs`, …): ignored as pkg/archive does. */
  | { kind: 'ignored' };

export function classify(components: string[]): NameKind {
  const base = components[components.length - 1];
  if (base === undefined) return { kind: 'plain' };
  const first = components[0]!;
  if (first.startsWith(whiteoutMetaPrefix) && !(components.length === 1 && first === opaqueMarker)) {
    return { kind: 'ignored' };
  }
  if (!base.startsWith(whiteoutPrefix)) return { kind: 'plain' };
  if (base === opaqueMarker) return { kind: 'opaque' };
  if (base.startsWith(whiteoutMetaPrefix)) return { kind: 'ignored' };
  const target = base.slice(whiteoutPrefix.length);
  if (target === '' || target === '.' || target === '..') {
    throw new BadNameError(`invalid whiteout name ${JSON.stringify(base)}`);
  }
  return { kind: 'whiteout', target };
}

/** A byte-string name shown to a user: UTF-8 decoded, control characters escaped, quoted. */
export function displayName(name: string): string {
  return JSON.stringify(Buffer.from(name, 'latin1').toString('utf8'));
}
