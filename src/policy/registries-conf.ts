/**
 * containers-registries.conf(5), version 2, with its drop-in directory,
 * following containers/image pkg/sysregistriesv2/system_registries_v2.go:
 * postProcessRegistries (validation, prefix defaults), parseLocation,
 * refMatchingPrefix / refMatchingSubdomainPrefix / FindRegistry (longest
 * prefix on a path boundary, `*.example.com` wildcards), rewriteReference and
 * PullSourcesFromReference (prefix rewritten to location; pull-from-mirror),
 * updateWithConfigurationFrom (drop-ins override by prefix and top-level key).
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parse, TomlError } from 'smol-toml';
import { UsageError } from '../errors.js';
import { isRegistryHost, isRepositoryPath } from '../oci/reference.js';
import type { ImageReference } from '../oci/types.js';

export const defaultRegistriesConfPath = '/etc/containers/registries.conf';
export const defaultRegistriesConfDir = '/etc/containers/registries.conf.d';

export type PullFromMirror = 'all' | 'digest-only' | 'tag-only';
export type ShortNameMode = 'enforcing' | 'permissive' | 'disabled';

export interface MirrorConf {
  location: string;
  insecure: boolean;
  pullFromMirror: PullFromMirror;
}

export interface RegistryConf {
  /** What references this entry applies to: "host[:port][/path]" or "*.example.com". */
  prefix: string;
  /** Where those references really are ('' only for a wildcard prefix: unchanged). */
  location: string;
  insecure: boolean;
  blocked: boolean;
  mirrors: MirrorConf[];
}

export interface RegistriesConf {
  registries: RegistryConf[];
  unqualifiedSearchRegistries: string[];
  shortNameMode?: ShortNameMode;
  /** Short-name aliases ("fedora" → "registry.fedoraproject.org/fedora"). */
  aliases: Record<string, string>;
  /** `credential-helpers`; undefined = the default, containers-auth.json only. */
  credentialHelpers?: string[];
  /** The files read, in order (for messages). */
  files: string[];
}

export interface RegistryLocation {
  insecure: boolean;
  blocked: boolean;
  /** The reference's "host[:port]/repository" after rewriting the matched prefix to the location. */
  location: string;
  /** Mirrors to try first, in order, already filtered by pull-from-mirror for this reference; locations rewritten. */
  mirrors: Array<{ location: string; insecure: boolean; pullFromMirror: PullFromMirror }>;
}

/** A registries.conf file is malformed or uses something ocisnap does not support. */
export class RegistriesConfError extends UsageError {}

/**
 * Reads the main file and the drop-ins (`*.conf`, lexical order; each later
 * file overrides earlier ones by prefix and by top-level key). Missing files
 * and a missing directory are an empty configuration.
 */
