/**
 * Health-check scripts and verdict hooks: executables in
 *
 *   <root>/usr/lib/ocisnap/health.d/<kind>/   shipped by the image
 *   <root>/etc/ocisnap/health.d/<kind>/       the admin's
 *
 * with kind one of required.d (must pass), wanted.d (may fail: reported
 * only), green.d (run after a good verdict), red.d (after a bad one), as
 * greenboot's /etc/greenboot/check/{required.d,wanted.d}, green.d, red.d
 * (fedora-iot/greenboot README). Names are sorted; an /etc entry shadows the
 * /usr one of the same name, and a symlink to /dev/null disables it, as
 * systemd unit directories and tukit's plugin directories (lib/Plugins.cpp)
 * do; a file that is not executable is skipped with a warning.
 *
 * Each runs with nothing on stdin, in its own process group, with a timeout:
 * when it expires the whole group is killed (SIGTERM, then SIGKILL after 2 s)
 * and the run counts as failed.
 */
import { spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { access, readdir, readlink, stat } from 'node:fs/promises';
import { join } from 'node:path';

export type ScriptKind = 'required.d' | 'wanted.d' | 'green.d' | 'red.d';

export interface ScriptDirs {
  /** Searched in order; an earlier directory's entry shadows a later one of the same name. */
  bases: string[];
}

/** The admin's directory first (it shadows), then the image's. */
export function scriptDirs(root = '/'): ScriptDirs {
  return { bases: [join(root, 'etc/ocisnap/health.d'), join(root, 'usr/lib/ocisnap/health.d')] };
}

export interface FoundScript {
  name: string;
  path: string;
}

export interface Skipped {
  path: string;
  why: string;
}

/** The executables of one kind, sorted by name. */
export async function findScripts(dirs: ScriptDirs, kind: ScriptKind): Promise<{ scripts: FoundScript[]; skipped: Skipped[] }> {
  const chosen = new Map<string, string>();
  for (const base of dirs.bases) {
    const dir = join(base, kind);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch {
      continue; // a missing directory has no scripts
    }
    for (const name of names) if (!name.startsWith('.') && !chosen.has(name)) chosen.set(name, join(dir, name));
  }
  const scripts: FoundScript[] = [];
  const skipped: Skipped[] = [];
  for (const name of [...chosen.keys()].sort()) {
    const path = chosen.get(name)!;
    const target = await readlink(path).catch(() => undefined);
    if (target === '/dev/null') continue; // masked
    try {
      const st = await stat(path);
      if (!st.isFile()) {
        skipped.push({ path, why: 'not a regular file' });
        continue;
      }
      await access(path, constants.X_OK);
    } catch {
      skipped.push({ path, why: 'not executable' });
      continue;
    }
    scripts.push({ name, path });
  }
  return { scripts, skipped };
}

export interface RunResult {
  /** Exit status; null when killed by a signal. */
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  durationMs: number;
  /** The last part of stdout and stderr together (at most 4 KiB). */
  output: string;
  /** Could not be started at all (ENOENT, EACCES, ...). */
  spawnError?: string;
}

export function succeeded(r: RunResult): boolean {
  return r.exitCode === 0 && !r.timedOut && r.spawnError === undefined;
}

/** One line saying how a run ended. */
export function describeRun(r: RunResult): string {
  if (r.spawnError !== undefined) return `could not start: ${r.spawnError}`;
  if (r.timedOut) return `timed out after ${(r.durationMs / 1000).toFixed(1)} s (killed)`;
  if (r.signal) return `killed by ${r.signal}`;
  return r.exitCode === 0 ? 'passed' : `exit status ${r.exitCode}`;
}

const maxOutput = 4096;
const killGraceMs = 2000;

/** Runs argv with a timeout, killing its process group when it expires. */
export function runWithTimeout(argv: string[], opts: { timeoutMs: number; env?: NodeJS.ProcessEnv; cwd?: string }): Promise<RunResult> {
  const started = Date.now();
  return new Promise((resolve) => {
    let output = '';
    let timedOut = false;
    let settled = false;
    const keep = (chunk: Buffer): void => {
      output = (output + chunk.toString('utf8')).slice(-maxOutput);
    };
    const child = spawn(argv[0]!, argv.slice(1), {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true, // own process group: a timeout kills what the script started too
      env: opts.env ?? process.env,
      cwd: opts.cwd ?? '/',
    });
    const killGroup = (signal: NodeJS.Signals): void => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, signal);
      } catch {
        // already gone
      }
    };
    let hardKill: NodeJS.Timeout | undefined;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup('SIGTERM');
      hardKill = setTimeout(() => killGroup('SIGKILL'), killGraceMs);
    }, opts.timeoutMs);
    const finish = (r: Omit<RunResult, 'durationMs' | 'output' | 'timedOut'>): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (hardKill) clearTimeout(hardKill);
      // Children the script left behind in its group do not outlive it.
      if (timedOut) killGroup('SIGKILL');
      resolve({ ...r, timedOut, durationMs: Date.now() - started, output: output.trimEnd() });
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.on('error', (err) => finish({ exitCode: null, signal: null, spawnError: err.message }));
    // 'close' comes after the last output; a grandchild holding the pipes
    // open must not keep us waiting, so 'exit' finishes soon after anyway.
    child.on('close', (code, signal) => finish({ exitCode: code, signal }));
    child.on('exit', (code, signal) => {
      setTimeout(() => finish({ exitCode: code, signal }), 200).unref();
    });
  });
}
