/**
 * Three-way merge of the colon-separated account databases (passwd, shadow,
 * group, gshadow, subuid, subgid; formats in passwd(5), shadow(5), group(5),
 * gshadow(5), subuid(5)): one entry per line, keyed by its first field (the
 * user or group name). Merging per entry, instead of taking one whole file,
 * keeps the users the admin added and the passwords they set while the users
 * a new image adds (system users of new packages) still appear.
 *
 * Rules, per name:
 * - in local and image: the image's line if local equals base (the admin left
 *   it alone), else the local line (the admin changed it; e.g. a password);
 * - only in the image: kept if base lacks it (the image added it); dropped if
 *   base has it (the admin deleted it: it stays deleted);
 * - only in local: kept if base lacks it (the admin added it); dropped if base
 *   has the same line (the image removed an entry the admin never touched);
 *   kept if the admin changed it.
 * Without a base nothing can be told apart, so nothing is dropped: the union,
 * local lines winning. Order: the image's order, then local additions in
 * local order, so diffs across updates stay small.
 * Comment and blank lines are carried like entries keyed by their text.
 */

/** Names of the files under /etc merged per entry. */
export const ACCOUNT_FILES: readonly string[] = ['passwd', 'shadow', 'group', 'gshadow', 'subuid', 'subgid'];

interface Parsed {
  order: string[];
  lines: Map<string, string>;
}

function parse(text: string): Parsed {
  const order: string[] = [];
  const lines = new Map<string, string>();
  const raw = text.split('\n');
  if (raw.length > 0 && raw[raw.length - 1] === '') raw.pop();
  for (const line of raw) {
    const colon = line.indexOf(':');
    let key = line.trim() === '' || line.startsWith('#') || colon < 0 ? `\0text:${line}` : line.slice(0, colon);
    // A duplicated name keeps every occurrence in order, each its own key.
    for (let n = 1; lines.has(key); n++) key = `${key.split('\0dup')[0]}\0dup${n}`;
    order.push(key);
    lines.set(key, line);
  }
  return { order, lines };
}

export interface AccountMergeResult {
  text: string;
  /** Names whose local line was kept over the image's (changed or added by the admin). */
  keptLocal: string[];
  /** Names the admin deleted that the image still has. */
  deletedLocally: string[];
}

function visible(key: string): boolean {
  return !key.startsWith('\0text:');
}

/** Merge one account database; `base` undefined when the pristine file is unknown. */
export function mergeAccountText(base: string | undefined, local: string, image: string): AccountMergeResult {
  const b = base === undefined ? undefined : parse(base);
  const l = parse(local);
  const n = parse(image);
  const out: string[] = [];
  const keptLocal: string[] = [];
  const deletedLocally: string[] = [];
  const name = (k: string): string => k.split('\0dup')[0] ?? k;

  for (const key of n.order) {
    const nLine = n.lines.get(key) as string;
    const lLine = l.lines.get(key);
    const bLine = b?.lines.get(key);
    if (lLine !== undefined) {
      if (b !== undefined && lLine === bLine) {
        out.push(nLine);
      } else {
        out.push(lLine);
        if (lLine !== nLine && visible(key)) keptLocal.push(name(key));
      }
    } else if (b === undefined || bLine === undefined) {
      out.push(nLine); // added by the image (or, without a base, cannot tell)
    } else if (visible(key)) {
      deletedLocally.push(name(key)); // the admin deleted it: stays deleted
    }
  }
  for (const key of l.order) {
    if (n.lines.has(key)) continue;
    const lLine = l.lines.get(key) as string;
    const bLine = b?.lines.get(key);
    if (b !== undefined && bLine !== undefined && bLine === lLine) continue; // image removed it
    out.push(lLine);
    if (visible(key)) keptLocal.push(name(key));
  }
  return { text: out.length === 0 ? '' : `${out.join('\n')}\n`, keptLocal, deletedLocally };
}
