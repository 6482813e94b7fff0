import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, symlink, link, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { gunzipSync } from 'node:zlib';
import { execa } from 'execa';
import { Crc64, TarSplitRecorder } from '../../src/store/tar-split.js';

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
    const data = createHash('sha512').update('seed').digest();
    const bytes = Buffer.concat([data, createHash('sha512').update(data).digest()]);
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
