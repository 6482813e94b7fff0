/**
 * Authentication against real docker-registry instances: htpasswd (Basic)
 * and token auth (Bearer tokens from a token server the test runs).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuthenticationError, openSource, resolveImage, type ImageSource, type SourceOptions } from '../../src/registry/index.js';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js';
import { requireCommands } from '../support/host.js';
import { LayoutWriter, type LayoutImage } from '../support/oci-layout-writer.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';
import { startTokenServer, type TokenServer } from '../support/token-server.js';

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks);
}

let tmp: string;
let layoutDir: string;
let image: LayoutImage;
const sources: ImageSource[] = [];
const cleanups: Array<() => Promise<void>> = [];

async function open(spec: string, opts: SourceOptions): Promise<ImageSource> {
  const s = await openSource(spec, { insecure: true, retries: 1, retryBaseDelayMs: 10, ...opts });
  sources.push(s);
  return s;
}

/** Manifest, config and every layer, each checked against what was pushed. */
async function pullAll(src: ImageSource): Promise<void> {
  const r = await resolveImage(src, { os: 'linux', architecture: 'amd64' });
  expect(r.manifestDigest).toBe(image.manifest.digest);
  expect(r.configBytes.equals(image.configBytes)).toBe(true);
  for (const layer of image.layers) {
    expect((await readAll(await src.getBlob(layer.descriptor))).equals(layer.bytes)).toBe(true);
  }
}

beforeAll(async () => {
  await requireCommands('docker-registry', 'skopeo', 'htpasswd', 'openssl');
  tmp = await mkdtemp(join(tmpdir(), 'ocisnap-regauth-'));
  const layout = await LayoutWriter.create(join(tmp, 'layout'));
  layoutDir = layout.dir;
  image = await layout.addImage([{ 'etc/hostname': 'auth-test\n' }]);
  await layout.tag(image.manifest, 'v1');
});

afterAll(async () => {
  for (const s of sources) await s.close();
  for (const c of cleanups.reverse()) await c();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe('htpasswd (Basic) registry', () => {
  let registry: TestRegistry;
  beforeAll(async () => {
    registry = await startRegistry({ kind: 'htpasswd', username: 'alice', password: 'wonderland' });
    cleanups.push(() => registry.stop());
    await registry.push(`oci:${layoutDir}:v1`, 'private/os:1');
  });

  it('pulls with the right credentials', async () => {
    await pullAll(await open(`docker://${registry.host}/private/os:1`, { credentials: { username: 'alice', password: 'wonderland' } }));
  });

  it('says authentication is required without credentials', async () => {
    const src = await open(`docker://${registry.host}/private/os:1`, {});
    const err = await src.getManifest().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuthenticationError);
    expect((err as Error).message).toBe(
      `pulling ${registry.host}/private/os:1: manifest 1: authentication required for ${registry.host}/private/os`,
    );
  });

  it('says authentication failed with a wrong password', async () => {
    const src = await open(`docker://${registry.host}/private/os:1`, { credentials: { username: 'alice', password: 'nope' } });
    await expect(src.getManifest()).rejects.toThrow(
      `pulling ${registry.host}/private/os:1: manifest 1: authentication failed for ${registry.host}/private/os`,
    );
  });

  it('drops the Authorization header when a blob redirect leaves the registry origin', async () => {
    const layer = image.layers[0]!;
    const front: FaultProxy = await startFaultProxy(registry.host);
    const storage: FaultProxy = await startFaultProxy(registry.host);
    cleanups.push(() => front.stop(), () => storage.stop());
    const blobPath = `/v2/private/os/blobs/${layer.descriptor.digest}`;
    front.addRule({
      match: (r) => r.path === blobPath,
      action: { kind: 'redirect', location: `http://${storage.host}/storage/blob?sig=x` },
    });
    storage.addRule({ match: (r) => r.path.startsWith('/storage/'), action: { kind: 'respond', body: layer.bytes } });
    const src = await open(`docker://${front.host}/private/os:1`, { credentials: { username: 'alice', password: 'wonderland' } });
    expect((await readAll(await src.getBlob(layer.descriptor))).equals(layer.bytes)).toBe(true);
    const hop1 = front.requests.find((r) => r.path === blobPath);
    const hop2 = storage.requests.find((r) => r.path.startsWith('/storage/'));
    expect(hop1?.headers.authorization).toMatch(/^Basic /);
    expect(hop2).toBeDefined();
    expect(hop2?.headers.authorization).toBeUndefined();
  });
});

describe('token-auth registry', () => {
  let registry: TestRegistry;
  let tokens: TokenServer;
  beforeAll(async () => {
    tokens = await startTokenServer({
      service: 'ocisnap-test-registry',
      issuer: 'ocisnap-test-issuer',
      users: { alice: 'wonderland', pusher: 'push-secret' },
    });
    cleanups.push(() => tokens.stop());
    registry = await startRegistry({ kind: 'token', tokenServer: tokens, pushCreds: 'pusher:push-secret' });
    cleanups.push(() => registry.stop());
    await registry.push(`oci:${layoutDir}:v1`, 'org/os:1');
  });

  it('pulls with a Bearer token fetched with Basic credentials, cached per scope', async () => {
    tokens.requests.length = 0;
    await pullAll(await open(`docker://${registry.host}/org/os:1`, { credentials: { username: 'alice', password: 'wonderland' } }));
    expect(tokens.requests).toHaveLength(1);
    expect(tokens.requests[0]!.scopes).toEqual(['repository:org/os:pull']);
    expect(tokens.requests[0]!.service).toBe('ocisnap-test-registry');
    expect(tokens.requests[0]!.authorization).toBe(`Basic ${Buffer.from('alice:wonderland').toString('base64')}`);
  });

  it('accepts access_token instead of token', async () => {
    tokens.options.tokenField = 'access_token';
    try {
      await pullAll(await open(`docker://${registry.host}/org/os:1`, { credentials: { username: 'alice', password: 'wonderland' } }));
    } finally {
      tokens.options.tokenField = 'token';
    }
  });

  it('uses an identity token with the OAuth2 refresh-token grant', async () => {
    tokens.requests.length = 0;
    await pullAll(
      await open(`docker://${registry.host}/org/os:1`, {
        credentials: { username: '<token>', password: '', identityToken: 'alice:wonderland' },
      }),
    );
    expect(tokens.requests.map((r) => r.method)).toEqual(['POST']);
  });

  it('pulls anonymously with a token when the token server grants anonymous pull', async () => {
    tokens.options.anonymousPull = true;
    tokens.requests.length = 0;
    try {
      await pullAll(await open(`docker://${registry.host}/org/os:1`, {}));
    } finally {
      tokens.options.anonymousPull = false;
    }
    expect(tokens.requests).toHaveLength(1);
    expect(tokens.requests[0]!.authorization).toBeUndefined();
  });

  it('says authentication is required when the anonymous token grants nothing', async () => {
    const src = await open(`docker://${registry.host}/org/os:1`, {});
    await expect(src.getManifest()).rejects.toThrow(
      `pulling ${registry.host}/org/os:1: manifest 1: authentication required for ${registry.host}/org/os`,
    );
  });

  it('says authentication failed when the token server refuses the password', async () => {
    const src = await open(`docker://${registry.host}/org/os:1`, { credentials: { username: 'alice', password: 'bad' } });
    const err = await src.getManifest().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuthenticationError);
    expect((err as Error).message).toMatch(/authentication failed for 127\.0\.0\.1:\d+\/org\/os$/);
  });
});
