/**
 * GPG "simple signing" verification (containers/image signature/mechanism_gpgme.go
 * newEphemeralGPGSigningMechanism + verifyAndExtractSignature): the trusted
 * keys of one `signedBy` requirement are imported into a fresh, private
 * GNUPGHOME, and each signature (an OpenPGP signed message whose literal data
 * is the JSON payload, as `skopeo copy --sign-by` writes it) is verified
 * against that keyring only.
 *
 * Why the gpg binary and not an OpenPGP library: it is the implementation
 * containers/image uses (through gpgme), it is already on every host that has
 * skopeo/podman, and it handles every key and packet format those tools
 * produce. We run it with --batch, a throwaway home, no key servers, no
 * agent (--no-autostart: verifying needs no secret keys), and read
 * its machine-readable --status-fd output: a signature is good only with a
 * GOODSIG and a VALIDSIG line and no BADSIG/ERRSIG/EXPSIG/EXPKEYSIG/REVKEYSIG.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OcisnapError, describeError } from '../errors.js';
import type { KeySource } from './policy-json.js';

/** gpg could not be run or the keys could not be imported (a host or policy problem, not a bad signature). */
export class GpgError extends OcisnapError {}

export type GpgOutcome =
  | { ok: true; /** Primary key fingerprint (hex, upper case). */ fingerprint: string; /** The signed data. */ content: Buffer }
  | { ok: false; reason: string };

const gpgTimeoutMs = 30_000;
const maxPayloadBytes = 4 * 1024 * 1024;

function statusLines(stdout: string): string[][] {
  return stdout
    .split('\n')
    .filter((l) => l.startsWith('[GNUPG:] '))
    .map((l) => l.slice('[GNUPG:] '.length).trim().split(/\s+/));
}

export class GpgVerifier {
  private constructor(
    private readonly home: string,
    /** Fingerprints (primary keys) of the imported, trusted keys. */
    readonly fingerprints: ReadonlySet<string>,
  ) {}

  /** Imports the requirement's keys into a private GNUPGHOME. Call close() when done. */
  static async create(keys: KeySource): Promise<GpgVerifier> {
    const blobs: Array<{ data: Buffer; what: string }> = [];
    if (keys.kind === 'data') keys.data.forEach((data, i) => blobs.push({ data, what: `keyData${i > 0 ? `[${i}]` : ''}` }));
    else {
      for (const path of keys.paths) {
        try {
          blobs.push({ data: await readFile(path), what: path });
        } catch (err) {
          throw new GpgError(`cannot read GPG public key file ${path}: ${describeError(err)}`);
        }
      }
    }
    const home = await mkdtemp(join(tmpdir(), 'ocisnap-gpg-'));
    const fingerprints = new Set<string>();
    try {
      for (const { data, what } of blobs) {
        const { execa } = await import('execa'); // loaded only when a GPG policy is used
        const r = await execa('gpg', ['--homedir', home, '--batch', '--no-tty', '--no-autostart', '--status-fd', '1', '--import'], {
          input: data,
          reject: false,
          timeout: gpgTimeoutMs,
        });
        if (r.failed && r.exitCode === undefined) throw new GpgError(`cannot run gpg: ${r.shortMessage}`);
        const imported = statusLines(r.stdout).filter((f) => f[0] === 'IMPORT_OK' && f[2] !== undefined);
        if (imported.length === 0) {
          throw new GpgError(`no GPG public key could be imported from ${what}`);
        }
        for (const f of imported) fingerprints.add((f[2] as string).toUpperCase());
      }
    } catch (err) {
      await rm(home, { recursive: true, force: true });
      throw err;
    }
    return new GpgVerifier(home, fingerprints);
  }

  /** Verifies one signature blob; never throws for a bad signature, only for a broken gpg. */
  async verify(signature: Buffer): Promise<GpgOutcome> {
    const dir = await mkdtemp(join(this.home, 'verify-'));
    try {
      const sigFile = join(dir, 'sig');
      const outFile = join(dir, 'out');
      await writeFile(sigFile, signature);
      const { execa } = await import('execa');
      const r = await execa(
        'gpg',
        [
          '--homedir', this.home, '--batch', '--no-tty', '--no-autostart', '--status-fd', '1',
          '--no-auto-key-retrieve', '--trust-model', 'always',
          // A compressed message could expand without bound; payloads are tiny JSON.
          '--max-output', String(maxPayloadBytes),
          '--output', outFile, '--decrypt', sigFile,
        ],
        { reject: false, timeout: gpgTimeoutMs, stdin: 'ignore' },
      );
      if (r.exitCode === undefined) throw new GpgError(`cannot run gpg: ${r.shortMessage}`);
      const lines = statusLines(r.stdout);
      const bad = lines.find((f) => ['BADSIG', 'ERRSIG', 'EXPSIG', 'EXPKEYSIG', 'REVKEYSIG'].includes(f[0] ?? ''));
      if (bad !== undefined) {
        const reason =
          bad[0] === 'ERRSIG' && bad[6] === '9'
            ? `signed by an untrusted key ${bad[1] ?? ''}`.trim()
            : bad[0] === 'BADSIG'
              ? `bad signature (content altered) by key ${bad[1] ?? '?'}`
              : `signature not valid (${bad[0]})`;
        return { ok: false, reason };
      }
      const valid = lines.filter((f) => f[0] === 'VALIDSIG');
      if (r.exitCode !== 0 || valid.length !== 1 || !lines.some((f) => f[0] === 'GOODSIG')) {
        const err =
          r.stderr.split('\n').find((l) => l.trim() !== '') ??
          `gpg exited with ${r.exitCode}; status: ${lines.map((f) => f[0]).join(' ') || 'none'}`;
        return { ok: false, reason: `not a valid signed message (${err.replace(/^gpg: /, '').trim()})` };
      }
      const v = valid[0] as string[];
      // VALIDSIG <fpr> <date> <ts> <expire> <ver> <reserved> <pk-algo> <hash-algo> <class> [<primary-fpr>]
      const fingerprint = (v[10] ?? v[1] ?? '').toUpperCase();
      if (!this.fingerprints.has(fingerprint)) {
        // Unreachable with a private keyring holding only trusted keys; kept as a guard (policy_eval_signedby.go).
        return { ok: false, reason: `signature by key ${fingerprint} is not accepted` };
      }
      return { ok: true, fingerprint, content: await readFile(outFile) };
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  async close(): Promise<void> {
    await rm(this.home, { recursive: true, force: true });
  }
}
