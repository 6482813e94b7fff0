import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { UsageError } from '../../src/errors.js';
import { parseReference } from '../../src/oci/reference.js';
import {
  loadRegistriesConf,
  parseRegistriesConf,
  prefixMatchLength,
  RegistriesConfError,
  registryFor,
  type RegistriesConf,
} from '../../src/policy/registries-conf.js';

const root = mkdtempSync(join(tmpdir(), 'ocisnap-regconf-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

let dir: string;
let count = 0;
beforeEach(() => {
  count += 1;
  dir = join(root, String(count));
  mkdirSync(join(dir, 'd'), { recursive: true });
});

const mainPath = () => join(dir, 'registries.conf');
const dropIn = () => join(dir, 'd');
const load = () => loadRegistriesConf({ path: mainPath(), dropInDir: dropIn() });

function conf(text: string): RegistriesConf {
  return { ...parseRegistriesConf(text, 'test.conf'), unqualifiedSearchRegistries: [], files: [] };
}

function expectConfError(fn: () => unknown, message: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(RegistriesConfError);
  expect(caught).toBeInstanceOf(UsageError);
  expect((caught as Error).message).toMatch(/^test\.conf: /);
  expect((caught as Error).message).toMatch(message);
  expect((caught as Error).message).not.toContain('\n');
}

describe('parseRegistriesConf', () => {
  it('reads v2 registries with mirrors and top-level keys', () => {
    const parsed = parseRegistriesConf(
      `
unqualified-search-registries = ["registry.example", "docker.io"]
short-name-mode = "enforcing"

[[registry]]
prefix = "example.com/os"
location = "mirror.internal:5000/os/"
insecure = true

[[registry.mirror]]
location = "m1.internal"
insecure = true
pull-from-mirror = "digest-only"

[[registry.mirror]]
location = "m2.internal/path"

[[registry]]
location = "blocked.example"
blocked = true

[aliases]
"fedora" = "registry.fedoraproject.org/fedora"
`,
      'test.conf',
    );
    expect(parsed).toEqual({
      unqualifiedSearchRegistries: ['registry.example', 'docker.io'],
      shortNameMode: 'enforcing',
      aliases: { fedora: 'registry.fedoraproject.org/fedora' },
      registries: [
        {
          prefix: 'example.com/os',
          location: 'mirror.internal:5000/os',
          insecure: true,
          blocked: false,
          mirrors: [
            { location: 'm1.internal', insecure: true, pullFromMirror: 'digest-only' },
            { location: 'm2.internal/path', insecure: false, pullFromMirror: 'all' },
          ],
        },
        { prefix: 'blocked.example', location: 'blocked.example', insecure: false, blocked: true, mirrors: [] },
      ],
    });
  });

  it('keeps the first of repeated prefixes, like containers/image', () => {
    const c = conf('[[registry]]\nprefix = "a"\nlocation = "first"\n[[registry]]\nprefix = "a"\nlocation = "second"\n');
    expect(c.registries.map((r) => r.location)).toEqual(['first']);
  });

  it('trims trailing slashes from search registries', () => {
    expect(parseRegistriesConf('unqualified-search-registries = ["r.example:5000/", "[::1]"]\n', 'x').unqualifiedSearchRegistries).toEqual([
      'r.example:5000',
      '[::1]',
    ]);
  });

  it('applies mirror-by-digest-only to every mirror', () => {
    const c = conf(`[[registry]]\nlocation = "a.example"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = "m"\n`);
    expect(c.registries[0]!.mirrors[0]!.pullFromMirror).toBe('digest-only');
  });

  it.each([
    ['v1 format', '[registries.search]\nregistries = ["docker.io"]\n', /version 1 format .* is not supported; use version 2/],
    ['unknown top-level key', 'foo = 1\n', /unknown key "foo"/],
    ['unknown registry key', '[[registry]]\nlocation = "a"\nsecure = true\n', /\[\[registry\]\] #1: unknown key "secure"/],
    ['unknown mirror key', '[[registry]]\nlocation = "a"\n[[registry.mirror]]\nlocation = "m"\nx = 1\n', /mirror #1: unknown key "x"/],
    ['insecure not a boolean', '[[registry]]\nlocation = "a"\ninsecure = "yes"\n', /prefix "a"\): "insecure" must be true or false/],
    ['location with a scheme', '[[registry]]\nlocation = "https://a.example"\n', /invalid location "https:\/\/a\.example": URL schemes are not supported/],
    ['no prefix and no location', '[[registry]]\ninsecure = true\n', /both "location" and "prefix" are unset/],
    ['prefix without location', '[[registry]]\nprefix = "a.example"\n', /"location" is unset and prefix "a\.example" is not of the form \*\.example\.com/],
    ['bad wildcard', '[[registry]]\nprefix = "a.*.example"\nlocation = "x"\n', /wildcard prefix must look like \*\.example\.com/],
    ['wildcard with a path', '[[registry]]\nprefix = "*.example/os"\nlocation = "x"\n', /wildcard prefix/],
    [
      'conflicting settings for one location',
      '[[registry]]\nprefix = "a/x"\nlocation = "r.example"\n[[registry]]\nprefix = "a/y"\nlocation = "r.example"\ninsecure = true\n',
      /registry "r\.example" is defined more than once with conflicting "insecure" or "blocked" settings/,
    ],
    ['search registry with a path', 'unqualified-search-registries = ["r.example/ns"]\n', /"r\.example\/ns" is not a registry host\[:port\]/],
    ['search registry with a scheme', 'unqualified-search-registries = ["https://r.example"]\n', /URL schemes are not supported/],
    ['mirror without location', '[[registry]]\nlocation = "a"\n[[registry.mirror]]\ninsecure = true\n', /mirror #1: "location" is unset/],
    ['bad pull-from-mirror', '[[registry]]\nlocation = "a"\n[[registry.mirror]]\nlocation = "m"\npull-from-mirror = "some"\n', /"pull-from-mirror" must be "all", "digest-only" or "tag-only", got "some"/],
    ['pull-from-mirror on a registry', '[[registry]]\nlocation = "a"\npull-from-mirror = "all"\n', /"pull-from-mirror" belongs in \[\[registry\.mirror\]\]/],
    [
      'digest-only and pull-from-mirror together',
      '[[registry]]\nlocation = "a"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = "m"\npull-from-mirror = "all"\n',
      /cannot be combined with the registry's "mirror-by-digest-only"/,
    ],
    ['bad short-name-mode', 'short-name-mode = "strict"\n', /"short-name-mode" must be "enforcing", "permissive" or "disabled", got "strict"/],
    ['search registries not strings', 'unqualified-search-registries = [1]\n', /"unqualified-search-registries" must be an array of strings/],
    ['registry as a table', '[registry]\nlocation = "a"\n', /"registry" must be an array of tables/],
    ['invalid TOML', '[[registry]\n', /line 1: Invalid TOML document/],
  ])('refuses %s, naming the file', (_name, text, message) => {
    expectConfError(() => parseRegistriesConf(text, 'test.conf'), message);
  });
});

describe('prefixMatchLength (sysregistriesv2 refMatchingPrefix)', () => {
  it.each([
    ['example.com/os', 'example.com', 11],
    ['example.com/os', 'example.com/os', 14],
    ['example.com/os/sub', 'example.com/os', 14],
    ['example.com/osx', 'example.com/os', -1],
    ['example.community/os', 'example.com', -1],
    ['example.com:5000/os', 'example.com', -1],
    ['example.com/os', 'example.com/os/sub', -1],
    ['a.example.com/os', '*.example.com', 13],
    ['x.y.example.com/os', '*.example.com', 15],
    ['example.com/os', '*.example.com', -1],
    ['a.example.com:5000/os', '*.example.com', 13],
    ['a.example.community/os', '*.example.com', -1],
    ['other.io/a.example.com/os', '*.example.com', -1],
  ])('%s with prefix %s → %d', (name, prefix, want) => {
    expect(prefixMatchLength(name, prefix)).toBe(want);
  });
});

describe('registryFor', () => {
  const c = conf(`
[[registry]]
prefix = "docker.io"
location = "hub-mirror.internal"

[[registry]]
prefix = "docker.io/library"
location = "lib.internal:5000/dockerlib"
insecure = true
[[registry.mirror]]
location = "m-all.internal/lib"
[[registry.mirror]]
location = "m-digest.internal/lib"
pull-from-mirror = "digest-only"
[[registry.mirror]]
location = "m-tag.internal/lib"
pull-from-mirror = "tag-only"
insecure = true

[[registry]]
prefix = "*.corp.example"
location = ""

[[registry]]
prefix = "*.rewrite.example"
location = "central.example/all"

[[registry]]
location = "evil.example"
blocked = true
`);

  it('uses the longest matching prefix and rewrites it to the location', () => {
    expect(registryFor(c, parseReference('org/os:1'))).toEqual({
      insecure: false,
      blocked: false,
      location: 'hub-mirror.internal/org/os',
      mirrors: [],
    });
    const lib = registryFor(c, parseReference('debian:12'));
    expect(lib.location).toBe('lib.internal:5000/dockerlib/debian');
    expect(lib.insecure).toBe(true);
  });

  it('keeps mirrors usable for the reference, in order, with rewritten locations', () => {
    expect(registryFor(c, parseReference('debian:12')).mirrors).toEqual([
      { location: 'm-all.internal/lib/debian', insecure: false, pullFromMirror: 'all' },
      { location: 'm-tag.internal/lib/debian', insecure: true, pullFromMirror: 'tag-only' },
    ]);
    const byDigest = registryFor(c, parseReference(`debian@sha256:${'a'.repeat(64)}`));
    expect(byDigest.mirrors.map((m) => m.location)).toEqual(['m-all.internal/lib/debian', 'm-digest.internal/lib/debian']);
  });

  it('handles wildcard prefixes: empty location keeps the reference, a location replaces the host', () => {
    expect(registryFor(c, parseReference('reg.corp.example/os:1')).location).toBe('reg.corp.example/os');
    expect(registryFor(c, parseReference('a.b.rewrite.example/team/os')).location).toBe('central.example/all/team/os');
  });

  it('refuses a rewrite that does not give HOST/REPOSITORY', () => {
    expect(() => registryFor(c, parseReference('a.rewrite.example:5000/os'))).toThrow(
      /prefix "\*\.rewrite\.example" with location "central\.example\/all" rewrites a\.rewrite\.example:5000\/os to "central\.example\/all:5000\/os", which is not a valid HOST\/REPOSITORY/,
    );
    const bare = conf('[[registry]]\nprefix = "r.example/os"\nlocation = "mirror.example"\n');
    expect(() => registryFor(bare, parseReference('r.example/os'))).toThrow(RegistriesConfError);
    expect(registryFor(bare, parseReference('r.example/os/sub')).location).toBe('mirror.example/sub');
  });

  it('reports blocked registries and leaves unknown ones alone', () => {
    expect(registryFor(c, parseReference('evil.example/os')).blocked).toBe(true);
    expect(registryFor(c, parseReference('evil.example.org/os'))).toEqual({
      insecure: false,
      blocked: false,
      location: 'evil.example.org/os',
      mirrors: [],
    });
    expect(registryFor(c, parseReference('localhost:5000/os')).location).toBe('localhost:5000/os');
  });
});

describe('loadRegistriesConf', () => {
  it('is empty for an empty file and a missing drop-in directory', async () => {
    writeFileSync(mainPath(), '# nothing\n');
    const c = await loadRegistriesConf({ path: mainPath(), dropInDir: join(dir, 'none.d') });
    expect(c).toEqual({ registries: [], unqualifiedSearchRegistries: [], aliases: {}, files: [mainPath()] });
  });

  it('merges drop-ins in lexical order: by prefix, and top-level keys only when set', async () => {
    writeFileSync(
      mainPath(),
      `unqualified-search-registries = ["a.example"]
short-name-mode = "permissive"
[[registry]]
location = "one.example"
insecure = true
[[registry]]
location = "two.example"
[aliases]
"x" = "a.example/x"
`,
    );
    writeFileSync(join(dropIn(), '20-b.conf'), '[[registry]]\nlocation = "one.example"\nblocked = true\n');
    writeFileSync(join(dropIn(), '10-a.conf'), '[[registry]]\nlocation = "one.example"\ninsecure = false\n[aliases]\n"y" = "b.example/y"\n');
    writeFileSync(join(dropIn(), '30-c.conf'), 'unqualified-search-registries = []\n');
    writeFileSync(join(dropIn(), 'ignored.txt'), 'this is not toml [[[');
    const c = await load();
    expect(c.files).toEqual([mainPath(), join(dropIn(), '10-a.conf'), join(dropIn(), '20-b.conf'), join(dropIn(), '30-c.conf')]);
    const one = c.registries.find((r) => r.prefix === 'one.example');
    // 20-b.conf replaced the whole entry: insecure is back to its default.
    expect(one).toEqual({ prefix: 'one.example', location: 'one.example', insecure: false, blocked: true, mirrors: [] });
    expect(c.registries.find((r) => r.prefix === 'two.example')).toBeDefined();
    expect(c.unqualifiedSearchRegistries).toEqual([]);
    expect(c.shortNameMode).toBe('permissive');
    expect(c.aliases).toEqual({ x: 'a.example/x', y: 'b.example/y' });
  });

  it('requires a main file the caller named, but not the default one', async () => {
    await expect(load()).rejects.toThrow(/cannot read .*registries\.conf: ENOENT/);
    // The default path may be missing (it exists on this machine, so only the
    // explicit-path rule can be shown here).
  });

  it('names the drop-in file that is wrong', async () => {
    writeFileSync(mainPath(), '');
    writeFileSync(join(dropIn(), '50-bad.conf'), '[[registry]]\nlocation = "a"\nmirrors = []\n');
    await expect(load()).rejects.toThrow(RegistriesConfError);
    await expect(load()).rejects.toThrow(`${join(dropIn(), '50-bad.conf')}: [[registry]] #1: unknown key "mirrors"`);
  });

  it('reads the system files of this machine (Debian containers-common)', async () => {
    // /etc/containers/registries.conf (all comments) and registries.conf.d/shortnames.conf ([aliases]).
    expect(existsSync('/etc/containers/registries.conf.d/shortnames.conf')).toBe(true);
    const c = await loadRegistriesConf();
    expect(c.files).toContain('/etc/containers/registries.conf.d/shortnames.conf');
    expect(c.aliases.fedora).toBe('registry.fedoraproject.org/fedora');
  });
});
