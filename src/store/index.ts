export { Store, layersToRemove, type FillResult, type ImageSpec, type LayerSpec, type StagedLayer, type StoreOptions } from './store.js';
export { layerIdsFor } from './layer-id.js';
export {
  compressionCode,
  imageDigests,
  isIncomplete,
  type ContainerRecord,
  type ImageRecord,
  type LayerCompression,
  type LayerRecord,
  type MountpointRecord,
} from './records.js';
export {
  AmbiguousImageError,
  ImageConflictError,
  ImageInUseError,
  ImageUnknownError,
  LayerMountedError,
  LayerUnknownError,
  LockTimeoutError,
  StoreCorruptError,
  StoreOperationError,
} from './errors.js';
export { LockFile, type LockMode, type LockOptions } from './lockfile.js';
export { bigDataFileName, storeLayout, type StoreLayout } from './layout.js';
export { Crc64, TarSplitRecorder, type TarSplit } from './tar-split.js';
