/**
 * Summarizes a V8 CPU profile (`node --cpu-prof`, a .cpuprofile JSON file):
 * self time by function and by where the code lives (ocisnap's own files,
 * each npm package, Node's internals, GC, idle), as Markdown.
 */
import { readFileSync } from 'node:fs';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** Where a frame's code lives: `src/layers/apply.ts`, `npm:tar-stream`, `node:internal/...`, `(gc)`. */
function place(url: string, fn: string): string {
  if (url === '') return fn.startsWith('(') ? fn : '(native)';
  const npm = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
  if (npm) return `npm:${npm[1]}`;
  const own = /\/dist\/(.+)\.js$/.exec(url);
  if (own) return `src/${own[1]}.ts`;
  if (url.startsWith('node:')) return url.split('/').slice(0, 2).join('/');
  return url.replace(/^file:\/\//, '');
}

export function summarizeProfile(file: string, top = 15): string {
  const p = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) {
    const id = p.samples[i]!;
    self.set(id, (self.get(id) ?? 0) + (p.timeDeltas[i] ?? 0));
  }
  const total = (p.endTime - p.startTime) / 1000;
  const byFn = new Map<string, number>();
  const byPlace = new Map<string, number>();
  for (const [id, us] of self) {
    const n = byId.get(id);
    if (!n) continue;
    const { functionName, url, lineNumber } = n.callFrame;
    const where = place(url, functionName);
    const fnKey = `${functionName || '(anonymous)'} — ${where}${url ? `:${lineNumber + 1}` : ''}`;
    byFn.set(fnKey, (byFn.get(fnKey) ?? 0) + us / 1000);
    byPlace.set(where, (byPlace.get(where) ?? 0) + us / 1000);
  }
  const table = (m: Map<string, number>, head: string) => {
    const rows = [...m].sort((a, b) => b[1] - a[1]).slice(0, top);
    return [
      `| ${head} | self ms | % of ${total.toFixed(0)} ms |`,
      '|---|---:|---:|',
      ...rows.map(([k, ms]) => `| ${k.replaceAll('|', '\\|')} | ${ms.toFixed(0)} | ${((100 * ms) / total).toFixed(1)} |`),
    ].join('\n');
  };
  return `${table(byPlace, 'where (main thread)')}\n\n${table(byFn, 'function')}`;
}

if (process.argv[1]?.endsWith('profile.js') && process.argv[2]) {
  process.stdout.write(`${summarizeProfile(process.argv[2], Number(process.argv[3] ?? 15))}\n`);
}
