/**
 * A small OCI image layout writer for the registry tests (image-spec
 * image-layout.md): gzip tar layers made with tar-stream, a config, a
 * manifest, optionally an index of several platforms, `index.json` entries
 * tagged with `org.opencontainers.image.ref.name`.
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { pack } from 'tar-stream';
import type { Descriptor, Digest, Platform } from '../../src/oci/types.js';

export const MT = {
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  index: 'application/vnd.oci.image.index.v1+json',
  config: 'application/vnd.oci.image.config.v1+json',
  layerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
} as const;

export function sha256(data: Uint8Array | string): Digest {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** A tar of `files` (path → content), fixed mtimes so equal specs give equal digests. */
export async function makeTar(files: Record<string, string | Buffer>): Promise<Buffer> {
  const p = pack();
  const chunks: Buffer[] = [];
  const done = new Promise<void>((resolve, reject) => {
    p.on('data', (c: unknown) => {
      chunks.push(c as Buffer);
    });
    p.on('end', resolve);
    p.on('error', reject);
  });
  for (const [name, content] of Object.entries(files)) {
    p.entry({ name, mtime: new Date(0), mode: 0o644, uid: 0, gid: 0 }, typeof content === 'string' ? Buffer.from(content) : content);
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

export interface LayoutImage {
  manifest: Descriptor;
  manifestBytes: Buffer;
  config: Descriptor;
  configBytes: Buffer;
  layers: Array<{ descriptor: Descriptor; diffId: Digest; bytes: Buffer }>;
}

export class LayoutWriter {
  private constructor(readonly dir: string) {}

  static async create(dir: string): Promise<LayoutWriter> {
    await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
    await writeFile(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, mediaType: MT.index, manifests: [] }));
    return new LayoutWriter(dir);
  }

  async addBlob(bytes: Buffer, mediaType: string): Promise<Descriptor> {
    const digest = sha256(bytes);
    await writeFile(join(this.dir, 'blobs', 'sha256', digest.slice(7)), bytes);
    return { mediaType, digest, size: bytes.length };
  }

  /** An image of gzip layers, one per `layers` entry, for `platform` (default linux/amd64). */
  async addImage(layers: Array<Record<string, string | Buffer>>, platform?: Platform): Promise<LayoutImage> {
    const plat = platform ?? { os: 'linux', architecture: 'amd64' };
    const out: LayoutImage['layers'] = [];
    for (const files of layers) {
      const tar = await makeTar(files);
      const gz = gzipSync(tar);
      out.push({ descriptor: await this.addBlob(gz, MT.layerGzip), diffId: sha256(tar), bytes: gz });
    }
    const configBytes = Buffer.from(
      JSON.stringify({
        architecture: plat.architecture,
        os: plat.os,
        ...(plat.variant !== undefined && { variant: plat.variant }),
        config: { Env: ['PATH=/usr/bin'] },
        rootfs: { type: 'layers', diff_ids: out.map((l) => l.diffId) },
        history: out.map(() => ({ created_by: 'test' })),
      }),
    );
    const config = await this.addBlob(configBytes, MT.config);
    const manifestBytes = Buffer.from(
      JSON.stringify({ schemaVersion: 2, mediaType: MT.manifest, config, layers: out.map((l) => l.descriptor) }),
    );
    const manifest = { ...(await this.addBlob(manifestBytes, MT.manifest)), platform: plat };
    return { manifest, manifestBytes, config, configBytes, layers: out };
  }

  /** An image index of `manifests` (their descriptors carry the platform). */
  async addIndex(manifests: Descriptor[]): Promise<{ descriptor: Descriptor; bytes: Buffer }> {
    const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MT.index, manifests }));
    return { descriptor: await this.addBlob(bytes, MT.index), bytes };
  }

  /** Adds `desc` to index.json, tagged `tag` when given. */
  async tag(desc: Descriptor, tag?: string): Promise<void> {
    const path = join(this.dir, 'index.json');
    const index = JSON.parse(await readFile(path, 'utf8')) as { manifests: Descriptor[] };
    const { platform: _p, ...entry } = desc;
    index.manifests.push({
      ...entry,
      ...(tag !== undefined && { annotations: { 'org.opencontainers.image.ref.name': tag } }),
    });
    await writeFile(path, JSON.stringify(index));
  }
}
