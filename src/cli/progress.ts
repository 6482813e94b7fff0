/**
 * Renders pull progress: live per-layer bars on a terminal, one line per
 * milestone in plain mode (logs), or one JSON object per event (programs).
 */
import type { PullEvent, ProgressSink } from '../pull/progress.js';
import { isoTime } from '../iso-time.js';

export type ProgressMode = 'auto' | 'tty' | 'plain' | 'json' | 'none';

export function parseProgressMode(value: string): ProgressMode {
  if (['auto', 'tty', 'plain', 'json', 'none'].includes(value)) return value as ProgressMode;
  throw new Error(`--progress must be auto, tty, plain, json or none, not "${value}"`);
}

export interface Renderer {
  sink: ProgressSink;
  /** Leaves the terminal clean (final bars drawn). */
  finish(): void;
}

export function createRenderer(mode: ProgressMode, out: NodeJS.WriteStream = process.stderr): Renderer {
  const effective = mode === 'auto' ? (out.isTTY ? 'tty' : 'plain') : mode;
  switch (effective) {
    case 'json':
      return { sink: (e) => out.write(`${JSON.stringify({ time: isoTime(), ...e })}\n`), finish() {} };
    case 'plain':
      return { sink: plainSink(out), finish() {} };
    case 'tty':
      return ttyRenderer(out);
    default:
      return { sink: () => {}, finish() {} };
  }
}

const short = (digest: string) => digest.slice('sha256:'.length, 'sha256:'.length + 12);

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 ? v : v.toFixed(1)} ${units[u]}`;
}

function plainSink(out: NodeJS.WriteStream): ProgressSink {
  return (e: PullEvent) => {
    switch (e.type) {
      case 'note':
        out.write(`${e.message}\n`);
        break;
      case 'verified':
        out.write(`${e.details}\n`);
        break;
      case 'resolved':
        out.write(`Resolved ${e.image} to ${e.manifestDigest}: ${e.layers} layers, ${e.missing} to fetch\n`);
        break;
      case 'layer-reused':
        out.write(`Layer ${short(e.digest)}: already present\n`);
        break;
      case 'layer-download-start':
        out.write(`Layer ${short(e.digest)}: downloading ${formatBytes(e.size)}\n`);
        break;
      case 'layer-downloaded':
        out.write(`Layer ${short(e.digest)}: downloaded in ${e.seconds.toFixed(2)} s\n`);
        break;
      case 'layer-applied':
        out.write(`Layer ${short(e.digest)}: applied ${e.entries} entries in ${e.seconds.toFixed(2)} s\n`);
        break;
      case 'done':
        out.write(`Stored image ${e.imageId.slice(0, 12)} in ${e.seconds.toFixed(2)} s\n`);
        break;
      default:
        break;
    }
  };
}

interface Bar {
  digest: string;
  size: number;
  bytes: number;
  started: number;
  state: string;
}

function ttyRenderer(out: NodeJS.WriteStream): Renderer {
  const bars = new Map<string, Bar>();
  let drawn = 0;
  let header = '';
  let lastDraw = 0;
  const draw = (force = false) => {
    const now = performance.now();
    if (!force && now - lastDraw < 100) return;
    lastDraw = now;
    const width = Math.max(10, Math.min(40, (out.columns ?? 80) - 60));
    const lines = [header];
    for (const b of bars.values()) {
      const frac = b.size > 0 ? Math.min(1, b.bytes / b.size) : 1;
      const filled = Math.round(frac * width);
      const secs = Math.max(0.001, (now - b.started) / 1000);
      const rate = `${formatBytes(b.bytes / secs)}/s`;
      lines.push(
        `${short(b.digest)} [${'#'.repeat(filled)}${' '.repeat(width - filled)}] ` +
          `${formatBytes(b.bytes)}/${formatBytes(b.size)} ${rate} ${b.state}`,
      );
    }
    if (drawn > 0) out.write(`\x1b[${drawn}F`);
    for (const l of lines) out.write(`\x1b[2K${l}\n`);
    drawn = lines.length;
  };
  const bar = (digest: string) => {
    let b = bars.get(digest);
    if (!b) {
      b = { digest, size: 0, bytes: 0, started: performance.now(), state: 'waiting' };
      bars.set(digest, b);
    }
    return b;
  };
  /** A line that stays above the bars. */
  const above = (line: string) => {
    if (drawn > 0) out.write(`\x1b[${drawn}F\x1b[0J`);
    out.write(`${line}\n`);
    drawn = 0;
  };
  const sink: ProgressSink = (e) => {
    switch (e.type) {
      case 'note':
        above(e.message);
        return;
      case 'verified':
        above(e.details);
        return;
      case 'resolved':
        header = `Pulling ${e.image} (${e.manifestDigest.slice(0, 19)}…): ${e.layers} layers, ${e.missing} to fetch`;
        break;
      case 'layer-reused':
        Object.assign(bar(e.digest), { state: 'already present' });
        break;
      case 'layer-download-start':
        Object.assign(bar(e.digest), { size: e.size, started: performance.now(), state: 'downloading' });
        break;
      case 'layer-download-progress':
        Object.assign(bar(e.digest), { bytes: e.bytes });
        break;
      case 'layer-downloaded':
        Object.assign(bar(e.digest), { bytes: e.size, state: 'downloaded' });
        break;
      case 'layer-apply-start':
        Object.assign(bar(e.digest), { state: 'applying' });
        break;
      case 'layer-applied':
        Object.assign(bar(e.digest), { state: `applied (${e.entries} entries, ${e.seconds.toFixed(1)} s)` });
        break;
      case 'done':
        header = `Stored image ${e.imageId.slice(0, 12)} in ${e.seconds.toFixed(2)} s`;
        draw(true);
        return;
    }
    draw(e.type !== 'layer-download-progress');
  };
  return { sink, finish: () => draw(true) };
}
