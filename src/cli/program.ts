/** The command-line grammar of ocisnap (commander), mapped onto the library. */
import { Command, Option } from 'commander';
import { UsageError } from '../errors.js';
import { parsePlatform } from '../oci/platform.js';
import { openConfiguredSource } from '../pull/source-config.js';
import { pullImage } from '../pull/pull.js';
import { Store } from '../store/index.js';
import { registerDeployCommands } from './deploy-commands.js';
import { createRenderer, parseProgressMode } from './progress.js';
import { imagesTable, inspectImage, listImageSummaries } from './images.js';

export const defaultStorageRoot = '/var/lib/ocisnap/storage';

interface GlobalOptions {
  storageRoot: string;
  debug?: boolean;
}

function globals(cmd: Command): GlobalOptions {
  return cmd.optsWithGlobals() as GlobalOptions;
}

export function buildProgram(): Command {
  const program = new Command('ocisnap')
    .description('Turn OCI images into bootable btrfs snapshots')
    .addOption(
      new Option('--storage-root <dir>', 'layer store (containers/storage btrfs layout)')
        .default(defaultStorageRoot)
        .env('OCISNAP_STORAGE_ROOT'),
    )
    .option('--debug', 'print stack traces of internal errors')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s.startsWith('error:') ? `ocisnap: ${s}` : s) });

  program
    .command('pull')
    .description('pull an image into the layer store (docker://REF, oci:DIR[:TAG], oci-archive:FILE[:TAG] or REF)')
    .argument('<image>')
    .option('--platform <os/arch[/variant]>', 'platform to pull (default: this host)')
    .option('--authfile <file>', 'containers-auth.json(5) credentials file')
    .option('--tls-verify <bool>', 'require HTTPS with a verified certificate', 'true')
    .option('--registries-conf <file>', 'registries.conf to use')
    .option('--progress <mode>', 'auto, tty, plain, json or none', 'auto')
    .option('-q, --quiet', 'print only the image ID')
    .action(async (image: string, o, cmd: Command) => {
      const g = globals(cmd);
      const mode = o.quiet ? 'none' : parseProgressMode(o.progress);
      const tlsVerify = parseBool('--tls-verify', o.tlsVerify);
      const platform = o.platform ? parsePlatform(o.platform) : undefined;
      const store = await Store.open(g.storageRoot);
      const { source, reference } = await openConfiguredSource(image, {
        authFile: o.authfile,
        tlsVerify,
        registriesConf: o.registriesConf,
      });
      const renderer = createRenderer(mode);
      try {
        const result = await pullImage(source, reference, store, { platform, progress: renderer.sink });
        renderer.finish();
        process.stdout.write(`${result.image.id}\n`);
      } finally {
        await source.close();
      }
    });

  program
    .command('images')
    .description('list the images in the layer store')
    .option('--json', 'machine-readable output')
    .action(async (o, cmd: Command) => {
      const store = await Store.open(globals(cmd).storageRoot);
      const images = await listImageSummaries(store);
      process.stdout.write(o.json ? `${JSON.stringify(images, null, 2)}\n` : imagesTable(images));
    });

  program
    .command('inspect')
    .description('show an image: names, digests, layers, config')
    .argument('<image>', 'name, ID or ID prefix')
    .action(async (image: string, _o, cmd: Command) => {
      const store = await Store.open(globals(cmd).storageRoot);
      process.stdout.write(`${JSON.stringify(await inspectImage(store, image), null, 2)}\n`);
    });

  program
    .command('rmi')
    .description('remove images; layers still used by another image stay')
    .argument('<image...>', 'names, IDs or ID prefixes')
    .action(async (images: string[], _o, cmd: Command) => {
      const store = await Store.open(globals(cmd).storageRoot);
      await store.lock(async () => {
        for (const image of images) {
          const removed = await store.removeImage(image);
          process.stdout.write(`Untagged and removed ${removed.image.id} (${removed.removedLayers.length} layers freed)\n`);
        }
      });
    });

  registerDeployCommands(program);
  return program;
}

function parseBool(flag: string, value: string): boolean {
  if (value === 'true') return true;
  if (value === 'false') return false;
  throw new UsageError(`${flag} takes true or false, not "${value}"`);
}
