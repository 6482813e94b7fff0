/**
 * Platforms (image-spec image-index.md "platform"; GOOS/GOARCH names) and the
 * choice of one manifest from an index, as containers/image does it
 * (internal/pkg/platform/platform_matcher.go WantedPlatforms/MatchesPlatform,
 * manifest/oci_index.go ChooseInstance): the wanted platform expands to a list
 * of acceptable variants, most specific first; for each in turn, the first
 * index entry with exactly that os/architecture/variant wins.
 */
import { endianness } from 'node:os';
import { UntrustedInputError, UsageError } from '../errors.js';
import { MediaType } from './mediatypes.js';
import type { Descriptor, ImageConfig, ImageIndex, Platform } from './types.js';

/** No image in an index fits the wanted platform. */
export class NoMatchingPlatformError extends UntrustedInputError {
  constructor(
    readonly wanted: Platform,
    readonly image: string,
    readonly available: string[],
  ) {
    super(
      `no image for ${formatPlatform(wanted)} in ${image}; available: ${available.length > 0 ? available.join(', ') : 'none'}`,
    );
  }
}

/** Node's process.arch → GOARCH. */
const goArch: Record<string, string> = {
  x64: 'amd64',
  arm64: 'arm64',
  arm: 'arm',
  ia32: '386',
  s390x: 's390x',
  riscv64: 'riscv64',
  loong64: 'loong64',
  mips: 'mips',
  mipsel: 'mipsle',
  mips64: 'mips64',
  mips64el: 'mips64le',
  ppc: 'ppc',
};

/** Node's process.platform → GOOS. */
const goOs: Record<string, string> = { win32: 'windows', sunos: 'solaris' };

/** The platform this process runs on, in GOOS/GOARCH terms. */
export function hostPlatform(): Platform {
  const os = goOs[process.platform] ?? process.platform;
  let architecture = goArch[process.arch] ?? process.arch;
  // Node calls both ppc64 and ppc64le "ppc64".
  if (process.arch === 'ppc64') architecture = endianness() === 'LE' ? 'ppc64le' : 'ppc64';
  const p: Platform = { os, architecture };
  if (architecture === 'arm64') p.variant = 'v8';
  if (architecture === 'arm') {
    // The ARM level Node was built for; the kernel's own would be in /proc/cpuinfo.
    const v = (process.config.variables as Record<string, unknown>).arm_version;
    p.variant = typeof v === 'string' || typeof v === 'number' ? `v${v}` : 'v7';
  }
  return p;
}

const platformPart = /^[a-z0-9][a-z0-9._-]*$/;

/** Parses "os/arch[/variant]" ("linux/arm64/v8"). */
export function parsePlatform(spec: string): Platform {
  const parts = spec.split('/');
  if (parts.length < 2 || parts.length > 3 || !parts.every((p) => platformPart.test(p))) {
    throw new UsageError(
      `invalid platform ${JSON.stringify(spec)}: expected OS/ARCH[/VARIANT] in lowercase, e.g. linux/amd64 or linux/arm64/v8`,
    );
  }
  const p: Platform = { os: parts[0]!, architecture: parts[1]! };
  if (parts[2] !== undefined) p.variant = parts[2];
  return p;
}

export function formatPlatform(p: Platform): string {
  return p.variant ? `${p.os}/${p.architecture}/${p.variant}` : `${p.os}/${p.architecture}`;
}

/**
 * Known variants per architecture, most capable first (platform_matcher.go
 * `compatibility`); a machine runs its own variant and every later one. The
 * amd64 micro-architecture levels (GOAMD64) follow the same rule.
 */
const compatibility: Record<string, string[]> = {
  arm: ['v7', 'v6', 'v5'],
  arm64: ['v8'],
  amd64: ['v4', 'v3', 'v2', 'v1'],
};

/** A variant every machine of the architecture runs (platform_matcher.go `baseVariants`). */
const baseVariants: Record<string, string> = { arm64: 'v8', amd64: 'v1' };

/** The variants acceptable for `want`, in order of preference; '' is "no variant given". */
export function acceptableVariants(want: Platform): string[] {
  const wanted = want.variant ?? '';
  if (wanted === '') {
    const base = baseVariants[want.architecture];
    return base ? ['', base] : [''];
  }
  const order = compatibility[want.architecture];
  const i = order ? order.indexOf(wanted) : -1;
  return [...(order && i !== -1 ? order.slice(i) : [wanted]), ''];
}

const imageManifestTypes = new Set<string>([MediaType.ociManifest, MediaType.dockerManifest]);

/** Whether an index entry is a runnable image (not a nested index, an attestation, an artifact). */
function isImageEntry(d: Descriptor): boolean {
  if (!imageManifestTypes.has(d.mediaType)) return false;
  // BuildKit attaches provenance/SBOM as manifests with platform unknown/unknown
  // (docker buildx docs: attestation-storage).
  if (d.annotations?.['vnd.docker.reference.type'] === 'attestation-manifest') return false;
  return true;
}

/**
 * Picks the manifest for `want` from `index`. As oci_index.go, an image entry
 * without a platform is the fallback when no entry matches; the caller still
 * checks the chosen image's config against the wanted platform.
 */
export function selectManifest(index: ImageIndex, want: Platform, what: string): Descriptor {
  const images = index.manifests.filter(isImageEntry);
  for (const variant of acceptableVariants(want)) {
    const found = images.find(
      (d) =>
        d.platform !== undefined &&
        d.platform.os === want.os &&
        d.platform.architecture === want.architecture &&
        (d.platform.variant ?? '') === variant,
    );
    if (found) return found;
  }
  const unlabelled = images.find((d) => d.platform === undefined);
  if (unlabelled) return unlabelled;
  const available = [...new Set(images.flatMap((d) => (d.platform ? [formatPlatform(d.platform)] : [])))];
  throw new NoMatchingPlatformError(want, what, available);
}

/**
 * Whether an image config's os/architecture/variant fit `want`, by the same
 * variant rules as selectManifest. An index entry's platform is only a claim;
 * the config of the chosen image is what the image says about itself.
 */
export function configMatchesPlatform(config: Pick<ImageConfig, 'os' | 'architecture' | 'variant'>, want: Platform): boolean {
  if (config.os !== want.os || config.architecture !== want.architecture) return false;
  return acceptableVariants(want).includes(config.variant ?? '');
}
