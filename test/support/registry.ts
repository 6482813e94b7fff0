/**
 * A real registry for tests: Debian's docker-registry (CNCF distribution 2.8)
 * started with `docker-registry serve CONFIG` on 127.0.0.1 and a free port,
 * storing into a temp dir. Modes: anonymous, htpasswd Basic auth, and token
 * auth against a TokenServer. Images are pushed with skopeo.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, request } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';
import type { TokenServer } from './token-server.js';

export type RegistryAuth =
  | { kind: 'anonymous' }
  | { kind: 'htpasswd'; username: string; password: string }
  | { kind: 'token'; tokenServer: TokenServer; /** USER:PASSWORD the token server grants push to. */ pushCreds: string };

export interface TestRegistry {
  /** `127.0.0.1:PORT` */
  host: string;
  /** Credentials skopeo pushes with (htpasswd and token modes). */
  pushCreds?: string;
  /** skopeo copy oci:LAYOUT[:TAG] docker://HOST/REPO; `all` copies every image of an index, `format` converts. */
  push(layoutRef: string, repoTag: string, opts?: { all?: boolean; format?: 'oci' | 'v2s2' }): Promise<void>;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export interface RegistryOptions {
  /** Serve https with this certificate and key (PEM files). */
  tls?: { certFile: string; keyFile: string };
}

/** A self-signed certificate for 127.0.0.1 (Go wants the IP in subjectAltName). */
export async function makeServerCert(dir: string): Promise<{ certFile: string; keyFile: string }> {
  const certFile = join(dir, 'server.crt');
  const keyFile = join(dir, 'server.key');
  await execa('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', '/CN=127.0.0.1',
    '-addext', 'subjectAltName=IP:127.0.0.1',
  ]);
  return { certFile, keyFile };
}

async function waitReady(host: string, tls: boolean, child: ResultPromise, logFile: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited with ${child.exitCode}; see ${logFile}`);
    const status = await new Promise<number | undefined>((resolve) => {
      const req = (tls ? httpsRequest : request)(`${tls ? 'https' : 'http'}://${host}/v2/`, { rejectUnauthorized: false }, (res) => {
        res.resume();
        resolve(res.statusCode);
      });
      req.on('error', () => resolve(undefined));
      req.end();
    });
    if (status === 200 || status === 401) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`docker-registry on ${host} did not become ready; see ${logFile}`);
}

export async function startRegistry(
  auth: RegistryAuth = { kind: 'anonymous' },
  opts: RegistryOptions = {},
): Promise<TestRegistry> {
  const dir = await mkdtemp(join(tmpdir(), 'ocisnap-registry-'));
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  let authYaml = '';
  let pushCreds: string | undefined;
  if (auth.kind === 'htpasswd') {
    const { stdout } = await execa('htpasswd', ['-Bbn', auth.username, auth.password]);
    await writeFile(join(dir, 'htpasswd'), `${stdout.trim()}\n`);
    authYaml = `auth:\n  htpasswd:\n    realm: ocisnap-test\n    path: ${join(dir, 'htpasswd')}\n`;
    pushCreds = `${auth.username}:${auth.password}`;
  } else if (auth.kind === 'token') {
    const t = auth.tokenServer;
    authYaml =
      `auth:\n  token:\n    realm: ${t.realm}\n    service: ${t.service}\n    issuer: ${t.issuer}\n` +
      `    rootcertbundle: ${t.certFile}\n`;
    pushCreds = auth.pushCreds;
  }
  const config =
    `version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n` +
    `storage:\n  filesystem:\n    rootdirectory: ${join(dir, 'storage')}\n  delete:\n    enabled: true\n` +
    `http:\n  addr: ${host}\n  secret: ocisnap-test-secret\n` +
    (opts.tls ? `  tls:\n    certificate: ${opts.tls.certFile}\n    key: ${opts.tls.keyFile}\n` : '') +
    authYaml;
  const configFile = join(dir, 'config.yml');
  await writeFile(configFile, config);
  const logFile = join(dir, 'registry.log');
  const child = execa('docker-registry', ['serve', configFile], {
    reject: false,
    stdout: { file: logFile },
    stderr: { file: logFile },
  });
  try {
    await waitReady(host, opts.tls !== undefined, child, logFile);
  } catch (err) {
    child.kill('SIGKILL');
    await child;
    throw err;
  }

  return {
    host,
    ...(pushCreds !== undefined && { pushCreds }),
    async push(layoutRef, repoTag, opts = {}) {
      const args = ['copy', '--insecure-policy', '--quiet', '--dest-tls-verify=false'];
      if (pushCreds !== undefined) args.push('--dest-creds', pushCreds);
      if (opts.all) args.push('--all');
      if (opts.format) args.push('--format', opts.format);
      args.push(layoutRef, `docker://${host}/${repoTag}`);
      await execa('skopeo', args, { env: { REGISTRY_AUTH_FILE: join(dir, 'no-auth.json') } });
    },
    async stop() {
      child.kill('SIGTERM');
      await child;
      await rm(dir, { recursive: true, force: true });
    },
  };
}
