import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer, connect, type AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeEach, describe, expect, it } from 'vitest';
import { UsageError } from '../../src/errors.js';
import { AuthFileError, authFilePaths, lookupCredentials, type LookupOptions } from '../../src/policy/auth-file.js';
import { requireCommands } from '../support/host.js';

const root = mkdtempSync(join(tmpdir(), 'ocisnap-auth-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

let dir: string;
let home: string;
let opts: LookupOptions;
let count = 0;
beforeEach(() => {
  count += 1;
  dir = join(root, String(count));
  home = join(dir, 'home');
  mkdirSync(home, { recursive: true });
  // A clean environment: nothing from the real user leaks in.
  opts = { env: { XDG_RUNTIME_DIR: join(dir, 'run') }, homeDir: home, uid: 4242 };
});

const b64 = (s: string) => Buffer.from(s).toString('base64');
const auth = (user: string, password: string) => ({ auth: b64(`${user}:${password}`) });

function write(path: string, content: unknown): string {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content));
  return path;
}

const runtimeFile = () => join(dir, 'run/containers/auth.json');
const configFile = () => join(home, '.config/containers/auth.json');
const dockerFile = () => join(home, '.docker/config.json');
const legacyFile = () => join(home, '.dockercfg');

async function expectAuthError(p: Promise<unknown>, message: RegExp): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(AuthFileError);
  expect(err).toBeInstanceOf(UsageError);
  expect((err as Error).message).toMatch(message);
  expect((err as Error).message).not.toContain('\n');
}

describe('auth file search order (containers/image pkg/docker/config)', () => {
  it('lists the default paths', () => {
    expect(authFilePaths(opts)).toEqual([runtimeFile(), configFile(), dockerFile(), legacyFile()]);
    expect(authFilePaths({ ...opts, env: {} })[0]).toBe('/run/containers/4242/auth.json');
    expect(authFilePaths({ ...opts, env: { XDG_CONFIG_HOME: '/cfg', DOCKER_CONFIG: '/dk' } }).slice(1, 3)).toEqual([
      '/cfg/containers/auth.json',
      '/dk/config.json',
    ]);
    expect(authFilePaths({ ...opts, authFile: '/a.json' })).toEqual(['/a.json']);
    expect(authFilePaths({ ...opts, env: { REGISTRY_AUTH_FILE: '/r.json' } })).toEqual(['/r.json']);
  });

  it('returns undefined when no file exists', async () => {
    expect(await lookupCredentials('docker.io', 'library/debian', opts)).toBeUndefined();
  });

  it('takes the first file that has credentials for the registry', async () => {
    write(dockerFile(), { auths: { 'r.example': auth('docker', 'd') } });
    expect(await lookupCredentials('r.example', 'os', opts)).toEqual({ username: 'docker', password: 'd' });
    write(configFile(), { auths: { 'r.example': auth('config', 'c') } });
    expect(await lookupCredentials('r.example', 'os', opts)).toEqual({ username: 'config', password: 'c' });
    write(runtimeFile(), { auths: { 'r.example': auth('runtime', 'r') } });
    expect(await lookupCredentials('r.example', 'os', opts)).toEqual({ username: 'runtime', password: 'r' });
  });

  it('goes on to the next file when the first has nothing for this registry', async () => {
    write(runtimeFile(), { auths: { 'other.example': auth('x', 'y') } });
    write(legacyFile(), { 'https://r.example/v1/': { ...auth('legacy', 'l'), email: 'e@x' } });
    expect(await lookupCredentials('r.example', 'os', opts)).toEqual({ username: 'legacy', password: 'l' });
  });

  it('with --authfile reads only that file, which must exist', async () => {
    write(runtimeFile(), { auths: { 'r.example': auth('runtime', 'r') } });
    const mine = write(join(dir, 'mine.json'), { auths: {} });
    expect(await lookupCredentials('r.example', 'os', { ...opts, authFile: mine })).toBeUndefined();
    await expectAuthError(
      lookupCredentials('r.example', 'os', { ...opts, authFile: join(dir, 'missing.json') }),
      /auth file .*missing\.json does not exist/,
    );
  });

  it('honours REGISTRY_AUTH_FILE like podman', async () => {
    const f = write(join(dir, 'env.json'), { auths: { 'r.example': auth('env', 'e') } });
    const env = { ...opts.env, REGISTRY_AUTH_FILE: f };
    expect(await lookupCredentials('r.example', 'os', { ...opts, env })).toEqual({ username: 'env', password: 'e' });
  });
});

