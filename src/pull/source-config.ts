/**
 * Opens an image source the way the user's container configuration says,
 * as Podman does (containers/image docker/docker_image_src.go newImageSource,
 * pkg/sysregistriesv2, pkg/shortnames):
 *
 * - a short name is resolved by aliases and unqualified-search registries
 *   (short-names.ts); several candidates are tried in order;
 * - registries.conf decides where a registry really is (`location`), whether
 *   it is `blocked`, whether plain HTTP is allowed (`insecure`, per endpoint)
 *   and which mirrors to try first (already filtered by `pull-from-mirror`);
 * - each endpoint (mirrors in order, then the primary location) is tried by
 *   fetching the manifest; the first that answers serves the whole pull,
 *   blobs included; credentials come from auth.json for that endpoint's
 *   registry and repository.
 *
 * The source keeps the user's (qualified) reference as its name: the image
 * is stored, and its signatures checked, under that name, whoever served it.
 */
import { OcisnapError, UsageError, describeError } from '../errors.js';
import { formatReference } from '../oci/reference.js';
import type { ImageReference } from '../oci/types.js';
import { lookupCredentials, type Credentials } from '../policy/auth-file.js';
import { loadRegistriesConf, registryFor, type RegistriesConf } from '../policy/registries-conf.js';
import { DockerSource } from '../registry/docker-source.js';
import { RegistryError, SourceSpecError } from '../registry/errors.js';
import { openSource, otherTransports, splitPathAndTag, type ImageSource, type SourceOptions } from '../registry/source.js';
import { resolveShortName } from './short-names.js';

export interface SourceConfig {
  /** containers-auth.json(5) file to use instead of the default search. */
  authFile?: string;
  /** registries.conf path (default /etc/containers/registries.conf). */
  registriesConf?: string;
  /** registries.conf.d directory (default /etc/containers/registries.conf.d). */
  registriesConfDir?: string;
  /** `--tls-verify=false`: allow plain HTTP / unverified TLS for every endpoint of this pull. */
  tlsVerify?: boolean;
  signal?: AbortSignal;
  /** Retries per registry request and the first backoff delay (SourceOptions); mostly for tests. */
  retries?: number;
  retryBaseDelayMs?: number;
  /**
   * Told, one line each, what the user may want to know: how a short name
   * was resolved, an endpoint that failed before another was tried, and
   * which mirror serves the image.
   */
  onNote?: (message: string) => void;
}

export type SourceTransport = 'docker' | 'dir' | 'oci' | 'oci-archive';

/** The registry endpoint that served the manifest; blobs (and sigstore attachments) come from it too. */
export interface RegistryEndpoint {
  /** Where the image is read from (mirror or primary location), with the user's tag/digest. */
  reference: ImageReference;
  mirror: boolean;
  insecure: boolean;
  credentials?: Credentials;
}

export interface OpenedSource {
  source: ImageSource;
  transport: SourceTransport;
  /**
   * Registry sources: the fully qualified reference the user asked for (short
   * name resolved, before any mirror or location rewrite): the image's name
   * in the store and the identity its signatures must match.
   */
  reference?: ImageReference;
  /** Registry sources: the endpoint whose manifest fetch worked. */
  endpoint?: RegistryEndpoint;
  /** Registry sources served by a mirror: "mirror HOST/REPO", for messages. */
  servedBy?: string;
  /** containers/image Resolved.Description, when a short name was resolved. */
  shortName?: string;
  /** dir:, oci:, oci-archive: the path given (without :TAG). */
  path?: string;
  /** oci:, oci-archive: the image name after the path (`oci:DIR:TAG`), if any. */
  tag?: string;
}

/** The registry (or an endpoint's registry) is `blocked = true` in registries.conf. */
export class BlockedRegistryError extends UsageError {}

export interface EndpointAttempt {
  /** "mirror 127.0.0.1:5001/os", "127.0.0.1:5000/os" */
  label: string;
  error: unknown;
}

/** Every endpoint (mirrors, then the primary) failed; each failure is listed briefly. */
export class EndpointsFailedError extends OcisnapError {
  constructor(
    readonly image: string,
    readonly attempts: EndpointAttempt[],
  ) {
    super(`pulling ${image}: every endpoint failed: ${attempts.map((a) => `[${a.label}: ${briefly(a.error)}]`).join(' ')}`, {
      cause: attempts.at(-1)?.error,
    });
  }
}

/** Every candidate of a short name (permissive/disabled mode) failed. */
export class CandidatesFailedError extends OcisnapError {
  constructor(
    readonly shortName: string,
    readonly attempts: EndpointAttempt[],
  ) {
    super(
      `short name "${shortName}": no candidate could be pulled: ${attempts.map((a) => `[${a.label}: ${briefly(a.error)}]`).join(' ')}`,
      { cause: attempts.at(-1)?.error },
    );
  }
}

/** A configuration error (an unreadable auth.json, a bad registries.conf rewrite) is nobody's endpoint failure. */
function isConfigError(err: unknown): boolean {
  return err instanceof UsageError && !(err instanceof BlockedRegistryError);
}

/** An error without the "pulling IMAGE:" context the list already gives. */
function briefly(err: unknown): string {
  if (err instanceof RegistryError) return `${err.what}: ${err.reason}`;
  if (err instanceof EndpointsFailedError) return err.message.replace(/^pulling \S+: /, '');
  return describeError(err);
}

