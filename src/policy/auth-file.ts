/**
 * Registry credentials from containers-auth.json(5) files, found and matched
 * the way Podman does (containers/image pkg/docker/config/config.go:
 * getAuthFilePaths, getPathToAuthWithOS, findCredentialsInFile,
 * authKeyLookupOrder, normalizeAuthFileKey, decodeDockerAuth).
 *
 * Credential helpers (`credHelpers`, `credsStore`) are not run: when a file
 * delegates the wanted registry to one, lookup fails loudly instead of
 * silently pulling without credentials.
 */
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { UsageError } from '../errors.js';

export interface Credentials {
  username: string;
  password: string;
  /** An OAuth2 refresh token (`identitytoken`), sent instead of the password when present. */
  identityToken?: string;
}

export interface LookupOptions {
  /** `--authfile`: only this file is read, and it must exist. */
  authFile?: string;
  /** Environment for XDG_RUNTIME_DIR, XDG_CONFIG_HOME, DOCKER_CONFIG, REGISTRY_AUTH_FILE, HOME. */
  env?: NodeJS.ProcessEnv;
  /** The user's home directory (default: env.HOME, else os.homedir()). */
  homeDir?: string;
  /** The uid for /run/containers/UID/auth.json (default: process.getuid()). */
  uid?: number;
}

/** An auth file is unreadable, malformed, or delegates to a credential helper. */
export class AuthFileError extends UsageError {}

interface AuthPath {
  path: string;
  /** ~/.dockercfg: the top level is the map of registries, keyed by registry only. */
  legacyFormat: boolean;
  /** Explicitly named by the user: a missing file is an error. */
  required: boolean;
}

/** The files to search, in order (config.go getAuthFilePaths). */
export function authFilePaths(opts: LookupOptions = {}): string[] {
  return searchPaths(opts).map((p) => p.path);
}

function searchPaths(opts: LookupOptions): AuthPath[] {
  const env = opts.env ?? process.env;
  const home = opts.homeDir ?? env.HOME ?? homedir();
  // Podman's --authfile defaults to $REGISTRY_AUTH_FILE (podman pkg/auth GetDefaultAuthFile).
  const explicit = opts.authFile ?? (env.REGISTRY_AUTH_FILE || undefined);
  if (explicit !== undefined) return [{ path: explicit, legacyFormat: false, required: true }];
  const uid = opts.uid ?? process.getuid?.() ?? 0;
  const paths: AuthPath[] = [];
  const runtimeDir = env.XDG_RUNTIME_DIR;
  paths.push({
    path: runtimeDir ? join(runtimeDir, 'containers/auth.json') : `/run/containers/${uid}/auth.json`,
    legacyFormat: false,
    required: false,
  });
  const configHome = env.XDG_CONFIG_HOME || join(home, '.config');
  paths.push({ path: join(configHome, 'containers/auth.json'), legacyFormat: false, required: false });
  paths.push({
    path: env.DOCKER_CONFIG ? join(env.DOCKER_CONFIG, 'config.json') : join(home, '.docker/config.json'),
    legacyFormat: false,
    required: false,
  });
  paths.push({ path: join(home, '.dockercfg'), legacyFormat: true, required: false });
  return paths;
}

/**
 * Credentials for `registry` ("docker.io", "localhost:5000") and `repository`
 * ("library/debian"), or undefined when no file has any.
 */
export async function lookupCredentials(
  registry: string,
  repository: string,
  opts: LookupOptions = {},
): Promise<Credentials | undefined> {
  for (const p of searchPaths(opts)) {
    const file = await readAuthFile(p);
    if (file === undefined) continue;
    const found = findInFile(file, p, registry, `${registry}/${repository}`);
    if (found !== undefined) return found;
  }
  return undefined;
}

interface AuthEntry {
  auth?: string;
  identitytoken?: string;
}

interface ParsedAuthFile {
  auths: Map<string, AuthEntry>;
  credHelpers: Map<string, string>;
  credsStore?: string;
}

