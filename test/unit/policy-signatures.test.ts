/**
 * Signature payloads, cosign-format verification with real keys (node:crypto),
 * the policy evaluation, registries.d and the dir: signature file format.
 */
import { describe, expect, it } from 'vitest';
import type { Digest } from '../../src/oci/types.js';
import { parseSignatureBlob, sigstoreSignatureBlob } from '../../src/policy/dir-signatures.js';
import { parsePolicy } from '../../src/policy/policy-json.js';
import {
  loadRegistriesD,
  lookasideBaseFor,
  lookasideSignatureUrl,
  parseRegistriesDFile,
  useSigstoreAttachments,
} from '../../src/policy/registries-d.js';
import { InvalidSignatureError, findDuplicateKey, parseSimpleSigningPayload } from '../../src/policy/simple-signing.js';
import { parsePublicKeys, verifySigstoreAttachment, type SigstoreAttachment } from '../../src/policy/sigstore.js';
import { PolicyRejectedError, checkPolicy, type SignatureSource } from '../../src/policy/verify.js';
import { parseReference } from '../../src/oci/reference.js';
import { cosignPayload, generateTestKey, signPayload, type TestKey } from '../support/cosign.js';

const digest = `sha256:${'1'.repeat(64)}` as Digest;
const other = `sha256:${'2'.repeat(64)}` as Digest;

describe('simple signing payload', () => {
  const atomic = (critical: unknown, optional: unknown = { creator: 'skopeo', timestamp: 1700000000 }) =>
    Buffer.from(JSON.stringify({ critical, optional }));
  const good = {
    type: 'atomic container signature',
    image: { 'docker-manifest-digest': digest },
    identity: { 'docker-reference': 'reg.io/os:1' },
  };

  it('parses the atomic and cosign forms', () => {
    expect(parseSimpleSigningPayload(atomic(good), 'atomic', 'sig')).toEqual({
      dockerManifestDigest: digest,
      dockerReference: 'reg.io/os:1',
      creator: 'skopeo',
      timestamp: 1700000000,
    });
    expect(parseSimpleSigningPayload(cosignPayload('reg.io/os', digest), 'cosign', 'sig')).toEqual({
      dockerManifestDigest: digest,
      dockerReference: 'reg.io/os',
    });
  });

  const bad: Array<[string, Buffer, 'atomic' | 'cosign', RegExp]> = [
    ['wrong type for the kind', atomic(good), 'cosign', /unrecognized signature type/],
    ['null optional in atomic', atomic(good, null), 'atomic', /"optional" is not a JSON object/],
    ['extra critical field', atomic({ ...good, extra: 1 }), 'atomic', /unknown field "extra"/],
    ['missing identity', atomic({ type: good.type, image: good.image }), 'atomic', /missing field "identity"/],
    ['digest not a string', atomic({ ...good, image: { 'docker-manifest-digest': 5 } }), 'atomic', /not a string/],
    ['non-integer timestamp', atomic(good, { timestamp: 1.5 }), 'atomic', /not an integer/],
    ['missing optional', Buffer.from(JSON.stringify({ critical: good })), 'atomic', /missing field "optional"/],
    [
      'duplicate key',
      Buffer.from(
        `{"critical":{"type":"atomic container signature","image":{"docker-manifest-digest":"${digest}","docker-manifest-digest":"${other}"},"identity":{"docker-reference":"a.io/b:1"}},"optional":{}}`,
      ),
      'atomic',
      /duplicate key "docker-manifest-digest"/,
    ],
  ];
  for (const [name, bytes, kind, re] of bad) {
    it(`refuses ${name}`, () => {
      expect(() => parseSimpleSigningPayload(bytes, kind, 'sig 1')).toThrow(InvalidSignatureError);
      expect(() => parseSimpleSigningPayload(bytes, kind, 'sig 1')).toThrow(re);
    });
  }

  it('findDuplicateKey sees keys only, at every depth, escapes included', () => {
    expect(findDuplicateKey('{"a":"a","b":{"a":1}}')).toBeUndefined();
    expect(findDuplicateKey('{"a":[{"x":1,"x":2}]}')).toBe('x');
    expect(findDuplicateKey('{"\\u0061":1,"a":2}')).toBe('a');
    expect(findDuplicateKey('{"k":"\\"k\\"","k2":1}')).toBeUndefined();
  });
});

