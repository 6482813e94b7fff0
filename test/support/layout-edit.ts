/**
 * Edits an OCI image layout in place to make bad images for fault tests:
 * rewrite the manifest or config of a tag (keeping everything consistent
 * unless the edit breaks it on purpose), replace a blob's bytes.
 */
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

export interface EditableImage {
  manifest: { config: Descriptor; layers: Descriptor[]; annotations?: Record<string, string>; [k: string]: unknown };
  config: { rootfs: { diff_ids: string[] }; [k: string]: unknown };
}

const blobPath = (dir: string, digest: string) => join(dir, 'blobs', 'sha256', digest.slice('sha256:'.length));

export async function readBlob(dir: string, digest: string): Promise<Buffer> {
  return readFile(blobPath(dir, digest));
}

/** Stores `bytes` as a blob and returns its descriptor fields. */
export async function writeBlob(dir: string, bytes: Buffer): Promise<{ digest: string; size: number }> {
  const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
  await writeFile(blobPath(dir, digest), bytes);
  return { digest, size: bytes.length };
}

/** Overwrites a blob's bytes without renaming it (its digest no longer matches). */
export async function corruptBlob(dir: string, digest: string, bytes: Buffer): Promise<void> {
  await writeFile(blobPath(dir, digest), bytes);
}

/**
 * Rewrites the config and manifest of `tag` after `edit` changed them; the
 * new config and manifest blobs are stored and referenced by digest.
 */
export async function editImage(dir: string, tag: string, edit: (image: EditableImage) => void | Promise<void>): Promise<void> {
  const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as { manifests: Descriptor[] };
  const entry = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag);
  if (!entry) throw new Error(`no tag ${tag} in ${dir}`);
  const manifest = JSON.parse((await readBlob(dir, entry.digest)).toString()) as EditableImage['manifest'];
  const config = JSON.parse((await readBlob(dir, manifest.config.digest)).toString()) as EditableImage['config'];
  const image = { manifest, config };
  await edit(image);
  Object.assign(image.manifest.config, await writeBlob(dir, Buffer.from(JSON.stringify(image.config))));
  Object.assign(entry, await writeBlob(dir, Buffer.from(JSON.stringify(image.manifest))));
  await writeFile(join(dir, 'index.json'), JSON.stringify(index));
}
