/**
 * The policy check: does the policy allow this image, given its signatures?
 * signature/policy_eval.go IsRunningImageAllowed: the requirements of the
 * most specific matching scope must ALL be satisfied; within one signature
 * requirement, ONE accepted signature suffices (policy_eval_signedby.go,
 * policy_eval_sigstore.go), and when none is accepted the reasons are reported.
 *
 * Only the manifest digest and the signatures are needed: the caller checks
 * before any layer is downloaded, and again before a stored image is deployed.
 */
import { OcisnapError, describeError } from '../errors.js';
import type { Digest } from '../oci/types.js';
import { GpgVerifier } from './gpg.js';
import { describeIdentity, identityMatches, type SignedIdentity } from './identity.js';
import { describeScope, requirementsFor, type Policy, type PolicyRequirement } from './policy-json.js';
import { parseSimpleSigningPayload } from './simple-signing.js';
import { loadSigstoreKeys, verifySigstoreAttachment, type SigstoreAttachment } from './sigstore.js';

export type { SigstoreAttachment } from './sigstore.js';

export interface SignatureSource {
  /** GPG simple-signing signatures (lookaside signature-1.. until the first missing one; `signature-N` of a dir: copy). */
  lookasideSignatures(): AsyncIterable<Buffer>;
  /** Sigstore signatures (layers of the `sha256-<hex>.sig` manifest; sigstore-json signatures of a dir: copy). */
  sigstoreAttachments(): Promise<SigstoreAttachment[]>;
}

export type PolicyTransport = 'docker' | 'dir' | 'oci' | 'oci-archive';

/** OCI layouts and archives carry no signatures (containers/image oci/ has none): only non-signature requirements can pass. */
export const noSignatures: SignatureSource = {
  async *lookasideSignatures() {},
  sigstoreAttachments: async () => [],
};

export interface ImageToCheck {
  transport: PolicyTransport;
  /**
   * The scope-able name: for docker a reference ("host/ns/repo:tag" or
   * "…@sha256:…"); for dir an absolute path; for oci/oci-archive "PATH[:IMAGE]".
   */
  reference: string;
  /** Digest of the manifest the signatures are for (the top-level manifest or index as pulled). */
  manifestDigest: Digest;
  /**
   * The docker reference the image is known as, for signedIdentity rules.
   * Defaults to `reference` for docker; for dir/oci copies, containers/image has
   * none (only exactReference/exactRepository can then match) unless given here.
   */
  dockerReference?: string;
}

export interface VerificationResult {
  allowed: true;
  /** The requirement types that were satisfied, joined with "+": "sigstoreSigned", "insecureAcceptAnything". */
  requirement: string;
  /** `transports.docker["host/ns"]`, `transports.docker[""]` or `default`. */
  scope: string;
  /** Key that verified the (first) signature requirement: "sha256:<spki hex>" or a GPG fingerprint. */
  keyId?: string;
  /** One line for `policy check` and status output. */
  details: string;
}

/** The policy refuses the image. `IMAGE: rejected by policy scope SCOPE (REQUIREMENT): REASON`. */
export class PolicyRejectedError extends OcisnapError {
  constructor(
    readonly image: string,
    readonly scope: string,
    readonly requirement: string,
    readonly reason: string,
    options?: { cause?: unknown },
  ) {
    super(`${image}: rejected by policy scope ${scope} (${requirement}): ${reason}`, options);
  }
}

export interface CheckOptions {
  /** Limit on signatures examined per source, as containers/image's maxLookasideSignatures. */
  maxSignatures?: number;
}

/** How an image is named in messages: "docker://host/os:1", "dir:/srv/os". */
export function imageDisplayName(image: Pick<ImageToCheck, 'transport' | 'reference'>): string {
  return image.transport === 'docker' ? `docker://${image.reference}` : `${image.transport}:${image.reference}`;
}

type Outcome = { ok: true; keyId?: string; details: string } | { ok: false; reason: string; cause?: unknown };

export async function checkPolicy(
  policy: Policy,
  image: ImageToCheck,
  signatures: SignatureSource,
  opts: CheckOptions = {},
): Promise<VerificationResult> {
  const name = imageDisplayName(image);
  const match = requirementsFor(policy, image.transport, image.reference);
  const scope = describeScope(match);
  const ctx = new EvalContext(image, signatures, opts.maxSignatures ?? 128);
  const details: string[] = [];
  let keyId: string | undefined;
  for (const req of match.requirements) {
    let outcome: Outcome;
    try {
      outcome = await evaluate(req, ctx, name);
    } catch (err) {
      // Keys that cannot be read, a gpg that does not run, a registry that fails:
      // the image is not verified, and the message says why.
      outcome = { ok: false, reason: describeError(err), cause: err };
    }
    if (!outcome.ok) {
      throw new PolicyRejectedError(name, scope, req.type, outcome.reason, outcome.cause === undefined ? undefined : { cause: outcome.cause });
    }
    keyId ??= outcome.keyId;
    details.push(outcome.details);
  }
  return {
    allowed: true,
    requirement: match.requirements.map((r) => r.type).join('+'),
    scope,
    ...(keyId !== undefined && { keyId }),
    details: `${name}: allowed by policy scope ${scope}: ${details.join('; ')}`,
  };
}

