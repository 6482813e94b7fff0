#!/usr/bin/env -S node --single-threaded-gc
// --single-threaded-gc: V8's parallel GC helpers contend with the layer
// pipeline's own threads on small machines; on 2 cores a cold pull took 25 %
// less wall and 30 % less CPU without them (bench/RESULTS.md).
/** The `container-snap-ocisnap` executable (package.json bin); link it as `container-snap` for tukit. */
import { runContainerSnap } from './container-snap.js';

process.exitCode = await runContainerSnap(process.argv);
