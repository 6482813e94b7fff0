/**
 * The VM harness's own logic, without booting anything: serial console
 * parsing, GRUB's choice, kernel lookup inside a snapshot, the panic initramfs.
 */
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { emptyInitramfs } from '../support/vm/faults.js';
import { grubChoice, resolveInRoot } from '../support/vm/machine.js';
import { outcomeFromSerial, parseMarker, parseMarkers } from '../support/vm/serial.js';

describe('serial console', () => {
  it('parses markers, with carriage returns and noise before them', () => {
    expect(parseMarker('\x1b[0mOCISNAP-TEST: booted snapshot=2 subvol=/.snapshots/2/snapshot version=12\r'))
      .toEqual({ event: 'booted', fields: { snapshot: '2', subvol: '/.snapshots/2/snapshot', version: '12' },
        line: 'OCISNAP-TEST: booted snapshot=2 subvol=/.snapshots/2/snapshot version=12' });
    expect(parseMarker('OCISNAP-TEST-OUT: booted snapshot=2')).toBeUndefined();
    expect(parseMarkers('a\nOCISNAP-TEST: ready failed=none\nb\nOCISNAP-TEST: run-once exit=0\n').map((m) => m.event))
      .toEqual(['ready', 'run-once']);
  });

  it('tells how a boot ended from the kernel\'s last words', () => {
    expect(outcomeFromSerial('[ 80.1] reboot: Power down\n')).toBe('poweroff');
    expect(outcomeFromSerial('[ 85.1] reboot: Restarting system\n[ 85.1] reboot: machine restart\n')).toBe('reboot');
    expect(outcomeFromSerial('[ 3.0] Kernel panic - not syncing: VFS: Unable to mount root fs\n[ 4.0] reboot: Restarting system'))
      .toBe('panic');
    expect(outcomeFromSerial('[ 9.0] reboot: System halted\n')).toBe('halt');
    expect(outcomeFromSerial('SeaBIOS\n')).toBe('exit');
  });

  it('reads the snapshot GRUB chose from its last console line', () => {
    const log = 'ocisnap: booting snapshot 3 (trial, trial tries left: 0)\nerror: file not found\n' +
      'ocisnap: booting snapshot 1 (fallback, trial tries left: 0)\n';
    expect(grubChoice(log)).toEqual({ snapshot: 1, boot: 'fallback' });
    expect(grubChoice('no grub here')).toBeUndefined();
  });
});

describe('kernel lookup inside a snapshot', () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'ocisnap-resolve-'));
    await mkdir(join(root, 'boot'));
    await writeFile(join(root, 'boot/vmlinuz-6.1'), 'kernel');
    await symlink('vmlinuz-6.1', join(root, 'boot/vmlinuz'));
    // Absolute links mean the snapshot's own files, never the host's.
    await symlink('/boot/vmlinuz', join(root, 'vmlinuz'));
    await symlink('/etc/passwd', join(root, 'boot/initrd.img'));
    await symlink('../../../../..', join(root, 'boot/up'));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('follows relative and absolute links within the snapshot', async () => {
    expect(await resolveInRoot(root, '/boot/vmlinuz')).toBe(join(root, 'boot/vmlinuz-6.1'));
    expect(await resolveInRoot(root, '/vmlinuz')).toBe(join(root, 'boot/vmlinuz-6.1'));
  });

  it('never resolves to a host path', async () => {
    await expect(resolveInRoot(root, '/boot/initrd.img')).rejects.toThrow(/ENOENT/);
    expect(await resolveInRoot(root, '/boot/up/boot/vmlinuz-6.1')).toBe(join(root, 'boot/vmlinuz-6.1'));
  });
});

describe('the panic initramfs', () => {
  it('is a newc cpio archive holding only the trailer', () => {
    const cpio = emptyInitramfs();
    const text = cpio.toString('latin1');
    expect(text.startsWith('070701')).toBe(true);
    // c_namesize (the 12th field) is 11: "TRAILER!!!" and its NUL.
    expect(parseInt(text.slice(6 + 8 * 11, 6 + 8 * 12), 16)).toBe(11);
    expect(text.slice(110, 121)).toBe('TRAILER!!!\0');
    expect(cpio.length % 4).toBe(0);
  });
});
