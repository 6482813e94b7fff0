/**
 * Registry authentication pieces that need no network: parsing
 * `WWW-Authenticate` (RFC 9110 section 11.6.1, RFC 7235 grammar), Basic
 * credentials (RFC 7617), the token request URL and response of the Docker
 * token protocol (distribution docs/spec/auth/token.md), and a per-scope token
 * cache. The HTTP exchanges themselves live in distribution.ts.
 */
import { UntrustedInputError } from '../errors.js';

export interface Challenge {
  /** Lower-cased auth scheme: `bearer`, `basic`, … */
  scheme: string;
  /** Parameters with lower-cased names; quoted values unescaped. */
  params: Record<string, string>;
  /** The token68 form (`Negotiate abc==`), when the challenge used it. */
  token68?: string;
}

const tchar = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;
const token68char = /[A-Za-z0-9\-._~+/]/;

/**
 * Parses one or more WWW-Authenticate header values into challenges. Handles
 * several challenges in one value (`Basic realm="a", Bearer realm="b"`),
 * quoted strings with commas and backslash escapes, empty list elements and
 * the token68 form. Malformed parts end the parse of that value; what was
 * understood before them is kept.
 */
export function parseWwwAuthenticate(header: string | string[] | undefined): Challenge[] {
  if (header === undefined) return [];
  const values = Array.isArray(header) ? header : [header];
  const out: Challenge[] = [];
  for (const v of values) out.push(...parseValue(v));
  return out;
}

function parseValue(s: string): Challenge[] {
  const challenges: Challenge[] = [];
  let i = 0;
  const isWs = (c: string | undefined): boolean => c === ' ' || c === '\t';
  const skipWs = (): void => {
    while (isWs(s[i])) i++;
  };
  const readToken = (): string => {
    const start = i;
    while (i < s.length && tchar.test(s[i] as string)) i++;
    return s.slice(start, i);
  };
  const readQuoted = (): string | undefined => {
    // s[i] === '"'
    i++;
    let value = '';
    while (i < s.length) {
      const c = s[i] as string;
      if (c === '\\' && i + 1 < s.length) {
        value += s[i + 1];
        i += 2;
      } else if (c === '"') {
        i++;
        return value;
      } else {
        value += c;
        i++;
      }
    }
    return undefined; // unterminated
  };
  /** Looks ahead: is the text at `i` `name BWS "="` (an auth-param), not a new scheme? */
  const atParam = (): boolean => {
    let j = i;
    while (j < s.length && tchar.test(s[j] as string)) j++;
    if (j === i) return false;
    while (isWs(s[j])) j++;
    // `name=` followed by another `=` would be token68 padding, not a param.
    return s[j] === '=' && s[j + 1] !== '=';
  };

  for (;;) {
    while (i < s.length && (isWs(s[i]) || s[i] === ',')) i++;
    if (i >= s.length) break;
    const scheme = readToken();
    if (scheme === '') break; // garbage: stop
    const challenge: Challenge = { scheme: scheme.toLowerCase(), params: {} };
    challenges.push(challenge);
    skipWs();
    if (i >= s.length || s[i] === ',') continue;
    if (!atParam()) {
      // token68
      const start = i;
      while (i < s.length && token68char.test(s[i] as string)) i++;
      while (s[i] === '=') i++;
      if (i === start) break;
      challenge.token68 = s.slice(start, i);
      continue;
    }
    // #auth-param, separated by commas; ends where a new scheme starts.
    for (;;) {
      skipWs();
      const name = readToken().toLowerCase();
      skipWs();
      if (name === '' || s[i] !== '=') return challenges;
      i++;
      skipWs();
      let value: string | undefined;
      if (s[i] === '"') value = readQuoted();
      else {
        // RFC 9110 wants a token here, but some servers send bare URLs
        // (realm=https://…); take everything up to the next comma or space.
        const start = i;
        while (i < s.length && s[i] !== ',' && !isWs(s[i])) i++;
        value = s.slice(start, i);
      }
      if (value === undefined) return challenges;
      challenge.params[name] = value;
      skipWs();
      if (i >= s.length) return challenges;
      if (s[i] !== ',') return challenges;
      while (i < s.length && (isWs(s[i]) || s[i] === ',')) i++;
      if (i >= s.length) return challenges;
      if (!atParam()) break; // next challenge
    }
  }
  return challenges;
}

