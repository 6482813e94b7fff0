import { describe, expect, it } from 'vitest';
import {
  TokenCache,
  basicAuthorization,
  parseTokenResponse,
  parseWwwAuthenticate,
  pickChallenge,
  refreshTokenForm,
  tokenRequestUrl,
} from '../../src/registry/auth.js';

describe('parseWwwAuthenticate', () => {
  it('parses a Docker Hub style Bearer challenge', () => {
    expect(
      parseWwwAuthenticate(
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/debian:pull"',
      ),
    ).toEqual([
      {
        scheme: 'bearer',
        params: {
          realm: 'https://auth.docker.io/token',
          service: 'registry.docker.io',
          scope: 'repository:library/debian:pull',
        },
      },
    ]);
  });

  it('keeps commas and escaped quotes inside quoted strings', () => {
    const [c] = parseWwwAuthenticate('Bearer realm="https://a/t?x=1,2", scope="repository:a:pull,push", error="say \\"hi\\""');
    expect(c?.params).toEqual({ realm: 'https://a/t?x=1,2', scope: 'repository:a:pull,push', error: 'say "hi"' });
  });

  it('splits several challenges in one value and across values, case-insensitively', () => {
    const cs = parseWwwAuthenticate(['Basic realm="r1", BEARER Realm=https://t/x , service=svc', 'Negotiate abc+/==']);
    expect(cs.map((c) => c.scheme)).toEqual(['basic', 'bearer', 'negotiate']);
    expect(cs[0]?.params).toEqual({ realm: 'r1' });
    expect(cs[1]?.params).toEqual({ realm: 'https://t/x', service: 'svc' });
    expect(cs[2]?.token68).toBe('abc+/==');
    expect(pickChallenge(cs)?.scheme).toBe('bearer');
  });

  it('tolerates empty list elements and whitespace, and stops at garbage', () => {
    expect(parseWwwAuthenticate(' , Basic  realm = "x" ,, ')).toEqual([{ scheme: 'basic', params: { realm: 'x' } }]);
    expect(parseWwwAuthenticate('Bearer realm="unterminated')).toEqual([{ scheme: 'bearer', params: {} }]);
    expect(parseWwwAuthenticate(undefined)).toEqual([]);
    expect(pickChallenge(parseWwwAuthenticate('Digest realm="x"'))).toBeUndefined();
  });
});

describe('token protocol pieces', () => {
  const challenge = { scheme: 'bearer', params: { realm: 'https://auth.example/token?a=b', service: 'reg.example' } };

  it('builds the token URL with service and scope, keeping the realm query', () => {
    const url = tokenRequestUrl(challenge, 'repository:org/os:pull', 'x');
    expect(url.origin).toBe('https://auth.example');
    expect(url.searchParams.get('a')).toBe('b');
    expect(url.searchParams.get('service')).toBe('reg.example');
    expect(url.searchParams.get('scope')).toBe('repository:org/os:pull');
  });

  it('refuses a realm that is not an http(s) URL', () => {
    expect(() => tokenRequestUrl({ scheme: 'bearer', params: { realm: 'file:///etc/passwd' } }, 's', 'x')).toThrow(
      /realm must be an http\(s\) URL/,
    );
    expect(() => tokenRequestUrl({ scheme: 'bearer', params: {} }, 's', 'x')).toThrow(/without a realm/);
  });

  it('encodes the refresh-token form', () => {
    const form = new URLSearchParams(refreshTokenForm(challenge, 'repository:a:pull', 'rt', 'ocisnap'));
    expect(Object.fromEntries(form)).toEqual({
      grant_type: 'refresh_token',
      refresh_token: 'rt',
      service: 'reg.example',
      scope: 'repository:a:pull',
      client_id: 'ocisnap',
    });
  });

  it('accepts token or access_token, with a 60 s minimum lifetime', () => {
    const a = parseTokenResponse(Buffer.from('{"token":"abc","expires_in":3600}'), 0, 'x');
    expect(a.token).toBe('abc');
    expect(a.expiresAt).toBe(3600_000 - 10_000);
    const b = parseTokenResponse(Buffer.from('{"access_token":"def","expires_in":5}'), 0, 'x');
    expect(b.token).toBe('def');
    expect(b.expiresAt).toBe(60_000 - 10_000);
  });

  it('refuses a response without a usable token', () => {
    expect(() => parseTokenResponse(Buffer.from('{}'), 0, 'tok')).toThrow(/no usable token/);
    expect(() => parseTokenResponse(Buffer.from('{"token":"a\\r\\nX-Evil: 1"}'), 0, 'tok')).toThrow(/no usable token/);
    expect(() => parseTokenResponse(Buffer.from('<html>'), 0, 'tok')).toThrow(/not JSON/);
  });

  it('caches tokens per realm, service and scope until they expire', () => {
    const cache = new TokenCache();
    const k1 = TokenCache.key(challenge, 'repository:a:pull');
    const k2 = TokenCache.key(challenge, 'repository:b:pull');
    cache.set(k1, { token: 't1', expiresAt: 1000 });
    expect(cache.get(k1, 999)).toBe('t1');
    expect(cache.get(k2, 999)).toBeUndefined();
    expect(cache.get(k1, 1000)).toBeUndefined();
  });

  it('encodes Basic credentials as UTF-8', () => {
    expect(basicAuthorization({ username: 'ä', password: 'p:w' })).toBe(
      `Basic ${Buffer.from('ä:p:w', 'utf8').toString('base64')}`,
    );
  });
});
