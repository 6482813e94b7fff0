/** The command-line grammar of ocisnap (commander), mapped onto the library. */
import { readFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import { UsageError } from '../errors.js';
import { defaultPolicyPath, defaultRegistriesDPath } from '../policy/defaults.js';
import { parsePlatform } from '../oci/platform.js';
import { addSysrootOption, pathsOf, registerDeployCommands } from './deploy-commands.js';
import { registerHealthCommands } from './health-commands.js';
import { createRenderer, parseProgressMode } from './progress.js';
import { tuneMemoryFor } from './memory.js';

// What a command does is imported when it runs: every command loading every
// module (the registry client, the policy engines, deploy, health) cost a
// third of a second of startup, most of an update pull.
const policyCheck = () => import('../pull/policy-check.js');
const openStore = async (root: string) => (await import('../store/index.js')).Store.open(root);
const images = () => import('./images.js');

/** The layer store of the running system (sysroot `/`). */
export const defaultStorageRoot = '/var/lib/ocisnap/storage';

/**
 * The layer store a command uses: `--storage-root`/OCISNAP_STORAGE_ROOT when
 * given, else SYSROOT/var/lib/ocisnap/storage (deploy-commands.ts pathsOf),
 * so `pull` fills the store that `deploy --no-pull` reads.
 */
function storageRootOf(cmd: Command): string {
  return pathsOf(cmd).storageRoot;
}

/** The version in package.json, which ships beside dist/ (Containerfile, scripts/demo.sh). */
function packageVersion(): string {
  const pkg: unknown = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8'));
  return typeof pkg === 'object' && pkg !== null && 'version' in pkg && typeof pkg.version === 'string' ? pkg.version : 'unknown';
}

export function buildProgram(): Command {
  const program = new Command('ocisnap')
    .description('Turn OCI images into bootable btrfs snapshots')
    .version(packageVersion(), '-V, --version', 'print the version of ocisnap')
    .addOption(
      new Option('--storage-root <dir>', `layer store (containers/storage btrfs layout; default SYSROOT/var/lib/ocisnap/storage, ${defaultStorageRoot} for /)`).env(
        'OCISNAP_STORAGE_ROOT',
      ),
    )
    .option('--debug', 'print stack traces of internal errors')
    .exitOverride()
    .hook('preAction', (_root, action) => tuneMemoryFor(action.name()))
    .configureOutput({ writeErr: (s) => process.stderr.write(s.startsWith('error:') ? `ocisnap: ${s}` : s) });
  addSysrootOption(program);

  program
    .command('pull')
    .description('pull an image into the layer store (docker://REF, oci:DIR[:TAG], oci-archive:FILE[:TAG] or REF)')
    .argument('<image>')
    .option('--platform <os/arch[/variant]>', 'platform to pull (default: this host)')
    .option('--authfile <file>', 'containers-auth.json(5) credentials file')
    .option('--tls-verify <bool>', 'require HTTPS with a verified certificate', 'true')
    .option('--registries-conf <file>', 'registries.conf to use')
    .option('--signature-policy <file>', `containers-policy.json(5) to enforce (default ${defaultPolicyPath})`)
    .option('--registries-d <dir>', `containers-registries.d(5) lookaside configuration (default ${defaultRegistriesDPath})`)
    .option('--progress <mode>', 'auto, tty, plain, json or none', 'auto')
    .option('-q, --quiet', 'print only the image ID')
    .action(async (image: string, o, cmd: Command) => {
      const mode = o.quiet ? 'none' : parseProgressMode(o.progress);
      const tlsVerify = parseBool('--tls-verify', o.tlsVerify);
      const platform = o.platform ? parsePlatform(o.platform) : undefined;
      // The policy first: a policy that cannot be read stops the pull before anything is fetched.
      const [{ loadPolicyConfig, pullVerifier }, { openConfiguredSource }, { pullImage }] = await Promise.all([
        policyCheck(),
        import('../pull/source-config.js'),
        import('../pull/pull.js'),
      ]);
      const policy = await loadPolicyConfig({ signaturePolicy: o.signaturePolicy, registriesD: o.registriesD });
      const store = await openStore(storageRootOf(cmd));
      const renderer = createRenderer(mode);
      const opened = await openConfiguredSource(image, {
        authFile: o.authfile,
        tlsVerify,
        registriesConf: o.registriesConf,
        onNote: (message) => renderer.sink({ type: 'note', message }),
      });
      try {
        const result = await pullImage(opened.source, opened.reference, store, {
          platform,
          progress: renderer.sink,
          verify: pullVerifier(opened, policy),
        });
        renderer.finish();
        process.stdout.write(`${result.image.id}\n`);
      } finally {
        await opened.source.close();
      }
    });

  const policy = program.command('policy').description('signature policy (containers-policy.json(5)) tools');
  policy
    .command('check')
    .description('say whether the policy accepts an image, which requirement applied and why (reads only its manifest and signatures; exit 0 accepted, 1 rejected)')
    .argument('<image>', 'docker://REF, REF, dir:DIR, oci:DIR[:TAG] or oci-archive:FILE[:TAG]')
    .option('--signature-policy <file>', `containers-policy.json(5) (default ${defaultPolicyPath})`)
    .option('--registries-d <dir>', `containers-registries.d(5) lookaside configuration (default ${defaultRegistriesDPath})`)
    .option('--authfile <file>', 'containers-auth.json(5) credentials file')
    .option('--tls-verify <bool>', 'require HTTPS with a verified certificate', 'true')
    .option('--registries-conf <file>', 'registries.conf to use')
    .action(async (image: string, o) => {
      const { checkImagePolicy, loadPolicyConfig } = await policyCheck();
      const config = await loadPolicyConfig({ signaturePolicy: o.signaturePolicy, registriesD: o.registriesD });
      const report = await checkImagePolicy(image, config, {
        authFile: o.authfile,
        tlsVerify: parseBool('--tls-verify', o.tlsVerify),
        registriesConf: o.registriesConf,
        onNote: (message) => process.stderr.write(`${message}\n`),
      });
      const lines = [`Image: ${report.image}`, `Manifest: ${report.digest}`, `Policy: ${report.policy}`];
      if (report.result.accepted) {
        const v = report.result.verification;
        lines.push(`Scope: ${v.scope}`, `Requirement: ${v.requirement}`);
        if (v.keyId !== undefined) lines.push(`Key: ${v.keyId}`);
        lines.push(`Result: accepted: ${v.details.slice(v.details.indexOf(': allowed by ') + 2)}`);
        process.stdout.write(`${lines.join('\n')}\n`);
        return;
      }
      const e = report.result.error;
      lines.push(`Scope: ${e.scope}`, `Requirement: ${e.requirement}`, `Result: rejected: ${e.reason}`);
      process.stdout.write(`${lines.join('\n')}\n`);
      throw e;
    });

  program
    .command('images')
    .description('list the images in the layer store')
    .option('--json', 'machine-readable output')
    .action(async (o, cmd: Command) => {
      const { imagesTable, listImageSummaries } = await images();
      const list = await listImageSummaries(await openStore(storageRootOf(cmd)));
      process.stdout.write(o.json ? `${JSON.stringify(list, null, 2)}\n` : imagesTable(list));
    });

  program
    .command('inspect')
    .description('show an image: names, digests, layers, config')
    .argument('<image>', 'name, ID or ID prefix')
    .action(async (image: string, _o, cmd: Command) => {
      const { inspectImage } = await images();
      const store = await openStore(storageRootOf(cmd));
      process.stdout.write(`${JSON.stringify(await inspectImage(store, image), null, 2)}\n`);
    });

  program
    .command('rmi')
    .description('remove images; layers still used by another image stay')
    .argument('<image...>', 'names, IDs or ID prefixes')
    .action(async (images: string[], _o, cmd: Command) => {
      const store = await openStore(storageRootOf(cmd));
      await store.lock(async () => {
        for (const image of images) {
          const removed = await store.removeImage(image);
          process.stdout.write(`Untagged and removed ${removed.image.id} (${removed.removedLayers.length} layers freed)\n`);
        }
      });
    });

  registerDeployCommands(program);
  registerHealthCommands(program);
  return program;
}

function parseBool(flag: string, value: string): boolean {
  if (value === 'true') return true;
  if (value === 'false') return false;
  throw new UsageError(`${flag} takes true or false, not "${value}"`);
}