describe('key matching within a file', () => {
  beforeEach(() => {
    write(runtimeFile(), {
      auths: {
        'r.example': auth('registry', '1'),
        'r.example/org': auth('org', '2'),
        'r.example/org/os': auth('repo', '3'),
        'localhost:5000': auth('local', '4'),
      },
    });
  });

  it.each([
    ['r.example', 'org/os', 'repo'],
    ['r.example', 'org/os/sub', 'repo'],
    ['r.example', 'org/other', 'org'],
    ['r.example', 'orgx/os', 'registry'],
    ['r.example', 'os', 'registry'],
    ['localhost:5000', 'os', 'local'],
  ])('%s/%s → %s', async (registry, repository, user) => {
    expect((await lookupCredentials(registry, repository, opts))?.username).toBe(user);
  });

  it('does not match a different port or host', async () => {
    expect(await lookupCredentials('localhost:5001', 'os', opts)).toBeUndefined();
    expect(await lookupCredentials('r.example.com', 'os', opts)).toBeUndefined();
  });
});

describe('legacy and Docker Hub keys', () => {
  it.each(['https://index.docker.io/v1/', 'index.docker.io', 'docker.io', 'registry-1.docker.io', 'http://docker.io'])(
    '%s matches docker.io',
    async (key) => {
      write(dockerFile(), { auths: { [key]: auth('hub', 'h') } });
      expect(await lookupCredentials('docker.io', 'library/debian', opts)).toEqual({ username: 'hub', password: 'h' });
    },
  );

  it('normalizes URL keys with paths to the host', async () => {
    write(dockerFile(), { auths: { 'https://r.example/v2/': auth('url', 'u') } });
    expect((await lookupCredentials('r.example', 'os', opts))?.username).toBe('url');
  });

  it('reads ~/.dockercfg (no "auths" wrapper)', async () => {
    write(legacyFile(), { 'https://index.docker.io/v1/': auth('old', 'o') });
    expect((await lookupCredentials('docker.io', 'library/debian', opts))?.username).toBe('old');
  });
});

describe('entry decoding', () => {
  it('splits user:password at the first colon; passwords may contain colons', async () => {
    write(runtimeFile(), { auths: { 'r.example': auth('u', 'p:a:ss') } });
    expect(await lookupCredentials('r.example', 'os', opts)).toEqual({ username: 'u', password: 'p:a:ss' });
  });

  it('returns identitytoken', async () => {
    write(runtimeFile(), {
      auths: { 'r.example': { identitytoken: 'tok' }, 'both.example': { ...auth('<token>', ''), identitytoken: 't2' } },
    });
    expect(await lookupCredentials('r.example', 'os', opts)).toEqual({ username: '', password: '', identityToken: 'tok' });
    expect(await lookupCredentials('both.example', 'os', opts)).toEqual({
      username: '<token>',
      password: '',
      identityToken: 't2',
    });
  });

  it('skips an empty entry and keeps looking', async () => {
    write(runtimeFile(), { auths: { 'r.example': {} } });
    write(dockerFile(), { auths: { 'r.example': auth('d', 'x') } });
    expect((await lookupCredentials('r.example', 'os', opts))?.username).toBe('d');
  });

  it.each([
    ['bad base64', { auths: { 'r.example': { auth: '!!!' } } }, /entry "r\.example": "auth" is not valid base64/],
    ['no colon', { auths: { 'r.example': { auth: b64('secretvalue') } } }, /entry "r\.example": "auth" must encode "user:password"/],
    ['auth not a string', { auths: { 'r.example': { auth: 5 } } }, /entry "r\.example": "auth" must be a string/],
    ['auths not an object', { auths: [] }, /"auths" must be an object/],
    ['top level not an object', [], /not a JSON object/],
    ['invalid JSON', '{"auths": {', /auth file .*auth\.json is not valid JSON/],
  ])('fails clearly on %s, naming the file', async (_name, content, message) => {
    const f = write(runtimeFile(), content);
    await expectAuthError(lookupCredentials('r.example', 'os', opts), message);
    await expect(lookupCredentials('r.example', 'os', opts)).rejects.toThrow(f);
  });

  it('never puts the decoded secret in an error', async () => {
    write(runtimeFile(), { auths: { 'r.example': { auth: b64('hunter2secret') } } });
    const err = await lookupCredentials('r.example', 'os', opts).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(AuthFileError);
    expect((err as Error).message).not.toMatch(/hunter2|secretvalue/);
  });
});