export async function loadRegistriesConf(opts: { path?: string; dropInDir?: string } = {}): Promise<RegistriesConf> {
  const mainPath = opts.path ?? defaultRegistriesConfPath;
  const dir = opts.dropInDir ?? defaultRegistriesConfDir;
  // A file named by the caller must exist; the default one may be missing
  // (sysregistriesv2 tryUpdatingCache).
  const required = opts.path !== undefined ? mainPath : undefined;
  const files: string[] = [mainPath];
  try {
    const names = (await readdir(dir)).filter((n) => n.endsWith('.conf')).sort();
    files.push(...names.map((n) => join(dir, n)));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new RegistriesConfError(`cannot read registries.conf directory ${dir}: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }

  const conf: RegistriesConf = { registries: [], unqualifiedSearchRegistries: [], aliases: {}, files: [] };
  const byPrefix = new Map<string, RegistryConf>();
  for (const file of files) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && file !== required) continue;
      throw new RegistriesConfError(`cannot read ${file}: ${(err as Error).message}`, { cause: err });
    }
    const part = parseRegistriesConf(text, file);
    conf.files.push(file);
    for (const r of part.registries) byPrefix.set(r.prefix, r);
    if (part.unqualifiedSearchRegistries !== undefined) conf.unqualifiedSearchRegistries = part.unqualifiedSearchRegistries;
    if (part.shortNameMode !== undefined) conf.shortNameMode = part.shortNameMode;
    if (part.credentialHelpers !== undefined) conf.credentialHelpers = part.credentialHelpers;
    Object.assign(conf.aliases, part.aliases);
  }
  conf.registries = [...byPrefix.values()];
  return conf;
}

export interface ParsedFile {
  registries: RegistryConf[];
  unqualifiedSearchRegistries?: string[];
  shortNameMode?: ShortNameMode;
  credentialHelpers?: string[];
  aliases: Record<string, string>;
}

const topLevelKeys = new Set([
  'unqualified-search-registries',
  'short-name-mode',
  'credential-helpers',
  'additional-layer-store-auth-helper',
  'aliases',
  'registry',
]);
const registryKeys = new Set(['prefix', 'location', 'insecure', 'blocked', 'mirror-by-digest-only', 'mirror']);
const mirrorKeys = new Set(['location', 'insecure', 'pull-from-mirror']);
const pullFromMirrorValues = new Set<string>(['all', 'digest-only', 'tag-only']);
const shortNameModes = new Set<string>(['enforcing', 'permissive', 'disabled']);

/** Parses one file's text; `file` names it in errors. Exported for tests and tools. */
export function parseRegistriesConf(text: string, file: string): ParsedFile {
  const fail = (why: string): never => {
    throw new RegistriesConfError(`${file}: ${why}`);
  };
  let doc: Record<string, unknown>;
  try {
    doc = parse(text) as Record<string, unknown>;
  } catch (err) {
    if (err instanceof TomlError) {
      const first = err.message.split('\n').find((l) => l.trim() !== '') ?? 'invalid TOML';
      fail(`line ${err.line}: ${first}`);
    }
    throw err;
  }
  if ('registries' in doc) {
    fail(
      'the version 1 format ([registries.search], [registries.insecure], [registries.block]) is not supported; use version 2 (unqualified-search-registries and [[registry]] tables, see containers-registries.conf(5))',
    );
  }
  for (const key of Object.keys(doc)) {
    if (!topLevelKeys.has(key)) fail(`unknown key "${key}"`);
  }

  const out: ParsedFile = { registries: [], aliases: {} };
  const search = doc['unqualified-search-registries'];
  if (search !== undefined) {
    out.unqualifiedSearchRegistries = stringArray(search, '"unqualified-search-registries"', fail).map((entry) => {
      const host = parseLocation(entry, '"unqualified-search-registries"', fail);
      if (!isRegistryHost(host)) {
        fail(`"unqualified-search-registries": ${JSON.stringify(entry)} is not a registry host[:port]`);
      }
      return host;
    });
  }
  const mode = doc['short-name-mode'];
  if (mode !== undefined) {
    if (typeof mode !== 'string' || !shortNameModes.has(mode)) {
      fail(`"short-name-mode" must be "enforcing", "permissive" or "disabled", got ${JSON.stringify(mode)}`);
    }
    out.shortNameMode = mode as ShortNameMode;
  }
  const helpers = doc['credential-helpers'];
  if (helpers !== undefined) out.credentialHelpers = stringArray(helpers, '"credential-helpers"', fail);
  const layerStoreHelper = doc['additional-layer-store-auth-helper'];
  if (layerStoreHelper !== undefined && typeof layerStoreHelper !== 'string') {
    fail('"additional-layer-store-auth-helper" must be a string');
  }
  const aliases = doc.aliases;
  if (aliases !== undefined) {
    if (!isTable(aliases)) fail('[aliases] must be a table');
    for (const [k, v] of Object.entries(aliases as Record<string, unknown>)) {
      if (typeof v !== 'string') fail(`alias "${k}" must be a string`);
      out.aliases[k] = v as string;
    }
  }

  const registries = doc.registry;
  if (registries !== undefined) {
    if (!Array.isArray(registries)) fail('"registry" must be an array of tables ([[registry]])');
    const byLocation = new Map<string, RegistryConf>();
    const seen = new Set<string>();
    (registries as unknown[]).forEach((r, i) => {
      const reg = parseRegistry(r, `[[registry]] #${i + 1}`, fail);
      // postProcessRegistries: one location (or wildcard prefix) must not be
      // both secure and insecure, or both blocked and not.
      const key = reg.location || reg.prefix;
      const other = byLocation.get(key);
      if (other !== undefined && (other.insecure !== reg.insecure || other.blocked !== reg.blocked)) {
        fail(`registry "${key}" is defined more than once with conflicting "insecure" or "blocked" settings`);
      }
      byLocation.set(key, reg);
      // A repeated prefix is ignored, the first one wins (as containers/image,
      // which stopped rejecting it to keep existing configurations working).
      if (seen.has(reg.prefix)) return;
      seen.add(reg.prefix);
      out.registries.push(reg);
    });
  }
  return out;
}

