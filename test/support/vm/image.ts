/**
 * The example OS images of the top-level Containerfile, built with buildah
 * from the VM base (base.ts) and pushed to a local registry, for the VM tests
 * that deploy them with `ocisnap --sysroot DIR deploy`.
 *
 * The Containerfile copies ocisnap in as installed: OCISNAP_STAGE holds
 * dist/, package.json, build/Release/ocisnap_sys.node and the production
 * node_modules. `stageOcisnap` makes that directory from this checkout (dist/
 * must be built: `npm run build`), copying the packages `npm ls --omit=dev`
 * names, so no registry is needed.
 */
import { cp, mkdir, rm, stat } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { requireCommands } from '../host.js';
import type { ImportedBase } from './base.js';

export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

/** Where stageOcisnap puts ocisnap, relative to the repository (build/ is not tracked). */
export const STAGE = 'build/image-stage';

/** Copies what the image's /usr/lib/ocisnap needs into REPO/STAGE; returns its path. */
export async function stageOcisnap(): Promise<string> {
  const stage = join(REPO, STAGE);
  for (const need of ['dist/bin/main.js', 'build/Release/ocisnap_sys.node']) {
    await stat(join(REPO, need)).catch(() => {
      throw new Error(`${need} is missing: run 'npm run build' and 'npm run build:native' first`);
    });
  }
  await rm(stage, { recursive: true, force: true });
  await mkdir(join(stage, 'build/Release'), { recursive: true });
  await cp(join(REPO, 'dist'), join(stage, 'dist'), { recursive: true });
  await cp(join(REPO, 'package.json'), join(stage, 'package.json'));
  await cp(join(REPO, 'build/Release/ocisnap_sys.node'), join(stage, 'build/Release/ocisnap_sys.node'));
  // Every production package (nested ones too) at its place under node_modules.
  const { stdout } = await execa('npm', ['ls', '--omit=dev', '--all', '--parseable'], { cwd: REPO, reject: false });
  const dirs = stdout.split('\n').map((l) => l.trim()).filter((l) => l.startsWith(join(REPO, 'node_modules') + '/'));
  if (dirs.length === 0) throw new Error(`npm ls --omit=dev found no production packages in ${REPO}`);
  for (const dir of dirs) {
    await cp(dir, join(stage, relative(REPO, dir)), { recursive: true, verbatimSymlinks: true });
  }
  return stage;
}

export interface ExampleImageBuild {
  /** Pushed as docker://REGISTRY/REPO:TAG. */
  tag: string;
  /** HEALTH build argument (examples/health/good or broken). Default good. */
  health?: 'good' | 'broken';
  /** Build examples/crash-boot/Containerfile on top of this (already built) tag instead. */
  crashOn?: string;
}

/**
 * Builds one image into the base's store (vfs) and pushes it uncompressed
 * (cheaper than gzip on 2 cores; ocisnap reads plain tar layers) to
 * `${registry}/${repo}:${tag}`. Returns that reference.
 */
export async function buildAndPush(base: ImportedBase, registry: string, repo: string, b: ExampleImageBuild): Promise<string> {
  await requireCommands('buildah');
  const local = `localhost/${repo}:${b.tag}`;
  const args = b.crashOn !== undefined
    ? ['build', '-q', '--build-arg', `IMAGE=localhost/${repo}:${b.crashOn}`,
      '-f', 'examples/crash-boot/Containerfile', '-t', local, 'examples/crash-boot']
    : ['build', '-q', '--build-arg', `BASE=${base.reference}`, '--build-arg', `OCISNAP_STAGE=${STAGE}`,
      '--build-arg', `HEALTH=${b.health ?? 'good'}`, '--label', `org.opencontainers.image.version=${b.tag}`,
      '-f', 'Containerfile', '-t', local, '.'];
  await execa('buildah', [...base.storeOptions, ...args], { cwd: REPO });
  const remote = `${registry}/${repo}:${b.tag}`;
  await execa('buildah', [...base.storeOptions, 'push', '-q', '--tls-verify=false', '--disable-compression',
    '--format', 'oci', local, `docker://${remote}`]);
  return remote;
}
