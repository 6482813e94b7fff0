/**
 * Short-name resolution, following containers/image pkg/shortnames
 * (Resolve, parseUnnormalizedShortName) and containers-registries.conf(5):
 *
 * - a name whose first component is not a registry host (no "." or ":" and
 *   not "localhost") is short: "debian", "library/debian:12";
 * - a short name that is an `[aliases]` key resolves to the alias, keeping
 *   the tag or digest the user wrote;
 * - otherwise each `unqualified-search-registries` entry gives a candidate.
 *   One candidate is unambiguous. With more, `short-name-mode` decides:
 *   `enforcing` (the default) would prompt on a terminal; ocisnap never
 *   prompts (an OS updater runs unattended), so it refuses and lists the
 *   candidates, as containers/image does without a TTY. `permissive` and
 *   `disabled` try every candidate in order.
 */
import { UsageError } from '../errors.js';
import { formatReference, parseReference } from '../oci/reference.js';
import type { Digest, ImageReference } from '../oci/types.js';
import type { RegistriesConf } from '../policy/registries-conf.js';

export type ShortNameConf = Pick<RegistriesConf, 'aliases' | 'unqualifiedSearchRegistries' | 'shortNameMode' | 'files'>;

export interface ShortNameResolution {
  /** Fully qualified references to try, in order (at least one). */
  candidates: ImageReference[];
  /** What the user wrote without tag or digest, when it was a short name. */
  shortName?: string;
  /** containers/image Resolved.Description: how a short name was resolved, for the user. */
  description?: string;
}

/** A short name that cannot be resolved: no alias and no search registries, or a bad alias. */
export class ShortNameError extends UsageError {}

/** A short name with several candidates in `enforcing` mode. */
export class AmbiguousShortNameError extends ShortNameError {
  constructor(
    readonly shortName: string,
    readonly candidates: ImageReference[],
    origin: string,
  ) {
    super(
      `short name "${shortName}" is ambiguous: the unqualified-search registries (${origin}) give ` +
        `${candidates.map(formatReference).join(', ')}; use a fully qualified reference or add an [aliases] entry ` +
        '(short-name-mode "enforcing" never guesses)',
    );
  }
}

interface WrittenName {
  /** The name as written, without tag or digest. */
  name: string;
  tag?: string;
  digest?: Digest;
}

/** Splits what the user wrote into name, tag and digest (after parseReference has validated it). */
function splitWritten(input: string): WrittenName {
  let rest = input;
  const out: WrittenName = { name: '' };
  const at = rest.indexOf('@');
  if (at !== -1) {
    out.digest = rest.slice(at + 1) as Digest;
    rest = rest.slice(0, at);
  }
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    out.tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
  }
  out.name = rest;
  return out;
}

/**
 * Whether `input` (a reference without transport) is a short name: its first
 * path component is not a registry (shortnames.parseUnnormalizedShortName).
 */
export function isShortName(input: string): boolean {
  const { name } = splitWritten(input);
  const slash = name.indexOf('/');
  if (slash === -1) return true;
  const first = name.slice(0, slash);
  return !/[.:]/.test(first) && first !== 'localhost';
}

function withTagAndDigest(ref: ImageReference, written: WrittenName): ImageReference {
  const out: ImageReference = { registry: ref.registry, repository: ref.repository };
  // reference.TagNameOnly: "latest" only when neither a tag nor a digest was given.
  if (written.tag !== undefined) out.tag = written.tag;
  if (written.digest !== undefined) out.digest = written.digest;
  if (written.tag === undefined && written.digest === undefined) out.tag = 'latest';
  return out;
}

function origin(conf: ShortNameConf): string {
  return conf.files.length > 0 ? conf.files.join(', ') : 'no registries.conf found';
}

/** Resolves `input` (no transport prefix) to the references to pull, in order. */
export function resolveShortName(input: string, conf: ShortNameConf): ShortNameResolution {
  // Validates the grammar (a malformed name fails here with its own message).
  const normalized = parseReference(input);
  if (!isShortName(input)) return { candidates: [normalized] };

  const written = splitWritten(input);
  const shortName = written.name;
  const alias = conf.aliases[shortName];
  if (alias !== undefined) {
    // containers-registries.conf(5): an alias value is a fully qualified name without tag or digest.
    const value = splitWritten(alias);
    if (isShortName(alias) || value.tag !== undefined || value.digest !== undefined) {
      throw new ShortNameError(
        `alias "${shortName}" = "${alias}" (${origin(conf)}): the value must be a fully qualified name without tag or digest`,
      );
    }
    const target = parseReference(alias);
    return {
      candidates: [withTagAndDigest(target, written)],
      shortName,
      description: `Resolved "${shortName}" as an alias (${origin(conf)})`,
    };
  }

  const registries = conf.unqualifiedSearchRegistries;
  if (registries.length === 0) {
    throw new ShortNameError(
      conf.files.length > 0
        ? `short name "${shortName}" did not resolve to an alias and no unqualified-search registries are defined in ${origin(conf)}; use a fully qualified reference`
        : `short name "${shortName}" did not resolve to an alias and no containers-registries.conf(5) was found; use a fully qualified reference`,
    );
  }
  const candidates = registries.map((r) => parseReference(`${r}/${input}`));
  const mode = conf.shortNameMode ?? 'enforcing';
  if (candidates.length > 1 && mode === 'enforcing') {
    throw new AmbiguousShortNameError(shortName, candidates, origin(conf));
  }
  return {
    candidates,
    shortName,
    description: `Resolving "${shortName}" using unqualified-search registries (${origin(conf)})`,
  };
}
