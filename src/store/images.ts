/**
 * images.json (containers/storage images.go), containers.json (containers.go)
 * and mountpoints.json (layers.go), plus how a user's "name or ID" finds an
 * image. images.json is read and written only under images.lock.
 */
import { OcisnapError } from '../errors.js';
import { atomicWriteFile } from './atomic.js';
import { readOptional } from './json-file.js';
import type { StoreLayout } from './layout.js';
import type { LockFile } from './lockfile.js';
import {
  imageDigests,
  parseContainers,
  parseImages,
  parseMountpoints,
  serializeImages,
  type ContainerRecord,
  type ImageRecord,
  type MountpointRecord,
} from './records.js';

export async function readImages(layout: StoreLayout): Promise<ImageRecord[]> {
  return parseImages(layout.imagesJson, await readOptional(layout.imagesJson));
}

/** Writes images.json (mode 0600 as images.go Save) and touches images.lock; `lock` must be held for writing. */
export async function writeImages(layout: StoreLayout, lock: LockFile, images: ImageRecord[]): Promise<void> {
  await atomicWriteFile(layout.imagesJson, serializeImages(images), 0o600);
  await lock.touch();
}

export async function readContainers(layout: StoreLayout): Promise<ContainerRecord[]> {
  return parseContainers(layout.containersJson, await readOptional(layout.containersJson));
}

export async function readMountpoints(layout: StoreLayout): Promise<MountpointRecord[]> {
  if (layout.mountpointsJson === undefined) return [];
  return parseMountpoints(layout.mountpointsJson, await readOptional(layout.mountpointsJson));
}

/** Several images match a short name or an ID prefix. */
export class AmbiguousImageError extends OcisnapError {
  constructor(
    readonly query: string,
    readonly candidates: string[],
  ) {
    super(`image "${query}" is ambiguous: it matches ${candidates.map((c) => c.slice(0, 12)).join(', ')}`);
  }
}

const hex64 = /^[a-f0-9]{64}$/;

/** Splits "host/repo:tag@sha256:..." into the repository and whether a tag/digest was given. */
function splitName(name: string): { repo: string; tag?: string; digest?: string } {
  let rest = name;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
  }
  const slash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  let tag: string | undefined;
  if (colon > slash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
  }
  const out: { repo: string; tag?: string; digest?: string } = { repo: rest };
  if (tag !== undefined) out.tag = tag;
  if (digest !== undefined) out.digest = digest;
  return out;
}

function unique(query: string, found: ImageRecord[]): ImageRecord | undefined {
  const ids = [...new Set(found.map((i) => i.id))];
  if (ids.length > 1) throw new AmbiguousImageError(query, ids);
  return found[0];
}

/**
 * Finds an image the way images.go lookup() does (ID, then full name, then a
 * unique ID prefix), extended with what podman users type: "sha256:<id>", a
 * manifest digest, "repo@sha256:<digest>", an implied ":latest", and a short
 * name matching the end of one image's names ("os:1" for "localhost/os:1").
 */
export function lookupImage(images: ImageRecord[], query: string): ImageRecord | undefined {
  const q = query.trim();
  if (q === '') return undefined;
  const byId = images.find((i) => i.id === q);
  if (byId) return byId;
  const byName = images.find((i) => i.names?.includes(q));
  if (byName) return byName;

  if (q.startsWith('sha256:')) {
    const hex = q.slice('sha256:'.length);
    if (hex64.test(hex)) {
      const withId = images.find((i) => i.id === hex);
      if (withId) return withId;
    }
    return unique(q, images.filter((i) => imageDigests(i).includes(q)));
  }

  const { repo, tag, digest } = splitName(q);
  if (digest !== undefined) {
    return unique(
      q,
      images.filter((i) => imageDigests(i).includes(digest) && (i.names ?? []).some((n) => nameMatchesRepo(n, repo))),
    );
  }
  const full = tag === undefined ? `${q}:latest` : q;
  const withLatest = images.find((i) => i.names?.includes(full));
  if (withLatest) return withLatest;
  const shortMatches = images.filter((i) => (i.names ?? []).some((n) => n.endsWith(`/${full}`)));
  if (shortMatches.length > 0) return unique(q, shortMatches);

  if (/^[a-f0-9]{3,63}$/.test(q)) return unique(q, images.filter((i) => i.id.startsWith(q)));
  return undefined;
}

function nameMatchesRepo(name: string, repo: string): boolean {
  const r = splitName(name).repo;
  return r === repo || r.endsWith(`/${repo}`);
}
