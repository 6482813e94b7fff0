/**
 * containers-policy.json(5): parse, validate, and find the requirements that
 * apply to an image, following containers/image signature/policy_config.go
 * (paranoid JSON: unknown fields and duplicate keys are errors, every
 * requirement list non-empty) and signature/policy_eval.go
 * requirementsForImageRef (the transport's scopes from most to least
 * specific, then the transport's "" scope, then `default`).
 *
 * A policy that cannot be parsed, or that asks for something ocisnap does not
 * implement (Fulcio/Rekor keyless sigstore, X.509 signedBy), is an error:
 * never a silent "accept".
 */
import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, normalize, resolve } from 'node:path';
import { UsageError, describeError } from '../errors.js';
import { parseReference } from '../oci/reference.js';
import { defaultSignedIdentity, parseSignedIdentity, type SignedIdentity } from './identity.js';
import { isPlainObject, parseStrictJson } from './simple-signing.js';
import { defaultPolicyPath } from './defaults.js';

export { defaultPolicyPath };

/** Public keys as the policy names them: files (keyPath/keyPaths) or inline data (keyData/keyDatas). */
export type KeySource = { kind: 'paths'; paths: string[] } | { kind: 'data'; data: Buffer[] };

export type PolicyRequirement =
  | { type: 'insecureAcceptAnything' }
  | { type: 'reject' }
  | { type: 'signedBy'; keyType: 'GPGKeys'; keys: KeySource; signedIdentity: SignedIdentity }
  | { type: 'sigstoreSigned'; keys: KeySource; signedIdentity: SignedIdentity };

export type RequirementType = PolicyRequirement['type'];

export interface Policy {
  /** The file it came from (for messages), or a description like "<inline policy>". */
  source: string;
  default: PolicyRequirement[];
  /** transport name → scope → requirements (scope "" = the transport's default). */
  transports: Map<string, Map<string, PolicyRequirement[]>>;
}

/** The policy file is malformed. Names the file. */
export class InvalidPolicyError extends UsageError {
  constructor(
    readonly source: string,
    readonly reason: string,
  ) {
    super(`invalid signature policy ${source}: ${reason}`);
  }
}

/** The policy asks for a verification ocisnap does not implement; it is refused, never ignored. */
export class UnsupportedPolicyError extends InvalidPolicyError {}

/** Transports whose scopes are absolute paths (containers/image dir/, oci/layout/, oci/archive/). */
const pathTransports = new Set(['dir', 'oci', 'oci-archive']);
/** Transports whose scopes are docker-reference namespaces. */
const dockerLikeTransports = new Set(['docker', 'atomic']);

export async function loadPolicy(path: string = defaultPolicyPath): Promise<Policy> {
  let bytes: Buffer;
  try {
    bytes = await readFile(path);
  } catch (err) {
    throw new InvalidPolicyError(path, `cannot read: ${describeError(err)}`);
  }
  return parsePolicy(bytes, path);
}

/**
 * Parses a policy. Relative keyPath values are resolved against the policy
 * file's directory (`source` when it is a path), else the working directory.
 */
export function parsePolicy(bytes: Uint8Array | string, source: string): Policy {
  const fail: (reason: string) => never = (reason) => {
    throw new InvalidPolicyError(source, reason);
  };
  const text = typeof bytes === 'string' ? bytes : new TextDecoder('utf-8', { fatal: false }).decode(bytes);
  const doc = parseStrictJson(text, fail);
  if (!isPlainObject(doc)) return fail('the top level is not a JSON object');
  for (const k of Object.keys(doc)) {
    if (k !== 'default' && k !== 'transports') fail(`unknown top-level field ${JSON.stringify(k)}`);
  }
  if (!('default' in doc)) fail('the "default" requirement list is missing');
  const baseDir = isAbsolute(source) ? dirname(source) : process.cwd();
  const ctx = { source, baseDir, fail };
  const policy: Policy = { source, default: parseRequirements(doc['default'], 'default', ctx), transports: new Map() };
  const transports = doc['transports'];
  if (transports !== undefined && transports !== null) {
    if (!isPlainObject(transports)) fail('"transports" is not a JSON object');
    for (const [transport, scopes] of Object.entries(transports)) {
      if (!isPlainObject(scopes)) fail(`transports.${transport} is not a JSON object`);
      const map = new Map<string, PolicyRequirement[]>();
      for (const [scope, reqs] of Object.entries(scopes)) {
        const where = `transports.${transport}[${JSON.stringify(scope)}]`;
        if (scope !== '') {
          const bad = validateScope(transport, scope);
          if (bad !== undefined) fail(`${where}: invalid scope: ${bad}`);
        }
        map.set(scope, parseRequirements(reqs, where, ctx));
      }
      policy.transports.set(transport, map);
    }
  }
  return policy;
}

interface ParseContext {
  source: string;
  baseDir: string;
  fail: (reason: string) => never;
}

