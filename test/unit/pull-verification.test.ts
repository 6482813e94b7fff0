/** The recorded verification (format, merge) and the policy fingerprint that decides whether it still stands. */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parsePolicy } from '../../src/policy/policy-json.js';
import { policyFingerprint } from '../../src/pull/policy-check.js';
import {
  mergeVerifications,
  parseVerifications,
  serializeVerifications,
  type ImageVerification,
} from '../../src/pull/verification-record.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ocisnap-verif-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const entry = (reference: string, keyId?: string): ImageVerification => ({
  transport: 'docker',
  reference,
  signedDigest: `sha256:${'a'.repeat(64)}`,
  requirement: 'sigstoreSigned',
  scope: 'default',
  ...(keyId !== undefined && { keyId }),
  details: 'd',
  policy: '/etc/containers/policy.json',
  policyFingerprint: `sha256:${'b'.repeat(64)}`,
  time: '2026-01-01T00:00:00.000Z',
});

describe('verification record', () => {
  it('round-trips, newest first, one entry per reference', () => {
    const merged = mergeVerifications(mergeVerifications([], entry('h/a:1', 'k1')), entry('h/b:1', 'k2'));
    const again = mergeVerifications(merged, entry('h/a:1', 'k3'));
    expect(again.map((v) => `${v.reference} ${v.keyId}`)).toEqual(['h/a:1 k3', 'h/b:1 k2']);
    expect(parseVerifications(serializeVerifications(again))).toEqual(again);
  });

  it('drops entries that are not well-formed, and garbage is no record at all', () => {
    const good = entry('h/a:1');
    const bytes = Buffer.from(JSON.stringify({ verifications: [good, { ...good, signedDigest: 'md5:x' }, { ...good, transport: 'ftp' }, 7] }));
    expect(parseVerifications(bytes)).toEqual([good]);
    expect(parseVerifications(Buffer.from('{not json'))).toEqual([]);
    expect(parseVerifications(Buffer.from('{"verifications": {}}'))).toEqual([]);
  });
});

describe('policyFingerprint', () => {
  it('changes with the policy and with the contents of its key files, not otherwise', async () => {
    const keyFile = join(dir, 'key.pub');
    await writeFile(keyFile, 'one');
    const text = JSON.stringify({ default: [{ type: 'sigstoreSigned', keyPath: keyFile }] });
    const a = await policyFingerprint(parsePolicy(text, join(dir, 'p.json')));
    expect(a).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(await policyFingerprint(parsePolicy(text, join(dir, 'p.json')))).toBe(a);
    await writeFile(keyFile, 'two');
    expect(await policyFingerprint(parsePolicy(text, join(dir, 'p.json')))).not.toBe(a);
    const other = JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] });
    expect(await policyFingerprint(parsePolicy(other, join(dir, 'p.json')))).not.toBe(a);
  });
});
