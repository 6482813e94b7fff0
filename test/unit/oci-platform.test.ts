import { endianness } from 'node:os';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { UntrustedInputError, UsageError } from '../../src/errors.js';
import { MediaType } from '../../src/oci/mediatypes.js';
import {
  acceptableVariants,
  configMatchesPlatform,
  formatPlatform,
  hostPlatform,
  NoMatchingPlatformError,
  parsePlatform,
  selectManifest,
} from '../../src/oci/platform.js';
import type { Descriptor, ImageIndex, Platform } from '../../src/oci/types.js';
import { requireCommands } from '../support/host.js';

let n = 0;
function entry(platform: string | undefined, extra: Partial<Descriptor> = {}): Descriptor {
  n += 1;
  const d: Descriptor = {
    mediaType: MediaType.ociManifest,
    digest: `sha256:${n.toString(16).padStart(64, '0')}`,
    size: 100,
    ...extra,
  };
  if (platform !== undefined) d.platform = parsePlatform(platform);
  return d;
}

function index(...manifests: Descriptor[]): ImageIndex {
  return { kind: 'index', schemaVersion: 2, mediaType: MediaType.ociIndex, manifests };
}

describe('hostPlatform', () => {
  it('maps Node names to GOOS/GOARCH', () => {
    const expected: Record<string, Platform> = {
      x64: { os: 'linux', architecture: 'amd64' },
      arm64: { os: 'linux', architecture: 'arm64', variant: 'v8' },
      ia32: { os: 'linux', architecture: '386' },
      s390x: { os: 'linux', architecture: 's390x' },
      riscv64: { os: 'linux', architecture: 'riscv64' },
      ppc64: { os: 'linux', architecture: endianness() === 'LE' ? 'ppc64le' : 'ppc64' },
    };
    const want = expected[process.arch];
    expect(want, `test table lacks process.arch ${process.arch}`).toBeDefined();
    expect(process.platform).toBe('linux');
    expect(hostPlatform()).toEqual(want);
  });
});

describe('hostPlatform agrees with podman', () => {
  it('has the same GOOS/GOARCH as the podman binary built for this host', async () => {
    await requireCommands('podman');
    const { stdout } = await execa('podman', ['version', '--format', '{{.Client.OsArch}}']);
    const host = hostPlatform();
    expect(`${host.os}/${host.architecture}`).toBe(stdout.trim());
  });
});

describe('parsePlatform / formatPlatform', () => {
  it.each([
    ['linux/amd64', { os: 'linux', architecture: 'amd64' }],
    ['linux/arm64/v8', { os: 'linux', architecture: 'arm64', variant: 'v8' }],
    ['linux/arm/v7', { os: 'linux', architecture: 'arm', variant: 'v7' }],
    ['windows/amd64', { os: 'windows', architecture: 'amd64' }],
  ])('%s', (spec, want) => {
    expect(parsePlatform(spec)).toEqual(want);
    expect(formatPlatform(parsePlatform(spec))).toBe(spec);
  });

  it.each(['linux', 'linux/', '/amd64', 'linux/amd64/v8/x', 'Linux/amd64', 'linux amd64', ''])('rejects %j', (spec) => {
    expect(() => parsePlatform(spec)).toThrow(UsageError);
    expect(() => parsePlatform(spec)).toThrow(`invalid platform ${JSON.stringify(spec)}: expected OS/ARCH[/VARIANT]`);
  });
});

describe('acceptableVariants (containers/image WantedPlatforms)', () => {
  it.each([
    ['linux/arm64/v8', ['v8', '']],
    ['linux/arm64', ['', 'v8']],
    ['linux/arm/v7', ['v7', 'v6', 'v5', '']],
    ['linux/arm/v6', ['v6', 'v5', '']],
    ['linux/arm/v5', ['v5', '']],
    ['linux/amd64', ['', 'v1']],
    ['linux/amd64/v3', ['v3', 'v2', 'v1', '']],
    ['linux/s390x', ['']],
    ['linux/arm/v9', ['v9', '']],
  ])('%s → %j', (spec, want) => {
    expect(acceptableVariants(parsePlatform(spec))).toEqual(want);
  });
});

