/**
 * A Docker token server (distribution docs/spec/auth/token.md) for tests, on
 * 127.0.0.1. It signs ES256 JWTs that docker-registry's `auth: token:` accepts
 * (distribution v2.8 registry/auth/token/token.go): claims iss, sub, aud =
 * service, exp, nbf, iat, jti, access; the header carries the signing
 * certificate in `x5c`, which the registry verifies against its
 * `rootcertbundle` (the same self-signed certificate, written to `certFile`).
 */
import { randomBytes, sign } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';

export interface TokenRequestLog {
  method: string;
  url: string;
  authorization: string | undefined;
  scopes: string[];
  service: string | null;
}

export interface TokenServerOptions {
  service: string;
  issuer: string;
  /** username → password; these users get every action they ask for. */
  users: Record<string, string>;
  /** Anonymous requests get pull (default: nothing, so the registry answers 401). */
  anonymousPull?: boolean;
  /** Which JSON field carries the token (default `token`). */
  tokenField?: 'token' | 'access_token';
  expiresIn?: number;
}

export interface TokenServer {
  realm: string;
  service: string;
  issuer: string;
  /** PEM of the signing certificate: the registry's `rootcertbundle`. */
  certFile: string;
  requests: TokenRequestLog[];
  /** The live options: tests may change tokenField, users, … between requests. */
  options: TokenServerOptions;
  stop(): Promise<void>;
}

const b64url = (data: Buffer | string): string => Buffer.from(data).toString('base64url');

function parseBasic(header: string | undefined): { user: string; pass: string } | undefined {
  if (header === undefined || !header.startsWith('Basic ')) return undefined;
  const text = Buffer.from(header.slice(6), 'base64').toString('utf8');
  const colon = text.indexOf(':');
  if (colon === -1) return undefined;
  return { user: text.slice(0, colon), pass: text.slice(colon + 1) };
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks).toString('utf8');
}

export async function startTokenServer(opts: TokenServerOptions): Promise<TokenServer> {
  const dir = await mkdtemp(join(tmpdir(), 'ocisnap-token-'));
  const keyFile = join(dir, 'key.pem');
  const certFile = join(dir, 'cert.pem');
  await execa('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', '/CN=ocisnap test token issuer',
  ]);
  const key = await readFile(keyFile, 'utf8');
  const certPem = await readFile(certFile, 'utf8');
  const certDer = Buffer.from(certPem.replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, ''), 'base64');
  const requests: TokenRequestLog[] = [];

  const issue = (subject: string, scopes: string[], grant: (actions: string[]) => string[]): string => {
    const now = Math.floor(Date.now() / 1000);
    const access = scopes.flatMap((s) => {
      const [type, ...rest] = s.split(':');
      const actions = rest.pop()?.split(',') ?? [];
      const name = rest.join(':');
      if (type !== 'repository' || name === '') return [];
      const granted = grant(actions);
      return granted.length > 0 ? [{ type, name, actions: granted }] : [];
    });
    const header = { typ: 'JWT', alg: 'ES256', x5c: [certDer.toString('base64')] };
    const claims = {
      iss: opts.issuer,
      sub: subject,
      aud: opts.service,
      exp: now + 300,
      nbf: now - 10,
      iat: now,
      jti: randomBytes(8).toString('hex'),
      access,
    };
    const signingInput = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    // JWS ES256 signatures are r||s (RFC 7518 section 3.4), not DER.
    const sig = sign('sha256', Buffer.from(signingInput), { key, dsaEncoding: 'ieee-p1363' });
    return `${signingInput}.${b64url(sig)}`;
  };

  const server: Server = createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://token');
      let scopes = url.searchParams.getAll('scope').flatMap((s) => s.split(' ')).filter((s) => s !== '');
      let service = url.searchParams.get('service');
      let user: string | undefined;
      let ok = false;
      if (req.method === 'POST') {
        // OAuth2 refresh-token grant (distribution docs/spec/auth/oauth.md); the refresh token is "USER:PASSWORD".
        const form = new URLSearchParams(await readBody(req));
        scopes = form.getAll('scope').flatMap((s) => s.split(' ')).filter((s) => s !== '');
        service = form.get('service');
        const rt = form.get('refresh_token') ?? '';
        const colon = rt.indexOf(':');
        user = rt.slice(0, colon);
        ok = form.get('grant_type') === 'refresh_token' && colon > 0 && opts.users[user] === rt.slice(colon + 1);
      } else {
        const basic = parseBasic(req.headers.authorization);
        if (basic !== undefined) {
          user = basic.user;
          ok = opts.users[basic.user] === basic.pass;
        }
      }
      requests.push({ method: req.method ?? '', url: req.url ?? '', authorization: req.headers.authorization, scopes, service });
      if (user !== undefined && !ok) {
        res.writeHead(401, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'bad credentials' }] }));
        return;
      }
      const token =
        user !== undefined
          ? issue(user, scopes, (a) => a)
          : issue('', scopes, (a) => (opts.anonymousPull ? a.filter((x) => x === 'pull') : []));
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          [opts.tokenField ?? 'token']: token,
          expires_in: opts.expiresIn ?? 300,
          issued_at: new Date().toISOString(),
        }),
      );
    })().catch((err: unknown) => {
      res.writeHead(500);
      res.end(String(err));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    realm: `http://127.0.0.1:${port}/token`,
    service: opts.service,
    issuer: opts.issuer,
    certFile,
    requests,
    options: opts,
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(dir, { recursive: true, force: true });
    },
  };
}
