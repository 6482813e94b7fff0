/**
 * File writes on the thread pool (src/layers/file-writes.ts): content lands
 * at the right offsets, a file is finished only after its last write, the
 * byte and file bounds hold, and failures name the entry, close the fd and
 * reach drain().
 */
import * as fs from 'node:fs';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileWriteError, FileWrites } from '../../src/layers/file-writes.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'ocisnap-file-writes-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

const isOpen = (fd: number) => {
  try {
    fs.fstatSync(fd);
    return true;
  } catch {
    return false;
  }
};

describe('file writes on the thread pool', () => {
  it('writes every chunk in place and finishes each file after its last write', async () => {
    const writes = new FileWrites({ maxBytes: 256 * 1024, maxFiles: 3 });
    const contents = Array.from({ length: 6 }, (_, i) => randomBytes(100_000 + i * 77_777));
    const finished: Array<{ name: string; size: number }> = [];
    for (const [i, content] of contents.entries()) {
      const path = join(dir, `f${i}`);
      const fd = fs.openSync(path, 'w');
      const file = await writes.open(fd, `f${i}`, (f) => {
        // The whole content is in when the file is finished.
        finished.push({ name: `f${i}`, size: fs.fstatSync(f).size });
        fs.closeSync(f);
      });
      for (let off = 0; off < content.length; off += 30_000) await file.write(content.subarray(off, off + 30_000));
      file.end();
    }
    await writes.drain();
    expect(finished.map((f) => f.name).sort()).toEqual(contents.map((_, i) => `f${i}`));
    for (const f of finished) expect(f.size).toBe(contents[Number(f.name.slice(1))]!.length);
    for (const [i, content] of contents.entries()) expect(fs.readFileSync(join(dir, `f${i}`)).equals(content)).toBe(true);
  });

  it('keeps at most maxBytes in flight and at most maxFiles open', async () => {
    const writes = new FileWrites({ maxBytes: 64 * 1024, maxFiles: 2 });
    let open = 0;
    let maxOpen = 0;
    let maxPending = 0;
    let maxFiles = 0;
    const files = [];
    for (let i = 0; i < 5; i++) {
      const fd = fs.openSync(join(dir, `f${i}`), 'w');
      const file = await writes.open(fd, `f${i}`, (f) => {
        open--;
        fs.closeSync(f);
      });
      maxOpen = Math.max(maxOpen, ++open);
      for (let k = 0; k < 8; k++) {
        await file.write(Buffer.alloc(16 * 1024, k));
        maxPending = Math.max(maxPending, writes.pendingBytes);
        maxFiles = Math.max(maxFiles, writes.openFiles);
      }
      file.end();
      files.push(file);
    }
    await writes.drain();
    expect(maxOpen).toBe(2);
    expect(maxFiles).toBe(2);
    // The bound was reached (writes really were in flight) and never passed.
    expect(maxPending).toBe(64 * 1024);
    expect(open).toBe(0);
    expect(writes.pendingBytes).toBe(0);
  });

  it('fails with the entry name, closes the fd and does not finish the file', async () => {
    const writes = new FileWrites({ maxBytes: 1024 * 1024, maxFiles: 4 });
    const fd = fs.openSync(join(dir, 'ro'), 'w+');
    const readOnly = fs.openSync(join(dir, 'ro'), 'r');
    fs.closeSync(fd);
    let finishedCalls = 0;
    const file = await writes.open(readOnly, 'usr/lib/big.so', () => finishedCalls++);
    await file.write(Buffer.alloc(1000));
    file.end();
    const err = await writes.drain().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FileWriteError);
    expect((err as FileWriteError).entry).toBe('usr/lib/big.so');
    expect((err as FileWriteError).cause).toMatchObject({ code: 'EBADF' });
    expect(finishedCalls).toBe(0);
    expect(isOpen(readOnly)).toBe(false);
    // Later steps see the failure at once.
    expect(() => writes.check()).toThrow(FileWriteError);
    await expect(writes.open(fs.openSync(join(dir, 'other'), 'w'), 'other', () => {})).rejects.toBeInstanceOf(FileWriteError);
  });

  it('reports a failing finish as the file failing', async () => {
    const writes = new FileWrites({ maxBytes: 1024 * 1024, maxFiles: 4 });
    const fd = fs.openSync(join(dir, 'f'), 'w');
    const file = await writes.open(fd, 'etc/shadow', (f) => {
      fs.closeSync(f);
      throw Object.assign(new Error('EPERM: operation not permitted, fchown'), { code: 'EPERM' });
    });
    await file.write(Buffer.from('x'));
    file.end();
    const err = await writes.drain().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(FileWriteError);
    expect((err as FileWriteError).entry).toBe('etc/shadow');
  });

  it('closes an abandoned file without finishing it', async () => {
    const writes = new FileWrites({ maxBytes: 1024 * 1024, maxFiles: 4 });
    const fd = fs.openSync(join(dir, 'f'), 'w');
    let finishedCalls = 0;
    const file = await writes.open(fd, 'f', () => finishedCalls++);
    await file.write(Buffer.alloc(10_000));
    file.abandon();
    await writes.drain().catch(() => {});
    expect(finishedCalls).toBe(0);
    expect(isOpen(fd)).toBe(false);
  });
});