function parseRegistry(value: unknown, where: string, fail: (why: string) => never): RegistryConf {
  if (!isTable(value)) fail(`${where} must be a table`);
  const t = value as Record<string, unknown>;
  for (const key of Object.keys(t)) {
    if (key === 'pull-from-mirror') fail(`${where}: "pull-from-mirror" belongs in [[registry.mirror]], not in [[registry]]`);
    if (!registryKeys.has(key)) fail(`${where}: unknown key "${key}"`);
  }
  const location = parseLocation(optString(t, 'location', where, fail) ?? '', where, fail);
  const rawPrefix = optString(t, 'prefix', where, fail);
  let prefix: string;
  if (rawPrefix === undefined || rawPrefix === '') {
    if (location === '') fail(`${where}: both "location" and "prefix" are unset`);
    prefix = location;
  } else {
    prefix = parseLocation(rawPrefix, where, fail);
    if (prefix.includes('*') && !/^\*\.[^*/:@]+$/.test(prefix)) {
      fail(`${where}: invalid prefix "${prefix}": a wildcard prefix must look like *.example.com`);
    }
    if (!prefix.startsWith('*.') && location === '') {
      fail(`${where}: "location" is unset and prefix "${prefix}" is not of the form *.example.com`);
    }
  }
  const w = `${where} (prefix "${prefix}")`;
  const digestOnly = optBool(t, 'mirror-by-digest-only', w, fail) ?? false;
  const mirrors: MirrorConf[] = [];
  const rawMirrors = t.mirror;
  if (rawMirrors !== undefined) {
    if (!Array.isArray(rawMirrors)) fail(`${w}: "mirror" must be an array of tables ([[registry.mirror]])`);
    (rawMirrors as unknown[]).forEach((m, j) => {
      const mw = `${w} mirror #${j + 1}`;
      if (!isTable(m)) fail(`${mw} must be a table`);
      const mt = m as Record<string, unknown>;
      for (const key of Object.keys(mt)) if (!mirrorKeys.has(key)) fail(`${mw}: unknown key "${key}"`);
      const mloc = parseLocation(optString(mt, 'location', mw, fail) ?? '', mw, fail);
      if (mloc === '') fail(`${mw}: "location" is unset`);
      const pfm = optString(mt, 'pull-from-mirror', mw, fail);
      if (pfm !== undefined && !pullFromMirrorValues.has(pfm)) {
        fail(`${mw}: "pull-from-mirror" must be "all", "digest-only" or "tag-only", got "${pfm}"`);
      }
      if (digestOnly && pfm !== undefined) {
        fail(`${mw}: "pull-from-mirror" cannot be combined with the registry's "mirror-by-digest-only"`);
      }
      mirrors.push({
        location: mloc,
        insecure: optBool(mt, 'insecure', mw, fail) ?? false,
        pullFromMirror: digestOnly ? 'digest-only' : ((pfm as PullFromMirror | undefined) ?? 'all'),
      });
    });
  }
  return {
    prefix,
    location,
    insecure: optBool(t, 'insecure', w, fail) ?? false,
    blocked: optBool(t, 'blocked', w, fail) ?? false,
    mirrors,
  };
}