/** The preferred challenge: Bearer over Basic (containers/image docker_client.go does the same). */
export function pickChallenge(challenges: Challenge[]): Challenge | undefined {
  return challenges.find((c) => c.scheme === 'bearer') ?? challenges.find((c) => c.scheme === 'basic');
}

export function basicAuthorization(c: { username: string; password: string }): string {
  return `Basic ${Buffer.from(`${c.username}:${c.password}`, 'utf8').toString('base64')}`;
}

/** `repository:NAME:pull` (distribution docs/spec/auth/scope.md). */
export function pullScope(repository: string): string {
  return `repository:${repository}:pull`;
}

/** The realm of a Bearer challenge, validated as an http(s) URL. */
export function tokenRealm(challenge: Challenge, what: string): URL {
  const realm = challenge.params['realm'];
  if (realm === undefined || realm === '') {
    throw new UntrustedInputError(`${what}: Bearer challenge without a realm`);
  }
  let url: URL;
  try {
    url = new URL(realm);
  } catch {
    throw new UntrustedInputError(`${what}: Bearer realm is not a URL: ${JSON.stringify(realm.slice(0, 200))}`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new UntrustedInputError(`${what}: Bearer realm must be an http(s) URL, got ${url.protocol}`);
  }
  return url;
}

/** The token endpoint URL for a Bearer challenge: `realm?service=…&scope=…` (token.md "Requesting a Token"). */
export function tokenRequestUrl(challenge: Challenge, scope: string, what: string): URL {
  const url = tokenRealm(challenge, what);
  const service = challenge.params['service'];
  if (service !== undefined) url.searchParams.set('service', service);
  url.searchParams.append('scope', scope);
  return url;
}

/**
 * The form body of an OAuth2 refresh-token request (distribution docs/spec/auth/oauth.md),
 * used when the credentials are an identity token.
 */
export function refreshTokenForm(challenge: Challenge, scope: string, refreshToken: string, clientId: string): string {
  const form = new URLSearchParams();
  form.set('grant_type', 'refresh_token');
  form.set('refresh_token', refreshToken);
  const service = challenge.params['service'];
  if (service !== undefined) form.set('service', service);
  form.set('scope', scope);
  form.set('client_id', clientId);
  return form.toString();
}

export interface BearerToken {
  token: string;
  /** Epoch milliseconds after which the token should not be used. */
  expiresAt: number;
}

/** Docker token spec: a missing or short expires_in means 60 seconds. */
const minimumTokenLifetimeS = 60;
/** Refresh a little early so a token does not expire between check and use. */
const expirySlackMs = 10_000;

/** Validates a token endpoint's JSON answer; accepts `token` or `access_token`. */
export function parseTokenResponse(body: Buffer, now: number, what: string): BearerToken {
  let doc: unknown;
  try {
    doc = JSON.parse(body.toString('utf8'));
  } catch {
    throw new UntrustedInputError(`${what}: token response is not JSON`);
  }
  if (typeof doc !== 'object' || doc === null) throw new UntrustedInputError(`${what}: token response is not an object`);
  const d = doc as Record<string, unknown>;
  const token = typeof d['token'] === 'string' && d['token'] !== '' ? d['token'] : d['access_token'];
  // The token goes into an HTTP header: visible ASCII only (no CR/LF injection).
  if (typeof token !== 'string' || !/^[\x21-\x7e]+$/.test(token)) {
    throw new UntrustedInputError(`${what}: token response has no usable token or access_token`);
  }
  let lifetime = typeof d['expires_in'] === 'number' && Number.isFinite(d['expires_in']) ? d['expires_in'] : 0;
  if (lifetime < minimumTokenLifetimeS) lifetime = minimumTokenLifetimeS;
  return { token, expiresAt: now + lifetime * 1000 - expirySlackMs };
}

/** Bearer tokens by (realm, service, scope); one cache per source, never global. */
export class TokenCache {
  private readonly tokens = new Map<string, BearerToken>();

  static key(challenge: Challenge, scope: string): string {
    return JSON.stringify([challenge.params['realm'] ?? '', challenge.params['service'] ?? '', scope]);
  }

  get(key: string, now: number = Date.now()): string | undefined {
    const t = this.tokens.get(key);
    if (t === undefined) return undefined;
    if (t.expiresAt <= now) {
      this.tokens.delete(key);
      return undefined;
    }
    return t.token;
  }

  set(key: string, token: BearerToken): void {
    this.tokens.set(key, token);
  }

  delete(key: string): void {
    this.tokens.delete(key);
  }
}
