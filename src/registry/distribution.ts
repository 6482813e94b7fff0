/**
 * A client for one repository of one registry over the distribution API
 * (opencontainers/distribution-spec spec.md), on its own undici Agent.
 *
 * - `GET /v2/` once, to learn the scheme (https, or http for an insecure
 *   registry) and the auth challenge;
 * - Bearer tokens from the challenge's realm (distribution docs/spec/auth/token.md),
 *   Basic credentials when the challenge is Basic;
 * - manifests size-limited while streaming and checked against the digest;
 * - blobs streamed through a verifier, following redirects (dropping the
 *   Authorization header on a cross-origin hop), resumed with `Range` after a
 *   dropped connection;
 * - bounded retries with backoff for 429/408/5xx and connection errors.
 *
 * Insecure registries: like containers/image (docker/docker_client.go
 * detectPropertiesHelper) we try https without certificate verification first
 * and fall back to plain http when that connection fails.
 */
import { readFileSync } from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http';
import { rootCertificates } from 'node:tls';
import { Readable, pipeline } from 'node:stream';
import { Agent, type Dispatcher } from 'undici';
import { DigestMismatchError, OcisnapError, describeError } from '../errors.js';
import { createVerifier, isDigest, sha256Digest } from '../oci/digest.js';
import { maxManifestBytes } from '../oci/manifest.js';
import { manifestAccept } from '../oci/mediatypes.js';
import type { Descriptor } from '../oci/types.js';
import type { Credentials } from '../policy/auth-file.js';
import {
  TokenCache,
  basicAuthorization,
  parseTokenResponse,
  parseWwwAuthenticate,
  pickChallenge,
  pullScope,
  refreshTokenForm,
  tokenRealm,
  tokenRequestUrl,
  type Challenge,
} from './auth.js';
import {
  AuthenticationError,
  DocumentTooLargeError,
  RegistryConnectionError,
  RegistryError,
  RegistryHttpError,
  RegistryProtocolError,
  SourceSpecError,
  context,
  shortDigest,
} from './errors.js';
import {
  backoffDelay,
  defaultRetryPolicy,
  isRetryableStatus,
  isTransientNetworkError,
  parseRetryAfter,
  sleep,
  type RetryPolicy,
} from './retry.js';
import { manifestMediaType, type BlobOptions, type ManifestBlob } from './types.js';

export interface DistributionOptions {
  /** Registry host as in the reference (`docker.io`, `localhost:5000`). */
  registry: string;
  repository: string;
  /** The image as shown in messages: `localhost:5000/os:1`. */
  image: string;
  credentials?: Credentials;
  /** Skip TLS verification and allow plain http. */
  insecure?: boolean;
  userAgent?: string;
  retry?: Partial<RetryPolicy>;
  /** Aborts every request of this client. */
  signal?: AbortSignal;
  /** PEM file of extra CA certificates to trust (in addition to Node's bundled roots). */
  caFile?: string;
  timeouts?: { connectMs?: number; headersMs?: number; bodyMs?: number };
}

interface Response {
  status: number;
  headers: IncomingHttpHeaders;
  body: Dispatcher.ResponseData['body'];
  url: URL;
}

type Headers = Record<string, string>;

const maxRedirects = 10;
const maxTokenResponseBytes = 1024 * 1024;
const maxErrorBodyBytes = 16 * 1024;
const redirectStatuses = new Set([301, 302, 303, 307, 308]);

/** containers/image docker/docker_client.go: Docker Hub's API lives on another host. */
function apiHost(registry: string): string {
  return registry === 'docker.io' ? 'registry-1.docker.io' : registry;
}

