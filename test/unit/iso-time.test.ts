/**
 * isoTime is toISOString without V8's time-zone set-up (src/iso-time.ts). It
 * must print exactly what toISOString prints, and src/ must keep to it: one
 * toISOString or localeCompare on a command's path costs 30-55 ms of ICU
 * loading with a cold page cache.
 */
import { describe, expect, it } from 'vitest';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isoTime } from '../../src/iso-time.js';

const src = fileURLToPath(new URL('../../src/', import.meta.url));

describe('isoTime', () => {
  it('prints what toISOString prints', () => {
    const edges = [0, -1, 1, 999, 1000, -62167219200000, -62167219200001, 253402300799999, 253402300800000, 8.64e15, -8.64e15];
    const random = Array.from({ length: 2000 }, (_, i) => Math.round((Math.sin(i * 12.9898) * 43758.5453 % 1) * 8.64e15));
    for (const ms of [...edges, ...random, Date.now()]) {
      const d = new Date(ms);
      expect(isoTime(d), String(ms)).toBe(d.toISOString());
    }
  });

  it('defaults to now', () => {
    const before = Date.now();
    const t = Date.parse(isoTime());
    expect(t).toBeGreaterThanOrEqual(before);
    expect(t).toBeLessThanOrEqual(Date.now());
  });

  it('throws the RangeError toISOString throws on an invalid date', () => {
    expect(() => isoTime(new Date(Number.NaN))).toThrow(RangeError);
  });

  it('is what src/ uses instead of toISOString and localeCompare', async () => {
    const files = (await readdir(src, { recursive: true })).filter((f) => f.endsWith('.ts'));
    expect(files.length).toBeGreaterThan(50);
    for (const f of files) {
      const code = (await readFile(join(src, f), 'utf8')).replace(/^\s*(\/\/|\*).*$/gm, '');
      expect(code, f).not.toMatch(/\.toISOString\(|\.localeCompare\(|\bIntl\./);
    }
  });
});
