/**
 * openConfiguredSource against real docker-registry instances on 127.0.0.1:
 * registries.conf mirrors (order, fallback, pull-from-mirror, blocked),
 * auth.json credentials per mirror host, short names (alias, one search
 * registry, ambiguous, permissive), and skopeo `dir:` copies.
 */
import { mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DigestMismatchError } from '../../src/errors.js';
import { digestHex } from '../../src/oci/digest.js';
import { AuthenticationError, RegistryHttpError, resolveImage } from '../../src/registry/index.js';
import {
  BlockedRegistryError,
  EndpointsFailedError,
  openConfiguredSource,
  type OpenedSource,
  type SourceConfig,
} from '../../src/pull/source-config.js';
import { AmbiguousShortNameError, ShortNameError } from '../../src/pull/short-names.js';
import { requireCommands } from '../support/host.js';
import { LayoutWriter, type LayoutImage } from '../support/oci-layout-writer.js';
import { freePort, startRegistry, type TestRegistry } from '../support/registry.js';

const amd64 = { os: 'linux', architecture: 'amd64' };

let tmp: string;
let layoutDir: string;
/** Has A as os:v1. */
let primary: TestRegistry;
/** Has B as os:v1 (so what served a pull shows in the digest), nothing in "empty". */
let mirror: TestRegistry;
/** htpasswd; has A as os:v1. */
let authMirror: TestRegistry;
/** Ports nothing listens on. */
let dead: string;
let dead2: string;
let imageA: LayoutImage;
let imageB: LayoutImage;
let confCount = 0;
const opened: OpenedSource[] = [];

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks);
}

/** A registries.conf (and an empty drop-in dir) for one test, with fast retries. */
async function conf(text: string, extra: Partial<SourceConfig> = {}): Promise<SourceConfig & { notes: string[] }> {
  const path = join(tmp, `registries-${++confCount}.conf`);
  await writeFile(path, text);
  const notes: string[] = [];
  return {
    registriesConf: path,
    registriesConfDir: join(tmp, 'no-drop-ins'),
    authFile: join(tmp, 'empty-auth.json'),
    retries: 1,
    retryBaseDelayMs: 10,
    onNote: (m) => notes.push(m),
    notes,
    ...extra,
  };
}

async function open(spec: string, config: SourceConfig): Promise<OpenedSource> {
  const o = await openConfiguredSource(spec, config);
  opened.push(o);
  return o;
}

async function manifestDigestOf(o: OpenedSource): Promise<string> {
  return (await resolveImage(o.source, amd64)).manifestDigest;
}

beforeAll(async () => {
  await requireCommands('docker-registry', 'skopeo');
  tmp = await mkdtemp(join(tmpdir(), 'ocisnap-srcconf-'));
  await writeFile(join(tmp, 'empty-auth.json'), '{"auths":{}}');
  layoutDir = join(tmp, 'layout');
  const layout = await LayoutWriter.create(layoutDir);
  imageA = await layout.addImage([{ 'etc/os-release': 'ID=a\n' }, { 'usr/lib/a': 'A layer\n' }]);
  await layout.tag(imageA.manifest, 'a');
  imageB = await layout.addImage([{ 'etc/os-release': 'ID=b\n' }]);
  await layout.tag(imageB.manifest, 'b');
  const arm = await layout.addImage([{ 'etc/os-release': 'ID=arm\n' }], { os: 'linux', architecture: 'arm64', variant: 'v8' });
  const index = await layout.addIndex([imageA.manifest, arm.manifest]);
  await layout.tag(index.descriptor, 'multi');

  [primary, mirror, authMirror] = await Promise.all([
    startRegistry(),
    startRegistry(),
    startRegistry({ kind: 'htpasswd', username: 'mirroruser', password: 'mirrorpass' }),
  ]);
  await Promise.all([
    primary.push(`oci:${layoutDir}:a`, 'os:v1'),
    mirror.push(`oci:${layoutDir}:b`, 'os:v1'),
    authMirror.push(`oci:${layoutDir}:a`, 'os:v1'),
  ]);
  dead = `127.0.0.1:${await freePort()}`;
  dead2 = `127.0.0.1:${await freePort()}`;
});

