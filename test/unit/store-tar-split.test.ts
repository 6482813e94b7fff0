import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, symlink, link, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { gunzipSync } from 'node:zlib';
import { execa } from 'execa';
import { Crc64, PathSet, TarSplitRecorder } from '../../src/store/tar-split.js';
import { applyLayer } from '../../src/layers/index.js';

let dir: string;
let src: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ocisnap-tarsplit-'));
  src = join(dir, 'src');
  const long = `${'d'.repeat(60)}/${'e'.repeat(60)}/${'f'.repeat(70)}.txt`;
  await mkdir(join(src, 'etc'), { recursive: true });
  await mkdir(join(src, long, '..'), { recursive: true });
  await writeFile(join(src, 'etc/hello'), 'hello\n');
  await writeFile(join(src, 'etc/empty'), '');
  await writeFile(join(src, 'etc/big'), Buffer.alloc(70_000, 7));
  await writeFile(join(src, long), 'long name\n');
  await writeFile(join(src, 'etc/ünïcode'), 'utf8 name\n');
  await link(join(src, 'etc/hello'), join(src, 'etc/hello-link'));
  await symlink('hello', join(src, 'etc/hello-sym'));
  await writeFile(join(src, 'etc/.wh.gone'), '');
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

interface Entry {
  type: number;
  name?: string;
  name_raw?: string;
  size?: number;
  payload: string | null;
  position: number;
}

/** Rebuilds the tar from tar-split entries and the extracted files (vbatts/tar-split asm.WriteOutputTarStream). */
async function reassemble(gz: Buffer, root: string): Promise<Buffer> {
  const entries = gunzipSync(gz).toString('utf8').trim().split('\n').map((l) => JSON.parse(l) as Entry);
  entries.forEach((e, i) => expect(e.position).toBe(i));
  const out: Buffer[] = [];
  for (const e of entries) {
    if (e.type === 2) out.push(Buffer.from(e.payload ?? '', 'base64'));
    else if (e.type === 1 && (e.size ?? 0) > 0) {
      const name = e.name ?? Buffer.from(e.name_raw ?? '', 'base64').toString('latin1');
      const data = await readFile(join(root, name));
      const crc = new Crc64();
      crc.update(data);
      expect(crc.digest().toString('base64')).toBe(e.payload);
      out.push(data);
    }
  }
  return Buffer.concat(out);
}

async function record(tar: Buffer, chunk = 777) {
  const recorder = new TarSplitRecorder();
  const chunks: Buffer[] = [];
  for (let i = 0; i < tar.length; i += chunk) chunks.push(tar.subarray(i, i + chunk));
  await pipeline(Readable.from(chunks), recorder, new Writable({ write: (_c, _e, cb) => cb() }));
  return recorder;
}

describe('CRC-64', () => {
  it('matches Go hash/crc64 with the ISO table (CRC-64/GO-ISO check value)', () => {
    const crc = new Crc64();
    crc.update(Buffer.from('123456789'));
    expect(crc.digest().toString('hex')).toBe('b90956c775a41001');
  });
});

describe('TarSplitRecorder', () => {
  for (const format of ['gnu', 'posix', 'ustar']) {
    it(`records a ${format} tar so that it can be rebuilt byte for byte from the files`, async () => {
      const tarPath = join(dir, `${format}.tar`);
      const args = ['--format', format, '--numeric-owner', '--sort=name', '-C', src, '-cf', tarPath, '.'];
      if (format === 'ustar') args.splice(args.indexOf('.'), 1, 'etc');
      await execa('tar', args);
      const tar = await readFile(tarPath);
      const recorder = await record(tar);
      const result = recorder.result();
      expect(recorder.failure).toBeUndefined();
      expect(result?.tarSize).toBe(tar.length);
      expect(result?.tarDigest).toBe(`sha256:${createHash('sha256').update(tar).digest('hex')}`);
      const out = join(dir, `out-${format}`);
      await mkdir(out);
      await execa('tar', ['-xpf', tarPath, '-C', out]);
      expect((await reassemble(result!.gz, out)).equals(tar)).toBe(true);
      const names = gunzipSync(result!.gz).toString('utf8');
      expect(names).toMatch(/"name":"(\.\/)?etc\/hello-link"/);
      if (format !== 'ustar') expect(names).toContain('f'.repeat(70));
    });
  }

  it('gives up, without failing the stream, on duplicate paths and on a truncated tar', async () => {
    const a = join(dir, 'dup.tar');
    await execa('tar', ['-C', src, '-cf', a, 'etc/hello']);
    await execa('tar', ['-C', src, '-rf', a, 'etc/hello']);
    const dup = await record(await readFile(a));
    expect(dup.result()).toBeUndefined();
    expect(dup.failure).toMatch(/duplicate path/);
    const truncated = await record((await readFile(a)).subarray(0, 1024));
    expect(truncated.result()).toBeUndefined();
    expect(truncated.failure).toMatch(/ended before/);
  });
});

