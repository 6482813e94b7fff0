/** containers-policy.json(5) parsing, validation and scope matching. */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  InvalidPolicyError,
  UnsupportedPolicyError,
  describeScope,
  dockerScopes,
  loadPolicy,
  parsePolicy,
  policyScopesFor,
  requirementsFor,
} from '../../src/policy/policy-json.js';

const accept = [{ type: 'insecureAcceptAnything' }];
const reject = [{ type: 'reject' }];
const parse = (doc: unknown, source = '/etc/containers/policy.json') =>
  parsePolicy(typeof doc === 'string' ? doc : JSON.stringify(doc), source);

describe('parsePolicy', () => {
  it('parses every requirement kind and resolves keyPath against the policy directory', () => {
    const p = parse({
      default: reject,
      transports: {
        docker: {
          'reg.example.com/os': [
            { type: 'sigstoreSigned', keyPath: 'keys/os.pub', signedIdentity: { type: 'matchRepository' } },
          ],
          'reg.example.com/gpg': [{ type: 'signedBy', keyType: 'GPGKeys', keyPaths: ['/k/a.gpg', '/k/b.gpg'] }],
          'reg.example.com/data': [{ type: 'sigstoreSigned', keyDatas: [Buffer.from('PEM').toString('base64')] }],
          '': accept,
        },
        dir: { '/srv/images': accept },
      },
    });
    expect(p.default).toEqual([{ type: 'reject' }]);
    const docker = p.transports.get('docker');
    expect(docker?.get('reg.example.com/os')).toEqual([
      { type: 'sigstoreSigned', keys: { kind: 'paths', paths: ['/etc/containers/keys/os.pub'] }, signedIdentity: { type: 'matchRepository' } },
    ]);
    expect(docker?.get('reg.example.com/gpg')?.[0]).toMatchObject({
      type: 'signedBy',
      keys: { kind: 'paths', paths: ['/k/a.gpg', '/k/b.gpg'] },
      signedIdentity: { type: 'matchRepoDigestOrExact' },
    });
    const data = docker?.get('reg.example.com/data')?.[0];
    expect(data?.type === 'sigstoreSigned' && data.keys.kind === 'data' && data.keys.data[0]?.toString()).toBe('PEM');
    expect(p.transports.get('dir')?.get('/srv/images')).toEqual([{ type: 'insecureAcceptAnything' }]);
  });

  const bad: Array<[string, unknown, RegExp]> = [
    ['not JSON', '{"default": [', /not valid JSON/],
    ['missing default', { transports: {} }, /"default" requirement list is missing/],
    ['empty default', { default: [] }, /requirement list is empty/],
    ['unknown requirement type', { default: [{ type: 'acceptIfSunny' }] }, /unknown policy requirement type "acceptIfSunny"/],
    ['requirement without type', { default: [{}] }, /without a "type"/],
    ['unknown top-level field', { default: accept, extra: 1 }, /unknown top-level field "extra"/],
    ['unknown requirement field', { default: [{ type: 'reject', why: 'x' }] }, /unknown field "why"/],
    ['no key', { default: [{ type: 'sigstoreSigned' }] }, /exactly one of keyPath/],
    ['two keys', { default: [{ type: 'sigstoreSigned', keyPath: '/a', keyData: 'QQ==' }] }, /got keyPath, keyData/],
    ['keyData not base64', { default: [{ type: 'sigstoreSigned', keyData: 'not base64!' }] }, /keyData must be a base64/],
    ['signedBy keyType', { default: [{ type: 'signedBy', keyType: 'Foo', keyPath: '/a' }] }, /invalid keyType "Foo"/],
    ['bad signedIdentity', { default: [{ type: 'sigstoreSigned', keyPath: '/a', signedIdentity: { type: 'matchAnything' } }] }, /unknown signedIdentity type/],
    [
      'exactReference without tag',
      { default: [{ type: 'sigstoreSigned', keyPath: '/a', signedIdentity: { type: 'exactReference', dockerReference: 'reg.io/os' } }] },
      /not a tagged or digested reference/,
    ],
    [
      'remap prefix',
      { default: [{ type: 'sigstoreSigned', keyPath: '/a', signedIdentity: { type: 'remapIdentity', prefix: 'reg.io/Os', signedPrefix: 'reg.io/os' } }] },
      /prefix "reg.io\/Os" is not/,
    ],
    ['relative dir scope', { default: accept, transports: { dir: { 'srv/x': accept } } }, /must be an absolute path/],
    ['non-canonical dir scope', { default: accept, transports: { dir: { '/srv/../x': accept } } }, /canonical form/],
    ['dir scope "/"', { default: accept, transports: { dir: { '/': accept } } }, /transport default scope/],
    ['docker:// scope', { default: accept, transports: { docker: { 'docker://reg.io/os': accept } } }, /without a "docker:\/\/"/],
    ['duplicate key', '{"default": [{"type": "reject"}], "default": [{"type": "insecureAcceptAnything"}]}', /duplicate key "default"/],
  ];
  for (const [name, doc, message] of bad) {
    it(`refuses a policy with ${name}, naming the file`, () => {
      let err: unknown;
      try {
        parse(doc, '/tmp/p.json');
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(InvalidPolicyError);
      expect((err as Error).message).toMatch(/^invalid signature policy \/tmp\/p\.json: /);
      expect((err as Error).message).toMatch(message);
    });
  }

  it('refuses keyless sigstore (fulcio, rekor, pki) as unsupported, never as accept', () => {
    for (const extra of [
      { fulcio: { caPath: '/ca', oidcIssuer: 'https://x', subjectEmail: 'a@b' } },
      { rekorPublicKeyPath: '/rekor.pub', keyPath: '/k' },
      { pki: { caRootsPath: '/r', subjectEmail: 'a@b' } },
    ]) {
      expect(() => parse({ default: [{ type: 'sigstoreSigned', ...extra }] })).toThrow(UnsupportedPolicyError);
      expect(() => parse({ default: [{ type: 'sigstoreSigned', ...extra }] })).toThrow(/not supported/);
    }
    expect(() => parse({ default: [{ type: 'signedBy', keyType: 'X509Certificates', keyPath: '/a' }] })).toThrow(
      UnsupportedPolicyError,
    );
  });

  it('loadPolicy names a missing or broken file', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'ocisnap-policy-'));
    try {
      await expect(loadPolicy(join(dir, 'nope.json'))).rejects.toThrow(/nope\.json: cannot read/);
      await writeFile(join(dir, 'p.json'), 'garbage');
      await expect(loadPolicy(join(dir, 'p.json'))).rejects.toThrow(new RegExp(`${dir}/p\\.json: not valid JSON`));
    } finally {
      await rm(dir, { recursive: true });
    }
  });
});