afterAll(async () => {
  for (const o of opened) await o.source.close();
  await Promise.all([primary?.stop(), mirror?.stop(), authMirror?.stop()]);
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe('registries.conf mirrors', () => {
  it('uses a mirror for the whole pull, without contacting the primary, and keeps the user\'s name', async () => {
    // The primary is a port nothing listens on: any request to it would fail the test.
    const c = await conf(`
[[registry]]
location = "${dead}"
insecure = true
[[registry.mirror]]
location = "${mirror.host}"
insecure = true
`);
    const o = await open(`docker://${dead}/os:v1`, c);
    expect(o.source.name).toBe(`docker://${dead}/os:v1`);
    expect(o.reference).toEqual({ registry: dead, repository: 'os', tag: 'v1' });
    expect(o.servedBy).toBe(`mirror ${mirror.host}/os`);
    expect(o.endpoint).toMatchObject({ mirror: true, insecure: true, reference: { registry: mirror.host, repository: 'os' } });
    expect(c.notes).toContain(`${dead}/os:v1: served by mirror ${mirror.host}/os`);
    const resolved = await resolveImage(o.source, amd64);
    expect(resolved.manifestDigest).toBe(imageB.manifest.digest);
    // Blobs come from the same endpoint.
    const layer = imageB.layers[0]!;
    expect(await readAll(await o.source.getBlob(layer.descriptor))).toEqual(layer.bytes);
  });

  it('falls back past failing mirrors (refused connection, 404) to the primary', async () => {
    const c = await conf(`
[[registry]]
prefix = "${primary.host}/os"
location = "${primary.host}/os"
insecure = true
[[registry.mirror]]
location = "${dead}/os"
insecure = true
[[registry.mirror]]
location = "${mirror.host}/empty"
insecure = true
`);
    const o = await open(`${primary.host}/os:v1`, c);
    expect(o.servedBy).toBeUndefined();
    expect(o.endpoint).toMatchObject({ mirror: false, reference: { registry: primary.host, repository: 'os' } });
    expect(await manifestDigestOf(o)).toBe(imageA.manifest.digest);
    expect(c.notes).toHaveLength(2);
    expect(c.notes[0]).toContain(`mirror ${dead}/os failed`);
    expect(c.notes[1]).toMatch(new RegExp(`mirror ${mirror.host}/empty failed \\(manifest v1: registry answered 404`));
  });

  it('lists every endpoint\'s failure when none works', async () => {
    const c = await conf(`
[[registry]]
location = "${dead2}"
insecure = true
[[registry.mirror]]
location = "${dead}"
insecure = true
[[registry.mirror]]
location = "${mirror.host}/empty"
insecure = true
`);
    const err = await openConfiguredSource(`${dead2}/os:v1`, c).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EndpointsFailedError);
    const msg = (err as Error).message;
    expect(msg).toMatch(new RegExp(`^pulling ${dead2}/os:v1: every endpoint failed: `));
    expect(msg).toContain(`[mirror ${dead}/os: `);
    expect(msg).toContain(`[mirror ${mirror.host}/empty/os: manifest v1: registry answered 404`);
    expect(msg).toContain(`[${dead2}/os: `);
    expect(msg).not.toContain('\n');
    expect((err as EndpointsFailedError).attempts.map((a) => a.label)).toEqual([
      `mirror ${dead}/os`,
      `mirror ${mirror.host}/empty/os`,
      `${dead2}/os`,
    ]);
  });

  it('a single endpoint keeps its own typed error', async () => {
    const c = await conf(`
[[registry]]
location = "${primary.host}"
insecure = true
`);
    await expect(openConfiguredSource(`${primary.host}/missing:v1`, c)).rejects.toBeInstanceOf(RegistryHttpError);
  });

  it('pull-from-mirror = "digest-only": the mirror serves digests, never tags', async () => {
    const c = await conf(`
[[registry]]
location = "${primary.host}"
insecure = true
[[registry.mirror]]
location = "${mirror.host}"
insecure = true
pull-from-mirror = "digest-only"
`);
    // By tag: the mirror (up, and with a different os:v1) is skipped.
    const byTag = await open(`${primary.host}/os:v1`, c);
    expect(byTag.endpoint?.mirror).toBe(false);
    expect(await manifestDigestOf(byTag)).toBe(imageA.manifest.digest);
    // By digest: B exists only on the mirror, which serves it.
    const byDigest = await open(`${primary.host}/os@${imageB.manifest.digest}`, c);
    expect(byDigest.servedBy).toBe(`mirror ${mirror.host}/os`);
    expect(byDigest.source.name).toBe(`docker://${primary.host}/os@${imageB.manifest.digest}`);
    expect(await manifestDigestOf(byDigest)).toBe(imageB.manifest.digest);
  });

  it('pull-from-mirror = "tag-only": the mirror serves tags, never digests', async () => {
    const c = await conf(`
[[registry]]
location = "${primary.host}"
insecure = true
[[registry.mirror]]
location = "${mirror.host}"
insecure = true
pull-from-mirror = "tag-only"
`);
    const byTag = await open(`${primary.host}/os:v1`, c);
    expect(byTag.servedBy).toBe(`mirror ${mirror.host}/os`);
    // A by digest is on both; tag-only keeps the mirror out of it.
    const byDigest = await open(`${primary.host}/os@${imageA.manifest.digest}`, c);
    expect(byDigest.endpoint?.mirror).toBe(false);
  });

  it('rewrites a prefix to its location, naming the image as the user wrote it', async () => {
    const c = await conf(`
[[registry]]
prefix = "os.example.com/team"
location = "${primary.host}"
insecure = true
`);
    const o = await open('os.example.com/team/os:v1', c);
    expect(o.reference).toEqual({ registry: 'os.example.com', repository: 'team/os', tag: 'v1' });
    expect(o.endpoint?.reference).toEqual({ registry: primary.host, repository: 'os', tag: 'v1' });
    expect(o.servedBy).toBeUndefined();
    expect(await manifestDigestOf(o)).toBe(imageA.manifest.digest);
  });
});

describe('blocked registries', () => {
  it('refuses a blocked registry before any request', async () => {
    const c = await conf(`
[[registry]]
location = "${primary.host}"
blocked = true
`);
    const err = await openConfiguredSource(`docker://${primary.host}/os:v1`, c).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(BlockedRegistryError);
    expect((err as Error).message).toMatch(new RegExp(`^${primary.host}/os:v1: registry ${primary.host} is blocked in registries.conf`));
  });

  it('skips a mirror on a blocked registry', async () => {
    const c = await conf(`
[[registry]]
location = "${mirror.host}"
blocked = true
[[registry]]
location = "${primary.host}"
insecure = true
[[registry.mirror]]
location = "${mirror.host}"
insecure = true
`);
    const o = await open(`${primary.host}/os:v1`, c);
    expect(o.endpoint?.mirror).toBe(false);
    expect(await manifestDigestOf(o)).toBe(imageA.manifest.digest);
    expect(c.notes[0]).toMatch(/mirror .* failed \(.*is blocked in registries.conf/);
  });
});

describe('credentials per endpoint', () => {
  const mirrorConf = (): string => `
[[registry]]
location = "${dead}"
insecure = true
[[registry.mirror]]
location = "${authMirror.host}"
insecure = true
`;

  it('uses the auth.json entry of the mirror host', async () => {
    const authFile = join(tmp, 'mirror-auth.json');
    const auth = Buffer.from('mirroruser:mirrorpass').toString('base64');
    await writeFile(authFile, JSON.stringify({ auths: { [authMirror.host]: { auth } } }));
    const o = await open(`${dead}/os:v1`, await conf(mirrorConf(), { authFile }));
    expect(o.servedBy).toBe(`mirror ${authMirror.host}/os`);
    expect(o.endpoint?.credentials?.username).toBe('mirroruser');
    expect(await manifestDigestOf(o)).toBe(imageA.manifest.digest);
  });

  it('does not give the primary\'s credentials to the mirror', async () => {
    const authFile = join(tmp, 'primary-auth.json');
    const auth = Buffer.from('mirroruser:mirrorpass').toString('base64');
    await writeFile(authFile, JSON.stringify({ auths: { [dead]: { auth } } }));
    const err = await openConfiguredSource(`${dead}/os:v1`, await conf(mirrorConf(), { authFile })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EndpointsFailedError);
    const first = (err as EndpointsFailedError).attempts[0]!;
    expect(first.label).toBe(`mirror ${authMirror.host}/os`);
    expect(first.error).toBeInstanceOf(AuthenticationError);
    expect((err as Error).message).toContain('authentication required');
  });
});

describe('short names', () => {
  it('resolves an alias, keeping the tag', async () => {
    const c = await conf(`
unqualified-search-registries = ["${mirror.host}", "${dead}"]
[aliases]
"myos" = "${primary.host}/os"
[[registry]]
location = "${primary.host}"
insecure = true
`);
    const o = await open('myos:v1', c);
    expect(o.reference).toEqual({ registry: primary.host, repository: 'os', tag: 'v1' });
    expect(o.shortName).toMatch(/^Resolved "myos" as an alias/);
    expect(c.notes[0]).toBe(o.shortName);
    expect(await manifestDigestOf(o)).toBe(imageA.manifest.digest);
  });

  it('uses the only unqualified-search registry', async () => {
    const c = await conf(`
unqualified-search-registries = ["${primary.host}"]
[[registry]]
location = "${primary.host}"
insecure = true
`);
    const o = await open('docker://os:v1', c);
    expect(o.reference).toEqual({ registry: primary.host, repository: 'os', tag: 'v1' });
    expect(await manifestDigestOf(o)).toBe(imageA.manifest.digest);
  });

  it('refuses an ambiguous short name in the default (enforcing) mode, listing the candidates', async () => {
    const c = await conf(`unqualified-search-registries = ["${primary.host}", "${mirror.host}"]\n`);
    const err = await openConfiguredSource('os:v1', c).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AmbiguousShortNameError);
    expect((err as Error).message).toContain(`short name "os" is ambiguous`);
    expect((err as Error).message).toContain(`${primary.host}/os:v1, ${mirror.host}/os:v1`);
  });

  it('tries every candidate in order in permissive mode', async () => {
    const c = await conf(`
short-name-mode = "permissive"
unqualified-search-registries = ["${dead}", "${primary.host}"]
[[registry]]
location = "${dead}"
insecure = true
[[registry]]
location = "${primary.host}"
insecure = true
`);
    const o = await open('os:v1', c);
    expect(o.reference?.registry).toBe(primary.host);
    expect(c.notes.some((n) => n.startsWith(`${dead}/os:v1: `))).toBe(true);
  });

  it('refuses a short name without alias or search registries', async () => {
    const c = await conf('');
    await expect(openConfiguredSource('debian', c)).rejects.toBeInstanceOf(ShortNameError);
    await expect(openConfiguredSource('debian', c)).rejects.toThrow(/short name "debian" did not resolve to an alias/);
  });
});

describe('dir: source', () => {
  let dirA: string;
  let dirMulti: string;

  beforeAll(async () => {
    dirA = join(tmp, 'dir-a');
    dirMulti = join(tmp, 'dir-multi');
    await execa('skopeo', ['copy', '--insecure-policy', '--quiet', `oci:${layoutDir}:a`, `dir:${dirA}`]);
    await execa('skopeo', ['copy', '--insecure-policy', '--quiet', '--all', `oci:${layoutDir}:multi`, `dir:${dirMulti}`]);
  });

  it('reads a skopeo dir: copy, manifest and blobs verified', async () => {
    expect(await readFile(join(dirA, 'version'), 'utf8')).toBe('Directory Transport Version: 1.1\n');
    const o = await open(`dir:${dirA}`, {});
    expect(o.transport).toBe('dir');
    expect(o.path).toBe(dirA);
    expect(o.source.name).toBe(`dir:${dirA}`);
    const resolved = await resolveImage(o.source, amd64);
    expect(resolved.manifestDigest).toBe(imageA.manifest.digest);
    expect(resolved.configBytes).toEqual(imageA.configBytes);
    for (const layer of imageA.layers) {
      expect(await readAll(await o.source.getBlob(layer.descriptor))).toEqual(layer.bytes);
    }
  });

  it('picks the platform from a copy --all index (instance manifests)', async () => {
    const o = await open(`dir:${dirMulti}`, {});
    const resolved = await resolveImage(o.source, amd64);
    expect(resolved.indexDigest).toBeDefined();
    expect(resolved.manifestDigest).toBe(imageA.manifest.digest);
  });

  it('refuses a tampered blob and an unknown directory version', async () => {
    const layer = imageA.layers[0]!;
    const file = join(dirA, digestHex(layer.descriptor.digest));
    const bytes = await readFile(file);
    const bad = Buffer.from(bytes);
    bad[bad.length >> 1]! ^= 0xff;
    await writeFile(file, bad);
    const o = await open(`dir:${dirA}`, {});
    await expect(readAll(await o.source.getBlob(layer.descriptor))).rejects.toBeInstanceOf(DigestMismatchError);
    await writeFile(file, bytes);

    await writeFile(join(dirA, 'version'), 'Directory Transport Version: 9.9\n');
    const v = await open(`dir:${dirA}`, {});
    await expect(v.source.getManifest()).rejects.toThrow(/unsupported directory version "Directory Transport Version: 9.9"/);
    await writeFile(join(dirA, 'version'), 'Directory Transport Version: 1.1\n');
  });

  it('does not follow a blob symlink out of the directory', async () => {
    const dir = join(tmp, 'dir-escape');
    await execa('skopeo', ['copy', '--insecure-policy', '--quiet', `oci:${layoutDir}:a`, `dir:${dir}`]);
    const outside = join(tmp, 'outside-config');
    await writeFile(outside, imageA.configBytes);
    const configFile = join(dir, digestHex(imageA.config.digest));
    await rm(configFile);
    await symlink(outside, configFile);
    const o = await open(`dir:${dir}`, {});
    await expect(resolveImage(o.source, amd64)).rejects.toThrow(/resolves outside the directory/);
  });
});
