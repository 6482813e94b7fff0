/**
 * `signedIdentity` of containers-policy.json(5): which docker reference a
 * signature must claim (critical.identity.docker-reference) for the image
 * being checked. Semantics of containers/image signature/policy_reference_match.go:
 *
 * - matchExact: the image's reference has a tag or digest and the signed
 *   reference is exactly it;
 * - matchRepoDigestOrExact (the default): an image named by digest accepts any
 *   signed reference of the same repository (the digest itself is checked
 *   separately); an image named by tag needs the exact tagged reference;
 * - matchRepository: same repository, any tag/digest;
 * - exactReference {dockerReference}: the signed reference is exactly this one;
 * - exactRepository {dockerRepository}: the signed reference is in this repository;
 * - remapIdentity {prefix, signedPrefix}: the image's reference with `prefix`
 *   replaced by `signedPrefix`, then as matchRepoDigestOrExact (for mirrors).
 *
 * A signed reference that names only a repository (no tag, no digest) matches
 * only the repository-level rules, as in containers/image (IsNameOnly).
 */
import { formatReference, isRegistryHost, isRepositoryPath, parseReference } from '../oci/reference.js';
import { isPlainObject } from './simple-signing.js';

export type SignedIdentity =
  | { type: 'matchExact' }
  | { type: 'matchRepoDigestOrExact' }
  | { type: 'matchRepository' }
  | { type: 'exactReference'; dockerReference: string }
  | { type: 'exactRepository'; dockerRepository: string }
  | { type: 'remapIdentity'; prefix: string; signedPrefix: string };

export const defaultSignedIdentity: SignedIdentity = { type: 'matchRepoDigestOrExact' };

/** A normalized docker reference and whether it named only a repository. */
export interface NamedReference {
  /** "host/repository" */
  name: string;
  /** Fully qualified string form: "host/repo", "host/repo:tag", "host/repo@sha256:…", "host/repo:tag@sha256:…". */
  full: string;
  nameOnly: boolean;
  tagged: boolean;
  digested: boolean;
}

/**
 * Parses a reference as distribution's ParseNormalizedNamed does (no default
 * tag is added). Undefined when it does not parse.
 */
export function parseNamed(input: string): NamedReference | undefined {
  let ref;
  try {
    ref = parseReference(input);
  } catch {
    return undefined;
  }
  const beforeDigest = input.split('@')[0] ?? '';
  const lastComponent = beforeDigest.slice(beforeDigest.lastIndexOf('/') + 1);
  const tagged = lastComponent.includes(':');
  const digested = ref.digest !== undefined;
  const name = `${ref.registry}/${ref.repository}`;
  const full = formatReference({
    registry: ref.registry,
    repository: ref.repository,
    ...(tagged && ref.tag !== undefined && { tag: ref.tag }),
    ...(digested && { digest: ref.digest }),
  });
  return { name, full, nameOnly: !tagged && !digested, tagged, digested };
}

/** validateIdentityRemappingPrefix: "host[:port]" or "host[:port]/namespace…", fully explicit. */
function isRemapPrefix(s: string): boolean {
  if (isRegistryHost(s)) return true;
  const slash = s.indexOf('/');
  if (slash <= 0) return false;
  const host = s.slice(0, slash);
  const path = s.slice(slash + 1);
  // Fully explicit: the first component must be a registry (as splitDockerDomain decides).
  if (!(host.includes('.') || host.includes(':') || host === 'localhost')) return false;
  return isRegistryHost(host) && path !== '' && isRepositoryPath(path);
}

