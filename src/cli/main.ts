#!/usr/bin/env -S node --single-threaded-gc --max-semi-space-size=4
// --single-threaded-gc: V8's parallel GC helpers contend with the layer
// pipeline's own threads on small machines; on 2 cores a cold pull took 25 %
// less wall and 30 % less CPU without them. --max-semi-space-size=4: a young
// generation of 4 MiB semi-spaces (not 16) cut the peak RSS of a cold pull by
// about 20 MiB at no measurable cost (bench/RESULTS.md).
/**
 * The ocisnap command. Thin: parses arguments, calls the library, prints.
 * Every OcisnapError becomes one line on stderr and its exit status; any
 * other error is a bug and says so (with the stack under --debug).
 */
import { CommanderError } from 'commander';
import { OcisnapError } from '../errors.js';
import { buildProgram } from './program.js';

async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode;
    if (err instanceof OcisnapError) {
      process.stderr.write(`ocisnap: ${err.message}\n`);
      return err.exitCode;
    }
    const debug = argv.includes('--debug') || process.env.OCISNAP_DEBUG === '1';
    const message = err instanceof Error ? err.message : String(err);
    process.stderr.write(`ocisnap: internal error: ${message.split('\n')[0]}\n`);
    if (debug && err instanceof Error && err.stack) process.stderr.write(`${err.stack}\n`);
    return 70; // EX_SOFTWARE
  }
}

process.exitCode = await main(process.argv);