describe('cosign signature verification', () => {
  const keys: Record<TestKey['kind'], TestKey> = {
    'ecdsa-p256': generateTestKey('ecdsa-p256'),
    rsa: generateTestKey('rsa'),
    ed25519: generateTestKey('ed25519'),
  };
  const rules = {
    checkDigest: (d: string) => (d === digest ? undefined : `signature is for manifest ${d}`),
    checkIdentity: (r: string) => (r === 'reg.io/os' ? undefined : `identity ${r} not accepted`),
  };
  const attachment = (key: TestKey, payload = cosignPayload('reg.io/os', digest)): SigstoreAttachment => ({
    mediaType: 'application/vnd.dev.cosign.simplesigning.v1+json',
    payload,
    annotations: { 'dev.cosignproject.cosign/signature': signPayload(key, payload) },
  });

  for (const kind of Object.keys(keys) as Array<TestKey['kind']>) {
    it(`accepts a ${kind} signature and refuses it under another key`, () => {
      const key = keys[kind];
      const pub = parsePublicKeys(Buffer.from(key.publicPem), 'test key');
      const r = verifySigstoreAttachment(pub, attachment(key), rules, 'sig');
      expect(r.accepted).toBe(true);
      const otherKind = kind === 'rsa' ? 'ed25519' : 'rsa';
      const wrong = parsePublicKeys(Buffer.from(keys[otherKind].publicPem), 'other key');
      const r2 = verifySigstoreAttachment(wrong, attachment(key), rules, 'sig');
      expect(r2).toEqual({ accepted: false, reason: expect.stringMatching(/cryptographic signature verification failed/) });
    });
  }

  it('verifies the payload bytes as stored: a re-serialized payload does not verify', () => {
    const key = keys['ecdsa-p256'];
    const pub = parsePublicKeys(Buffer.from(key.publicPem), 'k');
    const a = attachment(key);
    const reformatted = Buffer.from(JSON.stringify(JSON.parse(a.payload.toString()), null, 1));
    expect(verifySigstoreAttachment(pub, { ...a, payload: reformatted }, rules, 's').accepted).toBe(false);
  });

  it('refuses a wrong media type, a missing or non-base64 annotation, another digest, another identity', () => {
    const key = keys.ed25519;
    const pub = parsePublicKeys(Buffer.from(key.publicPem), 'k');
    const a = attachment(key);
    const reason = (x: SigstoreAttachment) => {
      const r = verifySigstoreAttachment(pub, x, rules, 's');
      return r.accepted ? 'accepted' : r.reason;
    };
    expect(reason({ ...a, mediaType: 'application/json' })).toMatch(/unexpected media type/);
    expect(reason({ ...a, annotations: {} })).toMatch(/missing dev.cosignproject.cosign\/signature/);
    expect(reason({ ...a, annotations: { 'dev.cosignproject.cosign/signature': 'abc' } })).toMatch(/not valid base64/);
    expect(reason(attachment(key, cosignPayload('reg.io/os', other)))).toMatch(/signature is for manifest sha256:2222/);
    expect(reason(attachment(key, cosignPayload('reg.io/evil', digest)))).toMatch(/identity reg.io\/evil not accepted/);
  });

  it('refuses key files without a usable public key', () => {
    expect(() => parsePublicKeys(Buffer.from('hello'), 'key /k')).toThrow(/key \/k: no PEM "PUBLIC KEY" block/);
    expect(() =>
      parsePublicKeys(Buffer.from('-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n'), 'key /k'),
    ).toThrow(/invalid public key/);
  });
});

