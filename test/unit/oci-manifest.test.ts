import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { UntrustedInputError } from '../../src/errors.js';
import { maxManifestBytes, parseImageConfig, parseManifestDocument } from '../../src/oci/manifest.js';
import { MediaType } from '../../src/oci/mediatypes.js';
import { requireCommands } from '../support/host.js';

const d1 = `sha256:${'1'.repeat(64)}`;
const d2 = `sha256:${'2'.repeat(64)}`;
const d3 = `sha256:${'3'.repeat(64)}`;

const enc = (v: unknown) => new TextEncoder().encode(typeof v === 'string' ? v : JSON.stringify(v));

function ociManifest(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: d1, size: 100 },
    layers: [
      { mediaType: MediaType.ociLayerGzip, digest: d2, size: 2000 },
      { mediaType: MediaType.ociLayerZstd, digest: d3, size: 0, annotations: { a: 'b' }, urls: ['https://x/y'] },
    ],
    ...extra,
  };
}

function ociIndex(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    schemaVersion: 2,
    mediaType: MediaType.ociIndex,
    manifests: [
      { mediaType: MediaType.ociManifest, digest: d1, size: 500, platform: { os: 'linux', architecture: 'amd64' } },
      {
        mediaType: MediaType.ociManifest,
        digest: d2,
        size: 501,
        platform: { os: 'linux', architecture: 'arm64', variant: 'v8', 'os.features': ['x'], 'os.version': '1' },
      },
    ],
    ...extra,
  };
}

function expectUntrusted(fn: () => unknown, message: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(UntrustedInputError);
  expect((caught as Error).message).toMatch(message);
  expect((caught as Error).message).not.toContain('\n');
}

describe('parseManifestDocument: kinds', () => {
  it('parses an OCI manifest and drops unknown fields', () => {
    const m = parseManifestDocument(enc(ociManifest({ foo: 1 })), MediaType.ociManifest, 'M');
    expect(m).toEqual({
      kind: 'manifest',
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: { mediaType: MediaType.ociConfig, digest: d1, size: 100 },
      layers: [
        { mediaType: MediaType.ociLayerGzip, digest: d2, size: 2000 },
        { mediaType: MediaType.ociLayerZstd, digest: d3, size: 0, annotations: { a: 'b' }, urls: ['https://x/y'] },
      ],
    });
    expect('foo' in m).toBe(false);
  });

  it('parses an OCI index with platforms', () => {
    const i = parseManifestDocument(enc(ociIndex({ annotations: { k: 'v' } })), undefined, 'I');
    expect(i.kind).toBe('index');
    if (i.kind !== 'index') return;
    expect(i.mediaType).toBe(MediaType.ociIndex);
    expect(i.annotations).toEqual({ k: 'v' });
    expect(i.manifests[1]!.platform).toEqual({
      os: 'linux',
      architecture: 'arm64',
      variant: 'v8',
      'os.features': ['x'],
      'os.version': '1',
    });
  });

  it('parses Docker schema2 manifests and manifest lists', () => {
    const m = parseManifestDocument(
      enc({ ...ociManifest(), mediaType: MediaType.dockerManifest }),
      MediaType.dockerManifest,
      'M',
    );
    expect(m.kind).toBe('manifest');
    expect(m.mediaType).toBe(MediaType.dockerManifest);
    const l = parseManifestDocument(
      enc({ ...ociIndex(), mediaType: MediaType.dockerManifestList }),
      `${MediaType.dockerManifestList}; charset=utf-8`,
      'L',
    );
    expect(l.kind).toBe('index');
    expect(l.mediaType).toBe(MediaType.dockerManifestList);
  });

  it.each([
    ['OCI manifest from the header', { ...ociManifest(), mediaType: undefined }, MediaType.ociManifest, 'manifest', MediaType.ociManifest],
    ['Docker manifest from the header', { ...ociManifest(), mediaType: undefined }, MediaType.dockerManifest, 'manifest', MediaType.dockerManifest],
    ['OCI index from the header', { ...ociIndex(), mediaType: undefined }, MediaType.ociIndex, 'index', MediaType.ociIndex],
    ['OCI index from "manifests"', { ...ociIndex(), mediaType: undefined }, undefined, 'index', MediaType.ociIndex],
    ['OCI manifest from an OCI config', { ...ociManifest(), mediaType: undefined }, 'application/json', 'manifest', MediaType.ociManifest],
    [
      'Docker manifest from a Docker config',
      { ...ociManifest(), mediaType: undefined, config: { mediaType: MediaType.dockerConfig, digest: d1, size: 1 } },
      'text/plain',
      'manifest',
      MediaType.dockerManifest,
    ],
    ['body type wins over a generic header', ociIndex(), 'application/octet-stream', 'index', MediaType.ociIndex],
  ])('infers the kind: %s', (_name, body, contentType, kind, mediaType) => {
    const doc = parseManifestDocument(enc(body), contentType, 'X');
    expect(doc.kind).toBe(kind);
    expect(doc.mediaType).toBe(mediaType);
  });
});

