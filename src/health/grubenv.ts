/**
 * The bootloader side of a trial: GRUB's environment block (grubenv), read by
 * plugins/grub/grub.cfg (and the /etc/grub.d/42_ocisnap snippet) before it
 * picks a snapshot. Variables (documented in plugins/grub/README.md):
 *
 *   ocisnap_default=N   the last known good snapshot, booted normally
 *   ocisnap_trial=M     the deployment on trial (unset when none)
 *   ocisnap_tries=K     boots GRUB may still start of the trial (0-9; GRUB
 *                       counts down with save_env before loading the kernel)
 *
 * grubenv lives where GRUB can write it: `<sysroot>/boot/grub/grubenv` (or
 * `boot/grub2/grubenv` on openSUSE/Fedora), on a non-btrfs partition since
 * upstream GRUB does not write to btrfs. ocisnap edits it with grub-editenv
 * (as greenboot's greenboot-grub2-set-counter does with grub2-editenv) so the
 * 1024-byte block keeps its exact size; with no grubenv, or no grub-editenv,
 * nothing is done: the machine boots the btrfs default subvolume without a
 * bootloader-side fallback (e.g. the VM tests' direct kernel boot).
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describeError, OcisnapError } from '../errors.js';
import type { SysrootPaths } from '../deploy/sysroot.js';

export const GRUB_VARS = { default: 'ocisnap_default', trial: 'ocisnap_trial', tries: 'ocisnap_tries' } as const;

/** GRUB's countdown in grub.cfg handles 1..9 (its script language has no arithmetic). */
export const MAX_GRUB_TRIES = 9;

export class GrubenvError extends OcisnapError {}

const candidates = ['boot/grub/grubenv', 'boot/grub2/grubenv'];

/** The grubenv file of the sysroot, or undefined when there is none. */
export async function findGrubenv(paths: SysrootPaths): Promise<string | undefined> {
  for (const rel of candidates) {
    const file = join(paths.root, rel);
    try {
      const text = await readFile(file, 'latin1');
      if (text.startsWith('# GRUB Environment Block\n')) return file;
    } catch {
      // not there
    }
  }
  return undefined;
}

/** grubenv: "# GRUB Environment Block\n", then NAME=VALUE lines, '#' padding to 1024 bytes (grub-core/lib/envblk.c). */
export function parseGrubenv(text: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line === '') continue;
    const eq = line.indexOf('=');
    if (eq > 0) env[line.slice(0, eq)] = line.slice(eq + 1).replace(/\\(.)/g, '$1');
  }
  return env;
}

export async function readGrubenv(file: string): Promise<Record<string, string>> {
  return parseGrubenv(await readFile(file, 'latin1'));
}

export type GrubenvUpdate = { file: string; updated: true } | { updated: false; why: string };

/**
 * Sets (string) and unsets (undefined) variables in the sysroot's grubenv
 * with grub-editenv; a no-op when there is no grubenv or no grub-editenv.
 */
export async function updateGrubenv(
  paths: SysrootPaths,
  vars: Record<string, string | undefined>,
  editenv?: string[],
): Promise<GrubenvUpdate> {
  const file = await findGrubenv(paths);
  if (file === undefined) return { updated: false, why: `no grubenv under ${paths.root}/boot` };
  if (editenv === undefined) {
    // Debian names it grub-editenv, openSUSE and Fedora grub2-editenv.
    const first = await updateGrubenv(paths, vars, ['grub-editenv']);
    return first.updated ? first : updateGrubenv(paths, vars, ['grub2-editenv']);
  }
  const set = Object.entries(vars).filter(([, v]) => v !== undefined).map(([k, v]) => `${k}=${v}`);
  const unset = Object.entries(vars).filter(([, v]) => v === undefined).map(([k]) => k);
  // Loaded only when there is a grubenv to edit: execa is about 0.1 s of
  // module loading on every deploy, which mostly finds no grubenv.
  const { execa } = await import('execa');
  const run = async (args: string[]): Promise<boolean> => {
    try {
      await execa(editenv[0]!, [...editenv.slice(1), file, ...args], { stdin: 'ignore' });
      return true;
    } catch (err) {
      if ((err as { code?: unknown }).code === 'ENOENT') return false;
      throw new GrubenvError(`${editenv.join(' ')} ${file} ${args[0]}: ${describeError(err).split('\n')[0]}`, { cause: err });
    }
  };
  if (set.length > 0 && !(await run(['set', ...set]))) return { updated: false, why: `${editenv[0]} is not installed` };
  if (unset.length > 0 && !(await run(['unset', ...unset]))) return { updated: false, why: `${editenv[0]} is not installed` };
  return { file, updated: true };
}

/** A new deployment goes on trial: GRUB boots it at most `tries` times (capped at 9). */
export function grubTrialVars(snapshot: number, tries: number): Record<string, string> {
  return { [GRUB_VARS.trial]: String(snapshot), [GRUB_VARS.tries]: String(Math.max(0, Math.min(tries, MAX_GRUB_TRIES))) };
}

/** No trial any more; `snapshot` boots by default (a good verdict, or a rollback to it). */
export function grubSettledVars(snapshot: number | undefined): Record<string, string | undefined> {
  const vars: Record<string, string | undefined> = { [GRUB_VARS.trial]: undefined, [GRUB_VARS.tries]: undefined };
  if (snapshot !== undefined) vars[GRUB_VARS.default] = String(snapshot);
  return vars;
}

/**
 * For deploy: `snapshot` goes on trial with `tries` boots (after it became
 * the btrfs default). A no-op without grubenv or grub-editenv.
 */
export function grubArmTrial(paths: SysrootPaths, snapshot: number, tries: number, editenv?: string[]): Promise<GrubenvUpdate> {
  return updateGrubenv(paths, grubTrialVars(snapshot, tries), editenv);
}

/** For rollback and a good verdict: `snapshot` boots by default, no trial. */
export function grubSetDefault(paths: SysrootPaths, snapshot: number, editenv?: string[]): Promise<GrubenvUpdate> {
  return updateGrubenv(paths, grubSettledVars(snapshot), editenv);
}