describe('scope matching', () => {
  it('lists docker scopes from most to least specific (policyconfiguration naming.go)', () => {
    expect(dockerScopes('registry.example.com:5000/ns/sub/os:1')).toEqual([
      'registry.example.com:5000/ns/sub/os:1',
      'registry.example.com:5000/ns/sub/os',
      'registry.example.com:5000/ns/sub',
      'registry.example.com:5000/ns',
      'registry.example.com:5000',
      '*.example.com',
      '*.com',
    ]);
    const d = `sha256:${'a'.repeat(64)}`;
    expect(dockerScopes(`busybox@${d}`)).toEqual([
      `docker.io/library/busybox@${d}`,
      'docker.io/library/busybox',
      'docker.io/library',
      'docker.io',
      '*.io',
    ]);
    expect(dockerScopes('localhost:5000/os')[0]).toBe('localhost:5000/os:latest');
  });

  it('picks the most specific scope, then the transport default, then the global default', () => {
    const mark = (n: string) => [{ type: 'signedBy', keyType: 'GPGKeys', keyPath: `/${n}` }];
    const p = parse({
      default: reject,
      transports: {
        docker: {
          'reg.example.com/ns/os:1': mark('tag'),
          'reg.example.com/ns/os': mark('repo'),
          'reg.example.com/ns': mark('ns'),
          'reg.example.com': mark('host'),
          '*.example.com': mark('wild'),
          '': mark('transport'),
        },
      },
    });
    const which = (ref: string) => {
      const m = requirementsFor(p, 'docker', ref);
      const r = m.requirements[0];
      return [describeScope(m), r?.type === 'signedBy' && r.keys.kind === 'paths' ? r.keys.paths[0] : r?.type];
    };
    expect(which('reg.example.com/ns/os:1')).toEqual(['transports.docker["reg.example.com/ns/os:1"]', '/tag']);
    expect(which('reg.example.com/ns/os:2')).toEqual(['transports.docker["reg.example.com/ns/os"]', '/repo']);
    expect(which('reg.example.com/ns/other:1')).toEqual(['transports.docker["reg.example.com/ns"]', '/ns']);
    expect(which('reg.example.com/x/y')).toEqual(['transports.docker["reg.example.com"]', '/host']);
    expect(which('mirror.example.com/x')).toEqual(['transports.docker["*.example.com"]', '/wild']);
    expect(which('quay.io/x')).toEqual(['transports.docker[""]', '/transport']);
    // Another transport without scopes: the global default.
    expect(describeScope(requirementsFor(p, 'dir', '/srv/x'))).toBe('default');
    expect(requirementsFor(p, 'dir', '/srv/x').requirements).toEqual([{ type: 'reject' }]);
  });

  it('matches dir: scopes by path and parent directories, oci: by path:image then path', () => {
    expect(policyScopesFor('dir', '/srv/images/os')).toEqual(['/srv/images/os', '/srv/images', '/srv']);
    expect(policyScopesFor('oci', '/srv/layout:os')).toEqual(['/srv/layout:os', '/srv/layout', '/srv']);
    const p = parse({ default: reject, transports: { dir: { '/srv': accept, '/srv/images/bad': reject } } });
    expect(requirementsFor(p, 'dir', '/srv/images/os').requirements).toEqual([{ type: 'insecureAcceptAnything' }]);
    expect(requirementsFor(p, 'dir', '/srv/images/bad').requirements).toEqual([{ type: 'reject' }]);
    expect(requirementsFor(p, 'dir', '/srvx/os').requirements).toEqual([{ type: 'reject' }]);
  });
});
