#!/usr/bin/env node
/** The `container-snap-ocisnap` executable (package.json bin); link it as `container-snap` for tukit. */
import { runContainerSnap } from './container-snap.js';

process.exitCode = await runContainerSnap(process.argv);
