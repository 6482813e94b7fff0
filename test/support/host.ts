/**
 * Preconditions of the integration tests. A test that needs root or a tool
 * fails loudly when it is missing: scripts/test.sh installs everything, so a
 * missing tool is a broken setup, never a reason to skip.
 */
import { execa } from 'execa';

export function requireRoot(): void {
  if (process.getuid?.() !== 0) {
    throw new Error('this test needs root (run scripts/test.sh as root)');
  }
}

export async function requireCommands(...commands: string[]): Promise<void> {
  const missing: string[] = [];
  for (const cmd of commands) {
    const r = await execa('sh', ['-c', `command -v ${cmd}`], { reject: false });
    if (r.exitCode !== 0) missing.push(cmd);
  }
  if (missing.length > 0) {
    throw new Error(`missing commands: ${missing.join(', ')} (scripts/test.sh installs them)`);
  }
}