/** Parses a `signedIdentity` object; `fail` throws the caller's policy error with the reason. */
export function parseSignedIdentity(value: unknown, fail: (reason: string) => never): SignedIdentity {
  if (!isPlainObject(value)) return fail('signedIdentity is not a JSON object');
  const type = value['type'];
  const fields = (allowed: string[]): void => {
    for (const k of Object.keys(value)) {
      if (!allowed.includes(k)) fail(`signedIdentity of type ${JSON.stringify(type)} has unknown field ${JSON.stringify(k)}`);
    }
  };
  const str = (k: string): string => {
    const v = value[k];
    if (typeof v !== 'string') return fail(`signedIdentity ${type as string}: "${k}" must be a string`);
    return v;
  };
  switch (type) {
    case 'matchExact':
    case 'matchRepoDigestOrExact':
    case 'matchRepository':
      fields(['type']);
      return { type };
    case 'exactReference': {
      fields(['type', 'dockerReference']);
      const r = str('dockerReference');
      const named = parseNamed(r);
      if (named === undefined || named.nameOnly) {
        fail(`signedIdentity exactReference: dockerReference ${JSON.stringify(r)} is not a tagged or digested reference`);
      }
      return { type, dockerReference: r };
    }
    case 'exactRepository': {
      fields(['type', 'dockerRepository']);
      const r = str('dockerRepository');
      if (parseNamed(r) === undefined) fail(`signedIdentity exactRepository: invalid dockerRepository ${JSON.stringify(r)}`);
      return { type, dockerRepository: r };
    }
    case 'remapIdentity': {
      fields(['type', 'prefix', 'signedPrefix']);
      const prefix = str('prefix');
      const signedPrefix = str('signedPrefix');
      for (const [k, v] of [
        ['prefix', prefix],
        ['signedPrefix', signedPrefix],
      ] as const) {
        if (!isRemapPrefix(v)) fail(`signedIdentity remapIdentity: ${k} ${JSON.stringify(v)} is not "host[:port]" or "host[:port]/namespace"`);
      }
      return { type, prefix, signedPrefix };
    }
    default:
      return fail(`unknown signedIdentity type ${JSON.stringify(type)}`);
  }
}

/** refMatchesPrefix: the prefix ends at a "/", ":" or "@" boundary of `ref`. */
function refMatchesPrefix(ref: string, prefix: string): boolean {
  if (ref.length < prefix.length) return false;
  if (ref.length === prefix.length) return ref === prefix;
  if (!ref.startsWith(prefix)) return false;
  const c = ref[prefix.length];
  return c === '/' || c === ':' || c === '@';
}

function matchRepoDigestOrExact(intended: NamedReference, signature: NamedReference): boolean {
  if (signature.nameOnly) return false;
  if (intended.tagged) return signature.full === intended.full;
  if (intended.digested) return signature.name === intended.name;
  return false;
}

/**
 * Whether a signature claiming `signedReference` is acceptable for an image
 * known as `intendedReference` (undefined when the image has no docker
 * reference, e.g. a dir: copy; then only exactReference/exactRepository can match).
 */
export function identityMatches(
  rule: SignedIdentity,
  intendedReference: string | undefined,
  signedReference: string,
): boolean {
  const signature = parseNamed(signedReference);
  if (signature === undefined) return false;
  switch (rule.type) {
    case 'exactReference': {
      const want = parseNamed(rule.dockerReference);
      return want !== undefined && !want.nameOnly && !signature.nameOnly && want.full === signature.full;
    }
    case 'exactRepository': {
      const want = parseNamed(rule.dockerRepository);
      return want !== undefined && want.name === signature.name;
    }
    default:
      break;
  }
  if (intendedReference === undefined) return false;
  let intended = parseNamed(intendedReference);
  if (intended === undefined) return false;
  switch (rule.type) {
    case 'matchExact':
      return !intended.nameOnly && !signature.nameOnly && intended.full === signature.full;
    case 'matchRepoDigestOrExact':
      return matchRepoDigestOrExact(intended, signature);
    case 'matchRepository':
      return intended.name === signature.name;
    case 'remapIdentity': {
      if (refMatchesPrefix(intended.full, rule.prefix)) {
        intended = parseNamed(rule.signedPrefix + intended.full.slice(rule.prefix.length));
        if (intended === undefined) return false;
      }
      return matchRepoDigestOrExact(intended, signature);
    }
  }
}

/** One-line description of a rule, for explanations. */
export function describeIdentity(rule: SignedIdentity): string {
  switch (rule.type) {
    case 'exactReference':
      return `exactReference ${rule.dockerReference}`;
    case 'exactRepository':
      return `exactRepository ${rule.dockerRepository}`;
    case 'remapIdentity':
      return `remapIdentity ${rule.prefix} -> ${rule.signedPrefix}`;
    default:
      return rule.type;
  }
}
