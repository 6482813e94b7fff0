/**
 * A CNCF distribution registry (Debian's docker-registry) on 127.0.0.1 and a
 * free port, storing on the root filesystem (not the btrfs under test, so its
 * reads are the same for every tool), and a push of the bench images by skopeo.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { execa, type ResultPromise } from 'execa';

export interface BenchRegistry {
  host: string;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  if (addr === null || typeof addr === 'string') throw new Error('no port');
  return addr.port;
}

async function ready(host: string, child: ResultPromise): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited with ${child.exitCode}`);
    const ok = await fetch(`http://${host}/v2/`).then((r) => r.status === 200, () => false);
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`docker-registry on ${host} did not become ready`);
}

export async function startRegistry(dir: string): Promise<BenchRegistry> {
  mkdirSync(dir, { recursive: true });
  const host = `127.0.0.1:${await freePort()}`;
  const config = join(dir, 'config.yml');
  writeFileSync(
    config,
    `version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n` +
      `storage:\n  filesystem:\n    rootdirectory: ${join(dir, 'storage')}\n  delete:\n    enabled: true\n` +
      `http:\n  addr: ${host}\n  secret: ocisnap-bench\n`,
  );
  const logFile = join(dir, 'registry.log');
  const child = execa('docker-registry', ['serve', config], { reject: false, stdout: { file: logFile }, stderr: { file: logFile } });
  try {
    await ready(host, child);
  } catch (err) {
    child.kill('SIGKILL');
    await child;
    throw err;
  }
  return {
    host,
    async stop() {
      child.kill('SIGTERM');
      await child;
    },
  };
}

export async function pushLayoutImage(layoutDir: string, tag: string, dest: string): Promise<void> {
  await execa('skopeo', ['copy', '--insecure-policy', '--quiet', '--dest-tls-verify=false', `oci:${layoutDir}:${tag}`, `docker://${dest}`]);
}
