/**
 * `oci:DIR[:TAG]` and `oci-archive:FILE[:TAG]` sources, on layouts written
 * by the test and archives written by skopeo and by tar.
 */
import { randomBytes } from 'node:crypto';
import { cp, mkdtemp, rm, symlink, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { readFile } from 'node:fs/promises';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DigestMismatchError } from '../../src/errors.js';
import type { Platform } from '../../src/oci/types.js';
import { LayoutError, SourceSpecError, openSource, resolveImage, type ImageSource } from '../../src/registry/index.js';
import { requireCommands } from '../support/host.js';
import { LayoutWriter, MT, type LayoutImage } from '../support/oci-layout-writer.js';

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream as AsyncIterable<Buffer>) chunks.push(c);
  return Buffer.concat(chunks);
}

let tmp: string;
let layoutDir: string;
let single: string;
let image: LayoutImage;
let arm: LayoutImage;
const sources: ImageSource[] = [];
const amd64: Platform = { os: 'linux', architecture: 'amd64' };

async function open(spec: string): Promise<ImageSource> {
  const s = await openSource(spec);
  sources.push(s);
  return s;
}

async function checkImage(src: ImageSource, img: LayoutImage, platform = amd64): Promise<void> {
  const r = await resolveImage(src, platform);
  expect(r.manifestDigest).toBe(img.manifest.digest);
  expect(r.configDigest).toBe(img.config.digest);
  for (const layer of img.layers) {
    const progress: number[] = [];
    const bytes = await readAll(await src.getBlob(layer.descriptor, { onProgress: (n) => progress.push(n) }));
    expect(bytes.equals(layer.bytes)).toBe(true);
    expect(progress.at(-1)).toBe(layer.descriptor.size);
  }
}

beforeAll(async () => {
  await requireCommands('skopeo', 'tar');
  tmp = await mkdtemp(join(tmpdir(), 'ocisnap-layout-'));
  const layout = await LayoutWriter.create(join(tmp, 'layout'));
  layoutDir = layout.dir;
  image = await layout.addImage([{ 'etc/os-release': 'ID=layout\n' }, { 'data.bin': randomBytes(100 * 1024) }]);
  await layout.tag(image.manifest, 'v1');
  const other = await layout.addImage([{ 'etc/os-release': 'ID=other\n' }]);
  arm = await layout.addImage([{ 'arch': 'arm64\n' }], { os: 'linux', architecture: 'arm64', variant: 'v8' });
  const index = await layout.addIndex([other.manifest, arm.manifest]);
  await layout.tag(index.descriptor, 'multi');
  const one = await LayoutWriter.create(join(tmp, 'single'));
  single = one.dir;
  await one.tag((await one.addImage([{ 'only': 'one\n' }])).manifest);
});

