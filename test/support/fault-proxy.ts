/**
 * An HTTP proxy on 127.0.0.1 in front of a test registry that misbehaves on
 * demand: answer a status (429 with Retry-After, 500), drop the connection
 * after N bytes of a body, corrupt one byte, replace a body, ignore Range, or
 * redirect. Every request is logged (with its headers) for assertions.
 */
import { createServer, request, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export type FaultAction =
  | { kind: 'status'; status: number; headers?: Record<string, string>; body?: string }
  /** Forward the upstream answer but cut the connection after `bytes` bytes of body. */
  | { kind: 'drop-after'; bytes: number }
  /** Forward the upstream answer with the byte at `offset` of the body flipped. */
  | { kind: 'corrupt'; offset: number }
  /** Answer with this body instead (no Content-Length when `chunked`). */
  | { kind: 'respond'; status?: number; headers?: Record<string, string>; body: Buffer; chunked?: boolean }
  /** Forward without the Range header, so the registry answers 200 with the whole body. */
  | { kind: 'ignore-range' }
  | { kind: 'redirect'; location: string; status?: number };

export interface ProxiedRequest {
  method: string;
  path: string;
  headers: IncomingHttpHeaders;
  /** The fault applied to this request, if any. */
  fault?: FaultAction['kind'];
}

export interface FaultRule {
  match: (r: ProxiedRequest) => boolean;
  /** How many requests the rule applies to (default: all). */
  times?: number;
  action: FaultAction;
}

export interface FaultProxy {
  /** `127.0.0.1:PORT` */
  host: string;
  requests: ProxiedRequest[];
  addRule(rule: FaultRule): void;
  clearRules(): void;
  stop(): Promise<void>;
}

/** Starts a proxy forwarding to `upstream` (`host:port`, plain http). */
export async function startFaultProxy(upstream: string): Promise<FaultProxy> {
  const [upHost, upPort] = upstream.split(':') as [string, string];
  const rules: Array<FaultRule & { left: number }> = [];
  const requests: ProxiedRequest[] = [];

  const server: Server = createServer((req, res) => {
    const entry: ProxiedRequest = { method: req.method ?? 'GET', path: req.url ?? '/', headers: { ...req.headers } };
    requests.push(entry);
    const rule = rules.find((r) => r.left > 0 && r.match(entry));
    if (rule) {
      rule.left--;
      entry.fault = rule.action.kind;
    }
    const action = rule?.action;

    if (action?.kind === 'status') {
      res.writeHead(action.status, action.headers ?? {});
      res.end(action.body ?? '');
      req.resume();
      return;
    }
    if (action?.kind === 'respond') {
      const headers: Record<string, string> = { ...action.headers };
      if (!action.chunked) headers['content-length'] = String(action.body.length);
      res.writeHead(action.status ?? 200, headers);
      // Chunked: write in pieces so the client sees a stream, not one buffer.
      for (let i = 0; i < action.body.length; i += 64 * 1024) res.write(action.body.subarray(i, i + 64 * 1024));
      res.end();
      req.resume();
      return;
    }
    if (action?.kind === 'redirect') {
      res.writeHead(action.status ?? 307, { location: action.location });
      res.end();
      req.resume();
      return;
    }

    const headers = { ...req.headers };
    if (action?.kind === 'ignore-range') delete headers.range;
    const up = request({ host: upHost, port: Number(upPort), method: req.method, path: req.url, headers }, (upRes) => {
      res.writeHead(upRes.statusCode ?? 502, upRes.headers);
      let seen = 0;
      let dropped = false;
      upRes.on('data', (chunk: Buffer) => {
        let data = chunk;
        if (action?.kind === 'corrupt' && action.offset >= seen && action.offset < seen + chunk.length) {
          data = Buffer.from(chunk);
          data[action.offset - seen] = (data[action.offset - seen] as number) ^ 0xff;
        }
        if (action?.kind === 'drop-after') {
          if (dropped) return;
          if (seen + data.length >= action.bytes) {
            dropped = true;
            const part = data.subarray(0, action.bytes - seen);
            seen += data.length;
            upRes.destroy();
            // Send the headers and `part`, then close the socket once they are flushed.
            res.flushHeaders();
            if (part.length > 0) res.write(part);
            res.socket?.destroySoon();
            return;
          }
        }
        seen += chunk.length;
        res.write(data);
      });
      upRes.on('end', () => {
        if (!dropped) res.end();
      });
      upRes.on('error', () => res.socket?.destroy());
    });
    up.on('error', () => {
      if (!res.headersSent) res.writeHead(502);
      res.end();
    });
    req.pipe(up);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    host: `127.0.0.1:${port}`,
    requests,
    addRule(rule) {
      rules.push({ ...rule, left: rule.times ?? Number.POSITIVE_INFINITY });
    },
    clearRules() {
      rules.length = 0;
    },
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
