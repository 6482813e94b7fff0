import { describe, expect, it } from 'vitest';
import { InvalidReferenceError } from '../../src/oci/reference.js';
import {
  AmbiguousShortNameError,
  ShortNameError,
  isShortName,
  resolveShortName,
  type ShortNameConf,
} from '../../src/pull/short-names.js';

const digest = `sha256:${'ab'.repeat(32)}`;

function conf(c: Partial<ShortNameConf>): ShortNameConf {
  return { aliases: {}, unqualifiedSearchRegistries: [], files: ['/etc/containers/registries.conf'], ...c };
}

describe('isShortName (shortnames.parseUnnormalizedShortName)', () => {
  it('is short when the first component is not a registry host', () => {
    for (const s of ['debian', 'debian:12', 'library/debian', 'library/debian:12', `debian@${digest}`]) {
      expect(isShortName(s), s).toBe(true);
    }
    for (const s of ['docker.io/debian', 'localhost/os', 'localhost:5000/os:1', 'quay.io/fedora/fedora', `host.example/os@${digest}`]) {
      expect(isShortName(s), s).toBe(false);
    }
  });
});

describe('resolveShortName', () => {
  it('leaves qualified names alone (normalized)', () => {
    const r = resolveShortName('docker.io/debian', conf({ unqualifiedSearchRegistries: ['quay.io'] }));
    expect(r).toEqual({ candidates: [{ registry: 'docker.io', repository: 'library/debian', tag: 'latest' }] });
  });

  it('resolves an alias with the tag or digest the user wrote', () => {
    const c = conf({ aliases: { myos: 'registry.example.com/os/base' }, unqualifiedSearchRegistries: ['a.io', 'b.io'] });
    expect(resolveShortName('myos', c).candidates).toEqual([{ registry: 'registry.example.com', repository: 'os/base', tag: 'latest' }]);
    expect(resolveShortName(`myos@${digest}`, c).candidates).toEqual([
      { registry: 'registry.example.com', repository: 'os/base', digest },
    ]);
    expect(resolveShortName('myos:41', c).description).toBe('Resolved "myos" as an alias (/etc/containers/registries.conf)');
  });

  it('refuses an alias whose value is not a fully qualified name without tag', () => {
    expect(() => resolveShortName('a', conf({ aliases: { a: 'quay.io/x:1' } }))).toThrow(ShortNameError);
    expect(() => resolveShortName('a', conf({ aliases: { a: 'library/x' } }))).toThrow(/must be a fully qualified name/);
  });

  it('normalizes docker.io search candidates', () => {
    const r = resolveShortName('debian:12', conf({ unqualifiedSearchRegistries: ['docker.io'] }));
    expect(r.candidates).toEqual([{ registry: 'docker.io', repository: 'library/debian', tag: '12' }]);
    expect(r.shortName).toBe('debian');
  });

  it('applies short-name-mode to several search registries', () => {
    const regs = { unqualifiedSearchRegistries: ['a.io', 'b.io:5000'] };
    expect(() => resolveShortName('os', conf(regs))).toThrow(AmbiguousShortNameError);
    expect(() => resolveShortName('os', conf({ ...regs, shortNameMode: 'enforcing' }))).toThrow(
      /"os" is ambiguous.*a\.io\/os:latest, b\.io:5000\/os:latest/,
    );
    for (const mode of ['permissive', 'disabled'] as const) {
      expect(resolveShortName('os', conf({ ...regs, shortNameMode: mode })).candidates.map((c) => c.registry)).toEqual([
        'a.io',
        'b.io:5000',
      ]);
    }
  });

  it('refuses a short name with nothing to resolve it and malformed names', () => {
    expect(() => resolveShortName('debian', conf({}))).toThrow(/did not resolve to an alias and no unqualified-search registries/);
    expect(() => resolveShortName('debian', conf({ files: [] }))).toThrow(/no containers-registries.conf\(5\) was found/);
    expect(() => resolveShortName('Debian', conf({ unqualifiedSearchRegistries: ['a.io'] }))).toThrow(InvalidReferenceError);
  });
});
