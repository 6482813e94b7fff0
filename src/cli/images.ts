/** What `ocisnap images` and `ocisnap inspect` show of the store. */
import { ImageUnknownError, type ImageRecord, type LayerRecord, type Store } from '../store/index.js';
import { formatBytes } from './progress.js';

/** One image, as `ocisnap images --json` prints it (a stable shape). */
export interface ImageSummary {
  id: string;
  names: string[];
  digest: string | undefined;
  created: string | undefined;
  /** Uncompressed size of all its layers, in bytes. */
  size: number;
  layers: string[];
}

export async function listImageSummaries(store: Store): Promise<ImageSummary[]> {
  const layers = new Map((await store.listLayers()).map((l) => [l.id, l]));
  return (await store.listImages()).map((image) => summarize(image, layers));
}

function summarize(image: ImageRecord, layers: Map<string, LayerRecord>): ImageSummary {
  const chain = layerChain(image.layer, layers);
  return {
    id: image.id,
    names: image.names ?? [],
    digest: image.digest,
    created: image.created,
    size: chain.reduce((sum, l) => sum + (l['diff-size'] ?? 0), 0),
    layers: chain.map((l) => l.id),
  };
}

/** The image's layers from the bottom up. */
function layerChain(top: string | undefined, layers: Map<string, LayerRecord>): LayerRecord[] {
  const chain: LayerRecord[] = [];
  const seen = new Set<string>();
  for (let id = top; id !== undefined && !seen.has(id); ) {
    const layer = layers.get(id);
    if (!layer) break;
    seen.add(id);
    chain.unshift(layer);
    id = layer.parent;
  }
  return chain;
}

export function imagesTable(images: ImageSummary[]): string {
  const rows = [['REPOSITORY', 'TAG', 'IMAGE ID', 'CREATED', 'SIZE']];
  for (const image of images) {
    const names = image.names.length > 0 ? image.names : ['<none>:<none>'];
    for (const name of names) {
      const colon = name.lastIndexOf(':');
      const [repo, tag] = colon > name.lastIndexOf('/') ? [name.slice(0, colon), name.slice(colon + 1)] : [name, '<none>'];
      rows.push([repo, tag, image.id.slice(0, 12), image.created ?? '', formatBytes(image.size)]);
    }
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n') + '\n';
}

export async function inspectImage(store: Store, query: string): Promise<Record<string, unknown>> {
  const image = await store.findImage(query);
  if (!image) throw new ImageUnknownError(query);
  const layers = new Map((await store.listLayers()).map((l) => [l.id, l]));
  const summary = summarize(image, layers);
  const config = JSON.parse((await store.imageBigData(image.id, `sha256:${image.id}`)).toString('utf8')) as unknown;
  const manifest = JSON.parse((await store.imageBigData(image.id, 'manifest')).toString('utf8')) as unknown;
  return {
    ...summary,
    layers: layerChain(image.layer, layers).map((l) => ({
      id: l.id,
      diffDigest: l['diff-digest'],
      diffSize: l['diff-size'],
      compressedDigest: l['compressed-diff-digest'],
      compressedSize: l['compressed-size'],
    })),
    manifest,
    config,
  };
}
