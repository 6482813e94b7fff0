/**
 * Layer IDs as containers/image assigns them when it commits an image into
 * containers/storage (containers/image storage/storage_dest.go commitLayer):
 * the first layer's ID is its DiffID hex; each next one is
 * sha256(parentID + "+" + DiffID hex) in hex. Equal prefixes of DiffIDs give
 * equal IDs, which is how layers are shared between images.
 */
import { createHash } from 'node:crypto';
import { digestHex } from '../oci/digest.js';
import type { Digest } from '../oci/types.js';

export function layerIdsFor(diffIds: Digest[]): string[] {
  const ids: string[] = [];
  let parent: string | undefined;
  for (const diffId of diffIds) {
    const hex = digestHex(diffId);
    const id = parent === undefined ? hex : createHash('sha256').update(`${parent}+${hex}`).digest('hex');
    ids.push(id);
    parent = id;
  }
  return ids;
}
