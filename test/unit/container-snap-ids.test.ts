import { describe, expect, it } from 'vitest';
import { BadSnapshotIdError, formatGoTime, formatSnapshotId, parseSnapshotId } from '../../src/container-snap/ids.js';

const img = 'a'.repeat(64);

describe('container-snap IDs', () => {
  it('parses images, <image>-work<N> and bare snapper numbers', () => {
    expect(parseSnapshotId(img)).toEqual({ kind: 'image', imageId: img });
    expect(parseSnapshotId(`${img}-work12`)).toEqual({ kind: 'snapshot', num: 12, imageId: img });
    expect(parseSnapshotId('7')).toEqual({ kind: 'snapshot', num: 7 });
    expect(() => parseSnapshotId('abc-def')).toThrow(BadSnapshotIdError);
    expect(() => parseSnapshotId(`${img}-work0`)).toThrow(BadSnapshotIdError);
    expect(() => parseSnapshotId('')).toThrow(BadSnapshotIdError);
  });

  it('formats them back', () => {
    expect(formatSnapshotId(3, img)).toBe(`${img}-work3`);
    expect(formatSnapshotId(3, undefined)).toBe('3');
  });

  it('prints Created as Go prints a time.Time in UTC', () => {
    expect(formatGoTime('2025-01-09T10:47:31.818647723Z')).toBe('2025-01-09 10:47:31.818647723 +0000 UTC');
    expect(formatGoTime('2025-01-09T10:47:31.500Z')).toBe('2025-01-09 10:47:31.5 +0000 UTC');
    expect(formatGoTime('2025-01-09T10:47:31.000Z')).toBe('2025-01-09 10:47:31 +0000 UTC');
    expect(formatGoTime('2025-01-09T12:47:31.25+02:00')).toBe('2025-01-09 10:47:31.25 +0000 UTC');
    expect(formatGoTime(undefined)).toBe('0001-01-01 00:00:00 +0000 UTC');
  });
});
