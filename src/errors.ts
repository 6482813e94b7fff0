/**
 * Every failure ocisnap reports to a user is an OcisnapError: its message is one
 * line saying what failed, on which image/layer/file, and why. The CLI prints
 * `ocisnap: <message>` and exits with `exitCode`; anything else is a bug and is
 * reported with its stack.
 */
export class OcisnapError extends Error {
  /** Process exit status the CLI uses for this error. */
  readonly exitCode: number = 1;

  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** Input from the user (a flag, a reference, a config file) is malformed. */
export class UsageError extends OcisnapError {
  override readonly exitCode = 2;
}

/** Data from outside (registry, archive, layer tar) is malformed or does not verify. */
export class UntrustedInputError extends OcisnapError {}

/** Content did not match the digest or size it was announced with. */
export class DigestMismatchError extends UntrustedInputError {
  constructor(
    readonly what: string,
    readonly expected: string,
    readonly actual: string,
  ) {
    super(`${what}: digest mismatch: expected ${expected}, got ${actual}`);
  }
}

/** Short text for an unknown thrown value, for wrapping in a user-facing message. */
export function describeError(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
