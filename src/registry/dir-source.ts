/**
 * `dir:DIR`: skopeo's directory layout (containers/image directory/
 * dir_transport.go, dir_src.go):
 *
 *   version                     "Directory Transport Version: 1.1\n"
 *   manifest.json               the top-level manifest (or index, after `copy --all`)
 *   <hex>.manifest.json         an instance manifest of that index
 *   <hex>                       a blob (config, layer), named by its sha256 hex
 *   signature-N, <hex>.signature-N   signatures (read by src/policy/dir-signatures.ts)
 *
 * The whole rest of the spec is the path (the dir transport has no tag).
 * Files are opened beneath DIR only (openat2, as for oci:), and every blob
 * and instance manifest is checked against its digest and size.
 */
import type { Readable } from 'node:stream';
import { DigestMismatchError } from '../errors.js';
import { digestHex, sha256Digest } from '../oci/digest.js';
import { maxManifestBytes } from '../oci/manifest.js';
import type { Descriptor, Digest } from '../oci/types.js';
import { LayoutError, SourceSpecError, shortDigest } from './errors.js';
import { readSmall, readVerifiedBlob, type LayoutStorage } from './layout.js';
import { DirectoryStorage } from './oci-layout.js';
import { blobKind, manifestMediaType, type BlobOptions, type ImageSource, type ManifestBlob } from './types.js';

/** dir_transport.go: the only version written today; 1.0 stored layers as `<hex>.tar`. */
const supportedVersion = 'Directory Transport Version: 1.1\n';

export class DirSource implements ImageSource {
  readonly name: string;
  private top: Promise<ManifestBlob> | undefined;

  constructor(private readonly storage: LayoutStorage) {
    this.name = storage.name;
  }

  private async checkVersion(): Promise<void> {
    const bytes = await readSmall(this.storage, 'version', 1024, `${this.name}: version`);
    // containers/image reads a directory without a version file too (it only
    // checks the version before overwriting one); so do we.
    if (bytes === undefined) return;
    const text = bytes.toString('utf8');
    if (text !== supportedVersion) {
      throw new LayoutError(
        `${this.name}: unsupported directory version ${JSON.stringify(text.trim().slice(0, 80))} (expected "${supportedVersion.trim()}")`,
      );
    }
  }

  private async loadTop(): Promise<ManifestBlob> {
    await this.checkVersion();
    const what = `${this.name}: manifest.json`;
    const bytes = await readSmall(this.storage, 'manifest.json', maxManifestBytes, what);
    if (bytes === undefined) throw new LayoutError(`${this.name}: not a dir: image copy: no manifest.json`);
    return { bytes, digest: sha256Digest(bytes), mediaType: manifestMediaType(undefined, bytes) };
  }

  /** Without a digest: manifest.json. With one: manifest.json if it has that digest, else `<hex>.manifest.json`. */
  async getManifest(digest?: Digest): Promise<ManifestBlob> {
    this.top ??= this.loadTop();
    const top = await this.top;
    if (digest === undefined || digest === top.digest) return top;
    const what = `${this.name}: manifest ${shortDigest(digest)}`;
    const bytes = await readSmall(this.storage, `${digestHex(digest)}.manifest.json`, maxManifestBytes, what);
    if (bytes === undefined) throw new LayoutError(`${what}: not in the directory`);
    const actual = sha256Digest(bytes);
    if (actual !== digest) throw new DigestMismatchError(what, digest, actual);
    return { bytes, digest: actual, mediaType: manifestMediaType(undefined, bytes) };
  }

  getBlob(desc: Descriptor, opts: BlobOptions = {}): Promise<Readable> {
    const what = `${this.name}: ${blobKind(desc)} ${shortDigest(desc.digest)}`;
    return readVerifiedBlob(this.storage, digestHex(desc.digest), desc, what, opts);
  }

  close(): Promise<void> {
    return this.storage.close();
  }
}

/** Opens `dir` as a `dir:` image copy; nothing is read before the first getManifest(). */
export function openDirSource(dir: string): DirSource {
  if (dir === '') throw new SourceSpecError('"dir:": missing path');
  return new DirSource(DirectoryStorage.open('dir', dir, 'directory'));
}
