#!/usr/bin/env -S node --single-threaded-gc --max-semi-space-size=4
// --single-threaded-gc: V8's parallel GC helpers contend with the layer
// pipeline's own threads on small machines; on 2 cores a cold pull took 25 %
// less wall and 30 % less CPU without them. --max-semi-space-size=4: a young
// generation of 4 MiB semi-spaces (not 16) cut the peak RSS of a cold pull by
// about 20 MiB at no measurable cost (bench/RESULTS.md).
/** The `container-snap-ocisnap` executable (package.json bin); link it as `container-snap` for tukit. */
import { runContainerSnap } from './container-snap.js';

process.exitCode = await runContainerSnap(process.argv);
