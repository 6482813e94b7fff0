/**
 * Builds a chain of layers in the store, bottom up: each is staged as a
 * snapshot of the one below, filled, and then recorded while the next one
 * fills. Recording waits for btrfs (fsyncs of layers.json, the read-only
 * flag); done in turn, it left both cores idle between the layers of a cold
 * pull, 0.4-0.8 s of about 5 s. Records are still written bottom up, each
 * after its parent's, so the store never holds a layer without its parent.
 */
import type { FillResult, LayerRecord, LayerSpec, StagedLayer, Store } from '../store/index.js';

export interface ChainLayer {
  spec: LayerSpec;
  /** Fills the staged layer's directory. */
  fill(dir: string): Promise<FillResult>;
}

/**
 * Builds `layers` (each the parent of the next, the first one's parent already
 * in the store) and calls `recorded` as each one is in the store. Throws the
 * first failure, of a fill or of a record, once the records under way are
 * done; what was not recorded by then is discarded. The layers recorded stay:
 * the caller takes them back if it wants.
 */
export async function buildLayerChain(
  store: Store,
  layers: ChainLayer[],
  recorded: (record: LayerRecord) => void,
): Promise<void> {
  /** The records in order; this promise never rejects (see `failure`). */
  let records: Promise<void> = Promise.resolve();
  let failure: { error: unknown } | undefined;
  const unrecorded = new Set<StagedLayer>();
  const record = (staged: StagedLayer, result: FillResult): void => {
    records = records.then(async () => {
      if (failure) return;
      // commitLayer discards the staged layer itself when it fails.
      unrecorded.delete(staged);
      try {
        recorded(await store.commitLayer(staged, result));
      } catch (error) {
        failure ??= { error };
      }
    });
  };

  let below: { staged: StagedLayer; result: FillResult } | undefined;
  try {
    for (const layer of layers) {
      let parent: StagedLayer | undefined;
      if (below !== undefined && below.staged.spec.id === layer.spec.parent) parent = below.staged;
      else {
        // Not a chain after all: the parent must be in the store before it is snapshotted.
        if (below !== undefined) record(below.staged, below.result);
        below = undefined;
        await records;
      }
      if (failure) throw failure.error;
      const staged = await store.stageLayer(layer.spec, parent);
      unrecorded.add(staged);
      // Only now: recording moves the layer below, which the snapshot has just read.
      if (below !== undefined) record(below.staged, below.result);
      below = undefined;
      below = { staged, result: await layer.fill(staged.dir) };
    }
    if (below !== undefined) record(below.staged, below.result);
    await records;
    if (failure) throw failure.error;
  } finally {
    await records;
    for (const staged of unrecorded) await store.discardLayer(staged);
  }
}
