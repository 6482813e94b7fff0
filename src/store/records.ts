/**
 * The JSON records of containers/storage, with its exact field names
 * (layers.go Layer, images.go Image, containers.go Container, layers.go
 * layerMountPoint). Parsing validates the fields ocisnap uses and keeps every
 * other field as it was, so records written by podman round-trip unchanged.
 */
import { OcisnapError } from '../errors.js';
import { isoTime } from '../iso-time.js';

/** pkg/archive Compression values as stored in `compression`. */
export const compressionCode = { none: 0, bzip2: 1, gzip: 2, xz: 3, zstd: 4 } as const;
export type LayerCompression = keyof typeof compressionCode;

export interface LayerRecord {
  id: string;
  names?: string[];
  parent?: string;
  metadata?: string;
  mountlabel?: string;
  /** RFC 3339 time. */
  created?: string;
  'compressed-diff-digest'?: string;
  'compressed-size'?: number;
  /** The layer's DiffID. */
  'diff-digest'?: string;
  'diff-size'?: number;
  compression?: number;
  uidset?: number[];
  gidset?: number[];
  /** `incomplete: true` marks a layer being created or deleted (layers.go incompleteFlag). */
  flags?: Record<string, unknown>;
  uidmap?: unknown[];
  gidmap?: unknown[];
  'big-data-names'?: string[];
}

export interface ImageRecord {
  /** The config digest's hex for images pulled by containers/image. */
  id: string;
  /** Digest of the manifest the image was found by. */
  digest?: string;
  names?: string[];
  'names-history'?: string[];
  /** Top layer ID. */
  layer?: string;
  'mapped-layers'?: string[];
  metadata?: string;
  'big-data-names'?: string[];
  'big-data-sizes'?: Record<string, number>;
  'big-data-digests'?: Record<string, string>;
  created?: string;
  flags?: Record<string, unknown>;
}

export interface ContainerRecord {
  id: string;
  names?: string[];
  image: string;
  layer: string;
}

export interface MountpointRecord {
  id: string;
  path: string;
  count: number;
}

/** A containers/storage JSON file is not what it must be. */
export class StoreCorruptError extends OcisnapError {
  constructor(
    readonly file: string,
    why: string,
  ) {
    super(`${file}: ${why}`);
  }
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

// IDs become path components (subvolumes/<id>, btrfs-images/<id>/): refuse anything that could escape.
const safeId = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

class Checker {
  constructor(
    private readonly file: string,
    private readonly where: string,
    private readonly obj: Json,
  ) {}

  fail(field: string, why: string): never {
    throw new StoreCorruptError(this.file, `${this.where}: field "${field}" ${why}`);
  }

  id(field: string): void {
    const v = this.obj[field];
    if (typeof v !== 'string' || !safeId.test(v)) this.fail(field, 'is not a valid ID');
  }

  optId(field: string): void {
    if (this.obj[field] !== undefined && this.obj[field] !== '') this.id(field);
  }

  optString(field: string): void {
    const v = this.obj[field];
    if (v !== undefined && typeof v !== 'string') this.fail(field, 'is not a string');
  }

  optNumber(field: string): void {
    const v = this.obj[field];
    if (v !== undefined && (typeof v !== 'number' || !Number.isFinite(v))) this.fail(field, 'is not a number');
  }

  optStrings(field: string, ids = false): void {
    const v = this.obj[field];
    if (v === undefined || v === null) return;
    if (!Array.isArray(v) || !v.every((s) => typeof s === 'string' && (!ids || safeId.test(s)))) {
      this.fail(field, ids ? 'is not a list of IDs' : 'is not a list of strings');
    }
  }

  optNumbers(field: string): void {
    const v = this.obj[field];
    if (v === undefined || v === null) return;
    if (!Array.isArray(v) || !v.every((n) => typeof n === 'number')) this.fail(field, 'is not a list of numbers');
  }

  optMap(field: string, valueType: 'string' | 'number' | 'any'): void {
    const v = this.obj[field];
    if (v === undefined || v === null) return;
    if (!isObject(v)) this.fail(field, 'is not an object');
    if (valueType !== 'any' && !Object.values(v).every((x) => typeof x === valueType)) {
      this.fail(field, `has a value that is not a ${valueType}`);
    }
  }
}

function parseArray(file: string, text: string): Json[] {
  // An empty file is an empty store (layers.go Load accepts len(data) == 0).
  if (text.trim() === '') return [];
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new StoreCorruptError(file, `not valid JSON (${err instanceof Error ? err.message : String(err)})`);
  }
  if (value === null) return [];
  if (!Array.isArray(value)) throw new StoreCorruptError(file, 'is not a JSON array');
  return value.map((entry, i) => {
    if (!isObject(entry)) throw new StoreCorruptError(file, `entry ${i} is not an object`);
    return entry;
  });
}