describe('CRC-64 slicing', () => {
  it('equals the plain bytewise definition for every length and split', () => {
    // Reference: bit-by-bit reflected CRC-64/GO-ISO with BigInt.
    const poly = 0xd800000000000000n;
    const mask = 0xffffffffffffffffn;
    const reference = (data: Uint8Array): string => {
      let crc = mask;
      for (const byte of data) {
        crc ^= BigInt(byte);
        for (let k = 0; k < 8; k++) crc = crc & 1n ? (crc >> 1n) ^ poly : crc >> 1n;
      }
      return ((crc ^ mask) & mask).toString(16).padStart(16, '0');
    };
    // Past 64 bytes the addon folds with PCLMULQDQ where the CPU has it: cover both paths and the tails.
    const bytes = Buffer.concat(Array.from({ length: 12 }, (_, i) => createHash('sha512').update(`seed ${i}`).digest()));
    for (let len = 0; len <= bytes.length; len += 5) {
      const slice = bytes.subarray(0, len);
      const whole = new Crc64();
      whole.update(slice);
      const split = new Crc64();
      split.update(slice.subarray(0, len >> 1));
      split.update(slice.subarray(len >> 1));
      expect(whole.digest().toString('hex')).toBe(reference(slice));
      expect(split.digest().toString('hex')).toBe(reference(slice));
    }
  });
});

describe('CRC-64 on large inputs', () => {
  it('agrees with a bytewise table over long inputs split anywhere', () => {
    const table = Array.from({ length: 256 }, (_, i) => {
      let c = BigInt(i);
      for (let k = 0; k < 8; k++) c = c & 1n ? (c >> 1n) ^ 0xd800000000000000n : c >> 1n;
      return c;
    });
    const bytewise = (data: Uint8Array): string => {
      let crc = 0xffffffffffffffffn;
      for (const b of data) crc = table[Number((crc ^ BigInt(b)) & 0xffn)]! ^ (crc >> 8n);
      return (crc ^ 0xffffffffffffffffn).toString(16).padStart(16, '0');
    };
    const data = Buffer.concat(Array.from({ length: 400 }, (_, i) => createHash('sha256').update(`x${i}`).digest()));
    for (const cut of [0, 1, 63, 64, 65, 1000, 4097]) {
      const crc = new Crc64();
      crc.update(data.subarray(0, cut));
      crc.update(data.subarray(cut, cut + 7));
      crc.update(data.subarray(cut + 7));
      expect(crc.digest().toString('hex')).toBe(bytewise(data));
    }
  });
});

describe('PathSet', () => {
  it('tells new byte strings from ones it holds, across growth', () => {
    const set = new PathSet();
    const names = Array.from({ length: 20_000 }, (_, i) => Buffer.from(`usr/share/doc/p${i}/${'x'.repeat(i % 300)}`));
    expect(names.filter((n) => set.add(n)).length).toBe(names.length);
    expect(names.filter((n) => set.add(Buffer.from(n))).length).toBe(0);
    expect(set.add(Buffer.from('usr/share/doc/p1/'))).toBe(true);
    expect(set.add(Buffer.alloc(0))).toBe(true);
    expect(set.add(Buffer.alloc(0))).toBe(false);
  });
});

describe('TarSplitRecorder in front of the applier', () => {
  it('hands its digest to applyLayer, which then reports the same diffID', async () => {
    const tarPath = join(dir, 'apply.tar');
    await execa('tar', ['--format', 'posix', '--numeric-owner', '-C', src, '-cf', tarPath, 'etc']);
    // Bytes after the end-of-archive blocks belong to the diffID too.
    const tar = Buffer.concat([await readFile(tarPath), Buffer.alloc(3000, 1)]);
    const recorder = new TarSplitRecorder();
    const chunks: Buffer[] = [];
    for (let i = 0; i < tar.length; i += 1000) chunks.push(tar.subarray(i, i + 1000));
    const feed = pipeline(Readable.from(chunks), recorder);
    const out = join(dir, 'applied');
    await mkdir(out);
    const result = await applyLayer(recorder, out, { what: 'test layer' });
    await feed;
    const want = `sha256:${createHash('sha256').update(tar).digest('hex')}`;
    expect(result.diffId).toBe(want);
    expect(result.size).toBe(tar.length);
    expect(recorder.result()?.tarDigest).toBe(want);
    expect(await readFile(join(out, 'etc/hello'), 'utf8')).toBe('hello\n');
  });
});
