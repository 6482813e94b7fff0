/**
 * Opens an image source the way the user's container configuration says:
 * registries.conf decides where a registry really is, whether it is blocked
 * and whether plain HTTP is allowed; auth.json supplies credentials.
 */
import { OcisnapError, UsageError } from '../errors.js';
import { formatReference, parseReference } from '../oci/reference.js';
import type { ImageReference } from '../oci/types.js';
import { lookupCredentials } from '../policy/auth-file.js';
import { loadRegistriesConf, registryFor } from '../policy/registries-conf.js';
import { openSource, type ImageSource } from '../registry/source.js';

export interface SourceConfig {
  /** containers-auth.json(5) file to use instead of the default search. */
  authFile?: string;
  /** registries.conf path (default /etc/containers/registries.conf). */
  registriesConf?: string;
  /** registries.conf.d directory (default /etc/containers/registries.conf.d). */
  registriesConfDir?: string;
  /** `--tls-verify=false`: allow plain HTTP / unverified TLS for this pull. */
  tlsVerify?: boolean;
  signal?: AbortSignal;
}

export class BlockedRegistryError extends OcisnapError {}

export interface OpenedSource {
  source: ImageSource;
  /** The registry reference, for `docker://` sources (after registries.conf rewriting). */
  reference?: ImageReference;
}

const transports = ['docker://', 'oci:', 'oci-archive:'];

/** Opens `spec` (`docker://REF`, `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]` or a bare reference). */
export async function openConfiguredSource(spec: string, config: SourceConfig = {}): Promise<OpenedSource> {
  const transport = transports.find((t) => spec.startsWith(t));
  if (transport === 'oci:' || transport === 'oci-archive:') {
    return { source: await openSource(spec, { signal: config.signal }) };
  }
  if (transport === undefined && /^[a-z-]+:(?!\d)/.test(spec) && !spec.includes('/')) {
    throw new UsageError(`unknown image source "${spec}": use docker://, oci: or oci-archive:`);
  }
  const asWritten = parseReference(transport ? spec.slice(transport.length) : spec);
  const conf = await loadRegistriesConf({ path: config.registriesConf, dropInDir: config.registriesConfDir });
  const where = registryFor(conf, asWritten);
  if (where.blocked) {
    throw new BlockedRegistryError(`${formatReference(asWritten)}: registry is blocked in registries.conf`);
  }
  const reference = rewriteLocation(asWritten, where.location);
  const credentials = await lookupCredentials(reference.registry, reference.repository, { authFile: config.authFile });
  const source = await openSource(`docker://${formatReference(reference)}`, {
    credentials,
    insecure: config.tlsVerify === false || where.insecure,
    signal: config.signal,
  });
  return { source, reference };
}

/** Applies a registries.conf `location` ("host[:port][/path]") to a reference. */
function rewriteLocation(ref: ImageReference, location: string): ImageReference {
  const current = `${ref.registry}/${ref.repository}`;
  if (location === '' || location === current) return ref;
  const slash = location.indexOf('/');
  const registry = slash < 0 ? location : location.slice(0, slash);
  const repository = slash < 0 ? ref.repository : `${location.slice(slash + 1)}`;
  return { ...ref, registry, repository };
}