/** The transport's ValidatePolicyConfigurationScope, for the transports ocisnap reads. */
function validateScope(transport: string, scope: string): string | undefined {
  if (pathTransports.has(transport)) {
    // containers/image dir/dir_transport.go, oci/layout/oci_transport.go.
    const path = transport === 'dir' ? scope : scope.split(':')[0] ?? '';
    if (!path.startsWith('/')) return 'must be an absolute path';
    if (path === '/') return 'use the transport default scope "" instead of "/"';
    if (normalize(path).replace(/\/$/, '') !== path) return `not in canonical form, perhaps ${normalize(path).replace(/\/$/, '')}`;
    return undefined;
  }
  if (dockerLikeTransports.has(transport)) {
    // containers/image accepts any string here; catch the mistakes that would never match.
    if (/\s/.test(scope)) return 'contains whitespace';
    if (scope.includes('://')) return 'a scope is "host[:port][/namespace…][:tag|@digest]" without a "docker://" prefix';
    if (scope.startsWith('*.') && (scope.includes('/') || scope.includes(':'))) {
      return 'a "*." wildcard scope names a domain only (no port, no path)';
    }
  }
  return undefined;
}

function parseRequirements(value: unknown, where: string, ctx: ParseContext): PolicyRequirement[] {
  if (!Array.isArray(value)) return ctx.fail(`${where} is not a list of requirements`);
  if (value.length === 0) ctx.fail(`${where}: the requirement list is empty`);
  return value.map((v, i) => parseRequirement(v, `${where}[${i}]`, ctx));
}

function parseRequirement(value: unknown, where: string, ctx: ParseContext): PolicyRequirement {
  const { fail } = ctx;
  if (!isPlainObject(value)) return fail(`${where} is not a JSON object`);
  const type = value['type'];
  const allow = (fields: string[]): void => {
    for (const k of Object.keys(value)) {
      if (!fields.includes(k)) fail(`${where} (${String(type)}): unknown field ${JSON.stringify(k)}`);
    }
  };
  const identity = (): SignedIdentity =>
    value['signedIdentity'] === undefined
      ? defaultSignedIdentity
      : parseSignedIdentity(value['signedIdentity'], (r) => fail(`${where} (${String(type)}): ${r}`));
  switch (type) {
    case 'insecureAcceptAnything':
    case 'reject':
      allow(['type']);
      return { type };
    case 'signedBy': {
      allow(['type', 'keyType', 'keyPath', 'keyPaths', 'keyData', 'signedIdentity']);
      const keyType = value['keyType'];
      if (keyType === 'X509Certificates' || keyType === 'signedByGPGKeys' || keyType === 'signedByX509CAs') {
        throw new UnsupportedPolicyError(ctx.source, `${where} (signedBy): keyType ${keyType} is not supported; use "GPGKeys"`);
      }
      if (keyType !== 'GPGKeys') fail(`${where} (signedBy): invalid keyType ${JSON.stringify(keyType)}`);
      return { type, keyType: 'GPGKeys', keys: parseKeySource(value, where, 'signedBy', ctx, false), signedIdentity: identity() };
    }
    case 'sigstoreSigned': {
      allow([
        'type',
        'keyPath',
        'keyPaths',
        'keyData',
        'keyDatas',
        'fulcio',
        'rekorPublicKeyPath',
        'rekorPublicKeyPaths',
        'rekorPublicKeyData',
        'rekorPublicKeyDatas',
        'pki',
        'signedIdentity',
      ]);
      const keyless = ['fulcio', 'pki', 'rekorPublicKeyPath', 'rekorPublicKeyPaths', 'rekorPublicKeyData', 'rekorPublicKeyDatas'].filter(
        (k) => k in value,
      );
      if (keyless.length > 0) {
        throw new UnsupportedPolicyError(
          ctx.source,
          `${where} (sigstoreSigned): ${keyless.join(', ')} (Fulcio/Rekor keyless or PKI verification) is not supported; use keyPath, keyPaths or keyData`,
        );
      }
      return { type, keys: parseKeySource(value, where, 'sigstoreSigned', ctx, true), signedIdentity: identity() };
    }
    case undefined:
      return fail(`${where}: requirement without a "type"`);
    default:
      return fail(`${where}: unknown policy requirement type ${JSON.stringify(type)}`);
  }
}

/** keyData is Go []byte in JSON: standard base64 with padding. */
function decodeBase64(v: unknown, what: string, ctx: ParseContext): Buffer {
  if (typeof v !== 'string' || v.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(v)) {
    return ctx.fail(`${what} must be a base64 string`);
  }
  return Buffer.from(v, 'base64');
}

