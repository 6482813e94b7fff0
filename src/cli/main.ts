#!/usr/bin/env -S node --single-threaded-gc --max-semi-space-size=2 --no-incremental-marking --liftoff-only
// Node flags for a pull on a small machine (bench/RESULTS.md, 2 cores):
// --single-threaded-gc: V8's parallel GC helpers contend with the layer
//   pipeline's own threads; a cold pull took 25 % less wall and 30 % less CPU
//   without them.
// --max-semi-space-size=2: smaller young generations lower the peak RSS of
//   a cold pull: 4 MiB semi-spaces (not 16) by about 20 MiB; 2 MiB (not 4)
//   took a cold gzip pull from 142-150 MiB to 120-142 MiB in 9 alternating
//   rounds, with the same wall and CPU time (zstd: no difference).
// --no-incremental-marking: the layer buffers (about 1 GiB of ArrayBuffers per
//   cold pull) start a full mark every 64 MiB; marking the small heap at once
//   cost 0.25 s of main thread in a cold pull, incrementally 1.1 s.
// --liftoff-only: V8's optimizing compile of undici's HTTP parser (llhttp,
//   WebAssembly) took 35 MiB at the first request; an update pull peaked at
//   112 MiB with it and 80 MiB without, in the same time (the parser does
//   little per body chunk).
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
