/**
 * Docker image references: the grammar of distribution/reference
 * (containers/image docker/reference/regexp.go) and the normalization of
 * containers/image docker/reference/normalize.go (splitDockerDomain):
 *
 *   reference := name [ ":" tag ] [ "@" digest ]
 *   name      := [ domain "/" ] path-component ( "/" path-component )*
 *   domain    := host [ ":" port ]   host := domain-name | "[" ipv6 "]"
 *   path-component := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
 *   tag       := [\w][\w.-]{0,127}
 *
 * Transport prefixes (`docker://`, `oci:`) are not part of a reference; they
 * are handled by src/registry.
 */
import { UsageError } from '../errors.js';
import type { Digest, ImageReference } from './types.js';

const defaultDomain = 'docker.io';
const legacyDefaultDomain = 'index.docker.io';
const officialRepoPrefix = 'library/';
/** distribution/reference NameTotalLengthMax: the whole name, domain included. */
const nameTotalLengthMax = 255;

const domainNameComponent = '(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])';
const domainPattern = new RegExp(
  `^(?:${domainNameComponent}(?:\\.${domainNameComponent})*|\\[[a-fA-F0-9:]+\\])(?::[0-9]+)?$`,
);
const pathComponentPattern = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const tagPattern = /^[\w][\w.-]{0,127}$/;
/** The generic digest grammar, to tell "not a digest" from "a digest we do not accept". */
const anyDigestPattern = /^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$/;
const sha256DigestPattern = /^sha256:[a-f0-9]{64}$/;
/** normalize.go refuses a bare 64-hex string: it looks like an image ID, not a name. */
const identifierPattern = /^[a-f0-9]{64}$/;
const transportPattern = /^([a-z][a-z0-9+.-]*):\/\//i;

/** Whether `host` is a valid registry "host[:port]" (IPv6 in brackets), as the reference grammar's domain. */
export function isRegistryHost(host: string): boolean {
  return domainPattern.test(host);
}

/** Whether `path` is a valid repository path ("org/os"): lowercase components joined by "/". */
export function isRepositoryPath(path: string): boolean {
  return path.split('/').every((c) => pathComponentPattern.test(c));
}

export class InvalidReferenceError extends UsageError {
  constructor(
    readonly input: string,
    readonly reason: string,
  ) {
    super(`invalid image reference ${JSON.stringify(input)}: ${reason}`);
  }
}

/** Parses and normalizes a docker reference ("debian:12", "localhost:5000/os@sha256:…"). */
export function parseReference(input: string): ImageReference {
  const fail = (reason: string): never => {
    throw new InvalidReferenceError(input, reason);
  };
  if (input === '') fail('empty');
  if (input.trim() !== input) fail('leading or trailing whitespace');
  const transport = transportPattern.exec(input);
  if (transport) {
    fail(`"${transport[1]}://" is not part of a reference (no transport or URL scheme here); write HOST/REPOSITORY[:TAG]`);
  }
  if (identifierPattern.test(input)) {
    fail('a 64-character hexadecimal string is an image ID, not a repository name');
  }

  let rest = input;
  let digest: Digest | undefined;
  const at = rest.indexOf('@');
  if (at !== -1) {
    const d = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (sha256DigestPattern.test(d)) digest = d as Digest;
    else if (anyDigestPattern.test(d)) fail(`unsupported digest "${d}": only sha256:<64 lowercase hex> is accepted`);
    else fail(`invalid digest "${d}": expected sha256:<64 lowercase hex>`);
  }

  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!tagPattern.test(tag)) {
      fail(`invalid tag "${tag}": a tag is 1 to 128 characters of [A-Za-z0-9_.-] and cannot start with "." or "-"`);
    }
  }

  if (rest === '') fail('missing repository name');
  // containers/image normalize.go splitDockerDomain: the first component is a
  // registry only if it has a "." or ":" or is "localhost".
  let registry: string;
  let repository: string;
  const slash = rest.indexOf('/');
  const first = slash === -1 ? '' : rest.slice(0, slash);
  if (slash === -1 || (!/[.:]/.test(first) && first !== 'localhost')) {
    registry = defaultDomain;
    repository = rest;
  } else {
    registry = first;
    repository = rest.slice(slash + 1);
  }
  if (!domainPattern.test(registry)) fail(`invalid registry host "${registry}"`);
  if (registry === legacyDefaultDomain) registry = defaultDomain;
  if (repository === '') fail('missing repository name');
  if (repository.toLowerCase() !== repository) fail('repository name must be lowercase');
  for (const component of repository.split('/')) {
    if (component === '') fail('empty path component in repository name');
    if (!pathComponentPattern.test(component)) {
      fail(
        `invalid repository path component "${component}": use lowercase letters and digits, separated by ".", "_", "__" or "-"`,
      );
    }
  }
  if (registry === defaultDomain && !repository.includes('/')) repository = officialRepoPrefix + repository;
  const fullName = `${registry}/${repository}`;
  if (fullName.length > nameTotalLengthMax) {
    fail(`repository name is ${fullName.length} characters long; the limit is ${nameTotalLengthMax}`);
  }

  if (tag === undefined && digest === undefined) tag = 'latest';
  const ref: ImageReference = { registry, repository };
  if (tag !== undefined) ref.tag = tag;
  if (digest !== undefined) ref.digest = digest;
  return ref;
}

/** The fully qualified form: "docker.io/library/debian:12", "host/repo:tag@sha256:…". */
export function formatReference(ref: ImageReference): string {
  let s = `${ref.registry}/${ref.repository}`;
  if (ref.tag !== undefined) s += `:${ref.tag}`;
  if (ref.digest !== undefined) s += `@${ref.digest}`;
  return s;
}

/** The same reference pinned to a digest; the tag, if any, is kept for display. */
export function withDigest(ref: ImageReference, digest: Digest): ImageReference {
  return { ...ref, digest };
}
