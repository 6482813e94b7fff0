/** Layer application: decompression and safe extraction of layer tars. */
export { decompressStream, CorruptLayerDataError } from './decompress.js';
export { applyLayer, LayerApplyError, type ApplyOptions, type ApplyResult } from './apply.js';
export { StreamHasher, emittedDigest, isDigestingStream, type DigestingStream } from './hasher.js';
