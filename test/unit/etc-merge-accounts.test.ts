import { describe, expect, it } from 'vitest';
import { mergeAccountText } from '../../src/deploy/passwd-merge.js';
import { matchesIdentity, DEFAULT_IDENTITY_PATHS } from '../../src/deploy/etc-merge.js';

const lines = (...l: string[]): string => `${l.join('\n')}\n`;

describe('account database merge (per entry, keyed by name)', () => {
  const base = lines('root:x:0:0:root:/root:/bin/bash', 'daemon:x:1:1::/:/usr/sbin/nologin', 'games:x:5:60::/:/usr/sbin/nologin');

  it('adds image users, keeps admin-added and admin-changed users, keeps admin deletions, image order then local additions', () => {
    const local = lines(
      'root:x:0:0:root:/root:/bin/zsh', // changed by the admin
      'daemon:x:1:1::/:/usr/sbin/nologin',
      // games deleted by the admin
      'alice:x:1000:1000:Alice:/home/alice:/bin/bash',
    );
    const image = lines(
      'root:x:0:0:root:/root:/bin/bash',
      'daemon:x:1:1:changed by image:/:/usr/sbin/nologin',
      'games:x:5:60::/:/usr/sbin/nologin',
      '_chrony:x:100:100::/var/lib/chrony:/usr/sbin/nologin', // added by the image
    );
    const r = mergeAccountText(base, local, image);
    expect(r.text).toBe(
      lines(
        'root:x:0:0:root:/root:/bin/zsh',
        'daemon:x:1:1:changed by image:/:/usr/sbin/nologin',
        '_chrony:x:100:100::/var/lib/chrony:/usr/sbin/nologin',
        'alice:x:1000:1000:Alice:/home/alice:/bin/bash',
      ),
    );
    expect(r.keptLocal).toEqual(['root', 'alice']);
    expect(r.deletedLocally).toEqual(['games']);
  });

  it('keeps a password set locally in shadow', () => {
    const b = lines('root:*:19000:0:99999:7:::');
    const l = lines('root:$y$j9T$abc$def:19500:0:99999:7:::');
    const n = lines('root:*:19700:0:99999:7:::', 'sshd:!:19700::::::');
    expect(mergeAccountText(b, l, n).text).toBe(lines('root:$y$j9T$abc$def:19500:0:99999:7:::', 'sshd:!:19700::::::'));
  });

  it('drops an entry the image removed when the admin never touched it, keeps it when the admin changed it', () => {
    const b = lines('a:x:1:1', 'b:x:2:2');
    const l = lines('a:x:1:1', 'b:x:2:2:changed');
    const n = lines('c:x:3:3');
    expect(mergeAccountText(b, l, n).text).toBe(lines('c:x:3:3', 'b:x:2:2:changed'));
  });

  it('without a base takes the union, local lines winning', () => {
    const l = lines('root:x:0:0:local', 'alice:x:1000:1000');
    const n = lines('root:x:0:0:image', 'sshd:x:101:65534');
    expect(mergeAccountText(undefined, l, n).text).toBe(lines('root:x:0:0:local', 'sshd:x:101:65534', 'alice:x:1000:1000'));
  });

  it('merges group membership lines as whole entries', () => {
    const b = lines('sudo:x:27:');
    const l = lines('sudo:x:27:alice');
    const n = lines('sudo:x:27:', 'netdev:x:108:');
    expect(mergeAccountText(b, l, n).text).toBe(lines('sudo:x:27:alice', 'netdev:x:108:'));
  });
});

describe('identity path patterns', () => {
  it('matches exact names, globs within one component, and what is below a match', () => {
    const p = DEFAULT_IDENTITY_PATHS;
    expect(matchesIdentity('machine-id', p)).toBe(true);
    expect(matchesIdentity('ssh/ssh_host_ed25519_key.pub', p)).toBe(true);
    expect(matchesIdentity('ssh/sshd_config', p)).toBe(false);
    expect(matchesIdentity('ssh', p)).toBe(false);
    expect(matchesIdentity('hostname.d/x', ['hostname.d'])).toBe(true);
    expect(matchesIdentity('fstab.d', p)).toBe(false);
    expect(matchesIdentity('a.b', ['a*b'])).toBe(true);
    expect(matchesIdentity('axb', ['a.b'])).toBe(false);
  });
});