describe('parseManifestDocument: refusals', () => {
  const schema1 = /X: schema 1 manifests are deprecated and not supported; /;
  it.each([
    ['schemaVersion 1 body', enc({ schemaVersion: 1, name: 'x', tag: 'y', fsLayers: [] }), undefined, schema1],
    ['schema1 Content-Type', enc(ociManifest()), MediaType.dockerSchema1Signed, schema1],
    ['schema1 body mediaType', enc({ ...ociManifest(), mediaType: MediaType.dockerSchema1 }), undefined, schema1],
    ['schemaVersion 3', enc(ociManifest({ schemaVersion: 3 })), undefined, /"schemaVersion" must be 2, got 3/],
    ['schemaVersion missing', enc({ ...ociManifest(), schemaVersion: undefined }), undefined, /"schemaVersion" must be 2, got undefined/],
    ['not JSON', enc('<html>gateway timeout</html>'), undefined, /X: not valid JSON/],
    ['not UTF-8', new Uint8Array([0x7b, 0xff, 0x7d]), undefined, /X: not valid UTF-8/],
    ['JSON array', enc([1]), undefined, /X: not a JSON object/],
    ['JSON null', enc('null'), undefined, /X: not a JSON object/],
    ['unknown mediaType', enc(ociManifest({ mediaType: 'application/vnd.example+json' })), undefined, /unsupported manifest media type "application\/vnd\.example\+json"/],
    [
      'header contradicts body',
      enc(ociManifest()),
      MediaType.dockerManifest,
      /Content-Type "application\/vnd\.docker\.distribution\.manifest\.v2\+json" contradicts the document's mediaType "application\/vnd\.oci\.image\.manifest\.v1\+json"/,
    ],
    [
      'header says index, body looks like a manifest',
      enc({ ...ociManifest(), mediaType: undefined }),
      MediaType.ociIndex,
      /Content-Type "application\/vnd\.oci\.image\.index\.v1\+json" contradicts the document, which looks like a manifest/,
    ],
    ['ambiguous manifests+layers', enc({ ...ociIndex(), layers: [] }), undefined, /ambiguous document/],
    ['neither kind', enc({ schemaVersion: 2 }), undefined, /neither a manifest nor an index/],
    ['index without manifests', enc({ schemaVersion: 2, mediaType: MediaType.ociIndex }), undefined, /"manifests" must be an array/],
    ['manifest without layers', enc({ ...ociManifest(), layers: undefined }), undefined, /"layers" must be an array/],
    ['manifest without config', enc({ ...ociManifest(), config: undefined }), undefined, /"config" is missing/],
  ])('%s', (_name, bytes, contentType, message) => {
    expectUntrusted(() => parseManifestDocument(bytes, contentType, 'X'), message);
  });

  it('refuses a body over maxManifestBytes before parsing it', () => {
    const big = new Uint8Array(maxManifestBytes + 1).fill(0x20);
    expectUntrusted(() => parseManifestDocument(big, MediaType.ociManifest, 'X'), /4194305 bytes is larger than the 4194304-byte limit/);
  });

  const layer = (l: unknown) => enc(ociManifest({ layers: [l] }));
  it.each([
    ['bad digest', { mediaType: MediaType.ociLayerGzip, digest: 'sha256:xyz', size: 1 }, /X: layers\[0\]: not a sha256 digest: "sha256:xyz"/],
    ['sha512 digest', { mediaType: MediaType.ociLayerGzip, digest: `sha512:${'a'.repeat(128)}`, size: 1 }, /layers\[0\]: not a sha256 digest/],
    ['negative size', { mediaType: MediaType.ociLayerGzip, digest: d1, size: -1 }, /layers\[0\]: "size" must be a non-negative integer, got -1/],
    ['fractional size', { mediaType: MediaType.ociLayerGzip, digest: d1, size: 1.5 }, /"size" must be a non-negative integer, got 1\.5/],
    ['unsafe size', { mediaType: MediaType.ociLayerGzip, digest: d1, size: 2 ** 53 }, /"size" must be a non-negative integer/],
    ['string size', { mediaType: MediaType.ociLayerGzip, digest: d1, size: '1' }, /"size" must be a non-negative integer, got "1"/],
    ['missing size', { mediaType: MediaType.ociLayerGzip, digest: d1 }, /"size" must be a non-negative integer/],
    ['missing mediaType', { digest: d1, size: 1 }, /layers\[0\]: "mediaType" is missing/],
    ['empty mediaType', { mediaType: '', digest: d1, size: 1 }, /"mediaType" is empty/],
    ['urls not strings', { mediaType: MediaType.ociLayerGzip, digest: d1, size: 1, urls: [1] }, /"urls" must be an array of strings/],
    ['annotations not strings', { mediaType: MediaType.ociLayerGzip, digest: d1, size: 1, annotations: { a: 1 } }, /"annotations" must be an object of string values/],
    ['descriptor not an object', 'x', /layers\[0\]: not a JSON object/],
  ])('refuses a layer descriptor with %s', (_name, l, message) => {
    expectUntrusted(() => parseManifestDocument(layer(l), undefined, 'X'), message);
  });

  it('validates index entry platforms', () => {
    const bad = ociIndex({
      manifests: [{ mediaType: MediaType.ociManifest, digest: d1, size: 1, platform: { os: 'linux' } }],
    });
    expectUntrusted(() => parseManifestDocument(enc(bad), undefined, 'X'), /manifests\[0\] platform: "architecture" is missing/);
  });
});

