#!/usr/bin/env -S node --single-threaded-gc --max-semi-space-size=2 --no-incremental-marking --liftoff-only
// The same node flags as the ocisnap command (main.ts says why).
/** The `container-snap-ocisnap` executable (package.json bin); link it as `container-snap` for tukit. */
import { runContainerSnap } from './container-snap.js';

process.exitCode = await runContainerSnap(process.argv);
