import { describe, expect, it } from 'vitest';
import {
  backoffDelay,
  defaultRetryPolicy,
  isRetryableStatus,
  isTransientNetworkError,
  parseRetryAfter,
  sleep,
} from '../../src/registry/retry.js';

describe('retry policy', () => {
  it('retries 408, 429 and 5xx except 501/505, nothing else', () => {
    expect([408, 429, 500, 502, 503, 504].every(isRetryableStatus)).toBe(true);
    expect([200, 206, 301, 400, 401, 403, 404, 416, 501, 505].some(isRetryableStatus)).toBe(false);
  });

  it('recognises transient connection errors, also as a cause', () => {
    expect(isTransientNetworkError(Object.assign(new Error('x'), { code: 'ECONNRESET' }))).toBe(true);
    expect(isTransientNetworkError(new Error('wrap', { cause: Object.assign(new Error('y'), { code: 'UND_ERR_SOCKET' }) }))).toBe(
      true,
    );
    expect(isTransientNetworkError(Object.assign(new Error('tls'), { code: 'ERR_SSL_WRONG_VERSION_NUMBER' }))).toBe(false);
    expect(isTransientNetworkError(new Error('plain'))).toBe(false);
  });

  it('parses Retry-After as seconds or an HTTP date', () => {
    expect(parseRetryAfter('3')).toBe(3000);
    const now = Date.parse('Sun, 06 Nov 1994 08:49:37 GMT');
    expect(parseRetryAfter('Sun, 06 Nov 1994 08:49:47 GMT', now)).toBe(10_000);
    expect(parseRetryAfter('Sun, 06 Nov 1994 08:49:27 GMT', now)).toBe(0);
    expect(parseRetryAfter('soon')).toBeUndefined();
    expect(parseRetryAfter(undefined)).toBeUndefined();
  });

  it('backs off exponentially with jitter, capped, and caps Retry-After', () => {
    const p = { ...defaultRetryPolicy, baseDelayMs: 100, maxDelayMs: 1000, maxRetryAfterMs: 5000 };
    for (let i = 0; i < 50; i++) {
      const d0 = backoffDelay(p, 0);
      expect(d0).toBeGreaterThanOrEqual(50);
      expect(d0).toBeLessThanOrEqual(100);
      const d3 = backoffDelay(p, 3);
      expect(d3).toBeGreaterThanOrEqual(400);
      expect(d3).toBeLessThanOrEqual(800);
      expect(backoffDelay(p, 20)).toBeLessThanOrEqual(1000);
    }
    expect(backoffDelay(p, 0, 2000)).toBe(2000);
    expect(backoffDelay(p, 0, 3_600_000)).toBe(5000);
  });

  it('sleep is cut short by an abort', async () => {
    const c = new AbortController();
    const start = Date.now();
    setTimeout(() => c.abort(new Error('stop')), 20);
    await expect(sleep(10_000, c.signal)).rejects.toThrow('stop');
    expect(Date.now() - start).toBeLessThan(2000);
  });
});
