/**
 * Bounds on signatures read from any source (registry, lookaside, dir:
 * copies), all untrusted input; in a module of their own so readers of local
 * signatures need not load the registry client.
 */
/** containers/image iolimits.MaxSignatureBodySize */
export const maxSignatureBytes = 4 * 1024 * 1024;
/** containers/image docker_image_src.go maxLookasideSignatures / maxSigstoreSignatures */
export const maxSignatures = 128;
