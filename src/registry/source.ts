/**
 * Opening an image source from a containers-transports(5) style string:
 * `docker://REF`, `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`, `dir:DIR`, or a
 * bare REF (a registry image, as `podman pull` takes it).
 */
import { parseReference } from '../oci/reference.js';
import { openDirSource } from './dir-source.js';
import { DockerSource } from './docker-source.js';
import { SourceSpecError } from './errors.js';
import { openOciArchive } from './oci-archive.js';
import { openOciLayout } from './oci-layout.js';
import type { ImageSource, SourceOptions } from './types.js';

export type { BlobOptions, ImageSource, ManifestBlob, SourceOptions } from './types.js';

/** Transports of containers-transports(5) that ocisnap does not read, for a clear refusal. */
export const otherTransports = ['containers-storage', 'docker-archive', 'docker-daemon', 'ostree', 'sif', 'tarball'];

/**
 * `PATH[:TAG]` as containers/image splits it (internal/image SplitPathAndImage
 * on Linux): at the first colon, so the path itself cannot contain one.
 */
export function splitPathAndTag(spec: string, rest: string): { path: string; tag: string | undefined } {
  const colon = rest.indexOf(':');
  const path = colon === -1 ? rest : rest.slice(0, colon);
  const tag = colon === -1 ? undefined : rest.slice(colon + 1);
  if (path === '') throw new SourceSpecError(`${JSON.stringify(spec)}: missing path`);
  if (tag !== undefined && (tag === '' || /[\0-\x1f]/.test(tag))) {
    throw new SourceSpecError(`${JSON.stringify(spec)}: empty or malformed tag after ":"`);
  }
  return { path, tag };
}

export async function openSource(spec: string, opts: SourceOptions = {}): Promise<ImageSource> {
  if (spec.startsWith('docker://')) return new DockerSource(parseReference(spec.slice('docker://'.length)), opts);
  if (spec.startsWith('oci-archive:')) {
    const { path, tag } = splitPathAndTag(spec, spec.slice('oci-archive:'.length));
    return openOciArchive(path, tag);
  }
  if (spec.startsWith('oci:')) {
    const { path, tag } = splitPathAndTag(spec, spec.slice('oci:'.length));
    return openOciLayout(path, tag);
  }
  // dir_transport.go ParseReference: everything after "dir:" is the path.
  if (spec.startsWith('dir:')) return openDirSource(spec.slice('dir:'.length));
  const transport = /^([a-z-]+):/.exec(spec)?.[1];
  if (transport !== undefined && otherTransports.includes(transport)) {
    throw new SourceSpecError(
      `${JSON.stringify(spec)}: the ${transport}: transport is not supported; use docker://, oci:, oci-archive: or dir:`,
    );
  }
  return new DockerSource(parseReference(spec), opts);
}

export { resolveImage, type ResolvedImage } from './resolve.js';
