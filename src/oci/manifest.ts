/**
 * Parsing and validating manifests, indexes and image configs from outside
 * (image-spec v1.1 manifest.md, image-index.md, descriptor.md, config.md;
 * Docker image-manifest-v2-2). Every field ocisnap reads is checked here by
 * hand; unknown fields are ignored and do not reach the typed result.
 */
import { UntrustedInputError } from '../errors.js';
import { parseDigest } from './digest.js';
import { MediaType } from './mediatypes.js';
import type { Descriptor, Digest, ImageConfig, ImageIndex, ImageManifest, Platform } from './types.js';

/** containers/image internal/iolimits maxManifestBodySize. */
export const maxManifestBytes = 4 * 1024 * 1024;
/** containers/image internal/iolimits maxConfigBodySize. */
export const maxConfigBytes = 4 * 1024 * 1024;

type Json = Record<string, unknown>;

const manifestTypes = new Set<string>([MediaType.ociManifest, MediaType.dockerManifest]);
const indexTypes = new Set<string>([MediaType.ociIndex, MediaType.dockerManifestList]);
const schema1Types = new Set<string>([MediaType.dockerSchema1, MediaType.dockerSchema1Signed]);

function schema1Error(what: string): UntrustedInputError {
  return new UntrustedInputError(
    `${what}: schema 1 manifests are deprecated and not supported; rebuild or re-push the image with a current tool (docker, podman, buildah, skopeo) to get a schema 2 or OCI manifest`,
  );
}

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Decodes UTF-8 JSON from outside into a top-level object. */
function parseJsonObject(bytes: Uint8Array, limit: number, what: string): Json {
  if (bytes.length > limit) {
    throw new UntrustedInputError(`${what}: ${bytes.length} bytes is larger than the ${limit}-byte limit`);
  }
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (err) {
    const why = err instanceof TypeError ? 'not valid UTF-8' : 'not valid JSON';
    throw new UntrustedInputError(`${what}: ${why}`, { cause: err });
  }
  if (!isObject(value)) throw new UntrustedInputError(`${what}: not a JSON object`);
  return value;
}

/** The media type part of a Content-Type header, lowercased, parameters dropped. */
function mediaTypeOfHeader(contentType: string | undefined): string | undefined {
  if (contentType === undefined) return undefined;
  const t = contentType.split(';')[0]!.trim().toLowerCase();
  return t === '' ? undefined : t;
}

function optString(o: Json, key: string, what: string): string | undefined {
  const v = o[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw new UntrustedInputError(`${what}: "${key}" must be a string`);
  return v;
}

function reqString(o: Json, key: string, what: string): string {
  const v = optString(o, key, what);
  if (v === undefined) throw new UntrustedInputError(`${what}: "${key}" is missing`);
  return v;
}

function optStringArray(o: Json, key: string, what: string, allowNull = false): string[] | undefined {
  const v = o[key];
  if (v === undefined || (allowNull && v === null)) return undefined;
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) {
    throw new UntrustedInputError(`${what}: "${key}" must be an array of strings`);
  }
  return v as string[];
}

function optStringMap(o: Json, key: string, what: string, allowNull = false): Record<string, string> | undefined {
  const v = o[key];
  if (v === undefined || (allowNull && v === null)) return undefined;
  if (!isObject(v) || !Object.values(v).every((s) => typeof s === 'string')) {
    throw new UntrustedInputError(`${what}: "${key}" must be an object of string values`);
  }
  // A fresh object without a prototype chain from outside.
  return Object.fromEntries(Object.entries(v as Record<string, string>));
}

function parsePlatformField(v: unknown, what: string): Platform {
  if (!isObject(v)) throw new UntrustedInputError(`${what}: "platform" must be an object`);
  const p: Platform = {
    os: reqString(v, 'os', `${what} platform`),
    architecture: reqString(v, 'architecture', `${what} platform`),
  };
  const variant = optString(v, 'variant', `${what} platform`);
  if (variant !== undefined && variant !== '') p.variant = variant;
  const osVersion = optString(v, 'os.version', `${what} platform`);
  if (osVersion !== undefined) p['os.version'] = osVersion;
  const osFeatures = optStringArray(v, 'os.features', `${what} platform`);
  if (osFeatures !== undefined) p['os.features'] = osFeatures;
  return p;
}

