/**
 * Progress of a pull as a stream of typed events. The pull code only emits;
 * renderers (src/cli/progress.ts) decide how a terminal, a log or a program
 * sees them.
 */
import type { Digest } from '../oci/types.js';

export type PullEvent =
  /** Something the user may want to know (short-name resolution, a mirror used or skipped). */
  | { type: 'note'; message: string }
  /** The signature policy accepted the image (before anything else was fetched). */
  | { type: 'verified'; image: string; digest: Digest; requirement: string; scope: string; keyId?: string; details: string }
  | { type: 'resolved'; image: string; manifestDigest: Digest; layers: number; missing: number }
  | { type: 'layer-reused'; digest: Digest; layerId: string }
  | { type: 'layer-download-start'; digest: Digest; size: number }
  | { type: 'layer-download-progress'; digest: Digest; bytes: number; size: number }
  | { type: 'layer-downloaded'; digest: Digest; size: number; seconds: number }
  | { type: 'layer-apply-start'; digest: Digest; layerId: string }
  | { type: 'layer-applied'; digest: Digest; layerId: string; diffSize: number; entries: number; seconds: number }
  | { type: 'done'; image: string; imageId: string; seconds: number };

export type ProgressSink = (event: PullEvent) => void;

export const noProgress: ProgressSink = () => {};
