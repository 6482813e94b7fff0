/**
 * Post-deploy hooks: programs run after the new snapshot is filled and its
 * /etc merged, before it becomes the default, so that the image's own kernel
 * and boot loader configuration take effect (dracut, kernel-install,
 * grub2-mkconfig run inside the new snapshot with chroot; examples in
 * plugins/deploy.d/).
 *
 * Where hooks come from, in this order (modelled on tukit's plugin lookup,
 * openSUSE/transactional-update lib/Plugins.cpp):
 *   1. `<new snapshot>/etc/ocisnap/deploy.d/`  — the admin's (carried over by
 *      the /etc merge from the running system) or the image's;
 *   2. `<new snapshot>/usr/lib/ocisnap/deploy.d/` — shipped by the image;
 *   3. extra host directories given by the caller (`--hook-dir`).
 * A name found earlier shadows the same name later (so /etc overrides
 * /usr/lib); a symlink to /dev/null disables that name. Hooks run sorted by
 * name. A hook inside the snapshot must be a regular executable file: a
 * symlink there would be resolved against the host's tree, not the image's.
 *
 * Each hook runs on the host as `HOOK <snapshot path> <snapshot number>`,
 * nothing on stdin, with OCISNAP_SNAPSHOT, OCISNAP_SNAPSHOT_NUM,
 * OCISNAP_IMAGE, OCISNAP_DIGEST and OCISNAP_SYSROOT in its environment. Its
 * output is passed on line by line. A non-zero exit aborts the deploy (the
 * new snapshot is discarded and the old default stays).
 */