const localTransports: Array<{ prefix: string; transport: SourceTransport }> = [
  { prefix: 'oci-archive:', transport: 'oci-archive' },
  { prefix: 'oci:', transport: 'oci' },
  { prefix: 'dir:', transport: 'dir' },
];

/**
 * Opens `spec`: `docker://REF`, `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`,
 * `dir:DIR` or a bare reference. A registry source has already fetched its
 * manifest when this returns (that is how an endpoint is chosen).
 */
export async function openConfiguredSource(spec: string, config: SourceConfig = {}): Promise<OpenedSource> {
  const local = localTransports.find((t) => spec.startsWith(t.prefix));
  if (local !== undefined) {
    const rest = spec.slice(local.prefix.length);
    const { path, tag } = local.transport === 'dir' ? { path: rest, tag: undefined } : splitPathAndTag(spec, rest);
    return {
      source: await openSource(spec, { signal: config.signal }),
      transport: local.transport,
      path,
      ...(tag !== undefined && { tag }),
    };
  }
  let name: string;
  if (spec.startsWith('docker://')) {
    name = spec.slice('docker://'.length);
  } else {
    // libimage pull: a transport name before ":" is a transport, except
    // "docker" (so "docker:latest" is an image); refuse the ones we lack.
    const transport = /^([a-z][a-z0-9-]*):/.exec(spec)?.[1];
    if (transport !== undefined && otherTransports.includes(transport)) {
      throw new SourceSpecError(
        `${JSON.stringify(spec)}: the ${transport}: transport is not supported; use docker://, oci:, oci-archive: or dir:`,
      );
    }
    name = spec;
  }

  const conf = await loadRegistriesConf({ path: config.registriesConf, dropInDir: config.registriesConfDir });
  const resolution = resolveShortName(name, conf);
  const note = config.onNote ?? (() => {});
  if (resolution.description !== undefined) note(resolution.description);

  const failures: EndpointAttempt[] = [];
  for (const candidate of resolution.candidates) {
    try {
      const opened = await openRegistryImage(candidate, conf, config, note);
      return resolution.description === undefined ? opened : { ...opened, shortName: resolution.description };
    } catch (err) {
      // A single candidate keeps its own (typed) error, as containers/image does;
      // a configuration error is not one candidate's failure.
      if (resolution.candidates.length === 1 || config.signal?.aborted || isConfigError(err)) throw err;
      failures.push({ label: formatReference(candidate), error: err });
      note(`${formatReference(candidate)}: ${briefly(err)}`);
    }
  }
  throw new CandidatesFailedError(resolution.shortName ?? name, failures);
}

/** `ref` moved to a registries.conf location "host[:port]/repository" (registryFor already rewrote the prefix). */
function atLocation(ref: ImageReference, location: string): ImageReference {
  const slash = location.indexOf('/');
  return { ...ref, registry: location.slice(0, slash), repository: location.slice(slash + 1) };
}

async function openRegistryImage(
  wanted: ImageReference,
  conf: RegistriesConf,
  config: SourceConfig,
  note: (message: string) => void,
): Promise<OpenedSource> {
  const image = formatReference(wanted);
  const where = registryFor(conf, wanted);
  if (where.blocked) {
    throw new BlockedRegistryError(`${image}: registry ${wanted.registry} is blocked in registries.conf (${conf.files.join(', ')})`);
  }
  const endpoints = [
    ...where.mirrors.map((m) => ({ location: m.location, insecure: m.insecure, mirror: true })),
    { location: where.location, insecure: where.insecure, mirror: false },
  ];
  const attempts: EndpointAttempt[] = [];
  for (const ep of endpoints) {
    const physical = atLocation(wanted, ep.location);
    const label = ep.mirror ? `mirror ${ep.location}` : ep.location;
    let source: DockerSource | undefined;
    try {
      // containers/image newDockerClient: an endpoint on a blocked registry is refused too.
      if (ep.location !== `${wanted.registry}/${wanted.repository}` && registryFor(conf, physical).blocked) {
        throw new BlockedRegistryError(`${image}: ${label} is blocked in registries.conf`);
      }
      // Credentials are per endpoint (docker_image_src.go newImageSourceAttempt: the
      // endpoint's reference picks them), so a mirror never gets the primary's.
      const credentials = await lookupCredentials(physical.registry, physical.repository, { authFile: config.authFile });
      const insecure = config.tlsVerify === false || ep.insecure;
      const opts: SourceOptions = {
        insecure,
        ...(credentials !== undefined && { credentials }),
        ...(config.signal !== undefined && { signal: config.signal }),
        ...(config.retries !== undefined && { retries: config.retries }),
        ...(config.retryBaseDelayMs !== undefined && { retryBaseDelayMs: config.retryBaseDelayMs }),
      };
      source = new DockerSource(physical, opts, wanted);
      await source.getManifest();
      const opened: OpenedSource = {
        source,
        transport: 'docker',
        reference: wanted,
        endpoint: { reference: physical, mirror: ep.mirror, insecure, ...(credentials !== undefined && { credentials }) },
      };
      if (ep.mirror) {
        opened.servedBy = label;
        note(`${image}: served by ${label}`);
      }
      return opened;
    } catch (err) {
      await source?.close().catch(() => {});
      if (config.signal?.aborted || isConfigError(err)) throw err;
      attempts.push({ label, error: err });
      if (ep !== endpoints.at(-1)) note(`${image}: ${label} failed (${briefly(err)}); trying the next endpoint`);
    }
  }
  if (attempts.length === 1) throw attempts[0]!.error;
  throw new EndpointsFailedError(image, attempts);
}
