/**
 * The registry client against a real docker-registry (anonymous), directly
 * and through a fault-injecting proxy: manifests, blobs, platform selection,
 * resume, retries, size limits, digest checks.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DigestMismatchError } from '../../src/errors.js';
import type { Digest } from '../../src/oci/types.js';
import {
  DocumentTooLargeError,
  RegistryConnectionError,
  RegistryHttpError,
  openSource,
  resolveImage,
  type ImageSource,
  type SourceOptions,
} from '../../src/registry/index.js';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js';
import { requireCommands } from '../support/host.js';
import { LayoutWriter, MT, type LayoutImage } from '../support/oci-layout-writer.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks);
}

const fast: SourceOptions = { insecure: true, retries: 3, retryBaseDelayMs: 10 };

let tmp: string;
let registry: TestRegistry;
let proxy: FaultProxy;
let image: LayoutImage;
let amd64: LayoutImage;
let arm64: LayoutImage;
let indexDigest: Digest;
const sources: ImageSource[] = [];

async function open(spec: string, opts: SourceOptions = fast): Promise<ImageSource> {
  const s = await openSource(spec, opts);
  sources.push(s);
  return s;
}

/** The big layer: incompressible, so the gzip blob is ~300 KiB and arrives in many chunks. */
function bigLayer(): LayoutImage['layers'][number] {
  return image.layers[1]!;
}

beforeAll(async () => {
  await requireCommands('docker-registry', 'skopeo');
  tmp = await mkdtemp(join(tmpdir(), 'ocisnap-regpull-'));
  const layout = await LayoutWriter.create(join(tmp, 'layout'));
  image = await layout.addImage([
    { 'etc/os-release': 'ID=test\n' },
    { 'usr/lib/blob.bin': randomBytes(300 * 1024) },
  ]);
  await layout.tag(image.manifest, 'v1');
  amd64 = await layout.addImage([{ 'arch': 'amd64\n' }], { os: 'linux', architecture: 'amd64' });
  arm64 = await layout.addImage([{ 'arch': 'arm64\n' }], { os: 'linux', architecture: 'arm64', variant: 'v8' });
  const index = await layout.addIndex([amd64.manifest, arm64.manifest]);
  indexDigest = index.descriptor.digest;
  await layout.tag(index.descriptor, 'multi');

  registry = await startRegistry({ kind: 'anonymous' });
  await registry.push(`oci:${layout.dir}:v1`, 'os:1');
  await registry.push(`oci:${layout.dir}:multi`, 'os:multi', { all: true });
  await registry.push(`oci:${layout.dir}:v1`, 'os:docker', { format: 'v2s2' });
  proxy = await startFaultProxy(registry.host);
});

