import { describe, expect, it } from 'vitest';
import { UsageError } from '../../src/errors.js';
import { formatReference, InvalidReferenceError, parseReference, withDigest } from '../../src/oci/reference.js';
import type { Digest } from '../../src/oci/types.js';

const hex = 'a'.repeat(64);
const digest = `sha256:${hex}` as Digest;

describe('parseReference normalizes like containers/image', () => {
  const cases: Array<[string, { registry: string; repository: string; tag?: string; digest?: string }]> = [
    ['debian', { registry: 'docker.io', repository: 'library/debian', tag: 'latest' }],
    ['debian:12', { registry: 'docker.io', repository: 'library/debian', tag: '12' }],
    ['library/debian:12', { registry: 'docker.io', repository: 'library/debian', tag: '12' }],
    ['docker.io/debian', { registry: 'docker.io', repository: 'library/debian', tag: 'latest' }],
    ['index.docker.io/debian', { registry: 'docker.io', repository: 'library/debian', tag: 'latest' }],
    ['index.docker.io/org/os:1', { registry: 'docker.io', repository: 'org/os', tag: '1' }],
    ['org/os', { registry: 'docker.io', repository: 'org/os', tag: 'latest' }],
    // First component without "." or ":" and not localhost is a path, not a host.
    ['myhost/os/base', { registry: 'docker.io', repository: 'myhost/os/base', tag: 'latest' }],
    ['localhost/os', { registry: 'localhost', repository: 'os', tag: 'latest' }],
    ['localhost:5000/os:1', { registry: 'localhost:5000', repository: 'os', tag: '1' }],
    ['127.0.0.1:5000/a/b/c:v1.2-rc_3', { registry: '127.0.0.1:5000', repository: 'a/b/c', tag: 'v1.2-rc_3' }],
    ['[::1]:5000/os:1', { registry: '[::1]:5000', repository: 'os', tag: '1' }],
    ['[fe80::1]/os', { registry: '[fe80::1]', repository: 'os', tag: 'latest' }],
    ['quay.io/org/os@' + digest, { registry: 'quay.io', repository: 'org/os', digest }],
    ['quay.io/org/os:1@' + digest, { registry: 'quay.io', repository: 'org/os', tag: '1', digest }],
    ['Registry.Example.COM/os', { registry: 'Registry.Example.COM', repository: 'os', tag: 'latest' }],
    ['a.b/x.y_z__w---v/q', { registry: 'a.b', repository: 'x.y_z__w---v/q', tag: 'latest' }],
    ['example.com/os:_tag', { registry: 'example.com', repository: 'os', tag: '_tag' }],
    ['example.com/os:' + 'T'.repeat(128), { registry: 'example.com', repository: 'os', tag: 'T'.repeat(128) }],
  ];
  it.each(cases)('%s', (input, want) => {
    expect(parseReference(input)).toEqual(want);
  });
});

describe('parseReference rejects malformed references with a clear reason', () => {
  const cases: Array<[string, RegExp]> = [
    ['', /empty/],
    ['Foo/bar', /"Foo\/bar": repository name must be lowercase/],
    ['example.com/Os', /must be lowercase/],
    ['docker://debian', /"docker:\/\/" is not part of a reference/],
    ['https://registry.example/os', /"https:\/\/" is not part of a reference .*write HOST\/REPOSITORY\[:TAG\]/],
    ['debian:', /invalid tag ""/],
    ['debian:.x', /invalid tag "\.x"/],
    ['debian:-x', /invalid tag "-x"/],
    ['example.com/os:' + 'a'.repeat(129), /invalid tag/],
    ['debian:a+b', /invalid tag "a\+b"/],
    ['debian@sha256:abc', /invalid digest "sha256:abc"/],
    ['debian@sha512:' + 'a'.repeat(128), /unsupported digest "sha512:.*only sha256/],
    ['debian@sha256:' + 'A'.repeat(64), /unsupported digest/],
    ['debian@', /invalid digest ""/],
    ['a..b', /invalid repository path component "a\.\.b"/],
    ['example.com/a_-b', /invalid repository path component "a_-b"/],
    ['example.com/-a', /invalid repository path component "-a"/],
    ['example.com/a___b', /invalid repository path component/],
    ['example.com//a', /empty path component/],
    ['example.com/a/', /empty path component/],
    ['example.com/', /missing repository name/],
    [':tag', /missing repository name/],
    ['-bad.com/os', /invalid registry host "-bad\.com"/],
    ['bad_host.com/os', /invalid registry host/],
    ['host.com:/os', /invalid registry host "host\.com:"/],
    ['host.com:50a/os', /invalid registry host/],
    [hex, /image ID, not a repository name/],
    [' debian', /whitespace/],
    ['example.com/' + 'a'.repeat(244), /repository name is 256 characters long; the limit is 255/],
  ];
  it.each(cases)('%j', (input, message) => {
    let caught: unknown;
    try {
      parseReference(input);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(InvalidReferenceError);
    expect(caught).toBeInstanceOf(UsageError);
    const msg = (caught as Error).message;
    expect(msg.startsWith(`invalid image reference ${JSON.stringify(input)}: `)).toBe(true);
    expect(msg).toMatch(message);
    expect(msg).not.toContain('\n');
  });

  it('accepts a name of exactly 255 characters', () => {
    const ref = parseReference('example.com/' + 'a'.repeat(243));
    expect(`${ref.registry}/${ref.repository}`.length).toBe(255);
  });

  it('counts the library/ prefix in the length limit', () => {
    // docker.io/library/ is 18 characters: 237 + 18 = 255 passes, 238 fails.
    expect(parseReference('a'.repeat(237)).repository).toBe('library/' + 'a'.repeat(237));
    expect(() => parseReference('a'.repeat(238))).toThrow(/256 characters/);
  });
});

describe('formatReference and withDigest', () => {
  it.each([
    ['debian:12', 'docker.io/library/debian:12'],
    ['localhost:5000/os', 'localhost:5000/os:latest'],
    [`localhost:5000/os@${digest}`, `localhost:5000/os@${digest}`],
    [`host.example/repo:tag@${digest}`, `host.example/repo:tag@${digest}`],
    ['[::1]:5000/os:1', '[::1]:5000/os:1'],
  ])('%s → %s', (input, want) => {
    expect(formatReference(parseReference(input))).toBe(want);
    // The formatted form is a fixed point.
    expect(formatReference(parseReference(want))).toBe(want);
  });

  it('withDigest pins the reference and keeps the tag, without mutating the input', () => {
    const ref = parseReference('quay.io/org/os:1');
    const pinned = withDigest(ref, digest);
    expect(formatReference(pinned)).toBe(`quay.io/org/os:1@${digest}`);
    expect(ref.digest).toBeUndefined();
    const other = `sha256:${'b'.repeat(64)}` as Digest;
    expect(withDigest(pinned, other).digest).toBe(other);
  });
});
