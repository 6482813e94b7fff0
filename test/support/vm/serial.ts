/**
 * Reading the VM's serial console: the test markers printed by the guest's
 * marker units (test/support/vm/guest/marker.sh) and the kernel's last words,
 * which tell a power-off from a reboot from a panic once qemu has exited
 * (qemu runs with -no-reboot, so a guest reset ends the qemu process too).
 */

/** One `OCISNAP-TEST: <event> key=value ...` line. */
export interface Marker {
  event: string;
  fields: Record<string, string>;
  /** The whole line as printed. */
  line: string;
}

const MARKER = /OCISNAP-TEST: (\S+)((?: [A-Za-z0-9_.-]+=\S*)*)\s*$/;

export function parseMarker(line: string): Marker | undefined {
  const m = MARKER.exec(line.replace(/\r/g, ''));
  if (!m) return undefined;
  const fields: Record<string, string> = {};
  for (const pair of (m[2] ?? '').trim().split(' ')) {
    if (pair === '') continue;
    const eq = pair.indexOf('=');
    fields[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return { event: m[1] ?? '', fields, line: m[0] };
}

export function parseMarkers(log: string): Marker[] {
  const out: Marker[] = [];
  for (const line of log.split('\n')) {
    const m = parseMarker(line);
    if (m) out.push(m);
  }
  return out;
}

/** How a boot ended, as far as the harness can tell. */
export type BootOutcome =
  /** The guest powered off (kernel: "reboot: Power down"). */
  | 'poweroff'
  /** The guest asked for a reset (kernel: "reboot: Restarting system"). */
  | 'reboot'
  /** The kernel panicked (and, with panic=N, reset). */
  | 'panic'
  /** The guest halted without powering off ("reboot: System halted"). */
  | 'halt'
  /** The harness's watchdog stopped a boot that took too long. */
  | 'timeout'
  /** qemu exited for another reason (see the qemu log). */
  | 'exit';

/**
 * The kernel prints these with pr_emerg, so they reach the console whatever
 * the log level (linux kernel/reboot.c: kernel_restart, kernel_power_off,
 * kernel_halt; kernel/panic.c).
 */
export function outcomeFromSerial(log: string): Exclude<BootOutcome, 'timeout'> {
  if (/Kernel panic - not syncing/.test(log)) return 'panic';
  if (/reboot: Power down/.test(log)) return 'poweroff';
  if (/reboot: Restarting system/.test(log)) return 'reboot';
  if (/reboot: System halted/.test(log)) return 'halt';
  return 'exit';
}
