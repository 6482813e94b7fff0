/**
 * The "decompress + hash" limit: what Node alone needs to read each layer
 * blob once, sha256 the compressed bytes, decompress them (zlib for gzip,
 * zstd-napi for zstd: the decoders ocisnap uses) and sha256 the tar stream —
 * the work any verifying pull must do before it writes a single file.
 * Run as its own process so time(1) measures it like the tools:
 *   node limit.js [--parallel] 'gzip|PATH|DIGEST|DIFFID' 'zstd|PATH|DIGEST|DIFFID' ...
 * `--parallel` runs all layers at once (as a puller may); the default is one
 * layer after another. Exits non-zero if a digest does not match.
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { Writable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { DecompressStream } from 'zstd-napi';

interface Job {
  compression: 'gzip' | 'zstd';
  path: string;
  digest: string;
  diffId: string;
}

function parseJob(arg: string): Job {
  const [compression, path, digest, diffId] = arg.split('|');
  if ((compression !== 'gzip' && compression !== 'zstd') || !path || !digest || !diffId) {
    throw new Error(`bad job "${arg}"; want gzip|zstd|PATH|DIGEST|DIFFID`);
  }
  return { compression, path, digest, diffId };
}

/**
 * zlib's output chunk: ocisnap's (layers/decompress.ts). The default 16 KiB
 * made this limit twice as slow as the decoding itself (2.8 s instead of
 * 1.3 s for the benchmark's gzip layers), a limit ocisnap could beat.
 */
const gzipChunk = 1024 * 1024;

function decoder(c: Job['compression']): Transform {
  return c === 'gzip' ? createGunzip({ chunkSize: gzipChunk }) : new DecompressStream();
}

async function run(job: Job): Promise<void> {
  const compressed = createHash('sha256');
  const uncompressed = createHash('sha256');
  const src = createReadStream(job.path, { highWaterMark: 1 << 20 });
  src.on('data', (chunk) => compressed.update(chunk));
  await pipeline(
    src,
    decoder(job.compression),
    new Writable({
      write(chunk: Buffer, _enc, cb) {
        uncompressed.update(chunk);
        cb();
      },
    }),
  );
  const got = [`sha256:${compressed.digest('hex')}`, `sha256:${uncompressed.digest('hex')}`];
  if (got[0] !== job.digest || got[1] !== job.diffId) {
    throw new Error(`${job.path}: digests ${got.join(' ')} do not match ${job.digest} ${job.diffId}`);
  }
}

async function main(argv: string[]): Promise<void> {
  const parallel = argv[0] === '--parallel';
  const jobs = (parallel ? argv.slice(1) : argv).map(parseJob);
  if (parallel) await Promise.all(jobs.map(run));
  else for (const j of jobs) await run(j);
}

main(process.argv.slice(2)).catch((err: unknown) => {
  process.stderr.write(`limit: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