/** descriptor.md: mediaType, digest and size are required; size is a non-negative integer. */
function parseDescriptor(v: unknown, what: string): Descriptor {
  if (!isObject(v)) throw new UntrustedInputError(`${what}: not a JSON object`);
  const mediaType = reqString(v, 'mediaType', what);
  if (mediaType === '') throw new UntrustedInputError(`${what}: "mediaType" is empty`);
  const digest: Digest = parseDigest(v.digest, what);
  const size = v.size;
  if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0) {
    throw new UntrustedInputError(`${what}: "size" must be a non-negative integer, got ${JSON.stringify(size)}`);
  }
  const d: Descriptor = { mediaType, digest, size };
  const urls = optStringArray(v, 'urls', what);
  if (urls !== undefined) d.urls = urls;
  const annotations = optStringMap(v, 'annotations', what);
  if (annotations !== undefined) d.annotations = annotations;
  if (v.platform !== undefined) d.platform = parsePlatformField(v.platform, what);
  const artifactType = optString(v, 'artifactType', what);
  if (artifactType !== undefined) d.artifactType = artifactType;
  return d;
}

/**
 * The media type of a document whose body has no `mediaType` (OCI before
 * 1.0.2 did not require it); as containers/image manifest.GuessMIMEType.
 */
function guessMediaType(doc: Json): string | undefined {
  if (isObject(doc.config)) {
    return doc.config.mediaType === MediaType.dockerConfig ? MediaType.dockerManifest : MediaType.ociManifest;
  }
  if (Array.isArray(doc.manifests)) return MediaType.ociIndex;
  return undefined;
}

/**
 * Parses a manifest or index. The kind comes from the Content-Type header
 * and the body's `mediaType`; when both name a manifest type they must agree.
 * A generic header (application/json, text/plain: some registries and CDNs
 * send these) defers to the body. `what` names the document in errors.
 */
export function parseManifestDocument(
  bytes: Uint8Array,
  contentType: string | undefined,
  what: string,
): ImageManifest | ImageIndex {
  const headerType = mediaTypeOfHeader(contentType);
  if (headerType !== undefined && schema1Types.has(headerType)) throw schema1Error(what);
  const doc = parseJsonObject(bytes, maxManifestBytes, what);

  if (doc.schemaVersion === 1) throw schema1Error(what);
  const bodyType = optString(doc, 'mediaType', what);
  if (bodyType !== undefined && schema1Types.has(bodyType)) throw schema1Error(what);
  if (doc.schemaVersion !== 2) {
    throw new UntrustedInputError(`${what}: "schemaVersion" must be 2, got ${JSON.stringify(doc.schemaVersion)}`);
  }
  // image-spec manifest.md / image-index.md: a document with both "manifests"
  // and "config"/"layers" is ambiguous (CVE-2021-41190); refuse it.
  if (doc.manifests !== undefined && (doc.config !== undefined || doc.layers !== undefined)) {
    throw new UntrustedInputError(`${what}: ambiguous document: has both "manifests" and "config"/"layers"`);
  }

  const knownHeader = headerType !== undefined && (manifestTypes.has(headerType) || indexTypes.has(headerType));
  if (bodyType !== undefined && bodyType !== '' && !manifestTypes.has(bodyType) && !indexTypes.has(bodyType)) {
    throw new UntrustedInputError(`${what}: unsupported manifest media type "${bodyType}"`);
  }
  if (knownHeader && bodyType && bodyType !== headerType) {
    throw new UntrustedInputError(
      `${what}: Content-Type "${headerType}" contradicts the document's mediaType "${bodyType}"`,
    );
  }
  const guessed = guessMediaType(doc);
  if (knownHeader && !bodyType && guessed !== undefined && indexTypes.has(guessed) !== indexTypes.has(headerType)) {
    throw new UntrustedInputError(
      `${what}: Content-Type "${headerType}" contradicts the document, which looks like ${indexTypes.has(guessed) ? 'an index' : 'a manifest'}`,
    );
  }
  const mediaType = bodyType || (knownHeader ? headerType : guessed);
  if (mediaType === undefined) {
    throw new UntrustedInputError(`${what}: neither a manifest nor an index: no mediaType, "config" or "manifests"`);
  }
  const annotations = optStringMap(doc, 'annotations', what);

  if (indexTypes.has(mediaType)) {
    if (!Array.isArray(doc.manifests)) throw new UntrustedInputError(`${what}: "manifests" must be an array`);
    const manifests = doc.manifests.map((m, i) => parseDescriptor(m, `${what}: manifests[${i}]`));
    const index: ImageIndex = { kind: 'index', schemaVersion: 2, mediaType, manifests };
    if (annotations !== undefined) index.annotations = annotations;
    return index;
  }

  if (doc.config === undefined) throw new UntrustedInputError(`${what}: "config" is missing`);
  const config = parseDescriptor(doc.config, `${what}: config`);
  if (!Array.isArray(doc.layers)) throw new UntrustedInputError(`${what}: "layers" must be an array`);
  const layers = doc.layers.map((l, i) => parseDescriptor(l, `${what}: layers[${i}]`));
  const manifest: ImageManifest = { kind: 'manifest', schemaVersion: 2, mediaType, config, layers };
  if (doc.subject !== undefined) manifest.subject = parseDescriptor(doc.subject, `${what}: subject`);
  if (annotations !== undefined) manifest.annotations = annotations;
  return manifest;
}

