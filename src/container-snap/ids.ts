/**
 * container-snap's snapshot IDs, mapped onto ocisnap's layout.
 *
 * container-snap (dcermak/container-snap pkg/types.go) names an image by its
 * storage image ID (`podman inspect -f {{.Id}}`) and a snapshot made from it
 * `<imageID>-work<N>`, N a per-image counter, the subvolume living beside the
 * image's top layer in its store. ocisnap keeps the ID forms but makes N the
 * snapper number: `<imageID>-work<N>` is `/.snapshots/N/snapshot`, whose
 * userdata says it holds that image; numbers are snapper's, so two images can
 * never collide on one (container-snap's numbering collision). A snapper
 * snapshot that holds no known image (the installed system, or one tukit
 * made with snapper) is named by its bare number `N`.
 */
import { UsageError } from '../errors.js';
import { isoTime } from '../iso-time.js';

export type SnapshotRef =
  /** The image itself (container-snap's snapshot number 0): its top layer in the store. */
  | { kind: 'image'; imageId: string }
  /** snapper snapshot N; `imageId` when the ID named one (checked against the snapshot's). */
  | { kind: 'snapshot'; num: number; imageId?: string };

export class BadSnapshotIdError extends UsageError {}

const workSuffix = /^(.+)-work([1-9][0-9]{0,9})$/;
const bareNumber = /^[1-9][0-9]{0,9}$/;

export function parseSnapshotId(id: string): SnapshotRef {
  if (id === '') throw new BadSnapshotIdError('empty snapshot ID');
  const work = workSuffix.exec(id);
  if (work) return { kind: 'snapshot', num: Number(work[2]), imageId: work[1]! };
  if (bareNumber.test(id)) return { kind: 'snapshot', num: Number(id) };
  if (id.includes('-')) throw new BadSnapshotIdError(`snapshot id ${id} is invalid, its tail is not "work<N>"`);
  return { kind: 'image', imageId: id };
}

export function formatSnapshotId(num: number, imageId: string | undefined): string {
  return imageId === undefined ? String(num) : `${imageId}-work${num}`;
}

/**
 * Go's time.Time.String() of a UTC time, as container-snap's list-images prints
 * `img.Created` ("2025-01-09 10:47:31.818647723 +0000 UTC"): fraction without
 * trailing zeros (none at all when zero). containers/storage writes RFC 3339
 * with nanoseconds; other offsets are converted to UTC.
 */
export function formatGoTime(iso: string | undefined): string {
  const m = iso === undefined ? null : /^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})$/.exec(iso);
  if (!m) return '0001-01-01 00:00:00 +0000 UTC'; // Go's zero time
  const frac = (m[3] ?? '').replace(/0+$/, '');
  let date = m[1]!;
  let time = m[2]!;
  if (m[4] !== 'Z') {
    const utc = isoTime(new Date(`${m[1]}T${m[2]}${m[4]}`));
    date = utc.slice(0, 10);
    time = utc.slice(11, 19);
  }
  return `${date} ${time}${frac === '' ? '' : `.${frac}`} +0000 UTC`;
}