/** Fetches each kind of signature at most once per check. */
class EvalContext {
  private lookaside: Promise<Buffer[]> | undefined;
  private sigstore: Promise<SigstoreAttachment[]> | undefined;

  constructor(
    readonly image: ImageToCheck,
    private readonly source: SignatureSource,
    private readonly max: number,
  ) {}

  get intendedReference(): string | undefined {
    return this.image.dockerReference ?? (this.image.transport === 'docker' ? this.image.reference : undefined);
  }

  lookasideSignatures(): Promise<Buffer[]> {
    this.lookaside ??= (async () => {
      const out: Buffer[] = [];
      for await (const s of this.source.lookasideSignatures()) {
        if (out.length >= this.max) throw new OcisnapError(`more than ${this.max} signatures; refusing to examine them all`);
        out.push(s);
      }
      return out;
    })();
    return this.lookaside;
  }

  sigstoreAttachments(): Promise<SigstoreAttachment[]> {
    this.sigstore ??= this.source.sigstoreAttachments().then((a) => {
      if (a.length > this.max) throw new OcisnapError(`more than ${this.max} sigstore attachments; refusing to examine them all`);
      return a;
    });
    return this.sigstore;
  }

  checkDigest(signed: string): string | undefined {
    // manifest.MatchesDigest: the signed digest must be the digest of the manifest we have.
    return signed === this.image.manifestDigest
      ? undefined
      : `signature is for manifest ${signed}, not ${this.image.manifestDigest}`;
  }

  checkIdentity(rule: SignedIdentity, signed: string): string | undefined {
    const intended = this.intendedReference;
    if (identityMatches(rule, intended, signed)) return undefined;
    const hint =
      intended === undefined && rule.type !== 'exactReference' && rule.type !== 'exactRepository'
        ? ' (the image has no docker reference to match; name one, or use signedIdentity exactReference/exactRepository)'
        : '';
    return `signature for identity ${JSON.stringify(signed)} is not accepted by signedIdentity ${describeIdentity(rule)}${intended !== undefined ? ` for ${intended}` : ''}${hint}`;
  }
}

/** Summary when no signature was accepted (policy_eval_signedby.go / _sigstore.go). */
function noneAccepted(count: number, reasons: string[], extra = ''): Outcome {
  if (count === 0) return { ok: false, reason: `a signature was required, but no signature exists${extra}` };
  if (reasons.length === 1) return { ok: false, reason: reasons[0] as string };
  return {
    ok: false,
    reason: `none of the ${reasons.length} signatures was accepted: ${reasons.map((r, i) => `[${i + 1}] ${r}`).join('; ')}`,
  };
}

async function evaluate(req: PolicyRequirement, ctx: EvalContext, name: string): Promise<Outcome> {
  switch (req.type) {
    case 'insecureAcceptAnything':
      return { ok: true, details: 'insecureAcceptAnything: no signature required' };
    case 'reject':
      return { ok: false, reason: 'the policy rejects every image in this scope' };
    case 'sigstoreSigned': {
      const keys = await loadSigstoreKeys(req.keys);
      const attachments = await ctx.sigstoreAttachments();
      const reasons: string[] = [];
      for (const [i, a] of attachments.entries()) {
        const what = `sigstore signature ${i + 1} of ${name}`;
        const r = verifySigstoreAttachment(keys, a, {
          checkDigest: (d) => ctx.checkDigest(d),
          checkIdentity: (ref) => ctx.checkIdentity(req.signedIdentity, ref),
        }, what);
        if (r.accepted) {
          return {
            ok: true,
            keyId: r.key.id,
            details: `sigstoreSigned: signature ${i + 1} by ${r.key.description} key ${r.key.id} for ${r.payload.dockerReference}`,
          };
        }
        reasons.push(r.reason);
      }
      return noneAccepted(attachments.length, reasons);
    }
    case 'signedBy': {
      const sigs = await ctx.lookasideSignatures();
      if (sigs.length === 0) return noneAccepted(0, []);
      const gpg = await GpgVerifier.create(req.keys);
      try {
        const reasons: string[] = [];
        for (const [i, sig] of sigs.entries()) {
          const v = await gpg.verify(sig);
          if (!v.ok) {
            reasons.push(v.reason);
            continue;
          }
          let payload;
          try {
            payload = parseSimpleSigningPayload(v.content, 'atomic', `signature ${i + 1} of ${name}`);
          } catch (err) {
            reasons.push(describeError(err));
            continue;
          }
          const bad = ctx.checkDigest(payload.dockerManifestDigest) ?? ctx.checkIdentity(req.signedIdentity, payload.dockerReference);
          if (bad !== undefined) {
            reasons.push(bad);
            continue;
          }
          return {
            ok: true,
            keyId: v.fingerprint,
            details: `signedBy: signature ${i + 1} by GPG key ${v.fingerprint} for ${payload.dockerReference}`,
          };
        }
        return noneAccepted(sigs.length, reasons);
      } finally {
        await gpg.close();
      }
    }
  }
}