describe('parseImageConfig', () => {
  const config = {
    architecture: 'arm64',
    os: 'linux',
    variant: 'v8',
    created: '2024-01-01T00:00:00Z',
    config: { Env: ['PATH=/bin'], Entrypoint: null, Cmd: ['/bin/sh'], Labels: null, WorkingDir: '/', User: '0', ExposedPorts: {} },
    rootfs: { type: 'layers', diff_ids: [d1, d2] },
    history: [{ created_by: 'x', empty_layer: true }, { comment: 'c' }],
    unknown: { anything: 1 },
  };

  it('parses the fields ocisnap reads, treats null as absent, drops unknown fields', () => {
    expect(parseImageConfig(enc(config), 'C')).toEqual({
      architecture: 'arm64',
      os: 'linux',
      variant: 'v8',
      created: '2024-01-01T00:00:00Z',
      config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh'], WorkingDir: '/', User: '0' },
      rootfs: { type: 'layers', diff_ids: [d1, d2] },
      history: [{ created_by: 'x', empty_layer: true }, { comment: 'c' }],
    });
  });

  it.each([
    ['rootfs.type', { rootfs: { type: 'other', diff_ids: [] } }, /C: rootfs\.type must be "layers", got "other"/],
    ['rootfs missing', { rootfs: undefined }, /"rootfs" is missing/],
    ['diff_ids not an array', { rootfs: { type: 'layers' } }, /rootfs\.diff_ids must be an array/],
    ['bad diff_id', { rootfs: { type: 'layers', diff_ids: [d1, 'md5:00'] } }, /C: rootfs\.diff_ids\[1\]: not a sha256 digest: "md5:00"/],
    ['os missing', { os: undefined }, /"os" is missing/],
    ['architecture not a string', { architecture: 5 }, /"architecture" must be a string/],
    ['empty os', { os: '' }, /must not be empty/],
    ['Env not strings', { config: { Env: [1] } }, /C: config: "Env" must be an array of strings/],
    ['history not an array', { history: {} }, /"history" must be an array/],
    ['empty_layer not a boolean', { history: [{ empty_layer: 'yes' }] }, /history\[0\]: "empty_layer" must be a boolean/],
  ])('refuses %s', (_name, patch, message) => {
    expectUntrusted(() => parseImageConfig(enc({ ...config, ...patch }), 'C'), message);
  });

  it('refuses non-JSON', () => {
    expectUntrusted(() => parseImageConfig(enc('{'), 'C'), /C: not valid JSON/);
  });
});

describe('documents written by real tools', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ocisnap-manifest-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('parses what umoci (OCI, no mediaType fields) and skopeo (Docker schema2) write', async () => {
    await requireCommands('umoci', 'skopeo');
    const layout = join(dir, 'layout');
    await execa('umoci', ['init', '--layout', layout]);
    await execa('umoci', ['new', '--image', `${layout}:t`]);
    writeFileSync(join(dir, 'file'), 'hello');
    await execa('umoci', ['insert', '--image', `${layout}:t`, join(dir, 'file'), '/file']);
    const blob = (d: string) => readFileSync(join(layout, 'blobs', d.replace(':', '/')));

    const index = parseManifestDocument(readFileSync(join(layout, 'index.json')), undefined, 'index.json');
    expect(index.kind).toBe('index');
    if (index.kind !== 'index') return;
    const entry = index.manifests[0]!;
    expect(entry.annotations?.['org.opencontainers.image.ref.name']).toBe('t');
    const manifest = parseManifestDocument(blob(entry.digest), entry.mediaType, 'manifest');
    expect(manifest.kind).toBe('manifest');
    if (manifest.kind !== 'manifest') return;
    expect(manifest.mediaType).toBe(MediaType.ociManifest);
    expect(manifest.layers).toHaveLength(1);
    expect(manifest.layers[0]!.mediaType).toBe(MediaType.ociLayerGzip);
    const config = parseImageConfig(blob(manifest.config.digest), 'config');
    expect(config.rootfs.diff_ids).toHaveLength(1);

    const out = join(dir, 'docker');
    await execa('skopeo', ['copy', '--format', 'v2s2', `oci:${layout}:t`, `dir:${out}`]);
    const docker = parseManifestDocument(readFileSync(join(out, 'manifest.json')), undefined, 'manifest.json');
    expect(docker.kind).toBe('manifest');
    if (docker.kind !== 'manifest') return;
    expect(docker.mediaType).toBe(MediaType.dockerManifest);
    expect(docker.config.mediaType).toBe(MediaType.dockerConfig);
    expect(docker.layers[0]!.mediaType).toBe(MediaType.dockerLayerGzip);
    const dconfig = parseImageConfig(readFileSync(join(out, docker.config.digest.slice(7))), 'config');
    expect(dconfig.rootfs.diff_ids).toEqual(config.rootfs.diff_ids);
  });
});
