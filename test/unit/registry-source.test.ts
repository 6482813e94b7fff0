import { describe, expect, it } from 'vitest';
import { InvalidReferenceError } from '../../src/oci/reference.js';
import { SourceSpecError, openSource, splitPathAndTag } from '../../src/registry/index.js';
import { blobKind, manifestMediaType } from '../../src/registry/types.js';
import { shortDigest } from '../../src/registry/errors.js';

describe('source specs', () => {
  it('splits PATH[:TAG] at the first colon, like containers/image', () => {
    expect(splitPathAndTag('oci:/a/b:v1', '/a/b:v1')).toEqual({ path: '/a/b', tag: 'v1' });
    expect(splitPathAndTag('oci:/a/b', '/a/b')).toEqual({ path: '/a/b', tag: undefined });
    expect(splitPathAndTag('oci:/a:b:c', '/a:b:c')).toEqual({ path: '/a', tag: 'b:c' });
    expect(() => splitPathAndTag('oci::v1', ':v1')).toThrow(SourceSpecError);
    expect(() => splitPathAndTag('oci:/a:', '/a:')).toThrow(/empty or malformed tag/);
  });

  it('opens docker:// and bare references without network, and names them', async () => {
    const a = await openSource('docker://localhost:5000/os:1');
    expect(a.name).toBe('docker://localhost:5000/os:1');
    await a.close();
    const b = await openSource('debian');
    expect(b.name).toBe('docker://docker.io/library/debian:latest');
    await b.close();
  });

  it('refuses other transports and bad references', async () => {
    await expect(openSource('containers-storage:foo')).rejects.toThrow(/containers-storage: transport is not supported/);
    await expect(openSource('docker://UPPER/case')).rejects.toBeInstanceOf(InvalidReferenceError);
  });
});

describe('naming helpers', () => {
  it('shortens digests for messages', () => {
    expect(shortDigest(`sha256:${'0123456789abcdef'.repeat(4)}`)).toBe('sha256:0123456789ab…');
  });

  it('prefers a manifest Content-Type, else the document mediaType', () => {
    const doc = Buffer.from('{"mediaType":"application/vnd.oci.image.index.v1+json"}');
    expect(manifestMediaType('application/vnd.oci.image.manifest.v1+json; charset=utf-8', doc)).toBe(
      'application/vnd.oci.image.manifest.v1+json',
    );
    expect(manifestMediaType('application/json', doc)).toBe('application/vnd.oci.image.index.v1+json');
    expect(manifestMediaType(undefined, Buffer.from('{}'))).toBe('');
  });

  it('names blobs by their media type', () => {
    const d = { digest: `sha256:${'a'.repeat(64)}` as const, size: 1 };
    expect(blobKind({ ...d, mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd' })).toBe('layer');
    expect(blobKind({ ...d, mediaType: 'application/vnd.docker.container.image.v1+json' })).toBe('config');
    expect(blobKind({ ...d, mediaType: 'application/octet-stream' })).toBe('blob');
  });
});