describe('selectManifest', () => {
  it('picks the exact os/architecture, first match in index order', () => {
    const amd = entry('linux/amd64');
    const amd2 = entry('linux/amd64');
    const idx = index(entry('linux/s390x'), amd, entry('windows/amd64'), amd2);
    expect(selectManifest(idx, parsePlatform('linux/amd64'), 'IMG')).toBe(amd);
  });

  it('prefers the wanted variant over an earlier entry with a lesser one (arm v7 host)', () => {
    const v6 = entry('linux/arm/v6');
    const v7 = entry('linux/arm/v7');
    const idx = index(v6, v7);
    expect(selectManifest(idx, parsePlatform('linux/arm/v7'), 'IMG')).toBe(v7);
  });

  it('falls back to a compatible lower arm variant, in order v7 > v6 > v5', () => {
    const v5 = entry('linux/arm/v5');
    const v6 = entry('linux/arm/v6');
    expect(selectManifest(index(v5, v6), parsePlatform('linux/arm/v7'), 'IMG')).toBe(v6);
    expect(selectManifest(index(v5), parsePlatform('linux/arm/v7'), 'IMG')).toBe(v5);
    // A v7 image does not run on a v6 machine.
    expect(() => selectManifest(index(entry('linux/arm/v7')), parsePlatform('linux/arm/v6'), 'IMG')).toThrow(
      NoMatchingPlatformError,
    );
  });

  it('treats a missing arm64 variant as v8, both ways', () => {
    const noVariant = entry('linux/arm64');
    expect(selectManifest(index(noVariant), parsePlatform('linux/arm64/v8'), 'IMG')).toBe(noVariant);
    const v8 = entry('linux/arm64/v8');
    expect(selectManifest(index(v8), parsePlatform('linux/arm64'), 'IMG')).toBe(v8);
  });

  it('accepts amd64 micro-architecture levels up to the wanted one', () => {
    const v2 = entry('linux/amd64/v2');
    const v4 = entry('linux/amd64/v4');
    expect(selectManifest(index(v4, v2), parsePlatform('linux/amd64/v3'), 'IMG')).toBe(v2);
    const plain = entry('linux/amd64');
    expect(selectManifest(index(v4, plain), parsePlatform('linux/amd64/v3'), 'IMG')).toBe(plain);
    // With no level wanted, only a variant-less or baseline (v1) image is safe.
    const v1 = entry('linux/amd64/v1');
    expect(selectManifest(index(v4, v1), parsePlatform('linux/amd64'), 'IMG')).toBe(v1);
    expect(() => selectManifest(index(v4), parsePlatform('linux/amd64'), 'IMG')).toThrow(/available: linux\/amd64\/v4/);
  });

  it('skips attestation manifests, nested indexes and artifacts', () => {
    const attestation = entry('linux/amd64', {
      annotations: { 'vnd.docker.reference.type': 'attestation-manifest', 'vnd.docker.reference.digest': 'x' },
    });
    const nested = entry('linux/amd64', { mediaType: MediaType.ociIndex });
    const artifact = entry('linux/amd64', { mediaType: 'application/vnd.example.sbom+json' });
    const real = entry('linux/amd64', { mediaType: MediaType.dockerManifest });
    expect(selectManifest(index(attestation, nested, artifact, real), parsePlatform('linux/amd64'), 'IMG')).toBe(real);
  });

  it('falls back to an image entry without a platform, as containers/image does for OCI indexes', () => {
    const unlabelled = entry(undefined);
    expect(selectManifest(index(entry('linux/s390x'), unlabelled), parsePlatform('linux/amd64'), 'IMG')).toBe(unlabelled);
    // ... but a platform match comes first.
    const amd = entry('linux/amd64');
    expect(selectManifest(index(unlabelled, amd), parsePlatform('linux/amd64'), 'IMG')).toBe(amd);
  });

  it('lists what is available when nothing matches', () => {
    const idx = index(
      entry('linux/amd64'),
      entry('linux/s390x'),
      entry('linux/amd64'),
      entry('unknown/unknown', { annotations: { 'vnd.docker.reference.type': 'attestation-manifest' } }),
    );
    let caught: unknown;
    try {
      selectManifest(idx, parsePlatform('linux/arm64/v8'), 'docker.io/library/os:1');
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(NoMatchingPlatformError);
    expect(caught).toBeInstanceOf(UntrustedInputError);
    expect((caught as Error).message).toBe(
      'no image for linux/arm64/v8 in docker.io/library/os:1; available: linux/amd64, linux/s390x',
    );
    expect(() => selectManifest(index(), parsePlatform('linux/amd64'), 'IMG')).toThrow(
      'no image for linux/amd64 in IMG; available: none',
    );
  });
});

describe('configMatchesPlatform', () => {
  it.each([
    [{ os: 'linux', architecture: 'amd64' }, 'linux/amd64', true],
    [{ os: 'linux', architecture: 'amd64' }, 'linux/arm64', false],
    [{ os: 'windows', architecture: 'amd64' }, 'linux/amd64', false],
    [{ os: 'linux', architecture: 'arm64', variant: 'v8' }, 'linux/arm64', true],
    [{ os: 'linux', architecture: 'arm64' }, 'linux/arm64/v8', true],
    [{ os: 'linux', architecture: 'arm', variant: 'v6' }, 'linux/arm/v7', true],
    [{ os: 'linux', architecture: 'arm', variant: 'v7' }, 'linux/arm/v6', false],
    [{ os: 'linux', architecture: 'amd64', variant: 'v3' }, 'linux/amd64', false],
  ])('%j on %s → %s', (config, want, ok) => {
    expect(configMatchesPlatform(config, parsePlatform(want))).toBe(ok);
  });
});
