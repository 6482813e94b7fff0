/**
 * containers-registries.d(5): where GPG "simple signing" signatures of
 * docker images are stored (the "lookaside" storage), and whether sigstore
 * attachments are used. Follows containers/image docker/registries_d.go:
 *
 * - every `*.yaml` file of the directory is read; `default-docker` may be
 *   defined in one file only, each `docker:` namespace in one file only;
 * - a namespace is looked up like a policy scope (full identity, then parent
 *   namespaces), then `default-docker`, then the built-in
 *   file:///var/lib/containers/sigstore;
 * - `lookaside` (or the legacy `sigstore`) is the read location;
 *   `lookaside-staging`/`sigstore-staging` are for writing only;
 * - signature N (1-based) of manifest D of repository "ns/repo" is at
 *   `<base>/ns/repo@sha256=<hex>/signature-N` (docs/signature-protocols.md).
 */
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createRequire } from 'node:module';
import { UsageError, describeError } from '../errors.js';
import { digestHex } from '../oci/digest.js';
import type { Digest, ImageReference } from '../oci/types.js';
import { formatReference } from '../oci/reference.js';
import { dockerScopes } from './policy-json.js';
import { isPlainObject } from './simple-signing.js';
import { defaultRegistriesDPath } from './defaults.js';

export { defaultRegistriesDPath };
/** builtinDefaultLookasideStorageDir for root. */
export const builtinLookaside = 'file:///var/lib/containers/sigstore';

export interface LookasideNamespace {
  lookaside?: string;
  lookasideStaging?: string;
  useSigstoreAttachments?: boolean;
}

export interface RegistriesD {
  defaultDocker?: LookasideNamespace;
  docker: Map<string, LookasideNamespace>;
  /** Files read, for messages. */
  files: string[];
}

export class RegistriesDError extends UsageError {}

/**
 * The YAML parser, loaded when a registries.d file is first parsed (most
 * hosts have none, and every command reading the policy would pay for it).
 */
const parseYaml = (text: string, opts: { uniqueKeys: boolean }): unknown =>
  (createRequire(import.meta.url)('yaml') as typeof import('yaml')).parse(text, opts);

/** Reads a registries.d directory; a missing directory is an empty configuration. */
export async function loadRegistriesD(dir: string = defaultRegistriesDPath): Promise<RegistriesD> {
  let names: string[];
  try {
    names = (await readdir(dir, { withFileTypes: true }))
      .filter((e) => !e.isDirectory() && e.name.endsWith('.yaml'))
      .map((e) => e.name)
      .sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { docker: new Map(), files: [] };
    throw new RegistriesDError(`cannot read registries.d directory ${dir}: ${describeError(err)}`);
  }
  const conf: RegistriesD = { docker: new Map(), files: [] };
  const origin = new Map<string, string>();
  let defaultOrigin: string | undefined;
  for (const name of names) {
    const file = join(dir, name);
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      throw new RegistriesDError(`cannot read ${file}: ${describeError(err)}`);
    }
    const one = parseRegistriesDFile(text, file);
    conf.files.push(file);
    if (one.defaultDocker !== undefined) {
      if (defaultOrigin !== undefined) {
        throw new RegistriesDError(`registries.d: default-docker is defined in both ${defaultOrigin} and ${file}`);
      }
      conf.defaultDocker = one.defaultDocker;
      defaultOrigin = file;
    }
    for (const [ns, value] of one.docker) {
      const prev = origin.get(ns);
      if (prev !== undefined) throw new RegistriesDError(`registries.d: namespace ${JSON.stringify(ns)} is defined in both ${prev} and ${file}`);
      origin.set(ns, file);
      conf.docker.set(ns, value);
    }
  }
  return conf;
}