describe('checkPolicy', () => {
  const key = generateTestKey('ecdsa-p256');
  const otherKey = generateTestKey('ecdsa-p256');
  const keyData = Buffer.from(key.publicPem).toString('base64');
  const source = (attachments: SigstoreAttachment[]): SignatureSource => ({
    async *lookasideSignatures() {},
    sigstoreAttachments: async () => attachments,
  });
  const signed = (k: TestKey, ref: string, d: string = digest): SigstoreAttachment => {
    const payload = cosignPayload(ref, d);
    return {
      mediaType: 'application/vnd.dev.cosign.simplesigning.v1+json',
      payload,
      annotations: { 'dev.cosignproject.cosign/signature': signPayload(k, payload) },
    };
  };
  const policy = parsePolicy(
    JSON.stringify({
      default: [{ type: 'reject' }],
      transports: {
        docker: {
          'reg.io/os': [{ type: 'sigstoreSigned', keyData, signedIdentity: { type: 'matchRepository' } }],
          'reg.io/both': [
            { type: 'insecureAcceptAnything' },
            { type: 'sigstoreSigned', keyData },
          ],
          'reg.io/open': [{ type: 'insecureAcceptAnything' }],
        },
      },
    }),
    '/etc/containers/policy.json',
  );
  const image = (reference: string) => ({ transport: 'docker' as const, reference, manifestDigest: digest });

  it('accepts one good signature among bad ones, and reports scope and key', async () => {
    const r = await checkPolicy(policy, image('reg.io/os:1'), source([signed(otherKey, 'reg.io/os'), signed(key, 'reg.io/os')]));
    expect(r).toMatchObject({ allowed: true, requirement: 'sigstoreSigned', scope: 'transports.docker["reg.io/os"]' });
    expect(r.keyId).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(r.details).toMatch(/signature 2 by ECDSA P-256 key/);
  });

  it('rejects with the image, the scope, the requirement and every reason', async () => {
    const err = await checkPolicy(
      policy,
      image('reg.io/os:1'),
      source([signed(otherKey, 'reg.io/os'), signed(key, 'reg.io/os', other)]),
    ).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PolicyRejectedError);
    expect((err as Error).message).toMatch(
      /^docker:\/\/reg\.io\/os:1: rejected by policy scope transports\.docker\["reg\.io\/os"\] \(sigstoreSigned\): none of the 2 signatures was accepted: \[1\] cryptographic signature verification failed.*\[2\] signature is for manifest sha256:2222/,
    );
  });

  it('rejects unsigned images, reject scopes, and needs every requirement of a scope', async () => {
    await expect(checkPolicy(policy, image('reg.io/os:1'), source([]))).rejects.toThrow(
      /\(sigstoreSigned\): a signature was required, but no signature exists/,
    );
    await expect(checkPolicy(policy, image('quay.io/x:1'), source([]))).rejects.toThrow(
      /rejected by policy scope default \(reject\)/,
    );
    // The default identity rule needs the exact tagged reference; cosign signs the repository only.
    await expect(checkPolicy(policy, image('reg.io/both:1'), source([signed(key, 'reg.io/both')]))).rejects.toThrow(
      /signedIdentity matchRepoDigestOrExact for reg.io\/both:1/,
    );
    const ok = await checkPolicy(policy, image('reg.io/both:1'), source([signed(key, 'reg.io/both:1')]));
    expect(ok.requirement).toBe('insecureAcceptAnything+sigstoreSigned');
    const open = await checkPolicy(policy, image('reg.io/open:1'), source([]));
    expect(open).toMatchObject({ requirement: 'insecureAcceptAnything', scope: 'transports.docker["reg.io/open"]' });
    expect(open.keyId).toBeUndefined();
  });

  it('reports a key file that cannot be read as a rejection, not an accept', async () => {
    const p = parsePolicy(JSON.stringify({ default: [{ type: 'sigstoreSigned', keyPath: '/nonexistent/key.pub' }] }), '/p.json');
    await expect(checkPolicy(p, image('reg.io/x:1'), source([signed(key, 'reg.io/x:1')]))).rejects.toThrow(
      /rejected by policy scope default \(sigstoreSigned\): cannot read public key \/nonexistent\/key.pub/,
    );
  });
});

