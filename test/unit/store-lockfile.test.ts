import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { LockFile, LockTimeoutError } from '../../src/store/lockfile.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'ocisnap-lock-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('LockFile in one process', () => {
  it('is one instance per path', () => {
    expect(LockFile.for(join(dir, 'a.lock'))).toBe(LockFile.for(join(dir, '.', 'a.lock')));
  });

  it('serializes holders in order', async () => {
    const lock = LockFile.for(join(dir, 'order.lock'));
    const events: string[] = [];
    const hold = (name: string, ms: number) =>
      lock.with('write', async () => {
        events.push(`${name}+`);
        await sleep(ms);
        events.push(`${name}-`);
      });
    await Promise.all([hold('a', 30), hold('b', 5), lock.with('read', async () => void events.push('r'))]);
    expect(events).toEqual(['a+', 'a-', 'b+', 'b-', 'r']);
  });

  it('a waiter that times out does not let the next one in early', async () => {
    const lock = LockFile.for(join(dir, 'timeout.lock'));
    const events: string[] = [];
    const first = lock.with('write', async () => {
      events.push('first+');
      await sleep(80);
      events.push('first-');
    });
    const impatient = lock.with('write', async () => void events.push('impatient'), { timeoutMs: 10 });
    const third = lock.with('write', async () => void events.push('third'));
    await expect(impatient).rejects.toThrow(LockTimeoutError);
    await Promise.all([first, third]);
    expect(events).toEqual(['first+', 'first-', 'third']);
  });

  it('tryWith does not wait, and touch writes a 64-byte last-writer ID', async () => {
    const path = join(dir, 'try.lock');
    const lock = LockFile.for(path);
    let inner: boolean | undefined;
    await lock.with('write', async (l) => {
      inner = await lock.tryWith('write', async () => {});
      await l.touch();
      expect((await l.lastWriter()).readUInt32LE(16)).toBe(process.pid);
    });
    expect(inner).toBe(false);
    expect((await readFile(path)).length).toBe(64);
    expect(await lock.tryWith('write', async () => {})).toBe(true);
    await expect(lock.with('read', async (l) => l.touch())).rejects.toThrow(/without holding its write lock/);
  });
});