function header(res: { headers: IncomingHttpHeaders }, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

async function drain(res: Response): Promise<void> {
  try {
    await res.body.dump({ limit: 64 * 1024 });
  } catch {
    // A body we do not want that fails to drain does not matter; the socket is dropped.
  }
}

/** Reads a body, refusing (and dropping the connection) as soon as it exceeds `limit`. */
async function readLimited(body: Readable, limit: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      total += chunk.length;
      if (total > limit) throw new DocumentTooLargeError(what, limit);
      chunks.push(chunk);
    }
  } finally {
    body.destroy();
  }
  return Buffer.concat(chunks, total);
}

/** The first message of a distribution-spec error body (`{"errors":[{"code","message"}]}`), one line. */
async function errorDetail(res: Response): Promise<string | undefined> {
  let text: string;
  try {
    text = (await readLimited(res.body, maxErrorBodyBytes, 'error body')).toString('utf8');
  } catch {
    return undefined;
  }
  try {
    const doc = JSON.parse(text) as { errors?: Array<{ code?: unknown; message?: unknown }> };
    const first = doc.errors?.[0];
    const msg = typeof first?.message === 'string' && first.message !== '' ? first.message : first?.code;
    if (typeof msg !== 'string') return undefined;
    return msg.replace(/[\x00-\x1f\x7f]+/g, ' ').slice(0, 200);
  } catch {
    return undefined;
  }
}

function parseContentLength(res: Response): number | undefined {
  const v = header(res, 'content-length');
  return v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined;
}

export class DistributionClient {
  private readonly agent: Agent;
  private readonly policy: RetryPolicy;
  private readonly tokens = new TokenCache();
  private readonly scope: string;
  private readonly userAgent: string;
  /** Resolves to the API base (`https://host`) after the /v2/ ping. */
  private base: Promise<URL> | undefined;
  private challenge: Challenge | undefined;

  constructor(private readonly opts: DistributionOptions) {
    this.policy = { ...defaultRetryPolicy, ...opts.retry };
    this.scope = pullScope(opts.repository);
    this.userAgent = opts.userAgent ?? 'ocisnap';
    const connect: { rejectUnauthorized: boolean; ca?: string[] } = { rejectUnauthorized: !opts.insecure };
    if (opts.insecure) {
      // Nothing is verified, so no trust anchors: without `ca` node would parse
      // its whole root store for the first TLS context (65-70 ms of CPU here).
      connect.ca = [];
    } else if (opts.caFile !== undefined) {
      let pem: string;
      try {
        pem = readFileSync(opts.caFile, 'utf8');
      } catch (err) {
        throw new SourceSpecError(`CA file ${opts.caFile}: ${describeError(err)}`, { cause: err });
      }
      connect.ca = [...rootCertificates, pem];
    }
    this.agent = new Agent({
      connect,
      connectTimeout: opts.timeouts?.connectMs ?? 30_000,
      headersTimeout: opts.timeouts?.headersMs ?? 60_000,
      bodyTimeout: opts.timeouts?.bodyMs ?? 60_000,
    });
  }

  /** `registry/repository`, for messages about access. */
  private get repoName(): string {
    return `${this.opts.registry}/${this.opts.repository}`;
  }

  private signalFor(extra?: AbortSignal): AbortSignal | undefined {
    const signals = [this.opts.signal, extra].filter((s): s is AbortSignal => s !== undefined);
    if (signals.length <= 1) return signals[0];
    return AbortSignal.any(signals);
  }

