import { readFile } from 'node:fs/promises';
import { describe, expect, it } from 'vitest';
import { parseCmdline } from '../../src/health/boot.js';
import { parseFailedUnits } from '../../src/health/builtin.js';
import { defaultHealthConfig, HealthConfigError, parseHealthConfig } from '../../src/health/config.js';
import { parseGrubenv } from '../../src/health/grubenv.js';

describe('health.conf', () => {
  it('the documented example is exactly the defaults', async () => {
    const text = await readFile(new URL('../../examples/health/health.conf', import.meta.url), 'utf8');
    expect(parseHealthConfig(text, 'health.conf')).toEqual(defaultHealthConfig());
  });

  it('reads every key', () => {
    const cfg = parseHealthConfig(
      [
        'action = "none"',
        'non_trial = "skip"',
        'tries = 5',
        'check_timeout = 2.5',
        'hook_timeout = 1',
        '[builtin]',
        'failed_units = false',
        'ignore_units = ["a.service"]',
        'reach_target = false',
        'target = "graphical.target"',
        'target_deadline = 60',
        '[commands]',
        'systemctl = "/bin/fake"',
        'reboot = ["/sbin/reboot", "-f"]',
        'grub_editenv = ["grub2-editenv"]',
      ].join('\n'),
      'x',
    );
    expect(cfg).toEqual({
      action: 'none',
      nonTrial: 'skip',
      tries: 5,
      checkTimeoutMs: 2500,
      hookTimeoutMs: 1000,
      builtin: { failedUnits: false, ignoreUnits: ['a.service'], reachTarget: false, target: 'graphical.target', targetDeadlineSec: 60 },
      commands: { systemctl: ['/bin/fake'], reboot: ['/sbin/reboot', '-f'], poweroff: ['systemctl', '--no-block', 'poweroff'], grubEditenv: ['grub2-editenv'] },
    });
  });

  it('refuses unknown keys, bad values and bad TOML with one line naming the file and key', () => {
    expect(() => parseHealthConfig('acton = "reboot"', '/etc/h.conf')).toThrow(/^\/etc\/h\.conf: acton: unknown key/);
    expect(() => parseHealthConfig('[builtin]\ntarget = "sshd.service"', 'f')).toThrow('f: builtin.target: not a target unit name');
    expect(() => parseHealthConfig('tries = 0', 'f')).toThrow('f: tries: must be a whole number >= 1');
    expect(() => parseHealthConfig('check_timeout = -1', 'f')).toThrow('f: check_timeout: must be at least 0.001');
    expect(() => parseHealthConfig('[commands]\nreboot = []', 'f')).toThrow(HealthConfigError);
    const err = (() => {
      try {
        parseHealthConfig('action = ', 'f');
      } catch (e) {
        return e as Error;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(HealthConfigError);
    expect(err?.message).toMatch(/^f: not valid TOML \(line 1\)/);
    expect(err?.message).not.toContain('\n');
  });
});

describe('parsers', () => {
  it('systemctl --failed --plain --no-legend', () => {
    expect(parseFailedUnits('a.service loaded failed failed A thing\n● b.mount loaded failed failed B\n\n')).toEqual(['a.service', 'b.mount']);
    expect(parseFailedUnits('')).toEqual([]);
  });

  it('grubenv blocks', () => {
    const block = '# GRUB Environment Block\nocisnap_default=1\nocisnap_trial=2\nsaved_entry=a\\=b\n'.padEnd(1024, '#');
    expect(parseGrubenv(block)).toEqual({ ocisnap_default: '1', ocisnap_trial: '2', saved_entry: 'a=b' });
  });

  it('the kernel command line words GRUB adds', () => {
    expect(parseCmdline('BOOT_IMAGE=/vmlinuz root=/dev/vda2 ocisnap.snapshot=3 ocisnap.boot=trial quiet\n')).toEqual({
      'ocisnap.snapshot': '3',
      'ocisnap.boot': 'trial',
    });
  });
});
