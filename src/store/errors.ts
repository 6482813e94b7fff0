/** Failures of the layer/image store, each with a one-line message for a user. */
import { OcisnapError } from '../errors.js';

export { StoreCorruptError } from './records.js';
export { AmbiguousImageError } from './images.js';
export { LockTimeoutError } from './lockfile.js';

export class ImageUnknownError extends OcisnapError {
  constructor(readonly query: string) {
    super(`image "${query}" is not in the store`);
  }
}

export class LayerUnknownError extends OcisnapError {
  constructor(
    readonly layerId: string,
    why = 'is not in the store',
  ) {
    super(`layer ${layerId} ${why}`);
  }
}

/** A container (podman's containers.json) still uses the image. */
export class ImageInUseError extends OcisnapError {
  constructor(
    readonly imageId: string,
    readonly containerId: string,
  ) {
    super(`image ${imageId.slice(0, 12)} is used by container ${containerId.slice(0, 12)}; remove the container first`);
  }
}

/** Podman has a layer "mounted" (`podman image mount`); it must be unmounted before removal. */
export class LayerMountedError extends OcisnapError {
  constructor(
    readonly imageId: string,
    readonly layerId: string,
  ) {
    super(`image ${imageId.slice(0, 12)} is mounted (layer ${layerId.slice(0, 12)}); run 'podman image umount ${imageId.slice(0, 12)}' first`);
  }
}

/** An image with this ID exists with another top layer (containers/image storage_dest.go Commit refuses the same). */
export class ImageConflictError extends OcisnapError {
  constructor(
    readonly imageId: string,
    existingLayer: string,
    wantedLayer: string,
  ) {
    super(`image ${imageId.slice(0, 12)} already exists with top layer ${existingLayer.slice(0, 12)}, not ${wantedLayer.slice(0, 12)}`);
  }
}

/** A store operation failed; wraps the cause with which layer or image it was about. */
export class StoreOperationError extends OcisnapError {}
