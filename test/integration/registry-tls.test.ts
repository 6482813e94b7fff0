/**
 * HTTPS registries: certificate verification by default (with an extra CA
 * file), no verification only when insecure, and no credentials to a
 * plain-http token realm of a secure registry.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryConnectionError, openSource, type ImageSource, type SourceOptions } from '../../src/registry/index.js';
import { requireCommands } from '../support/host.js';
import { LayoutWriter, type LayoutImage } from '../support/oci-layout-writer.js';
import { makeServerCert, startRegistry, type TestRegistry } from '../support/registry.js';
import { startTokenServer, type TokenServer } from '../support/token-server.js';

let tmp: string;
let image: LayoutImage;
let cert: { certFile: string; keyFile: string };
let registry: TestRegistry;
let tokenRegistry: TestRegistry;
let tokens: TokenServer;
const sources: ImageSource[] = [];

async function open(spec: string, opts: SourceOptions): Promise<ImageSource> {
  const s = await openSource(spec, { retries: 1, retryBaseDelayMs: 10, ...opts });
  sources.push(s);
  return s;
}

beforeAll(async () => {
  await requireCommands('docker-registry', 'skopeo', 'openssl');
  tmp = await mkdtemp(join(tmpdir(), 'ocisnap-regtls-'));
  const layout = await LayoutWriter.create(join(tmp, 'layout'));
  image = await layout.addImage([{ 'etc/motd': 'tls\n' }]);
  await layout.tag(image.manifest, 'v1');
  cert = await makeServerCert(tmp);
  registry = await startRegistry({ kind: 'anonymous' }, { tls: cert });
  await registry.push(`oci:${layout.dir}:v1`, 'os:1');
  tokens = await startTokenServer({ service: 'svc', issuer: 'iss', users: { alice: 'pw', pusher: 'push' } });
  tokenRegistry = await startRegistry({ kind: 'token', tokenServer: tokens, pushCreds: 'pusher:push' }, { tls: cert });
  await tokenRegistry.push(`oci:${layout.dir}:v1`, 'os:1');
});

afterAll(async () => {
  for (const s of sources) await s.close();
  await registry?.stop();
  await tokenRegistry?.stop();
  await tokens?.stop();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe('https registry', () => {
  it('verifies the certificate against an extra CA file', async () => {
    const src = await open(`docker://${registry.host}/os:1`, { caFile: cert.certFile });
    expect((await src.getManifest()).digest).toBe(image.manifest.digest);
  });

  it('refuses an unverifiable certificate without retrying, unless insecure', async () => {
    const src = await open(`docker://${registry.host}/os:1`, {});
    const err = await src.getManifest().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RegistryConnectionError);
    expect((err as Error).message).toMatch(/^pulling 127\.0\.0\.1:\d+\/os:1: registry API check \(GET \/v2\/\): .*certificate/);
    expect((err as Error).message).not.toMatch(/retries/);
    const insecure = await open(`docker://${registry.host}/os:1`, { insecure: true });
    expect((await insecure.getManifest()).digest).toBe(image.manifest.digest);
  });

  it('does not send credentials to a plain-http token realm of a secure registry', async () => {
    tokens.requests.length = 0;
    const src = await open(`docker://${tokenRegistry.host}/os:1`, {
      caFile: cert.certFile,
      credentials: { username: 'alice', password: 'pw' },
    });
    await expect(src.getManifest()).rejects.toThrow(/refusing to send credentials to the plain-http token realm/);
    expect(tokens.requests).toHaveLength(0);
    const insecure = await open(`docker://${tokenRegistry.host}/os:1`, {
      insecure: true,
      credentials: { username: 'alice', password: 'pw' },
    });
    expect((await insecure.getManifest()).digest).toBe(image.manifest.digest);
  });
});
