/**
 * Which snapshot this boot is, and what the bootloader said about it.
 *
 * - `--booted N` (an explicit answer: tests, an initrd, a rescue system);
 * - the running system: the subvolume mounted at / (sysroot.ts, mountinfo);
 * - a sysroot that is not running (`--sysroot DIR`): the snapshot that boots
 *   from it, the btrfs default subvolume: "as if it had just booted".
 *
 * plugins/grub/grub.cfg passes `ocisnap.snapshot=N ocisnap.boot=trial|default|fallback`
 * on the kernel command line; `fallback` means the trial's kernel could not
 * even be loaded.
 */
import { readFile } from 'node:fs/promises';
import { bootedSubvolume, defaultSubvolume, type SysrootPaths } from '../deploy/sysroot.js';

export interface BootIdentity {
  snapshot: number | undefined;
  source: 'option' | 'mount' | 'default';
  /** `ocisnap.boot=` from the kernel command line (running system only). */
  grubBoot: string | undefined;
}

export function parseCmdline(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const word of text.trim().split(/\s+/)) {
    const eq = word.indexOf('=');
    if (eq > 0 && word.startsWith('ocisnap.')) out[word.slice(0, eq)] = word.slice(eq + 1);
  }
  return out;
}

export async function identifyBoot(paths: SysrootPaths, opts: { booted?: number; cmdline?: string } = {}): Promise<BootIdentity> {
  let cmdline = opts.cmdline;
  if (cmdline === undefined && paths.running) cmdline = await readFile('/proc/cmdline', 'utf8').catch(() => '');
  const grubBoot = parseCmdline(cmdline ?? '')['ocisnap.boot'];
  if (opts.booted !== undefined) return { snapshot: opts.booted, source: 'option', grubBoot };
  if (paths.running) return { snapshot: (await bootedSubvolume())?.snapshot, source: 'mount', grubBoot };
  return { snapshot: (await defaultSubvolume(paths)).snapshot, source: 'default', grubBoot };
}