async function readAuthFile(p: AuthPath): Promise<ParsedAuthFile | undefined> {
  let text: string;
  try {
    text = await readFile(p.path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && !p.required) return undefined;
    if (code === 'ENOENT') throw new AuthFileError(`auth file ${p.path} does not exist`, { cause: err });
    throw new AuthFileError(`cannot read auth file ${p.path}: ${code ?? String(err)}`, { cause: err });
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new AuthFileError(`auth file ${p.path} is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
  const bad = (why: string): never => {
    throw new AuthFileError(`auth file ${p.path}: ${why}`);
  };
  if (!isObject(doc)) bad('not a JSON object');
  const top = doc as Record<string, unknown>;
  const authsValue = p.legacyFormat ? top : (top.auths ?? {});
  if (!isObject(authsValue)) bad('"auths" must be an object');
  const auths = new Map<string, AuthEntry>();
  for (const [key, v] of Object.entries(authsValue as Record<string, unknown>)) {
    if (!isObject(v)) bad(`entry "${key}" must be an object`);
    const e = v as Record<string, unknown>;
    const entry: AuthEntry = {};
    for (const field of ['auth', 'identitytoken'] as const) {
      const value = e[field];
      if (value === undefined || value === null) continue;
      if (typeof value !== 'string') bad(`entry "${key}": "${field}" must be a string`);
      entry[field] = value as string;
    }
    auths.set(key, entry);
  }
  const credHelpers = new Map<string, string>();
  if (!p.legacyFormat && top.credHelpers !== undefined) {
    if (!isObject(top.credHelpers)) bad('"credHelpers" must be an object');
    for (const [k, v] of Object.entries(top.credHelpers as Record<string, unknown>)) {
      if (typeof v !== 'string') bad(`credHelpers entry "${k}" must be a string`);
      credHelpers.set(k, v as string);
    }
  }
  const parsed: ParsedAuthFile = { auths, credHelpers };
  if (!p.legacyFormat && typeof top.credsStore === 'string' && top.credsStore !== '') parsed.credsStore = top.credsStore;
  return parsed;
}

function findInFile(file: ParsedAuthFile, p: AuthPath, registry: string, name: string): Credentials | undefined {
  // Helpers are keyed by registry only (config.go findCredentialsInFile).
  const helper = file.credHelpers.get(registry);
  if (helper !== undefined) {
    throw new AuthFileError(
      `auth file ${p.path} sends ${registry} to credential helper "docker-credential-${helper}", which ocisnap does not run; log in with "podman login --authfile" or use --authfile with a plain auth.json`,
    );
  }
  let matched: [string, AuthEntry] | undefined;
  for (const key of lookupOrder(name, registry, p.legacyFormat)) {
    const entry = file.auths.get(key);
    if (entry !== undefined) {
      matched = [key, entry];
      break;
    }
  }
  if (matched === undefined) {
    // Keys written as URLs ("https://index.docker.io/v1/") or with a Docker
    // Hub alias only match after normalization.
    const want = normalizeRegistry(registry);
    for (const [key, entry] of file.auths) {
      if (normalizeAuthKey(key, p.legacyFormat) === want) {
        matched = [key, entry];
        break;
      }
    }
  }
  const creds = matched && decodeEntry(p.path, matched[0], matched[1]);
  if (creds === undefined && file.credsStore !== undefined) {
    // Docker writes an empty entry (or none) and keeps the secret in the store.
    throw new AuthFileError(
      `auth file ${p.path} keeps credentials in credential store "docker-credential-${file.credsStore}", which ocisnap does not run; log in with "podman login --authfile" or use --authfile with a plain auth.json`,
    );
  }
  return creds;
}

/** Most specific first: registry/ns/repo, registry/ns, registry (config.go authKeyLookupOrder). */
function lookupOrder(name: string, registry: string, legacyFormat: boolean): string[] {
  if (legacyFormat) return [registry];
  const keys: string[] = [];
  let key = name;
  for (;;) {
    keys.push(key);
    const slash = key.lastIndexOf('/');
    if (slash === -1) break;
    key = key.slice(0, slash);
  }
  return keys;
}

function normalizeRegistry(registry: string): string {
  return registry === 'docker.io' || registry === 'registry-1.docker.io' ? 'index.docker.io' : registry;
}

function normalizeAuthKey(key: string, legacyFormat: boolean): string {
  let stripped = key.replace(/^https?:\/\//, '');
  if (legacyFormat || stripped !== key) stripped = stripped.split('/')[0]!;
  return normalizeRegistry(stripped);
}

const base64Pattern = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** An entry's credentials; undefined for an empty entry (Docker's credential-helper placeholder). */
function decodeEntry(path: string, key: string, entry: AuthEntry): Credentials | undefined {
  const identityToken = entry.identitytoken || undefined;
  const auth = entry.auth ?? '';
  if (auth === '') return identityToken ? { username: '', password: '', identityToken } : undefined;
  if (!base64Pattern.test(auth)) {
    throw new AuthFileError(`auth file ${path}: entry "${key}": "auth" is not valid base64`);
  }
  const decoded = Buffer.from(auth, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon === -1) {
    // Never echo the decoded text: it is likely a secret.
    throw new AuthFileError(`auth file ${path}: entry "${key}": "auth" must encode "user:password"`);
  }
  const creds: Credentials = {
    username: decoded.slice(0, colon),
    // Trailing NULs appear in some old files (config.go decodeDockerAuth).
    password: decoded.slice(colon + 1).replace(/^\0+|\0+$/g, ''),
  };
  if (identityToken) creds.identityToken = identityToken;
  return creds;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
