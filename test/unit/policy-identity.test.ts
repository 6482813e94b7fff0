/** signedIdentity rules (containers/image signature/policy_reference_match.go semantics). */
import { describe, expect, it } from 'vitest';
import { identityMatches, parseNamed, type SignedIdentity } from '../../src/policy/identity.js';

const D = `sha256:${'b'.repeat(64)}`;
const D2 = `sha256:${'c'.repeat(64)}`;

describe('parseNamed', () => {
  it('normalizes without adding a default tag', () => {
    expect(parseNamed('busybox')).toMatchObject({ name: 'docker.io/library/busybox', nameOnly: true, full: 'docker.io/library/busybox' });
    expect(parseNamed('localhost:5000/os')).toMatchObject({ nameOnly: true, full: 'localhost:5000/os' });
    expect(parseNamed('localhost:5000/os:1')).toMatchObject({ tagged: true, full: 'localhost:5000/os:1' });
    expect(parseNamed(`reg.io/os@${D}`)).toMatchObject({ digested: true, tagged: false, full: `reg.io/os@${D}` });
    expect(parseNamed('Not A Ref')).toBeUndefined();
  });
});

describe('identityMatches', () => {
  const cases: Array<[SignedIdentity, string | undefined, string, boolean]> = [
    // matchRepoDigestOrExact (default)
    [{ type: 'matchRepoDigestOrExact' }, 'reg.io/os:1', 'reg.io/os:1', true],
    [{ type: 'matchRepoDigestOrExact' }, 'reg.io/os:1', 'reg.io/os:2', false],
    [{ type: 'matchRepoDigestOrExact' }, 'reg.io/os:1', 'reg.io/os', false], // name-only signature
    [{ type: 'matchRepoDigestOrExact' }, `reg.io/os@${D}`, 'reg.io/os:anything', true],
    [{ type: 'matchRepoDigestOrExact' }, `reg.io/os@${D}`, `reg.io/os@${D2}`, true], // digest checked elsewhere
    [{ type: 'matchRepoDigestOrExact' }, `reg.io/os@${D}`, 'reg.io/other:1', false],
    [{ type: 'matchRepoDigestOrExact' }, 'docker.io/library/busybox:latest', 'busybox:latest', true],
    [{ type: 'matchRepoDigestOrExact' }, undefined, 'reg.io/os:1', false],
    // matchExact
    [{ type: 'matchExact' }, 'reg.io/os:1', 'reg.io/os:1', true],
    [{ type: 'matchExact' }, `reg.io/os@${D}`, 'reg.io/os:1', false],
    [{ type: 'matchExact' }, `reg.io/os@${D}`, `reg.io/os@${D}`, true],
    // matchRepository: what cosign signs (repository only)
    [{ type: 'matchRepository' }, 'reg.io/os:1', 'reg.io/os', true],
    [{ type: 'matchRepository' }, 'reg.io/os:1', 'reg.io/os:7', true],
    [{ type: 'matchRepository' }, 'reg.io/other:1', 'reg.io/os', false],
    [{ type: 'matchRepository' }, 'reg.io/os/sub:1', 'reg.io/os', false],
    // exactReference / exactRepository: independent of the image's own name
    [{ type: 'exactReference', dockerReference: 'reg.io/os:1' }, undefined, 'reg.io/os:1', true],
    [{ type: 'exactReference', dockerReference: 'reg.io/os:1' }, 'x.io/y:1', 'reg.io/os:2', false],
    [{ type: 'exactRepository', dockerRepository: 'reg.io/os' }, undefined, 'reg.io/os:2', true],
    [{ type: 'exactRepository', dockerRepository: 'reg.io/os' }, undefined, 'reg.io/os2:2', false],
    // remapIdentity: a mirror's images carry the primary's signatures
    [{ type: 'remapIdentity', prefix: 'mirror.local/m', signedPrefix: 'reg.io/os' }, 'mirror.local/m/base:1', 'reg.io/os/base:1', true],
    [{ type: 'remapIdentity', prefix: 'mirror.local/m', signedPrefix: 'reg.io/os' }, 'mirror.local/m/base:1', 'mirror.local/m/base:1', false],
    [{ type: 'remapIdentity', prefix: 'mirror.local/m', signedPrefix: 'reg.io/os' }, 'mirror.local/mx/base:1', 'mirror.local/mx/base:1', true], // not on a boundary: unchanged
    [{ type: 'remapIdentity', prefix: 'mirror.local', signedPrefix: 'reg.io' }, `mirror.local/os@${D}`, 'reg.io/os:1', true],
  ];
  for (const [rule, intended, signed, want] of cases) {
    it(`${rule.type}: image ${intended ?? '(none)'} vs signed ${signed} → ${want}`, () => {
      expect(identityMatches(rule, intended, signed)).toBe(want);
    });
  }
});
