// Bundles the commands (tsc's dist/cli/*-main.js, dist/tukit/main.js and
// what they import, npm packages included) into dist/bin/, which is what
// package.json's bin, the example image, the tukit plugin and the benchmark
// run. Loading ~100 of our modules and ~100 of undici's one by one cost
// 0.12-0.17 s of every run (an update pull took 0.92 s, bundled 0.76 s).
// The lazy imports of src/cli stay lazy: each becomes a chunk loaded when
// its command runs.
//
// dist/bin is two levels below the package root, like dist/cli, so the
// paths the code resolves from import.meta.url (the native addon,
// package.json) are the same in both. yaml is loaded through createRequire
// (src/policy/registries-d.ts) and so stays in node_modules.
import { chmod, rm } from 'node:fs/promises';
import { build } from 'esbuild';

// dist/bin/NAME.js from each: the two commands and the tukit plugin's entry.
const entries = { main: 'dist/cli/main.js', 'container-snap-main': 'dist/cli/container-snap-main.js', 'tukit-main': 'dist/tukit/main.js' };

// Chunk names carry content hashes: start empty so old chunks do not pile up.
await rm('dist/bin', { recursive: true, force: true });
await build({
  entryPoints: entries,
  outdir: 'dist/bin',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  // CommonJS packages (undici, commander) call require() for node's modules;
  // an ES module has none, so give the bundle one.
  banner: { js: "import { createRequire as __ocisnapCreateRequire } from 'node:module'; const require = __ocisnapCreateRequire(import.meta.url);" },
  logLevel: 'warning',
});
for (const name of Object.keys(entries)) await chmod(`dist/bin/${name}.js`, 0o755);
