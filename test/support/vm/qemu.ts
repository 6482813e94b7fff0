/**
 * One power-on of the test VM: qemu with TCG (KVM hangs on these machines),
 * direct kernel boot, the disk on virtio, the serial console on qemu's stdout
 * (copied to a log file and scanned for markers as it arrives), -no-reboot so
 * a guest reset ends qemu and control returns to the harness, and a watchdog
 * that stops a boot that takes too long.
 */
import { createWriteStream } from 'node:fs';
import { execa } from 'execa';
import { outcomeFromSerial, parseMarker, type BootOutcome, type Marker } from './serial.js';

export interface QemuRun {
  /** Raw disk image, attached as the first virtio disk (/dev/vda). */
  diskImage: string;
  /**
   * Direct kernel boot; without it the VM boots from the disk through the
   * BIOS (SeaBIOS) and whatever bootloader the disk holds.
   */
  direct?: { kernel: string; initrd: string; append: string };
  /** Where the serial console is written (created or truncated). */
  serialLog: string;
  /** Watchdog: the VM is stopped after this long. */
  timeoutMs: number;
  memMiB?: number;
  smp?: number;
  /** Called for each marker line as it arrives. */
  onMarker?: (marker: Marker) => void;
  /** Stops the VM (SIGKILL) when aborted, e.g. vitest's test context signal on a timeout. */
  signal?: AbortSignal;
}

export interface QemuResult {
  outcome: BootOutcome;
  /** Everything the serial console printed. */
  serial: string;
  ms: number;
  exitCode: number | undefined;
  /** qemu's own stderr (errors starting the VM land here). */
  stderr: string;
}

export function qemuArgs(run: QemuRun): string[] {
  return [
    '-accel', 'tcg',
    '-machine', 'pc',
    '-m', String(run.memMiB ?? 1024),
    '-smp', String(run.smp ?? 2),
    '-nodefaults', '-display', 'none', '-no-reboot',
    '-chardev', 'stdio,id=console,signal=off',
    '-serial', 'chardev:console',
    // cache=unsafe: the guest's flushes are skipped; the data still reaches
    // the image file through the host page cache before qemu exits.
    '-drive', `file=${run.diskImage},format=raw,if=virtio,cache=unsafe,discard=unmap`,
    '-nic', 'none',
    // Entropy for the guest's crng, which otherwise takes tens of seconds.
    '-device', 'virtio-rng-pci',
    ...(run.direct ? ['-kernel', run.direct.kernel, '-initrd', run.direct.initrd, '-append', run.direct.append] : []),
  ];
}

export async function runQemu(run: QemuRun): Promise<QemuResult> {
  const started = Date.now();
  const log = createWriteStream(run.serialLog);
  const proc = execa('qemu-system-x86_64', qemuArgs(run), {
    stdin: 'ignore',
    buffer: false,
    reject: false,
    // execa kills the child if the test process exits first.
    cleanup: true,
    ...(run.signal ? { cancelSignal: run.signal, forceKillAfterDelay: 2_000 } : {}),
  });
  let serial = '';
  let partial = '';
  proc.stdout?.on('data', (chunk: Buffer) => {
    const text = chunk.toString('utf8');
    log.write(chunk);
    serial += text;
    const lines = (partial + text).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      const m = parseMarker(line);
      if (m) run.onMarker?.(m);
    }
  });
  let stderr = '';
  proc.stderr?.on('data', (chunk: Buffer) => {
    stderr += chunk.toString('utf8');
  });
  let timedOut = false;
  const watchdog = setTimeout(() => {
    timedOut = true;
    proc.kill('SIGTERM');
    setTimeout(() => proc.kill('SIGKILL'), 5_000).unref();
  }, run.timeoutMs);
  try {
    const r = await proc;
    await new Promise<void>((resolve) => log.end(resolve));
    if (r.isCanceled) throw new Error(`the VM was stopped: ${String(run.signal?.reason ?? 'aborted')} (serial log: ${run.serialLog})`);
    return {
      outcome: timedOut ? 'timeout' : outcomeFromSerial(serial),
      serial,
      ms: Date.now() - started,
      exitCode: r.exitCode,
      stderr,
    };
  } finally {
    clearTimeout(watchdog);
    if (proc.exitCode === null) proc.kill('SIGKILL');
  }
}