/** Parses an image config (config.md); Docker writes null for empty fields, treated as absent. */
export function parseImageConfig(bytes: Uint8Array, what: string): ImageConfig {
  const doc = parseJsonObject(bytes, maxConfigBytes, what);
  const architecture = reqString(doc, 'architecture', what);
  const os = reqString(doc, 'os', what);
  if (architecture === '' || os === '') throw new UntrustedInputError(`${what}: "os" and "architecture" must not be empty`);

  const rootfs = doc.rootfs;
  if (!isObject(rootfs)) throw new UntrustedInputError(`${what}: "rootfs" is missing`);
  if (rootfs.type !== 'layers') {
    throw new UntrustedInputError(`${what}: rootfs.type must be "layers", got ${JSON.stringify(rootfs.type)}`);
  }
  if (!Array.isArray(rootfs.diff_ids)) throw new UntrustedInputError(`${what}: rootfs.diff_ids must be an array`);
  const diffIds = rootfs.diff_ids.map((d, i) => parseDigest(d, `${what}: rootfs.diff_ids[${i}]`));

  const config: ImageConfig = { architecture, os, rootfs: { type: 'layers', diff_ids: diffIds } };
  const variant = optString(doc, 'variant', what);
  if (variant !== undefined && variant !== '') config.variant = variant;
  const created = optString(doc, 'created', what);
  if (created !== undefined) config.created = created;

  if (doc.config !== undefined && doc.config !== null) {
    if (!isObject(doc.config)) throw new UntrustedInputError(`${what}: "config" must be an object`);
    const c = doc.config;
    const w = `${what}: config`;
    const out: NonNullable<ImageConfig['config']> = {};
    const env = optStringArray(c, 'Env', w, true);
    if (env !== undefined) out.Env = env;
    const entrypoint = optStringArray(c, 'Entrypoint', w, true);
    if (entrypoint !== undefined) out.Entrypoint = entrypoint;
    const cmd = optStringArray(c, 'Cmd', w, true);
    if (cmd !== undefined) out.Cmd = cmd;
    const workingDir = optString(c, 'WorkingDir', w);
    if (workingDir !== undefined) out.WorkingDir = workingDir;
    const user = optString(c, 'User', w);
    if (user !== undefined) out.User = user;
    const labels = optStringMap(c, 'Labels', w, true);
    if (labels !== undefined) out.Labels = labels;
    config.config = out;
  }

  if (doc.history !== undefined && doc.history !== null) {
    if (!Array.isArray(doc.history)) throw new UntrustedInputError(`${what}: "history" must be an array`);
    config.history = doc.history.map((h, i) => {
      const w = `${what}: history[${i}]`;
      if (!isObject(h)) throw new UntrustedInputError(`${w}: not a JSON object`);
      const entry: NonNullable<ImageConfig['history']>[number] = {};
      const hc = optString(h, 'created', w);
      if (hc !== undefined) entry.created = hc;
      const by = optString(h, 'created_by', w);
      if (by !== undefined) entry.created_by = by;
      const comment = optString(h, 'comment', w);
      if (comment !== undefined) entry.comment = comment;
      if (h.empty_layer !== undefined) {
        if (typeof h.empty_layer !== 'boolean') throw new UntrustedInputError(`${w}: "empty_layer" must be a boolean`);
        entry.empty_layer = h.empty_layer;
      }
      return entry;
    });
  }
  return config;
}
