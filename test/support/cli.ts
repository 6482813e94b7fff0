/** Runs the built `ocisnap` command (dist/bin/main.js, the bundle package.json's bin names) as a user would. */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa, type Result } from 'execa';

export const cliPath = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'dist', 'bin', 'main.js');

export async function ocisnap(args: string[], opts: { env?: Record<string, string> } = {}): Promise<Result> {
  if (!existsSync(cliPath)) throw new Error(`${cliPath} is missing: run 'npm run build' (scripts/test.sh does)`);
  return execa('node', [cliPath, ...args], { reject: false, env: opts.env, stdin: 'ignore' });
}