afterAll(async () => {
  for (const s of sources) await s.close();
  await proxy?.stop();
  await registry?.stop();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

beforeEach(() => {
  proxy?.clearRules();
  if (proxy) proxy.requests.length = 0;
});

describe('docker:// source, anonymous registry', () => {
  it('fetches the manifest, config and layers, verified', async () => {
    const src = await open(`docker://${registry.host}/os:1`);
    expect(src.name).toBe(`docker://${registry.host}/os:1`);
    const m = await src.getManifest();
    expect(m.digest).toBe(image.manifest.digest);
    expect(m.mediaType).toBe(MT.manifest);
    expect(m.bytes.equals(image.manifestBytes)).toBe(true);
    expect((await readAll(await src.getBlob(image.config))).equals(image.configBytes)).toBe(true);
    const progress: number[] = [];
    const layer = bigLayer();
    const bytes = await readAll(await src.getBlob(layer.descriptor, { onProgress: (n) => progress.push(n) }));
    expect(bytes.equals(layer.bytes)).toBe(true);
    expect(progress.at(-1)).toBe(layer.descriptor.size);
    expect(progress.length).toBeGreaterThan(1);
  });

  it('resolves the image: manifest, config, diff_ids', async () => {
    const src = await open(`docker://${registry.host}/os:1`);
    const r = await resolveImage(src, { os: 'linux', architecture: 'amd64' });
    expect(r.manifestDigest).toBe(image.manifest.digest);
    expect(r.configDigest).toBe(image.config.digest);
    expect(r.config.rootfs.diff_ids).toEqual(image.layers.map((l) => l.diffId));
    expect(r.indexDigest).toBeUndefined();
  });

  it('fetches by digest reference, and refuses a wrong platform for a single image', async () => {
    const src = await open(`docker://${registry.host}/os@${image.manifest.digest}`);
    expect((await src.getManifest()).digest).toBe(image.manifest.digest);
    await expect(resolveImage(src, { os: 'linux', architecture: 'arm64' })).rejects.toThrow(
      /the image is for linux\/amd64, not linux\/arm64/,
    );
  });

  it('pulls a Docker schema2 image', async () => {
    const src = await open(`docker://${registry.host}/os:docker`);
    const r = await resolveImage(src, { os: 'linux', architecture: 'amd64' });
    expect(r.manifestMediaType).toBe('application/vnd.docker.distribution.manifest.v2+json');
    expect(r.manifest.layers.map((l) => l.mediaType)).toEqual([
      'application/vnd.docker.image.rootfs.diff.tar.gzip',
      'application/vnd.docker.image.rootfs.diff.tar.gzip',
    ]);
    expect(r.config.rootfs.diff_ids).toEqual(image.layers.map((l) => l.diffId));
    const layer = r.manifest.layers[0]!;
    expect((await readAll(await src.getBlob(layer))).equals(image.layers[0]!.bytes)).toBe(true);
  });

  it('selects the right image of a manifest list', async () => {
    const src = await open(`docker://${registry.host}/os:multi`);
    const a = await resolveImage(src, { os: 'linux', architecture: 'arm64', variant: 'v8' });
    expect(a.indexDigest).toBe(indexDigest);
    expect(a.manifestDigest).toBe(arm64.manifest.digest);
    expect(a.config.architecture).toBe('arm64');
    const b = await resolveImage(src, { os: 'linux', architecture: 'amd64' });
    expect(b.manifestDigest).toBe(amd64.manifest.digest);
    await expect(resolveImage(src, { os: 'linux', architecture: 's390x' })).rejects.toThrow(/no image for linux\/s390x/);
  });

  it('reports an unknown tag and an unknown blob in one clear line', async () => {
    const src = await open(`docker://${registry.host}/os:nope`);
    const err = await src.getManifest().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RegistryHttpError);
    expect((err as Error).message).toMatch(
      new RegExp(`^pulling ${registry.host}/os:nope: manifest nope: registry answered 404 Not Found`),
    );
    const missing = { ...bigLayer().descriptor, digest: `sha256:${'ab'.repeat(32)}` as Digest };
    await expect(src.getBlob(missing)).rejects.toThrow(/layer sha256:abababababab…: registry answered 404 Not Found/);
  });

  it('fails cleanly when nothing listens', async () => {
    const src = await open('docker://127.0.0.1:1/os:1', { insecure: true, retries: 1, retryBaseDelayMs: 10 });
    await expect(src.getManifest()).rejects.toBeInstanceOf(RegistryConnectionError);
  });
});

describe('faults between client and registry', () => {
  const blobPath = (d: Digest): string => `/v2/os/blobs/${d}`;

  it('refuses a blob whose bytes do not match its digest', async () => {
    const layer = bigLayer();
    proxy.addRule({ match: (r) => r.path === blobPath(layer.descriptor.digest), action: { kind: 'corrupt', offset: 1000 } });
    const src = await open(`docker://${proxy.host}/os:1`);
    const stream = await src.getBlob(layer.descriptor);
    await expect(readAll(stream)).rejects.toBeInstanceOf(DigestMismatchError);
  });

  it('resumes a blob with Range after the connection drops mid-body', async () => {
    const layer = bigLayer();
    proxy.addRule({
      match: (r) => r.path === blobPath(layer.descriptor.digest),
      times: 1,
      action: { kind: 'drop-after', bytes: 100_000 },
    });
    const src = await open(`docker://${proxy.host}/os:1`);
    const progress: number[] = [];
    const bytes = await readAll(await src.getBlob(layer.descriptor, { onProgress: (n) => progress.push(n) }));
    expect(bytes.equals(layer.bytes)).toBe(true);
    const blobRequests = proxy.requests.filter((r) => r.path === blobPath(layer.descriptor.digest));
    expect(blobRequests).toHaveLength(2);
    expect(blobRequests[0]!.fault).toBe('drop-after');
    expect(blobRequests[1]!.headers.range).toBe('bytes=100000-');
    expect(progress.at(-1)).toBe(layer.descriptor.size);
  });

  it('restarts from zero (dropping the re-sent prefix) when the server ignores Range', async () => {
    const layer = bigLayer();
    const match = (r: { path: string }): boolean => r.path === blobPath(layer.descriptor.digest);
    proxy.addRule({ match, times: 1, action: { kind: 'drop-after', bytes: 50_000 } });
    proxy.addRule({ match, times: 1, action: { kind: 'ignore-range' } });
    const src = await open(`docker://${proxy.host}/os:1`);
    const bytes = await readAll(await src.getBlob(layer.descriptor));
    expect(bytes.equals(layer.bytes)).toBe(true);
    const faults = proxy.requests.filter(match).map((r) => r.fault);
    expect(faults).toEqual(['drop-after', 'ignore-range']);
  });

  it('gives up on a blob whose connection keeps dropping without progress', async () => {
    const layer = bigLayer();
    const match = (r: { path: string }): boolean => r.path === blobPath(layer.descriptor.digest);
    proxy.addRule({ match, times: 1, action: { kind: 'drop-after', bytes: 10_000 } });
    proxy.addRule({ match, action: { kind: 'drop-after', bytes: 0 } });
    const src = await open(`docker://${proxy.host}/os:1`, { insecure: true, retries: 2, retryBaseDelayMs: 10 });
    const err = await readAll(await src.getBlob(layer.descriptor)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RegistryConnectionError);
    expect((err as Error).message).toMatch(/layer sha256:[0-9a-f]{12}…: connection failed after 10000 of \d+ bytes and 2 retries/);
    // The first request made progress; then 2 retries without progress.
    expect(proxy.requests.filter(match)).toHaveLength(3);
  });

  it('aborts a blob download while it waits to resume', async () => {
    const layer = bigLayer();
    proxy.addRule({
      match: (r) => r.path === blobPath(layer.descriptor.digest),
      action: { kind: 'drop-after', bytes: 1000 },
    });
    const src = await open(`docker://${proxy.host}/os:1`, { insecure: true, retryBaseDelayMs: 60_000 });
    const controller = new AbortController();
    const stream = await src.getBlob(layer.descriptor, { signal: controller.signal });
    const start = Date.now();
    setTimeout(() => controller.abort(new Error('cancelled by test')), 300);
    await expect(readAll(stream)).rejects.toThrow('cancelled by test');
    expect(Date.now() - start).toBeLessThan(10_000);
  });

  it('fetches a manifest again when the connection drops mid-body', async () => {
    proxy.addRule({ match: (r) => r.path === '/v2/os/manifests/1', times: 1, action: { kind: 'drop-after', bytes: 50 } });
    const src = await open(`docker://${proxy.host}/os:1`);
    expect((await src.getManifest()).digest).toBe(image.manifest.digest);
    expect(proxy.requests.filter((r) => r.path === '/v2/os/manifests/1').map((r) => r.fault)).toEqual([
      'drop-after',
      undefined,
    ]);
  });

  it('waits for Retry-After on 429, then succeeds', async () => {
    proxy.addRule({
      match: (r) => r.path === '/v2/os/manifests/1',
      times: 1,
      action: { kind: 'status', status: 429, headers: { 'retry-after': '1' } },
    });
    const src = await open(`docker://${proxy.host}/os:1`);
    const start = Date.now();
    const m = await src.getManifest();
    expect(Date.now() - start).toBeGreaterThanOrEqual(900);
    expect(m.digest).toBe(image.manifest.digest);
    expect(proxy.requests.filter((r) => r.path === '/v2/os/manifests/1')).toHaveLength(2);
  });

  it('gives up after the bounded retries when the registry keeps failing with 500', async () => {
    const layer = bigLayer();
    proxy.addRule({ match: (r) => r.path === blobPath(layer.descriptor.digest), action: { kind: 'status', status: 500 } });
    const src = await open(`docker://${proxy.host}/os:1`, { insecure: true, retries: 2, retryBaseDelayMs: 10 });
    await expect(src.getBlob(layer.descriptor)).rejects.toThrow(
      /layer sha256:[0-9a-f]{12}…: registry answered 500 Internal Server Error \(gave up after 2 retries\)/,
    );
    expect(proxy.requests.filter((r) => r.path === blobPath(layer.descriptor.digest))).toHaveLength(3);
  });

  it('does not retry a 4xx other than 408/429', async () => {
    proxy.addRule({ match: (r) => r.path === '/v2/os/manifests/1', action: { kind: 'status', status: 403 } });
    const src = await open(`docker://${proxy.host}/os:1`);
    await expect(src.getManifest()).rejects.toThrow(/registry answered 403 Forbidden/);
    expect(proxy.requests.filter((r) => r.path === '/v2/os/manifests/1')).toHaveLength(1);
  });

  it('stops retrying when aborted', async () => {
    proxy.addRule({
      match: (r) => r.path === '/v2/os/manifests/1',
      action: { kind: 'status', status: 503, headers: { 'retry-after': '30' } },
    });
    const controller = new AbortController();
    const src = await open(`docker://${proxy.host}/os:1`, { insecure: true, signal: controller.signal });
    const start = Date.now();
    setTimeout(() => controller.abort(new Error('stopped by test')), 200);
    await expect(src.getManifest()).rejects.toThrow('stopped by test');
    expect(Date.now() - start).toBeLessThan(5000);
  });

  it('refuses an oversized manifest, announced or streamed', async () => {
    const huge = Buffer.alloc(5 * 1024 * 1024, 0x20);
    const headers = { 'content-type': MT.manifest };
    proxy.addRule({
      match: (r) => r.path === '/v2/os/manifests/1',
      times: 1,
      action: { kind: 'respond', body: huge, headers },
    });
    const src = await open(`docker://${proxy.host}/os:1`);
    await expect(src.getManifest()).rejects.toBeInstanceOf(DocumentTooLargeError);
    proxy.addRule({
      match: (r) => r.path === '/v2/os/manifests/1',
      times: 1,
      action: { kind: 'respond', body: huge, headers, chunked: true },
    });
    await expect(src.getManifest()).rejects.toThrow(/larger than the 4194304-byte limit; refused/);
  });

  it('checks Docker-Content-Digest of a tag fetch and the digest of a digest fetch', async () => {
    proxy.addRule({
      match: (r) => r.path === '/v2/os/manifests/1',
      times: 1,
      action: {
        kind: 'respond',
        body: image.manifestBytes,
        headers: { 'content-type': MT.manifest, 'docker-content-digest': `sha256:${'0'.repeat(64)}` },
      },
    });
    const src = await open(`docker://${proxy.host}/os:1`);
    await expect(src.getManifest()).rejects.toBeInstanceOf(DigestMismatchError);
    proxy.addRule({
      match: (r) => r.path === `/v2/os/manifests/${image.manifest.digest}`,
      times: 1,
      action: { kind: 'respond', body: amd64.manifestBytes, headers: { 'content-type': MT.manifest } },
    });
    await expect(src.getManifest(image.manifest.digest)).rejects.toThrow(/digest mismatch/);
  });
});