function parseKeySource(
  value: Record<string, unknown>,
  where: string,
  type: string,
  ctx: ParseContext,
  allowKeyDatas: boolean,
): KeySource {
  const present = ['keyPath', 'keyPaths', 'keyData', ...(allowKeyDatas ? ['keyDatas'] : [])].filter((k) => k in value);
  if (present.length !== 1) {
    ctx.fail(`${where} (${type}): exactly one of keyPath, keyPaths, keyData${allowKeyDatas ? ', keyDatas' : ''} must be given${present.length > 1 ? ` (got ${present.join(', ')})` : ''}`);
  }
  const path = (p: unknown, what: string): string => {
    if (typeof p !== 'string' || p === '') return ctx.fail(`${where} (${type}): ${what} must be a non-empty string`);
    return resolve(ctx.baseDir, p);
  };
  const list = (k: string): unknown[] => {
    const v = value[k];
    if (!Array.isArray(v) || v.length === 0) return ctx.fail(`${where} (${type}): ${k} must be a non-empty list`);
    return v;
  };
  switch (present[0]) {
    case 'keyPath':
      return { kind: 'paths', paths: [path(value['keyPath'], 'keyPath')] };
    case 'keyPaths':
      return { kind: 'paths', paths: list('keyPaths').map((p, i) => path(p, `keyPaths[${i}]`)) };
    case 'keyData':
      return { kind: 'data', data: [decodeBase64(value['keyData'], `${where} (${type}): keyData`, ctx)] };
    default:
      return { kind: 'data', data: list('keyDatas').map((d, i) => decodeBase64(d, `${where} (${type}): keyDatas[${i}]`, ctx)) };
  }
}

/**
 * containers/image's PolicyConfigurationIdentity and PolicyConfigurationNamespaces
 * for an image: the scope names to try, most specific first (the transport's ""
 * and the global default come after these).
 *
 * - docker (docker/policyconfiguration + internal/policyconfiguration/naming.go):
 *   "host/ns/repo:tag" or "host/ns/repo@digest", then "host/ns/repo", "host/ns",
 *   "host", then "*.domain" wildcards of the host without its port.
 * - dir: the absolute path, then its parent directories (not "/").
 * - oci / oci-archive: "path:image" (when an image name is given), "path", then parents.
 */
export function policyScopesFor(transport: string, reference: string): string[] {
  if (dockerLikeTransports.has(transport)) return dockerScopes(reference);
  if (transport === 'dir') return [reference, ...parentDirs(reference)];
  if (transport === 'oci' || transport === 'oci-archive') {
    const colon = reference.indexOf(':');
    if (colon === -1) return [reference, ...parentDirs(reference)];
    const dir = reference.slice(0, colon);
    return [reference, dir, ...parentDirs(dir)];
  }
  return [reference];
}

function parentDirs(path: string): string[] {
  const res: string[] = [];
  let p = path;
  for (;;) {
    const slash = p.lastIndexOf('/');
    if (slash <= 0) break;
    p = p.slice(0, slash);
    res.push(p);
  }
  return res;
}

/** The docker identity + namespaces; `reference` is parsed and normalized first. */
export function dockerScopes(reference: string): string[] {
  const ref = parseReference(reference);
  const name = `${ref.registry}/${ref.repository}`;
  // A reference with both tag and digest is refused by containers/image's docker
  // transport; we keep the digest, which is what the content is checked against.
  const identity = ref.digest !== undefined ? `${name}@${ref.digest}` : `${name}:${ref.tag ?? 'latest'}`;
  const res = [identity];
  let n = name;
  for (;;) {
    res.push(n);
    const slash = n.lastIndexOf('/');
    if (slash === -1) break;
    n = n.slice(0, slash);
  }
  // naming.go: strip the port, then "*.rest" for every dot.
  let host = n.startsWith('[') ? '' : (n.split(':')[0] ?? '');
  for (;;) {
    const dot = host.indexOf('.');
    if (dot === -1) break;
    host = host.slice(dot + 1);
    res.push(`*.${host}`);
  }
  return res;
}

export interface ScopeMatch {
  transport: string;
  /** The matched scope key ("" = the transport's default); undefined = the global `default`. */
  scope: string | undefined;
  requirements: PolicyRequirement[];
}

/** signature/policy_eval.go requirementsForImageRef. */
export function requirementsFor(policy: Policy, transport: string, reference: string): ScopeMatch {
  const scopes = policy.transports.get(transport);
  if (scopes !== undefined) {
    for (const name of policyScopesFor(transport, reference)) {
      const reqs = scopes.get(name);
      if (reqs !== undefined) return { transport, scope: name, requirements: reqs };
    }
    const reqs = scopes.get('');
    if (reqs !== undefined) return { transport, scope: '', requirements: reqs };
  }
  return { transport, scope: undefined, requirements: policy.default };
}

/** `transports.docker["localhost:5000/os"]` or `default`, for messages. */
export function describeScope(m: { transport: string; scope: string | undefined }): string {
  return m.scope === undefined ? 'default' : `transports.${m.transport}[${JSON.stringify(m.scope)}]`;
}
