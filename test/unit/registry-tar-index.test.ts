import { mkdir, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { pack, type Header } from 'tar-stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { indexTar, type TarMember } from '../../src/registry/tar-index.js';

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'ocisnap-tarindex-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function tarOf(entries: Array<{ header: Partial<Header> & { name: string }; body?: Buffer }>): Promise<Buffer> {
  const p = pack();
  const chunks: Buffer[] = [];
  const done = new Promise<void>((resolve, reject) => {
    p.on('data', (c: unknown) => {
      chunks.push(c as Buffer);
    });
    p.on('end', resolve);
    p.on('error', reject);
  });
  for (const e of entries) {
    if (e.body === undefined) p.entry(e.header);
    else p.entry(e.header, e.body);
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}

async function index(name: string, bytes: Buffer): Promise<{ members: Map<string, TarMember>; bytes: Buffer }> {
  const file = join(tmp, name);
  await writeFile(file, bytes);
  const fh = await open(file);
  try {
    return { members: await indexTar(fh, name), bytes };
  } finally {
    await fh.close();
  }
}

const slice = (bytes: Buffer, m: TarMember | undefined): string =>
  bytes.subarray(m!.offset, m!.offset + m!.size).toString('utf8');

describe('indexTar', () => {
  it('records offsets and sizes of members, with ustar prefixes and pax long names', async () => {
    const mid = `${'d'.repeat(90)}/${'f'.repeat(60)}`; // > 100: ustar prefix
    const long = `${'x'.repeat(120)}/${'y'.repeat(200)}`; // > 255: pax path
    const { members, bytes } = await index(
      'a.tar',
      await tarOf([
        { header: { name: './index.json', size: 2 }, body: Buffer.from('{}') },
        { header: { name: 'blobs/', type: 'directory' } },
        { header: { name: mid, size: 5 }, body: Buffer.from('hello') },
        { header: { name: long, size: 3 }, body: Buffer.from('abc') },
        { header: { name: 'empty', size: 0 }, body: Buffer.alloc(0) },
        { header: { name: 'link', type: 'symlink', linkname: '/etc/passwd' } },
      ]),
    );
    expect(slice(bytes, members.get('index.json'))).toBe('{}');
    expect(members.get('blobs')?.type).toBe('directory');
    expect(slice(bytes, members.get(mid))).toBe('hello');
    expect(slice(bytes, members.get(long))).toBe('abc');
    expect(members.get('empty')?.size).toBe(0);
    expect(members.get('link')?.type).toBe('symlink');
  });

  it('reads GNU long names written by GNU tar', async () => {
    const dir = join(tmp, 'gnu');
    const name = `${'n'.repeat(150)}.txt`;
    await mkdir(dir);
    await writeFile(join(dir, name), 'gnu!');
    const file = join(tmp, 'gnu.tar');
    await execa('tar', ['--format=gnu', '-cf', file, '-C', dir, name]);
    const { members, bytes } = await index('gnu2.tar', await readFile(file));
    expect(slice(bytes, members.get(name))).toBe('gnu!');
  });

  it('refuses a regular file that appears twice', async () => {
    const tar = await tarOf([
      { header: { name: 'blobs/sha256/aa', size: 1 }, body: Buffer.from('1') },
      { header: { name: './blobs/sha256/aa', size: 1 }, body: Buffer.from('2') },
    ]);
    await expect(index('dup.tar', tar)).rejects.toThrow(/"blobs\/sha256\/aa" appears twice; refused as ambiguous/);
  });

  it('refuses a truncated tar and a non-tar', async () => {
    const tar = await tarOf([{ header: { name: 'big', size: 4096 }, body: Buffer.alloc(4096, 1) }]);
    await expect(index('trunc.tar', tar.subarray(0, 2048))).rejects.toThrow(/runs past the end of the file/);
    await expect(index('junk.tar', Buffer.alloc(1024, 0x41))).rejects.toThrow(/not a tar file, or corrupt header at byte 0/);
  });
});
