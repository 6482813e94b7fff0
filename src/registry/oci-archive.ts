/**
 * `oci-archive:FILE[:TAG]`: an OCI image layout inside an uncompressed tar
 * (what `skopeo copy … oci-archive:FILE` writes: containers/image
 * oci/archive/oci_dest.go tars the layout directory uncompressed). The tar is
 * never extracted: its headers are indexed once and blobs are served from
 * their byte ranges in the file. Only regular-file members are served, so
 * symlinks and hardlinks in the archive cannot point a blob elsewhere.
 */
import { open, type FileHandle } from 'node:fs/promises';
import { resolve } from 'node:path';
import { Readable } from 'node:stream';
import { LayoutError, SourceSpecError } from './errors.js';
import { LayoutSource, type LayoutStorage } from './layout.js';
import { indexTar, normalizeMemberName, type TarMember } from './tar-index.js';

class ArchiveStorage implements LayoutStorage {
  readonly name: string;
  private closed = false;

  constructor(
    file: string,
    private readonly fh: FileHandle,
    private readonly members: Map<string, TarMember>,
  ) {
    this.name = `oci-archive:${file}`;
  }

  async open(path: string): Promise<{ stream: Readable; size: number } | undefined> {
    if (this.closed) throw new LayoutError(`${this.name}: source is closed`);
    const m = this.members.get(normalizeMemberName(path));
    if (m === undefined) return undefined;
    if (m.type !== 'file') throw new LayoutError(`${this.name}: ${path} is a ${m.type} in the archive, not a regular file; refused`);
    // An empty range is not expressible with start/end (end is inclusive).
    const stream =
      m.size === 0
        ? Readable.from([])
        : this.fh.createReadStream({ start: m.offset, end: m.offset + m.size - 1, autoClose: false });
    return { stream, size: m.size };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.fh.close();
  }
}

/** Opens and indexes the archive; the tag (if any) is looked up on the first getManifest(). */
export async function openOciArchive(file: string, tag: string | undefined): Promise<LayoutSource> {
  const abs = resolve(file);
  let fh: FileHandle;
  try {
    fh = await open(abs, 'r');
  } catch (err) {
    throw new SourceSpecError(`oci-archive:${abs}: cannot open the archive: ${(err as Error).message}`, { cause: err });
  }
  try {
    if (!(await fh.stat()).isFile()) throw new SourceSpecError(`oci-archive:${abs}: not a regular file`);
    const members = await indexTar(fh, `oci-archive:${abs}`);
    return new LayoutSource(new ArchiveStorage(abs, fh, members), tag);
  } catch (err) {
    await fh.close();
    throw err;
  }
}
