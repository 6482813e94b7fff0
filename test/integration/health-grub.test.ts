/**
 * The GRUB side as files: both configurations parse with GRUB's own script
 * checker, and the /etc/grub.d snippet writes the root filesystem's UUID and
 * the snapshot path prefix into the entry.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { requireCommands } from '../support/host.js';

const grubDir = new URL('../../plugins/grub/', import.meta.url).pathname;

async function scriptCheck(text: string): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'ocisnap-grub-'));
  try {
    await writeFile(join(dir, 'grub.cfg'), text);
    await execa('grub-script-check', [join(dir, 'grub.cfg')]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

describe('plugins/grub', () => {
  it('grub.cfg is valid GRUB script', async () => {
    await requireCommands('grub-script-check');
    await execa('grub-script-check', [join(grubDir, 'grub.cfg')]);
  });

  it('42_ocisnap emits valid GRUB script with the root UUID and the kernel command line', async () => {
    await requireCommands('grub-script-check', 'findmnt');
    const { stdout } = await execa(join(grubDir, '42_ocisnap'), [], {
      env: { GRUB_DEVICE_UUID: '0b5e6f3a-1111-2222-3333-444455556666', GRUB_CMDLINE_LINUX: 'console=ttyS0', GRUB_CMDLINE_LINUX_DEFAULT: 'quiet' },
    });
    await scriptCheck(stdout);
    expect(stdout).toContain('search --no-floppy --fs-uuid --set=ocisnap_dev 0b5e6f3a-1111-2222-3333-444455556666');
    expect(stdout).toContain('root=UUID=0b5e6f3a-1111-2222-3333-444455556666 rootflags=subvol=${p} rw ocisnap.snapshot=${ocisnap_snapshot} ocisnap.boot=${ocisnap_boot}');
    expect(stdout).toContain('console=ttyS0 quiet');
    expect(stdout).toContain('save_env ocisnap_tries');
  });

  it('42_ocisnap adds nothing outside grub-mkconfig', async () => {
    const r = await execa(join(grubDir, '42_ocisnap'), [], { env: { GRUB_DEVICE_UUID: '' } });
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('GRUB_DEVICE_UUID is not set');
  });
});
