/**
 * Errors of the registry client and image sources. Every message is one line:
 * `pulling IMAGE: WHAT: why` (e.g. `pulling localhost:5000/os:1: layer
 * sha256:abcd…: registry answered 404 Not Found`).
 */
import { STATUS_CODES } from 'node:http';
import { OcisnapError, UntrustedInputError, UsageError } from '../errors.js';
import type { Digest } from '../oci/types.js';

/** `sha256:0123456789ab…`: enough of a digest to recognise it in a message. */
export function shortDigest(d: Digest | string): string {
  const colon = d.indexOf(':');
  return d.length > colon + 13 ? `${d.slice(0, colon + 13)}…` : d;
}

/** The `pulling IMAGE: WHAT` prefix used by every message about one object of one image. */
export function context(image: string, what: string): string {
  return `pulling ${image}: ${what}`;
}

/** A failure talking to a registry (HTTP status, connection, protocol). */
export class RegistryError extends OcisnapError {
  constructor(
    readonly image: string,
    readonly what: string,
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super(`${context(image, what)}: ${reason}`, options);
  }
}

/** The registry answered with an HTTP status we cannot use. */
export class RegistryHttpError extends RegistryError {
  constructor(
    image: string,
    what: string,
    readonly status: number,
    /** First error message of a distribution-spec error body, if any. */
    readonly detail?: string,
  ) {
    const text = STATUS_CODES[status] ?? 'Unknown Status';
    super(image, what, `registry answered ${status} ${text}${detail ? ` (${detail})` : ''}`);
  }
}

/** No usable credentials, or the registry (or its token server) refused them. */
export class AuthenticationError extends RegistryError {
  constructor(
    image: string,
    what: string,
    /** `registry/repository` the access was for. */
    readonly scope: string,
    readonly haveCredentials: boolean,
    detail?: string,
  ) {
    super(
      image,
      what,
      `authentication ${haveCredentials ? 'failed' : 'required'} for ${scope}${detail ? ` (${detail})` : ''}`,
    );
  }
}

/** The connection failed (refused, reset, TLS, timeout) and retries did not help. */
export class RegistryConnectionError extends RegistryError {}

/** The registry sent something that does not follow the protocol (bad Content-Range, token, digest header). */
export class RegistryProtocolError extends UntrustedInputError {
  constructor(image: string, what: string, reason: string) {
    super(`${context(image, what)}: ${reason}`);
  }
}

/** A manifest (or other bounded document) larger than we accept; refused while streaming. */
export class DocumentTooLargeError extends UntrustedInputError {
  constructor(
    readonly what: string,
    readonly limit: number,
  ) {
    super(`${what}: larger than the ${limit}-byte limit; refused`);
  }
}

/** An `oci:` / `oci-archive:` source is malformed or has no such image. */
export class LayoutError extends UntrustedInputError {}

/** The source string (`docker://…`, `oci:…`) itself is malformed. */
export class SourceSpecError extends UsageError {}

/** The image is malformed as a whole (config and manifest disagree, …). */
export class ImageMismatchError extends UntrustedInputError {}