/** Parses one registries.d YAML file. Unknown keys are ignored, as by containers/image's yaml.Unmarshal. */
export function parseRegistriesDFile(text: string, file: string): RegistriesD {
  const fail: (reason: string) => never = (reason) => {
    throw new RegistriesDError(`${file}: ${reason}`);
  };
  let doc: unknown;
  try {
    doc = parseYaml(text, { uniqueKeys: true });
  } catch (err) {
    fail(`not valid YAML: ${describeError(err).split('\n')[0] ?? ''}`);
  }
  const conf: RegistriesD = { docker: new Map(), files: [file] };
  if (doc === null || doc === undefined) return conf;
  if (!isPlainObject(doc)) return fail('the top level is not a mapping');
  const ns = (v: unknown, where: string): LookasideNamespace => {
    if (v === null || v === undefined) return {};
    if (!isPlainObject(v)) return fail(`${where} is not a mapping`);
    const out: LookasideNamespace = {};
    const str = (k: string): string | undefined => {
      const x = v[k];
      if (x === undefined || x === null) return undefined;
      if (typeof x !== 'string') return fail(`${where}.${k} is not a string`);
      return x === '' ? undefined : x;
    };
    const lookaside = str('lookaside') ?? str('sigstore');
    const staging = str('lookaside-staging') ?? str('sigstore-staging');
    if (lookaside !== undefined) out.lookaside = checkUrl(lookaside, `${where}.lookaside`, fail);
    if (staging !== undefined) out.lookasideStaging = staging;
    const use = v['use-sigstore-attachments'];
    if (use !== undefined && use !== null) {
      if (typeof use !== 'boolean') fail(`${where}.use-sigstore-attachments is not a boolean`);
      out.useSigstoreAttachments = use as boolean;
    }
    return out;
  };
  if (doc['default-docker'] !== undefined && doc['default-docker'] !== null) {
    conf.defaultDocker = ns(doc['default-docker'], 'default-docker');
  }
  const docker = doc['docker'];
  if (docker !== undefined && docker !== null) {
    if (!isPlainObject(docker)) fail('"docker" is not a mapping');
    for (const [k, v] of Object.entries(docker as Record<string, unknown>)) conf.docker.set(k, ns(v, `docker[${JSON.stringify(k)}]`));
  }
  return conf;
}

function checkUrl(s: string, where: string, fail: (r: string) => never): string {
  let u: URL;
  try {
    u = new URL(s);
  } catch {
    return fail(`${where}: ${JSON.stringify(s)} is not a URL (file:///path or http(s)://host/path)`);
  }
  if (!['file:', 'http:', 'https:'].includes(u.protocol)) fail(`${where}: unsupported URL scheme ${u.protocol} in ${s}`);
  return s;
}

/** The namespace entries that apply to `ref`, most specific first, then default-docker. */
function candidates(conf: RegistriesD, ref: ImageReference): LookasideNamespace[] {
  const out: LookasideNamespace[] = [];
  // registries_d.go signatureTopLevel: identity, then PolicyConfigurationNamespaces.
  for (const scope of dockerScopes(formatReference(ref))) {
    const ns = conf.docker.get(scope);
    if (ns !== undefined) out.push(ns);
  }
  if (conf.defaultDocker !== undefined) out.push(conf.defaultDocker);
  return out;
}

/** The lookaside base URL for reading signatures of `ref`'s repository: `<top>/<repository path>`. */
export function lookasideBaseFor(conf: RegistriesD, ref: ImageReference): URL {
  const top = candidates(conf, ref).find((n) => n.lookaside !== undefined)?.lookaside ?? builtinLookaside;
  const base = new URL(top);
  // Go's url.Parse keeps an empty path for "http://host"; WHATWG URL makes it "/".
  const path = base.pathname === '/' && !top.endsWith('/') ? '' : base.pathname;
  base.pathname = `${path}/${ref.repository}`;
  return base;
}

/** `<base>@sha256=<hex>/signature-<index>` (index is 1-based). */
export function lookasideSignatureUrl(base: URL, manifestDigest: Digest, index: number): URL {
  const u = new URL(base.href);
  u.pathname = `${base.pathname}@sha256=${digestHex(manifestDigest)}/signature-${index}`;
  return u;
}

/** registries_d.go useSigstoreAttachments: the first entry that sets it, default false. */
export function useSigstoreAttachments(conf: RegistriesD, ref: ImageReference): boolean {
  return candidates(conf, ref).find((n) => n.useSigstoreAttachments !== undefined)?.useSigstoreAttachments ?? false;
}