import { lstat, readdir, readlink, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { describeError, OcisnapError } from '../errors.js';
import { isErrno } from '../sys/native.js';

/** Hook directories inside the new snapshot, highest precedence first. */
export const SNAPSHOT_HOOK_DIRS: readonly string[] = ['etc/ocisnap/deploy.d', 'usr/lib/ocisnap/deploy.d'];

export const DEFAULT_HOOK_TIMEOUT_MS = 30 * 60_000;

export interface Hook {
  name: string;
  path: string;
}

export interface HookSearch {
  hooks: Hook[];
  /** Names disabled with a link to /dev/null. */
  disabled: string[];
  /** Entries that are not hooks, with why (one line each). */
  ignored: string[];
  /** The directories looked in. */
  searched: string[];
}

export interface HookContext {
  snapshotPath: string;
  snapshot: number;
  image: string;
  manifestDigest: string;
  sysroot: string;
}

/** A hook failed: the deploy is aborted. */
export class HookFailedError extends OcisnapError {}

/**
 * Finds the hooks in `dirs` (highest precedence first). `insideSnapshot`
 * tells, per directory, whether symlinks other than /dev/null are refused.
 */
export async function findHooks(dirs: ReadonlyArray<{ dir: string; insideSnapshot: boolean }>): Promise<HookSearch> {
  const seen = new Set<string>();
  const result: HookSearch = { hooks: [], disabled: [], ignored: [], searched: dirs.map((d) => d.dir) };
  for (const { dir, insideSnapshot } of dirs) {
    let names: string[];
    try {
      // A directory that is itself a symlink inside the snapshot would lead out of it.
      const st = await lstat(dir);
      if (!st.isDirectory()) {
        result.ignored.push(`${dir}: not a directory`);
        continue;
      }
      names = await readdir(dir);
    } catch (err) {
      if (isErrno(err, 'ENOENT') || isErrno(err, 'ENOTDIR')) continue;
      throw new OcisnapError(`cannot read hook directory ${dir}: ${describeError(err)}`, { cause: err });
    }
    for (const name of names.sort()) {
      if (name.startsWith('.') || seen.has(name)) continue;
      const path = join(dir, name);
      const st = await lstat(path);
      if (st.isSymbolicLink()) {
        if ((await readlink(path)) === '/dev/null') {
          seen.add(name);
          result.disabled.push(name);
          continue;
        }
        if (insideSnapshot) {
          result.ignored.push(`${path}: a symlink inside the snapshot (would resolve on the host)`);
          continue;
        }
      }
      const target = st.isSymbolicLink() ? await stat(path).catch(() => undefined) : st;
      if (!target?.isFile()) {
        result.ignored.push(`${path}: not a regular file`);
        continue;
      }
      if ((target.mode & 0o111) === 0) {
        result.ignored.push(`${path}: not executable`);
        continue;
      }
      seen.add(name);
      result.hooks.push({ name, path });
    }
  }
  result.hooks.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return result;
}

/** The hook directories for a new snapshot at `snapshotPath`, then `hostDirs`. */
export function hookDirsFor(snapshotPath: string, hostDirs: readonly string[] = []): Array<{ dir: string; insideSnapshot: boolean }> {
  return [
    ...SNAPSHOT_HOOK_DIRS.map((d) => ({ dir: join(snapshotPath, d), insideSnapshot: true })),
    ...hostDirs.map((d) => ({ dir: d, insideSnapshot: false })),
  ];
}

/** Runs the hooks one by one; throws HookFailedError at the first failure. Returns the names run. */
export async function runHooks(
  hooks: readonly Hook[],
  ctx: HookContext,
  opts: { log?: (line: string) => void; timeoutMs?: number } = {},
): Promise<string[]> {
  const log = opts.log ?? (() => undefined);
  const ran: string[] = [];
  if (hooks.length === 0) return ran;
  // Loaded here, not at the top: execa costs about 0.1 s of module loading, and
  // a deploy without hooks (or with --no-hooks) must not pay it.
  const { execa } = await import('execa');
  for (const hook of hooks) {
    log(`running deploy hook ${hook.path}`);
    const child = execa(hook.path, [ctx.snapshotPath, String(ctx.snapshot)], {
      stdin: 'ignore',
      all: true,
      buffer: false, // passed on line by line below; dracut can be chatty
      reject: false,
      timeout: opts.timeoutMs ?? DEFAULT_HOOK_TIMEOUT_MS,
      env: {
        OCISNAP_SNAPSHOT: ctx.snapshotPath,
        OCISNAP_SNAPSHOT_NUM: String(ctx.snapshot),
        OCISNAP_IMAGE: ctx.image,
        OCISNAP_DIGEST: ctx.manifestDigest,
        OCISNAP_SYSROOT: ctx.sysroot,
      },
    });
    let lastLine = '';
    child.all?.setEncoding('utf8');
    let buffered = '';
    child.all?.on('data', (chunk: string) => {
      buffered += chunk;
      const lines = buffered.split('\n');
      buffered = lines.pop() ?? '';
      for (const line of lines) {
        if (line.trim() !== '') lastLine = line.trim();
        log(`[${hook.name}] ${line}`);
      }
    });
    const result = await child;
    if (buffered !== '') {
      if (buffered.trim() !== '') lastLine = buffered.trim();
      log(`[${hook.name}] ${buffered}`);
    }
    if (result.failed || result.exitCode !== 0) {
      const why = result.timedOut
        ? 'timed out'
        : result.exitCode !== undefined
          ? `exit status ${result.exitCode}`
          : (result.signal ?? result.shortMessage ?? 'failed');
      throw new HookFailedError(`deploy hook ${hook.path} failed (${why})${lastLine ? `: ${lastLine.slice(0, 200)}` : ''}`);
    }
    ran.push(hook.name);
  }
  return ran;
}

/** The note printed when no hook ran: what was not done. */
export function noHooksNote(searched: readonly string[]): string {
  return (
    `note: no deploy hooks found (looked in ${searched.join(', ')}): the new snapshot's kernel, ` +
    `initrd and boot loader configuration were not regenerated; add hooks (examples in ocisnap's plugins/deploy.d) ` +
    `unless the boot loader boots the default subvolume by itself`
  );
}
