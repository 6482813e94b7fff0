/**
 * Runs one command under GNU time(1) and returns what it measured: wall time,
 * CPU time (user + sys of the command and every descendant it waited for:
 * wait4's rusage, what `time -f '%U %S'` reports) and peak RSS (`%M`, the
 * largest resident set of any one process in the tree, in KiB).
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa, execaSync } from 'execa';

export interface Sample {
  wallS: number;
  cpuS: number;
  rssMiB: number;
}

export class CommandFailedError extends Error {
  constructor(what: string, detail: string) {
    super(`${what} failed: ${detail}`);
  }
}

const scratch = mkdtempSync(join(tmpdir(), 'ocisnap-bench-time-'));

/**
 * Writes back dirty pages and empties the page cache, dentries and inodes, so
 * every measured run starts from the disk, whichever tool ran before it.
 */
export function dropCaches(enabled: boolean): void {
  execaSync('sync');
  if (enabled) writeFileSync('/proc/sys/vm/drop_caches', '3\n');
}

/**
 * The environment every measured command gets: only what a system service
 * (a systemd unit, a timer) would have. The caller's shell may carry settings
 * that cost one tool and not another: NODE_EXTRA_CA_CERTS, for one, makes node
 * parse a whole CA bundle at every start (0.07-0.12 s here), which a Go binary
 * never reads unless it speaks TLS.
 */
export function serviceEnv(from: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  return {
    PATH: from.PATH ?? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: from.HOME ?? '/root',
    LANG: 'C.UTF-8',
  };
}

export async function measure(what: string, argv: string[], opts: { env?: NodeJS.ProcessEnv } = {}): Promise<Sample> {
  const out = join(scratch, 'time.txt');
  rmSync(out, { force: true });
  const r = await execa('/usr/bin/time', ['-f', '%e %U %S %M', '-o', out, ...argv], {
    reject: false,
    all: true,
    env: opts.env ?? serviceEnv(),
    extendEnv: false,
  });
  if (r.exitCode !== 0) {
    const tail = String(r.all ?? '').trim().split('\n').slice(-8).join('\n');
    throw new CommandFailedError(what, `exit ${r.exitCode}: ${argv.join(' ')}\n${tail}`);
  }
  // time(1) prefixes "Command exited with non-zero status" lines; the numbers are the last line.
  const last = readFileSync(out, 'utf8').trim().split('\n').at(-1) ?? '';
  const [e, u, s, m] = last.split(' ').map(Number);
  if ([e, u, s, m].some((v) => v === undefined || Number.isNaN(v))) {
    throw new CommandFailedError(what, `unreadable time(1) output "${last}"`);
  }
  return { wallS: e!, cpuS: u! + s!, rssMiB: m! / 1024 };
}

export function shellQuote(s: string): string {
  return /^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replaceAll("'", "'\\''")}'`;
}

export interface Stats {
  n: number;
  median: number;
  min: number;
  max: number;
}

export function stats(values: number[]): Stats {
  const v = [...values].sort((a, b) => a - b);
  const n = v.length;
  const median = n === 0 ? Number.NaN : n % 2 === 1 ? v[(n - 1) / 2]! : (v[n / 2 - 1]! + v[n / 2]!) / 2;
  return { n, median, min: v[0] ?? Number.NaN, max: v[n - 1] ?? Number.NaN };
}
