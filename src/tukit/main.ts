#!/usr/bin/env node
/** Entry of the tukit plugin executable (plugins/tukit/ocisnap execs this). */
import { runTukitPlugin } from './plugin.js';

process.exitCode = await runTukitPlugin(process.argv.slice(2), process.env);
