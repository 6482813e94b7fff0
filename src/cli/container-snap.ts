/**
 * `container-snap-ocisnap`: container-snap's command line on ocisnap (see
 * src/container-snap/commands.ts). Link it as `container-snap` in PATH and
 * tukit's container-snap backend drives ocisnap. Same commands, arguments
 * and output as dcermak/container-snap bin/container-snap.go; errors are one
 * line on stderr with a non-zero exit, never a stack trace.
 *
 * Additions: `--sysroot DIR` (or OCISNAP_SYSROOT) before the command acts on
 * a mounted btrfs that is not the running system, as ocisnap's --sysroot does.
 */
import { Command, CommanderError, Option } from 'commander';
import * as cs from '../container-snap/commands.js';
import { sysrootPaths } from '../deploy/sysroot.js';
import { describeError, OcisnapError } from '../errors.js';
import { tuneMemoryFor } from './memory.js';

const name = 'container-snap';

function print(line: string): void {
  process.stdout.write(`${line}\n`);
}

export function buildContainerSnapProgram(): Command {
  const program = new Command(name)
    .description('OCI image based snapshot creation utility (ocisnap)')
    .addOption(new Option('--sysroot <dir>', 'act on this mounted btrfs filesystem instead of /').env('OCISNAP_SYSROOT').default('/'))
    .addOption(new Option('-v, --verbose', 'set verbosity level (-v, -vv, ...); accepted for compatibility').argParser((_v, prev: number | undefined) => (prev ?? 0) + 1))
    .exitOverride()
    .hook('preAction', (_root, action) => tuneMemoryFor(action.name()))
    .configureOutput({ writeErr: (s) => process.stderr.write(s.startsWith('error:') ? `${name}: ${s}` : s) });

  const ctx = (): cs.Context => ({
    paths: sysrootPaths((program.opts() as { sysroot: string }).sysroot),
    log: (line) => void process.stderr.write(`${line}\n`),
  });

  program.command('init').description("initialize container-snap's storage (nothing to do)").action(() => undefined);
  program
    .command('pull')
    .description('Pull the supplied image')
    .argument('<url>')
    .action(async (url: string) => cs.pull(ctx(), url, print));
  program
    .command('load')
    .description('Load the local image from archive or URL')
    .argument('[url]', 'URL to the image. Must be prefixed with a transport')
    .option('-i, --input <file>', 'Path to the OCI archive from which the image should be loaded')
    .action(async (url: string | undefined, o: { input?: string }) => cs.load(ctx(), url, o.input, print));
  program
    .command('switch')
    .description('Switches the current default snapshot to the new one')
    .argument('<id>')
    .action(async (id: string) => cs.switchTo(ctx(), id));
  program
    .command('get-root')
    .description('Print the root directory of the image from the given ID')
    .argument('<id>')
    .action(async (id: string) => print(await cs.getRoot(ctx(), id)));
  program
    .command('set-readonly-state')
    .description('set the snapshot with the given id to readonly or readwrite')
    .argument('<id>')
    .option('--readonly', 'read-only')
    .option('--no-readonly', 'read-write')
    .action(async (id: string, o: { readonly?: boolean }) => cs.setReadonlyState(ctx(), id, o.readonly === true));
  program
    .command('get-readonly-state')
    .description('get the readonly state of the snapshot with the given id')
    .argument('<id>')
    .action(async (id: string) => print(await cs.getReadonlyState(ctx(), id)));
  program
    .command('list-images')
    .description('Lists all container images in the storage')
    .action(async () => (await cs.listImages(ctx())).forEach((l) => print(l)));
  program
    .command('list-snapshots')
    .description('List all snapshots known to container-snap')
    .action(async () => (await cs.listSnapshotIds(ctx())).forEach((l) => print(l)));
  program
    .command('get-default')
    .description('Print the default snapshot')
    .action(async () => print(await cs.getDefault(ctx())));
  program
    .command('get-current')
    .description('Print the currently active snapshot (i.e. the one from which the OS has been booted)')
    .action(async () => print(await cs.getCurrent(ctx())));
  program
    .command('delete')
    .description('Delete an image by url or ID')
    .option('--url <name>', 'unique image url to delete')
    .option('--id <id>', 'image id to delete')
    .action(async (o: { url?: string; id?: string }) => {
      if (o.url) return cs.deleteByUrl(ctx(), o.url);
      if (o.id) return cs.deleteById(ctx(), o.id);
      throw new cs.ContainerSnapError('Either a url or an ID must be provided');
    });
  program
    .command('create-snapshot')
    .description('Creates a snapshot based on the provided ID and prints the new ID to stdout')
    .argument('<id>')
    .action(async (id: string) => print(await cs.createSnapshot(ctx(), id)));
  return program;
}

/** Runs the command line; returns the exit status. */
export async function runContainerSnap(argv: string[]): Promise<number> {
  try {
    await buildContainerSnapProgram().parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode;
    const message = err instanceof OcisnapError ? err.message : `internal error: ${describeError(err)}`;
    process.stderr.write(`${name}: ${message.split('\n')[0]}\n`);
    return err instanceof OcisnapError ? err.exitCode : 70;
  }
}