describe('registries.d', () => {
  it('finds the lookaside by namespace, then default-docker, then the built-in location', () => {
    const conf = parseRegistriesDFile(
      [
        'default-docker:',
        '  lookaside: https://sigs.example.com/default',
        'docker:',
        '  reg.io/team:',
        '    lookaside: file:///srv/sigs',
        '    use-sigstore-attachments: true',
        '  reg.io/legacy:',
        '    sigstore: http://old.example.com/s',
        '  reg.io/only-flag:',
        '    use-sigstore-attachments: false',
      ].join('\n'),
      '/etc/containers/registries.d/x.yaml',
    );
    const base = (r: string) => lookasideBaseFor(conf, parseReference(r)).href;
    expect(base('reg.io/team/os:1')).toBe('file:///srv/sigs/team/os');
    expect(base('reg.io/legacy/os:1')).toBe('http://old.example.com/s/legacy/os');
    expect(base('reg.io/only-flag/os:1')).toBe('https://sigs.example.com/default/only-flag/os');
    expect(lookasideBaseFor({ docker: new Map(), files: [] }, parseReference('quay.io/a/b')).href).toBe(
      'file:///var/lib/containers/sigstore/a/b',
    );
    expect(lookasideSignatureUrl(new URL('file:///srv/sigs/team/os'), digest, 2).href).toBe(
      `file:///srv/sigs/team/os@sha256=${'1'.repeat(64)}/signature-2`,
    );
    expect(useSigstoreAttachments(conf, parseReference('reg.io/team/os'))).toBe(true);
    expect(useSigstoreAttachments(conf, parseReference('reg.io/only-flag/os'))).toBe(false);
    expect(useSigstoreAttachments(conf, parseReference('quay.io/x'))).toBe(false);
  });

  it('refuses malformed files and duplicate definitions, naming the files', async () => {
    expect(() => parseRegistriesDFile('docker: [1, 2', '/d/a.yaml')).toThrow(/\/d\/a\.yaml: not valid YAML/);
    expect(() => parseRegistriesDFile('docker:\n  x.io:\n    lookaside: /no/scheme\n', '/d/a.yaml')).toThrow(/is not a URL/);
    expect(() => parseRegistriesDFile('docker:\n  x.io:\n    lookaside: ftp://h/p\n', '/d/a.yaml')).toThrow(/unsupported URL scheme ftp:/);
    const { mkdtemp, writeFile, rm } = await import('node:fs/promises');
    const { tmpdir } = await import('node:os');
    const dir = await mkdtemp(`${tmpdir()}/ocisnap-regd-`);
    try {
      await writeFile(`${dir}/a.yaml`, 'docker:\n  x.io:\n    lookaside: file:///a\n');
      await writeFile(`${dir}/b.yaml`, 'docker:\n  x.io:\n    lookaside: file:///b\n');
      await writeFile(`${dir}/ignored.conf`, 'not yaml: [');
      await expect(loadRegistriesD(dir)).rejects.toThrow(new RegExp(`"x.io" is defined in both ${dir}/a.yaml and ${dir}/b.yaml`));
      await rm(`${dir}/b.yaml`);
      const conf = await loadRegistriesD(dir);
      expect(conf.files).toEqual([`${dir}/a.yaml`]);
      expect((await loadRegistriesD(`${dir}/missing`)).docker.size).toBe(0);
    } finally {
      await rm(dir, { recursive: true });
    }
  });
});

describe('dir: signature files', () => {
  it('tells raw OpenPGP, simple-signing and sigstore-json apart (FromBlob)', () => {
    expect(parseSignatureBlob(Buffer.from([0xa3, 1, 2]), 's').kind).toBe('simple-signing');
    const prefixed = parseSignatureBlob(Buffer.concat([Buffer.from('\0simple-signing\n'), Buffer.from([0x89, 9])]), 's');
    expect(prefixed).toEqual({ kind: 'simple-signing', blob: Buffer.from([0x89, 9]) });
    const a: SigstoreAttachment = { mediaType: 'application/vnd.dev.cosign.simplesigning.v1+json', payload: Buffer.from('{"x":1}'), annotations: { k: 'v' } };
    expect(parseSignatureBlob(sigstoreSignatureBlob(a), 's')).toEqual({ kind: 'sigstore', attachment: a });
    expect(() => parseSignatureBlob(Buffer.from('\0x-509\nabc'), '/d/signature-1')).toThrow(/\/d\/signature-1: unrecognized signature format "x-509"/);
    expect(() => parseSignatureBlob(Buffer.from('{"a":1}'), 's')).toThrow(/starting with byte 0x7b/);
    expect(() => parseSignatureBlob(Buffer.alloc(0), 's')).toThrow(/empty signature/);
  });
});
