import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ByteSource, TruncatedInputError } from '../../src/layers/byte-source.js';
import { BadNameError, classify, cleanName } from '../../src/layers/names.js';
import { TarFormatError, TarReader, type TarEntry } from '../../src/layers/tar-reader.js';
import { buildTar, entryBlocks } from '../support/tar-builder.js';

async function readAll(tar: Buffer, chunk = 333): Promise<Array<TarEntry & { data: Buffer }>> {
  const parts: Buffer[] = [];
  for (let i = 0; i < tar.length; i += chunk) parts.push(tar.subarray(i, i + chunk));
  const source = new ByteSource(Readable.from(parts));
  const reader = new TarReader(source);
  const out: Array<TarEntry & { data: Buffer }> = [];
  try {
    for (;;) {
      const e = await reader.next();
      if (!e) break;
      const data: Buffer[] = [];
      await reader.readContent((c) => {
        data.push(Buffer.from(c));
      });
      out.push({ ...e, data: Buffer.concat(data) });
    }
  } finally {
    await source.close();
  }
  return out;
}

describe('TarReader', () => {
  it('reads PAX records as raw bytes: binary xattr values, non-UTF-8 paths, ns mtime, big ids', async () => {
    const value = Buffer.from([0x01, 0x00, 0xff, 0xfe, 0x0a, 0x3d, 0x00, 0x80]);
    const name = Buffer.from([0x61, 0xe9, 0xff, 0x2f, 0x62]);
    const [e] = await readAll(
      buildTar([
        {
          name,
          content: 'abc',
          mode: 0o104755,
          xattrs: { 'security.capability': value },
          mtime: 1_700_000_000,
          mtimeNs: 42,
          pax: { uid: '4000000000', gid: '70000', atime: '1700000001.5' },
        },
      ]),
    );
    expect(Buffer.from(e!.name, 'latin1').equals(name)).toBe(true);
    expect(e!.xattrs).toEqual([['security.capability', value]]);
    expect(e!.mode).toBe(0o4755);
    expect(e!.mtime).toEqual({ sec: 1_700_000_000, nsec: 42 });
    expect(e!.atime).toEqual({ sec: 1_700_000_001, nsec: 500_000_000 });
    expect([e!.uid, e!.gid]).toEqual([4_000_000_000, 70000]);
    expect(e!.data.toString()).toBe('abc');
  });

  it('prefers GNU long names, like Go archive/tar', async () => {
    const [e] = await readAll(buildTar([{ name: 'x'.repeat(300), content: 'q', longNames: 'gnu' }]));
    expect(e!.name).toBe('x'.repeat(300));
  });

  it('ignores the size field of header-only types (Go isHeaderOnlyType)', async () => {
    const dir = entryBlocks({ name: 'd/', type: 'dir' });
    // Claim 1024 bytes of data on the directory and fix the checksum: the next header must still follow.
    const h = Buffer.from(dir[0]!);
    h.write('00000002000\0', 124, 'latin1');
    h.fill(0x20, 148, 156);
    let sum = 0;
    for (const b of h) sum += b;
    h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'latin1');
    const tar = Buffer.concat([h, ...entryBlocks({ name: 'f', content: 'ok' }), Buffer.alloc(1024)]);
    const entries = await readAll(tar);
    expect(entries.map((e) => [e.name, e.type, e.data.toString()])).toEqual([
      ['d/', 'dir', ''],
      ['f', 'file', 'ok'],
    ]);
  });

  it('rejects a bad checksum, garbage after a zero block and truncation', async () => {
    const tar = buildTar([{ name: 'f', content: 'hello' }]);
    const bad = Buffer.from(tar);
    bad[0] = 0x67;
    await expect(readAll(bad)).rejects.toThrow(TarFormatError);
    const garbage = Buffer.concat([Buffer.alloc(512), ...entryBlocks({ name: 'hidden', content: 'x' })]);
    await expect(readAll(garbage)).rejects.toThrow(/garbage after a zero block/);
    await expect(readAll(tar.subarray(0, 600))).rejects.toThrow(/unexpected end of tar data/);
  });

  it('rejects malformed PAX records', async () => {
    const blocks = entryBlocks({ name: 'f', content: 'x', pax: { mtime: 'yesterday' } });
    await expect(readAll(Buffer.concat([...blocks, Buffer.alloc(1024)]))).rejects.toThrow(/invalid mtime/);
  });
});

describe('TarReader on damaged input', () => {
  it('fails only with its own typed errors, whatever the bytes', async () => {
    const tar = buildTar([
      { name: 'd/', type: 'dir' },
      { name: 'd/f', content: 'x'.repeat(700), xattrs: { 'user.a': 'b' }, mtimeNs: 5 },
      { name: 'l'.repeat(180), type: 'symlink', linkname: 't'.repeat(150), longNames: 'gnu' },
      { name: 'p'.repeat(180), content: 'y' },
    ]);
    // A deterministic generator, so a failure can be reproduced.
    let seed = 12345;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    for (let round = 0; round < 300; round++) {
      const bad = Buffer.from(tar.subarray(0, round % 3 === 0 ? rand(tar.length) : tar.length));
      for (let k = 0; k < 1 + rand(8); k++) if (bad.length > 0) bad[rand(bad.length)] = rand(256);
      try {
        await readAll(bad, 1 + rand(700));
      } catch (err) {
        expect(err instanceof TarFormatError || err instanceof TruncatedInputError).toBe(true);
      }
    }
  });
});

describe('cleanName and classify', () => {
  it('cleans like pkg/archive: leading / dropped, .. above the root refused', () => {
    expect(cleanName('./a//b/./c/')).toEqual(['a', 'b', 'c']);
    expect(cleanName('/etc/passwd')).toEqual(['etc', 'passwd']);
    expect(cleanName('/../x')).toEqual(['x']);
    expect(cleanName('a/../b')).toEqual(['b']);
    expect(cleanName('./')).toEqual([]);
    expect(() => cleanName('../x')).toThrow(BadNameError);
    expect(() => cleanName('a/../../x')).toThrow(BadNameError);
    expect(() => cleanName('a\0b')).toThrow(BadNameError);
  });

  it('classifies whiteouts', () => {
    expect(classify(['a', '.wh.b'])).toEqual({ kind: 'whiteout', target: 'b' });
    expect(classify(['a', '.wh..wh..opq'])).toEqual({ kind: 'opaque' });
    expect(classify(['.wh..wh..opq'])).toEqual({ kind: 'opaque' });
    expect(classify(['.wh..wh.plnk', '1.2'])).toEqual({ kind: 'ignored' });
    expect(classify(['a', '.wh..wh.aufs'])).toEqual({ kind: 'ignored' });
    expect(classify(['a', 'b'])).toEqual({ kind: 'plain' });
    expect(() => classify(['.wh.'])).toThrow(/invalid whiteout/);
    expect(() => classify(['a', '.wh..'])).toThrow(/invalid whiteout/);
    expect(() => classify(['.wh...'])).toThrow(/invalid whiteout/);
  });
});