/** sysregistriesv2 parseLocation: trailing slashes dropped; URL schemes refused. */
function parseLocation(input: string, where: string, fail: (why: string) => never): string {
  const trimmed = input.replace(/\/+$/, '');
  if (/^https?:\/\//.test(trimmed)) fail(`${where}: invalid location "${input}": URL schemes are not supported`);
  return trimmed;
}

/**
 * The length of `prefix` if it applies to `name` ("host[:port]/repo"), else -1
 * (sysregistriesv2 refMatchingPrefix). A plain prefix must end at a path
 * boundary; `*.example.com` matches any subdomain's host.
 */
export function prefixMatchLength(name: string, prefix: string): number {
  if (prefix.startsWith('*.')) {
    const suffix = prefix.slice(1); // ".example.com"
    const at = name.indexOf(suffix);
    if (at === -1 || name.slice(0, at).includes('/')) return -1;
    const end = at + suffix.length;
    if (end === name.length || ':/@'.includes(name[end]!)) return end;
    return -1;
  }
  if (name === prefix) return prefix.length;
  // containers/image also accepts ':' and '@' here (so "example.com" matches
  // "example.com:5000", which it calls unintended); we accept only a path
  // boundary, since names here carry no tag or digest.
  if (name.startsWith(prefix) && name[prefix.length] === '/') return prefix.length;
  return -1;
}

/** Where `ref` really is, per the longest matching [[registry]] prefix. */
export function registryFor(conf: RegistriesConf, ref: ImageReference): RegistryLocation {
  const name = `${ref.registry}/${ref.repository}`;
  let best: RegistryConf | undefined;
  let bestLength = -1;
  for (const r of conf.registries) {
    if (prefixMatchLength(name, r.prefix) !== -1 && r.prefix.length > bestLength) {
      best = r;
      bestLength = r.prefix.length;
    }
  }
  if (best === undefined) return { insecure: false, blocked: false, location: name, mirrors: [] };
  const rest = name.slice(prefixMatchLength(name, best.prefix));
  const rewrite = (location: string): string => {
    if (location === '') return name;
    const rewritten = location + rest;
    // e.g. a wildcard prefix matched up to a port (":5000/os") and a location replaced the host.
    const slash = rewritten.indexOf('/');
    if (slash === -1 || !isRegistryHost(rewritten.slice(0, slash)) || !isRepositoryPath(rewritten.slice(slash + 1))) {
      throw new RegistriesConfError(
        `registries.conf: [[registry]] prefix "${best.prefix}" with location "${location}" rewrites ${name} to "${rewritten}", which is not a valid HOST/REPOSITORY`,
      );
    }
    return rewritten;
  };
  // PullSourcesFromReference: digest-only mirrors only for digests, tag-only only for tags.
  const byDigest = ref.digest !== undefined;
  const mirrors = best.mirrors
    .filter((m) => m.pullFromMirror === 'all' || (m.pullFromMirror === 'digest-only') === byDigest)
    .map((m) => ({ location: rewrite(m.location), insecure: m.insecure, pullFromMirror: m.pullFromMirror }));
  return { insecure: best.insecure, blocked: best.blocked, location: rewrite(best.location), mirrors };
}

function isTable(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date);
}

function optString(t: Record<string, unknown>, key: string, where: string, fail: (why: string) => never): string | undefined {
  const v = t[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'string') fail(`${where}: "${key}" must be a string`);
  return v as string;
}

function optBool(t: Record<string, unknown>, key: string, where: string, fail: (why: string) => never): boolean | undefined {
  const v = t[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'boolean') fail(`${where}: "${key}" must be true or false`);
  return v as boolean;
}

function stringArray(v: unknown, what: string, fail: (why: string) => never): string[] {
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) fail(`${what} must be an array of strings`);
  return v as string[];
}
