/** The registry client and image sources: the public surface of src/registry. */
export { openSource, splitPathAndTag } from './source.js';
export type { BlobOptions, ImageSource, ManifestBlob, SourceOptions } from './types.js';
export { resolveImage, type ResolvedImage } from './resolve.js';
export {
  AuthenticationError,
  DocumentTooLargeError,
  ImageMismatchError,
  LayoutError,
  RegistryConnectionError,
  RegistryError,
  RegistryHttpError,
  RegistryProtocolError,
  SourceSpecError,
} from './errors.js';
export { DirSource, openDirSource } from './dir-source.js';