afterAll(async () => {
  for (const s of sources) await s.close();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

describe('oci: layout directory', () => {
  it('finds a tagged image and serves verified blobs', async () => {
    const src = await open(`oci:${layoutDir}:v1`);
    expect(src.name).toBe(`oci:${layoutDir}:v1`);
    await checkImage(src, image);
  });

  it('picks the platform from a tagged index', async () => {
    await checkImage(await open(`oci:${layoutDir}:multi`), arm, { os: 'linux', architecture: 'arm64', variant: 'v8' });
  });

  it('takes the only image when no tag is given, and refuses to guess among several', async () => {
    const src = await open(`oci:${single}`);
    expect((await src.getManifest()).bytes.length).toBeGreaterThan(0);
    await expect((await open(`oci:${layoutDir}`)).getManifest()).rejects.toThrow(
      /2 images in index\.json; name one with :TAG \("v1", "multi"\)/,
    );
  });

  it('names the available tags for an unknown one', async () => {
    const err = await (await open(`oci:${layoutDir}:v9`)).getManifest().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LayoutError);
    expect((err as Error).message).toBe(`oci:${layoutDir}: no image tagged "v9" (available: "v1", "multi")`);
  });

  it('refuses a directory that is not a layout, and a missing one', async () => {
    await expect((await open(`oci:${tmp}`)).getManifest()).rejects.toThrow(/not an OCI image layout: no oci-layout file/);
    await expect(openSource(`oci:${join(tmp, 'absent')}`)).rejects.toBeInstanceOf(SourceSpecError);
  });

  it('refuses a blob that is a symlink out of the layout, and a corrupted blob', async () => {
    const dir = join(tmp, 'evil');
    await cp(layoutDir, dir, { recursive: true });
    const layer = image.layers[0]!;
    const blob = join(dir, 'blobs', 'sha256', layer.descriptor.digest.slice(7));
    await writeFile(join(tmp, 'outside'), layer.bytes);
    await unlink(blob);
    await symlink(join(tmp, 'outside'), blob);
    const src = await open(`oci:${dir}:v1`);
    await expect(src.getBlob(layer.descriptor)).rejects.toThrow(/resolves outside the directory/);

    const big = image.layers[1]!;
    const bigBlob = join(dir, 'blobs', 'sha256', big.descriptor.digest.slice(7));
    const bytes = Buffer.from(big.bytes);
    bytes[500] = (bytes[500] as number) ^ 1;
    await writeFile(bigBlob, bytes);
    await expect(readAll(await src.getBlob(big.descriptor))).rejects.toBeInstanceOf(DigestMismatchError);
  });

  it('allows a symlink that stays inside the layout', async () => {
    const dir = join(tmp, 'linked');
    await cp(layoutDir, dir, { recursive: true });
    const layer = image.layers[0]!;
    const hex = layer.descriptor.digest.slice(7);
    await writeFile(join(dir, 'stash'), layer.bytes);
    await unlink(join(dir, 'blobs', 'sha256', hex));
    await symlink('../../stash', join(dir, 'blobs', 'sha256', hex));
    const src = await open(`oci:${dir}:v1`);
    expect((await readAll(await src.getBlob(layer.descriptor))).equals(layer.bytes)).toBe(true);
  });
});

describe('resolveImage on a layout', () => {
  it('refuses an image whose config does not list one diff_id per layer', async () => {
    const w = await LayoutWriter.create(join(tmp, 'mismatch'));
    const good = await w.addImage([{ a: '1' }]);
    const config = await w.addBlob(
      Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } })),
      MT.config,
    );
    const manifest = await w.addBlob(
      Buffer.from(
        JSON.stringify({ schemaVersion: 2, mediaType: MT.manifest, config, layers: good.layers.map((l) => l.descriptor) }),
      ),
      MT.manifest,
    );
    await w.tag(manifest, 'bad');
    await expect(resolveImage(await open(`oci:${w.dir}:bad`), amd64)).rejects.toThrow(
      /the manifest lists 1 layers but the config has 0 diff_ids/,
    );
  });
});

describe('oci-archive: tar of a layout', () => {
  it('reads an archive written by skopeo without extracting it', async () => {
    const file = join(tmp, 'skopeo.tar');
    await execa('skopeo', ['copy', '--insecure-policy', '--quiet', `oci:${layoutDir}:v1`, `oci-archive:${file}:v1`]);
    const src = await open(`oci-archive:${file}:v1`);
    expect(src.name).toBe(`oci-archive:${file}:v1`);
    await checkImage(src, image);
  });

  it('reads an archive made with tar (./ prefixed names), by tag and by index', async () => {
    const file = join(tmp, 'tar.tar');
    await execa('tar', ['-cf', file, '-C', layoutDir, '.']);
    await checkImage(await open(`oci-archive:${file}:v1`), image);
    await checkImage(await open(`oci-archive:${file}:multi`), arm, { os: 'linux', architecture: 'arm64', variant: 'v8' });
  });

  it('refuses a compressed archive with a clear message', async () => {
    const file = join(tmp, 'tar.tar');
    const gz = join(tmp, 'layout.tar.gz');
    await writeFile(gz, gzipSync(await readFile(file)));
    await expect(openSource(`oci-archive:${gz}:v1`)).rejects.toThrow(/gzip-compressed file; oci-archive must be an uncompressed tar/);
  });

  it('refuses a blob member that is a symlink', async () => {
    const dir = join(tmp, 'archive-evil');
    await cp(layoutDir, dir, { recursive: true });
    const layer = image.layers[0]!;
    const blob = join(dir, 'blobs', 'sha256', layer.descriptor.digest.slice(7));
    await unlink(blob);
    await symlink('/etc/passwd', blob);
    const file = join(tmp, 'evil.tar');
    await execa('tar', ['-cf', file, '-C', dir, '.']);
    const src = await open(`oci-archive:${file}:v1`);
    await expect(src.getBlob(layer.descriptor)).rejects.toThrow(/is a symlink in the archive, not a regular file; refused/);
  });
});