  async close(): Promise<void> {
    // close() waits for requests in flight; a caller that closes is done with them.
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), 2000);
    });
    const r = await Promise.race([this.agent.close().then(() => 'closed' as const), timeout]);
    clearTimeout(timer);
    if (r === 'timeout') await this.agent.destroy();
  }

  /** Fetches a manifest by tag or digest; verified against `expected` (or a digest reference). */
  getManifest(reference: string, signal?: AbortSignal): Promise<ManifestBlob> {
    return this.fetchManifest(reference, this.signalFor(signal), 0);
  }

  private async fetchManifest(reference: string, sig: AbortSignal | undefined, attempt: number): Promise<ManifestBlob> {
    const expected = isDigest(reference) ? reference : undefined;
    const what = expected ? `manifest ${shortDigest(expected)}` : `manifest ${reference}`;
    const base = await this.api(sig);
    const url = new URL(`/v2/${this.opts.repository}/manifests/${reference}`, base);
    const res = await this.request(url, what, { accept: manifestAccept }, sig);
    if (res.status !== 200) throw await this.httpError(res, what);
    const ctx = context(this.opts.image, what);
    const length = parseContentLength(res);
    if (length !== undefined && length > maxManifestBytes) {
      res.body.destroy();
      throw new DocumentTooLargeError(ctx, maxManifestBytes);
    }
    let bytes: Buffer;
    try {
      bytes = await readLimited(res.body, maxManifestBytes, ctx);
    } catch (err) {
      if (sig?.aborted) throw sig.reason;
      if (err instanceof OcisnapError) throw err;
      // A manifest is small: after a dropped connection, fetch it again (bounded by the budget).
      if (isTransientNetworkError(err) && attempt < this.policy.retries) {
        await sleep(backoffDelay(this.policy, attempt), sig);
        return this.fetchManifest(reference, sig, attempt + 1);
      }
      throw new RegistryConnectionError(this.opts.image, what, `reading the manifest: ${describeError(err)}`, {
        cause: err,
      });
    }
    const digest = sha256Digest(bytes);
    if (expected !== undefined && digest !== expected) throw new DigestMismatchError(ctx, expected, digest);
    // distribution-spec: Docker-Content-Digest is the digest of the body; for a
    // tag fetch it is the only claim we can check the bytes against.
    const claimed = header(res, 'docker-content-digest');
    if (expected === undefined && claimed !== undefined && claimed.startsWith('sha256:') && claimed !== digest) {
      throw new DigestMismatchError(`${ctx} (Docker-Content-Digest)`, claimed, digest);
    }
    return { bytes, digest, mediaType: manifestMediaType(header(res, 'content-type'), bytes) };
  }

  /**
   * A verified stream of a blob. The first request happens before this
   * resolves (so a 404 or an auth failure rejects here); later failures error
   * the stream. A dropped connection is resumed from the last byte received.
   */
  async getBlob(desc: Descriptor, what: string, opts: BlobOptions = {}): Promise<Readable> {
    const sig = this.signalFor(opts.signal);
    const base = await this.api(sig);
    const url = new URL(`/v2/${this.opts.repository}/blobs/${desc.digest}`, base);
    const first = await this.openBlobAt(url, desc, what, 0, sig);
    const raw = Readable.from(this.blobChunks(url, desc, what, first, sig, opts.onProgress), { objectMode: false });
    const verifier = createVerifier({ digest: desc.digest, size: desc.size }, context(this.opts.image, what));
    // pipeline() destroys both ends on error, and `raw` when the consumer destroys `verifier`.
    pipeline(raw, verifier, () => {});
    return verifier;
  }

  /** One blob request from `offset`, with the response checked for the range we asked for. */
  private async openBlobAt(
    url: URL,
    desc: Descriptor,
    what: string,
    offset: number,
    signal: AbortSignal | undefined,
  ): Promise<{ res: Response; skip: number }> {
    const headers: Headers = offset > 0 ? { range: `bytes=${offset}-` } : {};
    const res = await this.request(url, what, headers, signal);
    if (res.status === 200) {
      // The server ignored Range (allowed: RFC 9110 section 14.2) and sends the whole
      // blob again: drop the prefix already delivered. The verifier hashes
      // what we pass on, and the blob is content-addressed, so the result is
      // only accepted if old prefix + new suffix is the announced blob.
      return { res, skip: offset };
    }
    if (res.status === 206 && offset > 0) {
      const range = header(res, 'content-range') ?? '';
      const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(range.trim());
      const ok =
        m !== null &&
        Number(m[1]) === offset &&
        Number(m[2]) < desc.size &&
        Number(m[2]) >= offset &&
        (m[3] === '*' || Number(m[3]) === desc.size);
      if (!ok) {
        res.body.destroy();
        throw new RegistryProtocolError(
          this.opts.image,
          what,
          `asked for bytes ${offset}- and got Content-Range ${JSON.stringify(range.slice(0, 100))}`,
        );
      }
      return { res, skip: 0 };
    }
    throw await this.httpError(res, what);
  }

  private async *blobChunks(
    url: URL,
    desc: Descriptor,
    what: string,
    first: { res: Response; skip: number },
    signal: AbortSignal | undefined,
    onProgress: ((bytes: number) => void) | undefined,
  ): AsyncGenerator<Buffer> {
    let current: { res: Response; skip: number } | undefined = first;
    let offset = 0;
    let failures = 0;
    for (;;) {
      if (current === undefined) {
        current = await this.openBlobAt(url, desc, what, offset, signal);
      }
      const { res } = current;
      let skip = current.skip;
      let progressed = false;
      try {
        for await (const data of res.body as AsyncIterable<Buffer>) {
          let chunk = data;
          if (skip > 0) {
            if (chunk.length <= skip) {
              skip -= chunk.length;
              continue;
            }
            chunk = chunk.subarray(skip);
            skip = 0;
          }
          offset += chunk.length;
          progressed = true;
          onProgress?.(offset);
          yield chunk;
        }
        if (skip > 0) {
          throw new RegistryProtocolError(this.opts.image, what, 'blob ended before the bytes already received');
        }
        return; // the verifier checks that what we got is complete and right
      } catch (err) {
        if (signal?.aborted) throw signal.reason;
        if (err instanceof OcisnapError) throw err;
        if (!isTransientNetworkError(err)) {
          throw new RegistryConnectionError(this.opts.image, what, `after ${offset} bytes: ${describeError(err)}`, {
            cause: err,
          });
        }
        // A failure after progress does not count against the budget: every
        // resume then gains at least one byte of a bounded blob.
        if (progressed) failures = 0;
        if (failures >= this.policy.retries) {
          throw new RegistryConnectionError(
            this.opts.image,
            what,
            `connection failed after ${offset} of ${desc.size} bytes and ${failures} retries: ${describeError(err)}`,
            { cause: err },
          );
        }
        await sleep(backoffDelay(this.policy, failures), signal);
        failures++;
      } finally {
        res.body.destroy();
      }
      current = undefined;
      if (offset >= desc.size) return;
    }
  }

  /** The API base URL, from a single `GET /v2/` ping shared by all requests. */
  private api(signal: AbortSignal | undefined): Promise<URL> {
    if (this.base === undefined) {
      const p = this.ping(signal);
      this.base = p;
      // A failed ping (network down, aborted) may be retried by the next call.
      p.catch(() => {
        if (this.base === p) this.base = undefined;
      });
    }
    return this.base;
  }

  private async ping(signal: AbortSignal | undefined): Promise<URL> {
    const host = apiHost(this.opts.registry);
    const what = 'registry API check (GET /v2/)';
    let res: Response;
    let base = new URL(`https://${host}`);
    if (this.opts.insecure) {
      try {
        // One attempt: an http-only server fails the TLS handshake at once.
        res = await this.exchange(new URL('/v2/', base), {}, signal);
      } catch (err) {
        if (signal?.aborted) throw signal.reason;
        base = new URL(`http://${host}`);
        res = await this.withRetries(what, signal, () => this.exchange(new URL('/v2/', base), {}, signal));
      }
    } else {
      res = await this.withRetries(what, signal, () => this.exchange(new URL('/v2/', base), {}, signal));
    }
    if (res.status === 200) {
      await drain(res);
      return base;
    }
    if (res.status === 401) {
      await drain(res);
      this.challenge = pickChallenge(parseWwwAuthenticate(res.headers['www-authenticate']));
      if (this.challenge === undefined) {
        throw new RegistryProtocolError(this.opts.image, what, '401 without a Bearer or Basic WWW-Authenticate challenge');
      }
      return base;
    }
    throw await this.httpError(res, `${what} at ${base.origin}`);
  }

  /** The Authorization header for the current challenge, fetching a token if needed. */
  private async authorization(signal: AbortSignal | undefined): Promise<string | undefined> {
    const ch = this.challenge;
    if (ch === undefined) return undefined;
    if (ch.scheme === 'basic') return this.opts.credentials ? basicAuthorization(this.opts.credentials) : undefined;
    if (ch.scheme === 'bearer') return `Bearer ${await this.bearerToken(ch, signal)}`;
    return undefined;
  }

  private async bearerToken(ch: Challenge, signal: AbortSignal | undefined): Promise<string> {
    const key = TokenCache.key(ch, this.scope);
    const cached = this.tokens.get(key);
    if (cached !== undefined) return cached;
    const what = 'token';
    const creds = this.opts.credentials;
    let url: URL;
    let res: Response;
    if (creds?.identityToken) {
      // distribution docs/spec/auth/oauth.md: a refresh token is POSTed as a form.
      url = tokenRealm(ch, context(this.opts.image, what));
      this.checkCredentialTransport(url, what);
      const body = refreshTokenForm(ch, this.scope, creds.identityToken, 'ocisnap');
      const headers = { 'content-type': 'application/x-www-form-urlencoded' };
      res = await this.withRetries(`${what} from ${url.origin}`, signal, () =>
        this.exchange(url, headers, signal, body),
      );
    } else {
      url = tokenRequestUrl(ch, this.scope, context(this.opts.image, what));
      const headers: Headers = {};
      if (creds !== undefined) {
        this.checkCredentialTransport(url, what);
        headers['authorization'] = basicAuthorization(creds);
      }
      res = await this.withRetries(`${what} from ${url.origin}`, signal, () => this.exchange(url, headers, signal));
    }
    if (res.status === 401 || res.status === 403) {
      await drain(res);
      throw new AuthenticationError(this.opts.image, what, this.repoName, creds !== undefined);
    }
    if (res.status !== 200) throw await this.httpError(res, `${what} from ${url.origin}`);
    let body: Buffer;
    try {
      body = await readLimited(res.body, maxTokenResponseBytes, context(this.opts.image, what));
    } catch (err) {
      if (signal?.aborted) throw signal.reason;
      if (err instanceof OcisnapError) throw err;
      throw new RegistryConnectionError(this.opts.image, `${what} from ${url.origin}`, describeError(err), { cause: err });
    }
    const token = parseTokenResponse(body, Date.now(), context(this.opts.image, `${what} from ${url.origin}`));
    this.tokens.set(key, token);
    return token.token;
  }

  /** Credentials go over https only, unless the user marked the registry insecure. */
  private checkCredentialTransport(url: URL, what: string): void {
    if (url.protocol === 'http:' && !this.opts.insecure) {
      throw new RegistryProtocolError(
        this.opts.image,
        what,
        `refusing to send credentials to the plain-http token realm ${url.origin} of a secure registry`,
      );
    }
  }

  /**
   * An authenticated GET with retries. A 401 renews the challenge (and token)
   * once; a second 401 is an AuthenticationError. Other statuses are returned.
   */
  private async request(url: URL, what: string, headers: Headers, signal: AbortSignal | undefined): Promise<Response> {
    let renewed = false;
    for (;;) {
      const authorization = await this.authorization(signal);
      const h = authorization === undefined ? headers : { ...headers, authorization };
      const res = await this.withRetries(what, signal, () => this.exchange(url, h, signal));
      if (res.status !== 401) return res;
      await drain(res);
      const ch = pickChallenge(parseWwwAuthenticate(res.headers['www-authenticate']));
      const canRenew =
        ch !== undefined &&
        (ch.scheme === 'bearer' || (ch.scheme === 'basic' && this.opts.credentials !== undefined && !authorization));
      if (renewed || !canRenew) {
        throw new AuthenticationError(this.opts.image, what, this.repoName, this.opts.credentials !== undefined);
      }
      if (this.challenge !== undefined && this.challenge.scheme === 'bearer') {
        this.tokens.delete(TokenCache.key(this.challenge, this.scope));
      }
      this.challenge = ch;
      renewed = true;
    }
  }

  /** Runs `op` until it gives a non-retryable answer or the retry budget is spent. */
  private async withRetries(
    what: string,
    signal: AbortSignal | undefined,
    op: () => Promise<Response>,
  ): Promise<Response> {
    for (let attempt = 0; ; attempt++) {
      let res: Response;
      try {
        res = await op();
      } catch (err) {
        if (signal?.aborted) throw signal.reason;
        if (err instanceof OcisnapError) throw err;
        if (isTransientNetworkError(err) && attempt < this.policy.retries) {
          await sleep(backoffDelay(this.policy, attempt), signal);
          continue;
        }
        const tries = attempt > 0 ? ` (after ${attempt} retries)` : '';
        throw new RegistryConnectionError(this.opts.image, what, `${describeError(err)}${tries}`, { cause: err });
      }
      if (!isRetryableStatus(res.status)) return res;
      if (attempt >= this.policy.retries) throw await this.httpError(res, what, `gave up after ${attempt} retries`);
      const retryAfter = parseRetryAfter(header(res, 'retry-after'));
      await drain(res);
      await sleep(backoffDelay(this.policy, attempt, retryAfter), signal);
    }
  }

  /**
   * One GET (or, with a body, one POST), following redirects for GET only;
   * Authorization is dropped when a redirect leaves the origin.
   */
  private async exchange(
    url: URL,
    headers: Headers,
    signal: AbortSignal | undefined,
    postBody?: string,
  ): Promise<Response> {
    let current = url;
    let h: Headers = { 'user-agent': this.userAgent, ...headers };
    for (let hop = 0; ; hop++) {
      const r = await this.agent.request({
        origin: current.origin,
        path: current.pathname + current.search,
        method: postBody === undefined ? 'GET' : 'POST',
        headers: h,
        body: postBody ?? null,
        signal: signal ?? null,
      });
      const res: Response = { status: r.statusCode, headers: r.headers, body: r.body, url: current };
      const location = header(res, 'location');
      if (postBody !== undefined || !redirectStatuses.has(res.status) || location === undefined) return res;
      await drain(res);
      const what = `redirect from ${current.origin}`;
      if (hop >= maxRedirects) throw new RegistryProtocolError(this.opts.image, what, `more than ${maxRedirects} redirects`);
      let next: URL;
      try {
        next = new URL(location, current);
      } catch {
        throw new RegistryProtocolError(this.opts.image, what, `bad Location ${JSON.stringify(location.slice(0, 200))}`);
      }
      if (next.protocol !== 'https:' && next.protocol !== 'http:') {
        throw new RegistryProtocolError(this.opts.image, what, `redirect to unsupported scheme ${next.protocol}`);
      }
      if (current.protocol === 'https:' && next.protocol === 'http:' && !this.opts.insecure) {
        throw new RegistryProtocolError(this.opts.image, what, `refusing a redirect from https to ${next.origin}`);
      }
      if (next.origin !== current.origin) {
        // Storage backends (S3, CDNs) get presigned URLs; registry credentials must not leak to them.
        const { authorization: _dropped, ...rest } = h;
        h = rest;
      }
      current = next;
    }
  }

  private async httpError(res: Response, what: string, note?: string): Promise<RegistryError> {
    const detail = await errorDetail(res);
    const parts = [detail, note].filter((s): s is string => s !== undefined);
    return new RegistryHttpError(this.opts.image, what, res.status, parts.length > 0 ? parts.join('; ') : undefined);
  }
}