export function parseLayers(file: string, text: string): LayerRecord[] {
  return parseArray(file, text).map((obj, i) => {
    const c = new Checker(file, `layer ${i}`, obj);
    c.id('id');
    c.optStrings('names');
    c.optId('parent');
    for (const f of ['metadata', 'mountlabel', 'created', 'compressed-diff-digest', 'diff-digest']) c.optString(f);
    for (const f of ['compressed-size', 'diff-size', 'compression']) c.optNumber(f);
    c.optNumbers('uidset');
    c.optNumbers('gidset');
    c.optMap('flags', 'any');
    c.optStrings('big-data-names');
    return obj as unknown as LayerRecord;
  });
}

export function parseImages(file: string, text: string): ImageRecord[] {
  return parseArray(file, text).map((obj, i) => {
    const c = new Checker(file, `image ${i}`, obj);
    c.id('id');
    for (const f of ['digest', 'metadata', 'created']) c.optString(f);
    c.optStrings('names');
    c.optStrings('names-history');
    c.optId('layer');
    c.optStrings('mapped-layers', true);
    c.optStrings('big-data-names');
    c.optMap('big-data-sizes', 'number');
    c.optMap('big-data-digests', 'string');
    c.optMap('flags', 'any');
    return obj as unknown as ImageRecord;
  });
}

export function parseContainers(file: string, text: string): ContainerRecord[] {
  return parseArray(file, text).map((obj, i) => {
    const c = new Checker(file, `container ${i}`, obj);
    c.id('id');
    c.optStrings('names');
    c.optString('image');
    c.optString('layer');
    return { ...obj, image: (obj.image as string | undefined) ?? '', layer: (obj.layer as string | undefined) ?? '' } as ContainerRecord;
  });
}

export function parseMountpoints(file: string, text: string): MountpointRecord[] {
  return parseArray(file, text).map((obj, i) => {
    const c = new Checker(file, `mount ${i}`, obj);
    c.optString('id');
    c.optString('path');
    c.optNumber('count');
    return { id: String(obj.id ?? ''), path: String(obj.path ?? ''), count: Number(obj.count ?? 0) };
  });
}

export function isIncomplete(layer: LayerRecord): boolean {
  return layer.flags?.incomplete === true;
}

/**
 * The digests an image can be found by (images.go recomputeDigests): its
 * `digest`, then the digests of big-data items whose key starts with "manifest".
 */
export function imageDigests(image: ImageRecord): string[] {
  const out = new Set<string>();
  if (image.digest) out.add(image.digest);
  for (const [key, d] of Object.entries(image['big-data-digests'] ?? {})) {
    if (key.startsWith('manifest')) out.add(d);
  }
  return [...out];
}

/** Go's RFC 3339 form of a time (encoding/json of time.Time), in UTC. */
export function formatTime(date: Date): string {
  return isoTime(date);
}

// Field order of the Go structs, which encoding/json follows; unknown fields go last.
const layerFieldOrder = [
  'id', 'names', 'parent', 'metadata', 'mountlabel', 'created', 'compressed-diff-digest', 'compressed-size',
  'diff-digest', 'diff-size', 'compression', 'uidset', 'gidset', 'flags', 'uidmap', 'gidmap', 'big-data-names',
];
const imageFieldOrder = [
  'id', 'digest', 'names', 'names-history', 'layer', 'mapped-layers', 'metadata', 'big-data-names',
  'big-data-sizes', 'big-data-digests', 'created', 'flags',
];

function ordered<T extends object>(record: T, order: string[]): T {
  const src = record as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const key of [...order, ...Object.keys(src).filter((k) => !order.includes(k))]) {
    if (src[key] !== undefined) out[key] = src[key];
  }
  return out as T;
}

export function serializeLayers(layers: LayerRecord[]): string {
  return JSON.stringify(layers.map((l) => ordered(l, layerFieldOrder)));
}

export function serializeImages(images: ImageRecord[]): string {
  return JSON.stringify(images.map((i) => ordered(i, imageFieldOrder)));
}