describe('credential helpers are refused, not ignored', () => {
  it('credHelpers for the registry', async () => {
    write(dockerFile(), { auths: { 'r.example': auth('a', 'b') }, credHelpers: { 'r.example': 'ecr-login' } });
    await expectAuthError(
      lookupCredentials('r.example', 'os', opts),
      /config\.json sends r\.example to credential helper "docker-credential-ecr-login", which ocisnap does not run/,
    );
    // Another registry in the same file is unaffected.
    write(dockerFile(), { auths: { 'o.example': auth('a', 'b') }, credHelpers: { 'r.example': 'ecr-login' } });
    expect((await lookupCredentials('o.example', 'os', opts))?.username).toBe('a');
  });

  it('credsStore when the file has no usable entry', async () => {
    write(dockerFile(), { auths: { 'r.example': {} }, credsStore: 'desktop' });
    await expectAuthError(lookupCredentials('r.example', 'os', opts), /credential store "docker-credential-desktop"/);
    // A plain entry next to credsStore is still used.
    write(dockerFile(), { auths: { 'r.example': auth('a', 'b') }, credsStore: 'desktop' });
    expect((await lookupCredentials('r.example', 'os', opts))?.username).toBe('a');
  });
});

describe('files written by podman login', () => {
  it('finds what podman login stored, per registry and per namespace', async () => {
    await requireCommands('podman', 'docker-registry', 'htpasswd');
    const work = mkdtempSync(join(root, 'podman-'));
    const htpasswd = await execa('htpasswd', ['-Bbn', 'user', 'pa:ss:word']);
    const more = await execa('htpasswd', ['-Bbn', 'nsuser', 'other']);
    writeFileSync(join(work, 'htpasswd'), `${htpasswd.stdout}\n${more.stdout}\n`);
    const port = await freePort();
    writeFileSync(
      join(work, 'config.yml'),
      [
        'version: 0.1',
        'storage:',
        `  filesystem: { rootdirectory: ${join(work, 'data')} }`,
        'http:',
        `  addr: 127.0.0.1:${port}`,
        'auth:',
        `  htpasswd: { realm: test, path: ${join(work, 'htpasswd')} }`,
        '',
      ].join('\n'),
    );
    const registry = execa('docker-registry', ['serve', join(work, 'config.yml')], { reject: false });
    try {
      await waitForPort(port);
      const host = `127.0.0.1:${port}`;
      const runtimeDir = join(work, 'run');
      mkdirSync(runtimeDir);
      // No --authfile: podman writes to ${XDG_RUNTIME_DIR}/containers/auth.json, the first default path.
      const env = { ...process.env, XDG_RUNTIME_DIR: runtimeDir, REGISTRY_AUTH_FILE: '' };
      const login = (who: string, password: string, where: string) =>
        execa('podman', ['login', '--tls-verify=false', '-u', who, '--password-stdin', where], { env, input: password });
      await login('user', 'pa:ss:word', host);
      await login('nsuser', 'other', `${host}/team`);
      const lookupOpts: LookupOptions = { env: { XDG_RUNTIME_DIR: runtimeDir }, homeDir: join(work, 'home'), uid: 4242 };
      expect(await lookupCredentials(host, 'os', lookupOpts)).toEqual({ username: 'user', password: 'pa:ss:word' });
      expect(await lookupCredentials(host, 'team/os', lookupOpts)).toEqual({ username: 'nsuser', password: 'other' });
    } finally {
      registry.kill();
      await registry;
    }
  });
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

async function waitForPort(port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, '127.0.0.1', () => {
        s.end();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`registry did not listen on 127.0.0.1:${port}`);
}
