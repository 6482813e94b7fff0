/**
 * ocisnap benchmark (issue 5): cold pull, update pull and deploy of a Debian
 * bookworm OS image from a registry on 127.0.0.1 into a btrfs filesystem,
 * side by side with `podman pull` (btrfs driver) and `skopeo copy` +
 * `umoci raw unpack`, and the limits of this machine (decompress + sha256 in
 * Node alone; `tar -x` of the uncompressed layers; a btrfs snapshot).
 *
 * Run by bench/run.sh (as root). Settings, from the environment:
 *   BENCH_RUNS=5            rounds; every measurement is taken once per round
 *   BENCH_COMPRESSIONS=gzip,zstd
 *   BENCH_TOOLS=ocisnap,podman,umoci
 *   BENCH_UMOCI_UPDATE=0    1: also time skopeo+umoci on the update (a full re-unpack, as long as a cold one)
 *   BENCH_LIMIT_PARALLEL=0  1: also time the decompress+sha256 limit with all layers at once
 *   BENCH_DROP_CACHES=1     sync + drop the page cache before every measured command
 *   BENCH_PROFILE=1         after the rounds, profile ocisnap pulls (node --cpu-prof)
 *   BENCH_LINK_MBIT=200     also a cold pull (first compression) with loopback shaped to this rate
 *                           (tc tbf), as from a registry across a network; 0: not measured
 *   BENCH_CACHE=/var/tmp/ocisnap-bench-cache   debootstrap rootfs and built layers
 *   BENCH_WORK=/var/tmp/ocisnap-bench-work     btrfs image, registry, profiles
 *   BENCH_RESULTS=bench/RESULTS.md
 * Each round alternates the tools (the order rotates every round), so drift of
 * the machine during the run hits every tool alike.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa, execaSync } from 'execa';
import { createBenchFs, createSubvolume, deleteSubvolumeTree, type BenchFs } from './btrfs.js';
import { compressions as allCompressions, describeImages, ensureImages, type BenchImages, type Compression } from './image.js';
import { dropCaches, measure, stats, type Sample } from './measure.js';
import { summarizeProfile } from './profile.js';
import { pushLayoutImage, startRegistry } from './registry.js';

// bench/work/build/main.js → the repository root.
const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
// run.sh copies the build here before measuring, so a rebuild of the working
// tree during the run cannot mix two versions of ocisnap in one report.
const ocisnapDir = process.env.BENCH_OCISNAP_DIR ?? join(repo, 'bench/work/ocisnap');
const cli = join(ocisnapDir, 'dist/bin/main.js');
/** The same code module by module (tsc's output): profiles then name source files, not bundle chunks. */
const cliModules = join(ocisnapDir, 'dist/cli/main.js');
/**
 * The node flags of ocisnap's shebang (`#!/usr/bin/env -S node FLAGS`): ocisnap
 * runs with them as installed, and the Node limit runs with the same.
 */
function shebangNodeFlags(file: string): string[] {
  if (!existsSync(file)) return [];
  const first = readFileSync(file, 'utf8').split('\n', 1)[0]!;
  const m = /^#!\S*env -S node(.*)$/.exec(first);
  return m ? m[1]!.trim().split(/\s+/).filter(Boolean) : [];
}
const nodeFlags = shebangNodeFlags(cli);
const limitJs = join(dirname(fileURLToPath(import.meta.url)), 'limit.js');

type Tool = 'ocisnap' | 'podman' | 'umoci';
type Scenario = 'cold pull' | 'update pull' | 'deploy' | 'cold pull, shaped link';

interface Settings {
  runs: number;
  compressions: Compression[];
  tools: Tool[];
  umociUpdate: boolean;
  limitParallel: boolean;
  dropCaches: boolean;
  profile: boolean;
  linkMbit: number;
  cache: string;
  work: string;
  results: string;
}

function settings(env: NodeJS.ProcessEnv): Settings {
  const list = (v: string | undefined, def: string) => (v ?? def).split(',').map((s) => s.trim()).filter(Boolean);
  const comps = list(env.BENCH_COMPRESSIONS, 'gzip,zstd');
  const tools = list(env.BENCH_TOOLS, 'ocisnap,podman,umoci');
  for (const c of comps) if (!allCompressions.includes(c as Compression)) throw new Error(`BENCH_COMPRESSIONS: unknown ${c}`);
  for (const t of tools) if (!['ocisnap', 'podman', 'umoci'].includes(t)) throw new Error(`BENCH_TOOLS: unknown ${t}`);
  const runs = Number(env.BENCH_RUNS ?? 5);
  const linkMbit = Number(env.BENCH_LINK_MBIT ?? 200);
  if (!Number.isInteger(linkMbit) || linkMbit < 0) throw new Error('BENCH_LINK_MBIT must be a whole number of Mbit/s');
  if (!Number.isInteger(runs) || runs < 1) throw new Error('BENCH_RUNS must be a positive integer');
  return {
    runs,
    compressions: comps as Compression[],
    tools: tools as Tool[],
    umociUpdate: env.BENCH_UMOCI_UPDATE === '1',
    limitParallel: env.BENCH_LIMIT_PARALLEL === '1',
    dropCaches: env.BENCH_DROP_CACHES !== '0',
    profile: env.BENCH_PROFILE !== '0',
    linkMbit,
    cache: env.BENCH_CACHE ?? '/var/tmp/ocisnap-bench-cache',
    work: env.BENCH_WORK ?? '/var/tmp/ocisnap-bench-work',
    results: env.BENCH_RESULTS ?? join(repo, 'bench/RESULTS.md'),
  };
}

function log(msg: string): void {
  process.stdout.write(`bench: ${msg}\n`);
}

/** Measurements, keyed by "scenario / compression / who". */
class Results {
  readonly samples = new Map<string, Sample[]>();
  readonly failures = new Map<string, string>();
  readonly notes = new Set<string>();
  note(msg: string): void {
    this.notes.add(msg);
  }
  add(key: string, s: Sample): void {
    const list = this.samples.get(key) ?? [];
    list.push(s);
    this.samples.set(key, list);
  }
  fail(key: string, err: unknown): void {
    const msg = err instanceof Error ? err.message : String(err);
    if (!this.failures.has(key)) this.failures.set(key, msg.split('\n')[0]!);
    log(`FAILED ${key}: ${msg}`);
  }
}

const key = (scenario: Scenario | 'limit', c: Compression | '-', who: string) => `${scenario}|${c}|${who}`;

interface Ctx {
  s: Settings;
  fs: BenchFs;
  images: BenchImages;
  registry: string;
  results: Results;
  ocisnapPull: boolean;
  ocisnapDeploy: boolean;
}

const ref = (ctx: Ctx, version: '1' | '2', c: Compression) => `${ctx.registry}/bench/os:${version}-${c}`;

async function timed(ctx: Ctx, k: string, argv: string[]): Promise<Sample> {
  dropCaches(ctx.s.dropCaches);
  const sample = await measure(k, argv);
  ctx.results.add(k, sample);
  log(`${k.replaceAll('|', ' / ')}: ${sample.wallS.toFixed(2)} s wall, ${sample.cpuS.toFixed(2)} s CPU, ${sample.rssMiB.toFixed(0)} MiB`);
  return sample;
}

// ---------------------------------------------------------------------------
// The tools. Each works in its own subvolume `w`, deleted (with every nested
// layer subvolume) before and after, outside the measured time.

function ocisnapArgv(store: string, ...args: string[]): string[] {
  return ['node', ...nodeFlags, cli, '--storage-root', store, ...args];
}

function podmanArgv(w: string, ...args: string[]): string[] {
  return ['podman', '--root', join(w, 'storage'), '--runroot', join(w, 'run'), '--storage-driver', 'btrfs', '--events-backend', 'none', ...args];
}

/**
 * DEPLOY: `ocisnap --sysroot MNT deploy --no-pull --no-hooks REF` — a btrfs
 * snapshot of the image's top layer into MNT/.snapshots/N/snapshot, the /etc
 * three-way merge (base: the previous deployment's image /etc, local: the
 * previous deployment's /etc), snapper's info.xml, btrfs set-default, a
 * filesystem sync and the state file (MNT/var/lib/ocisnap). ocisnap wants the
 * filesystem's top level as the sysroot (set-default acts on the whole
 * filesystem), so that is the bench filesystem's mountpoint; the layer store
 * stays in the work subvolume, on the same filesystem. Version 1 is deployed first
 * (not timed), so the timed deploy of version 2 does a real /etc merge.
 * Hooks (kernel/initrd regeneration) are off: they are the image's own work,
 * not ocisnap's. deploy re-checks the stored image against the signature
 * policy, which asks the registry (hence --tls-verify=false).
 */
function deployArgv(ctx: Ctx, w: string, v: '1' | '2', c: Compression): string[] {
  return ['node', ...nodeFlags, cli, '--storage-root', join(w, 'storage'), '--sysroot', ctx.fs.mountpoint, 'deploy', '--no-pull', '--no-hooks', '--tls-verify=false', '--progress', 'none', ref(ctx, v, c)];
}

async function prepareSysroot(mnt: string): Promise<void> {
  await cleanSysroot(mnt);
  mkdirSync(join(mnt, '.snapshots'), { recursive: true });
}

async function cleanSysroot(mnt: string): Promise<void> {
  await deleteSubvolumeTree(mnt, join(mnt, '.snapshots'));
  rmSync(join(mnt, 'var'), { recursive: true, force: true });
}

async function runTool(ctx: Ctx, tool: Tool, c: Compression): Promise<void> {
  const mnt = ctx.fs.mountpoint;
  const w = join(mnt, `work-${tool}`);
  await deleteSubvolumeTree(mnt, w);
  await createSubvolume(w);
  const cold = key('cold pull', c, tool);
  const upd = key('update pull', c, tool);
  try {
    if (tool === 'ocisnap') {
      const store = join(w, 'storage');
      const pull = (v: '1' | '2') => ocisnapArgv(store, 'pull', '--tls-verify=false', '--progress', 'none', ref(ctx, v, c));
      await timed(ctx, cold, pull('1'));
      await timed(ctx, upd, pull('2'));
      if (ctx.ocisnapDeploy) {
        await prepareSysroot(mnt);
        dropCaches(ctx.s.dropCaches);
        await measure('deploy v1', deployArgv(ctx, w, '1', c));
        await timed(ctx, key('deploy', c, 'ocisnap'), deployArgv(ctx, w, '2', c));
      }
    } else if (tool === 'podman') {
      const pull = (v: '1' | '2') => podmanArgv(w, 'pull', '--tls-verify=false', '--quiet', ref(ctx, v, c));
      await timed(ctx, cold, pull('1'));
      await timed(ctx, upd, pull('2'));
    } else if (c === 'zstd') {
      ctx.results.note(`skopeo + umoci, zstd: not measured: ${await umociVersion()} does not unpack zstd layers ("blob is not correct mediatype")`);
    } else {
      // skopeo copy into an OCI layout, then umoci unpacks it: no layer store,
      // so an update copies the new blob and unpacks the whole image again.
      const layout = join(w, 'layout');
      const step = (v: '1' | '2') => [
        'sh', '-c',
        `skopeo copy --quiet --insecure-policy --src-tls-verify=false docker://${ref(ctx, v, c)} oci:${layout}:${v} && ` +
          `umoci raw unpack --image ${layout}:${v} ${join(w, `rootfs-${v}`)}`,
      ];
      await timed(ctx, cold, step('1'));
      if (ctx.s.umociUpdate) await timed(ctx, upd, step('2'));
    }
  } catch (err) {
    ctx.results.fail(`${tool} ${c}`, err);
  } finally {
    if (tool === 'ocisnap') await cleanSysroot(mnt);
    await deleteSubvolumeTree(mnt, w);
  }
}

/**
 * A cold pull with the loopback interface shaped to BENCH_LINK_MBIT (a token
 * bucket, `tc qdisc ... tbf`), as from a registry across a network rather
 * than on the same machine: there the download, not the machine, sets the
 * pace, and what counts is how much of the work happens while it runs.
 */
async function runShapedPulls(ctx: Ctx, c: Compression, tools: Tool[]): Promise<void> {
  const mnt = ctx.fs.mountpoint;
  const rate = `${ctx.s.linkMbit}mbit`;
  for (const tool of tools.filter((t) => t !== 'umoci')) {
    const w = join(mnt, `work-${tool}`);
    await deleteSubvolumeTree(mnt, w);
    await createSubvolume(w);
    const argv =
      tool === 'ocisnap'
        ? ocisnapArgv(join(w, 'storage'), 'pull', '--tls-verify=false', '--progress', 'none', ref(ctx, '1', c))
        : podmanArgv(w, 'pull', '--tls-verify=false', '--quiet', ref(ctx, '1', c));
    try {
      await execa('tc', ['qdisc', 'replace', 'dev', 'lo', 'root', 'tbf', 'rate', rate, 'burst', '256kb', 'latency', '100ms']);
      try {
        await timed(ctx, key('cold pull, shaped link', c, tool), argv);
      } finally {
        await execa('tc', ['qdisc', 'del', 'dev', 'lo', 'root'], { reject: false });
      }
    } catch (err) {
      ctx.results.fail(`${tool} ${c}, shaped link`, err);
    } finally {
      await deleteSubvolumeTree(mnt, w);
    }
  }
}

async function runLimits(ctx: Ctx, c: Compression): Promise<void> {
  const jobs = ctx.images.layers['1'].map((l) => `${c}|${l.blobs[c].path}|${l.blobs[c].digest}|${l.diffId}`);
  try {
    await timed(ctx, key('limit', c, 'node decompress+sha256, layers in turn'), ['node', ...nodeFlags, limitJs, ...jobs]);
    if (ctx.s.limitParallel) {
      await timed(ctx, key('limit', c, 'node decompress+sha256, layers at once'), ['node', ...nodeFlags, limitJs, '--parallel', ...jobs]);
    }
  } catch (err) {
    ctx.results.fail(`limit ${c}`, err);
  }
}

async function runTarLimit(ctx: Ctx): Promise<void> {
  const mnt = ctx.fs.mountpoint;
  const w = join(mnt, 'work-tar');
  await deleteSubvolumeTree(mnt, w);
  await createSubvolume(w);
  await createSubvolume(join(w, 'root'));
  try {
    const tars = ctx.images.layers['1'].map((l) => l.tarPath);
    const script = tars
      .map((t) => `tar --numeric-owner --xattrs --xattrs-include='*' -xpf ${t} -C ${join(w, 'root')}`)
      .join(' && ');
    await timed(ctx, key('limit', '-', 'tar -x of the uncompressed layers'), ['sh', '-c', script]);
    await deleteSubvolumeTree(mnt, join(w, 'root'));
    await createSubvolume(join(w, 'root'));
    await timed(ctx, key('limit', '-', 'tar -x of the uncompressed layers, then sync'), ['sh', '-c', `${script} && sync`]);
    await timed(ctx, key('limit', '-', 'btrfs subvolume snapshot of the rootfs'), [
      'btrfs', 'subvolume', 'snapshot', join(w, 'root'), join(w, 'snap'),
    ]);
  } catch (err) {
    ctx.results.fail('limit tar', err);
  } finally {
    await deleteSubvolumeTree(mnt, w);
  }
}

function profileSection(title: string, pdir: string, sample: Sample): string {
  const file = readdirSync(pdir).find((f) => f.endsWith('.cpuprofile'));
  if (!file) return `### ${title}: no profile written\n`;
  return [
    `### ${title} (${sample.wallS.toFixed(2)} s wall, ${sample.cpuS.toFixed(2)} s CPU under --cpu-prof; ${join(pdir, file)})`,
    '',
    summarizeProfile(join(pdir, file), 12),
    '',
  ].join('\n');
}

async function profileOcisnap(ctx: Ctx): Promise<string> {
  const out: string[] = [];
  const mnt = ctx.fs.mountpoint;
  const dir = join(ctx.s.work, 'profiles');
  rmSync(dir, { recursive: true, force: true });
  for (const c of ctx.s.compressions) {
    const w = join(mnt, 'work-profile');
    await deleteSubvolumeTree(mnt, w);
    await createSubvolume(w);
    try {
      for (const v of ['1', '2'] as const) {
        const pdir = join(dir, `${c}-${v}`);
        const argv = ['node', ...nodeFlags, '--cpu-prof', `--cpu-prof-dir=${pdir}`, cliModules, '--storage-root', join(w, 'storage'), 'pull', '--tls-verify=false', '--progress', 'none', ref(ctx, v, c)];
        dropCaches(ctx.s.dropCaches);
        const sample = await measure(`profile ${c} ${v}`, argv);
        out.push(profileSection(`ocisnap ${v === '1' ? 'cold' : 'update'} pull, ${c}`, pdir, sample));
      }
      if (ctx.ocisnapDeploy) {
        await prepareSysroot(mnt);
        await measure('deploy v1', deployArgv(ctx, w, '1', c));
        const pdir = join(dir, `${c}-deploy`);
        const argv = deployArgv(ctx, w, '2', c);
        argv.splice(1, 0, '--cpu-prof', `--cpu-prof-dir=${pdir}`);
        argv[argv.indexOf(cli)] = cliModules;
        dropCaches(ctx.s.dropCaches);
        out.push(profileSection(`ocisnap deploy, ${c}`, pdir, await measure(`profile deploy ${c}`, argv)));
      }
    } catch (err) {
      ctx.results.fail(`profile ${c}`, err);
    } finally {
      await cleanSysroot(mnt);
      await deleteSubvolumeTree(mnt, w);
    }
  }
  return out.join('\n');
}

// ---------------------------------------------------------------------------
// Report

const fmt = (x: number, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : 'n/a');

function cell(samples: Sample[] | undefined, pick: (s: Sample) => number, d = 2): string {
  if (!samples || samples.length === 0) return 'n/a';
  const st = stats(samples.map(pick));
  return st.n === 1 ? fmt(st.median, d) : `${fmt(st.median, d)} (${fmt(st.min, d)}–${fmt(st.max, d)})`;
}

const median = (samples: Sample[] | undefined, pick: (s: Sample) => number = (s) => s.wallS) =>
  samples && samples.length > 0 ? stats(samples.map(pick)).median : Number.NaN;

function table(ctx: Ctx): string {
  const r = ctx.results.samples;
  const lines = [
    '| scenario | compression | who | wall s | CPU s (user+sys) | peak RSS MiB | ocisnap ÷ this, wall | ocisnap ÷ this, CPU |',
    '|---|---|---|---:|---:|---:|---:|---:|',
  ];
  const row = (scenario: string, c: string, who: string, k: string, ref?: Sample[]) => {
    const s = r.get(k);
    if (!s) return;
    const wall = ref === undefined ? '' : fmt(median(ref) / median(s), 2);
    const cpu = ref === undefined ? '' : fmt(median(ref, (x) => x.cpuS) / median(s, (x) => x.cpuS), 2);
    lines.push(`| ${scenario} | ${c} | ${who} | ${cell(s, (x) => x.wallS)} | ${cell(s, (x) => x.cpuS)} | ${cell(s, (x) => x.rssMiB, 0)} | ${wall} | ${cpu} |`);
  };
  const whoName: Record<Tool, string> = { ocisnap: 'ocisnap', podman: 'podman pull (btrfs driver)', umoci: 'skopeo copy + umoci raw unpack' };
  const tarLimit = key('limit', '-', 'tar -x of the uncompressed layers');
  for (const scenario of ['cold pull', 'update pull'] as const) {
    for (const c of ctx.s.compressions) {
      const own = r.get(key(scenario, c, 'ocisnap'));
      for (const t of ctx.s.tools) row(scenario, c, whoName[t], key(scenario, c, t), t === 'ocisnap' ? undefined : own);
      if (scenario === 'cold pull') {
        for (const who of ['node decompress+sha256, layers in turn', 'node decompress+sha256, layers at once']) {
          row('limit', c, who, key('limit', c, who), own);
        }
        row('limit', '-', 'tar -x of the uncompressed layers', tarLimit, own);
        row('limit', '-', 'tar -x of the uncompressed layers, then sync', key('limit', '-', 'tar -x of the uncompressed layers, then sync'), own);
      }
    }
  }
  if (ctx.s.linkMbit > 0) {
    const c = ctx.s.compressions[0]!;
    const scenario = `cold pull, ${ctx.s.linkMbit} Mbit/s link`;
    const own = r.get(key('cold pull, shaped link', c, 'ocisnap'));
    for (const t of ctx.s.tools) row(scenario, c, whoName[t], key('cold pull, shaped link', c, t), t === 'ocisnap' ? undefined : own);
  }
  for (const c of ctx.s.compressions) row('deploy', c, 'ocisnap deploy', key('deploy', c, 'ocisnap'));
  const snapKey = key('limit', '-', 'btrfs subvolume snapshot of the rootfs');
  const deployOwn = r.get(key('deploy', ctx.s.compressions[0]!, 'ocisnap'));
  row('limit', '-', 'btrfs subvolume snapshot of the rootfs', snapKey, deployOwn);
  return lines.join('\n');
}

function targets(ctx: Ctx): string {
  const r = ctx.results.samples;
  const out: string[] = [];
  const mark = (ok: boolean | undefined) => (ok === undefined ? '—' : ok ? 'met' : '**missed**');
  const chk = (label: string, value: number, limit: number, unit = '') =>
    out.push(`| ${label} | ${fmt(value)}${unit} | ${fmt(limit)}${unit} | ${mark(Number.isFinite(value) ? value <= limit : undefined)} |`);
  out.push('| target | measured (medians) | goal | |', '|---|---:|---:|---|');
  for (const c of ctx.s.compressions) {
    const cold = median(r.get(key('cold pull', c, 'ocisnap')));
    const upd = median(r.get(key('update pull', c, 'ocisnap')));
    chk(`cold pull ${c}: ocisnap ÷ podman`, cold / median(r.get(key('cold pull', c, 'podman'))), 0.5, '×');
    chk(`cold pull ${c}: ocisnap ÷ decompress+sha256 limit (layers in turn)`, cold / median(r.get(key('limit', c, 'node decompress+sha256, layers in turn'))), 1.5, '×');
    chk(`update pull ${c}: wall`, upd, 1, ' s');
    chk(`update pull ${c}: ÷ cold pull`, upd / cold, 0.3, '×');
    chk(`deploy ${c}: wall`, median(r.get(key('deploy', c, 'ocisnap'))), 0.5, ' s');
  }
  const rss = [...r].filter(([k]) => k.endsWith('|ocisnap')).flatMap(([, v]) => v.map((s) => s.rssMiB));
  chk('ocisnap peak RSS, any run', rss.length ? Math.max(...rss) : Number.NaN, 150, ' MiB');
  // Not a target of issue 5: where writing the files costs more than decoding
  // them, the larger of the two limits is what a pull cannot go below.
  const tarX = median(r.get(key('limit', '-', 'tar -x of the uncompressed layers')));
  const larger = ctx.s.compressions.map((c) => {
    const limit = Math.max(median(r.get(key('limit', c, 'node decompress+sha256, layers in turn'))), tarX);
    return `${c} ${fmt(median(r.get(key('cold pull', c, 'ocisnap'))) / limit)}×`;
  });
  out.push('', `For reference: cold pull ÷ the larger of the decompress+sha256 and \`tar -x\` limits: ${larger.join(', ')}.`);
  return out.join('\n');
}

async function versions(): Promise<string> {
  const v = async (argv: string[]) => {
    const r = await execa(argv[0]!, argv.slice(1), { reject: false });
    return (r.stdout || r.stderr || 'n/a').split('\n')[0]!.trim();
  };
  const cpu = (cpus()[0]?.model ?? 'unknown CPU').trim();
  const rev = await v(['git', '-C', repo, 'rev-parse', '--short', 'HEAD']);
  const status = await execa('git', ['-C', repo, 'status', '--porcelain', '--untracked-files=no'], { reject: false });
  const dirty = status.stdout.trim() ? ' + uncommitted changes' : '';
  return [
    `- machine: ${cpus().length} × ${cpu}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB RAM, kernel ${await v(['uname', '-r'])}`,
    `- ocisnap: git ${rev}${dirty} (working tree as built), node ${process.version}${nodeFlags.length > 0 ? ` (flags ${nodeFlags.join(' ')}, from its shebang)` : ''}`,
    `- load average at the end (other work on the machine adds noise): ${loadavg().map((x) => x.toFixed(1)).join(' ')}`,
    `- ${await v(['podman', '--version'])}; ${await v(['skopeo', '--version'])}; ${await v(['umoci', '--version'])}; ${await v(['btrfs', '--version'])}; ${await v(['tar', '--version'])}`,
  ].join('\n');
}

function report(ctx: Ctx, when: Date, ver: string, profile: string): string {
  const fails = [...ctx.results.failures].map(([k, m]) => `- ${k}: ${m}`);
  for (const n of ctx.results.notes) fails.push(`- ${n}`);
  const notMeasured: string[] = [];
  if (!ctx.ocisnapPull) notMeasured.push('- ocisnap pull: not measured (`ocisnap pull` did not run on this tree)');
  if (!ctx.ocisnapDeploy) notMeasured.push('- deploy: not measured (`ocisnap deploy` is not in this build yet; see the DEPLOY SLOT in bench/main.ts)');
  return [
    `## ${when.toISOString().slice(0, 16).replace('T', ' ')} UTC`,
    '',
    ver,
    `- runs: ${ctx.s.runs} per cell (median, then min–max), tools alternating; page cache ${ctx.s.dropCaches ? 'dropped (sync; echo 3 > drop_caches) before every measured command' : 'NOT dropped'}; registry on ${ctx.registry} (docker-registry, storage on ext4)`,
    '',
    describeImages(ctx.images),
    '',
    table(ctx),
    '',
    targets(ctx),
    '',
    ...(notMeasured.length || fails.length ? ['Not measured / failures:', '', ...notMeasured, ...fails, ''] : []),
    ...(profile ? ['<details><summary>ocisnap CPU profiles (main thread self time)</summary>', '', profile, '</details>', ''] : []),
  ].join('\n');
}

const resultsHeader = `# ocisnap benchmark results

Generated by \`sudo bash bench/run.sh\` (see bench/README.md). Newest run first;
earlier runs are kept below it so regressions show. Times in seconds, medians
with (min–max) over the runs; CPU = user + sys of the command and its children
(GNU time); peak RSS = largest resident set of any one process of the command.
`;

function writeResults(path: string, section: string): void {
  const old = existsSync(path) ? readFileSync(path, 'utf8') : '';
  const i = old.indexOf('\n## ');
  const earlier = i >= 0 ? old.slice(i + 1) : '';
  writeFileSync(path, `${resultsHeader}\n${section}\n${earlier}`);
}

// ---------------------------------------------------------------------------

async function umociVersion(): Promise<string> {
  const r = await execa('umoci', ['--version'], { reject: false });
  return r.stdout.trim() || 'umoci';
}

async function cliWorks(args: string[]): Promise<boolean> {
  if (!existsSync(cli)) return false;
  const r = await execa('node', [cli, ...args], { reject: false });
  return r.exitCode === 0;
}

async function main(): Promise<void> {
  const s = settings(process.env);
  const started = new Date();
  const images = await ensureImages(s.cache);
  log(describeImages(images));
  mkdirSync(s.work, { recursive: true });
  const fs = await createBenchFs(s.work, 24);
  const reg = await startRegistry(join(s.work, 'registry'));
  // Ctrl-C: stop the registry and unmount rather than leave them behind.
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => {
      log(`${sig}: cleaning up`);
      if (s.linkMbit > 0) execaSync('tc', ['qdisc', 'del', 'dev', 'lo', 'root'], { reject: false });
      void reg.stop().finally(() => fs.dispose().finally(() => process.exit(130)));
    });
  }
  const results = new Results();
  try {
    log(`registry on ${reg.host}; pushing the images`);
    for (const c of s.compressions) for (const v of ['1', '2'] as const) {
      await pushLayoutImage(images.layoutDir, `${v}-${c}`, `${reg.host}/bench/os:${v}-${c}`);
    }
    const ctx: Ctx = {
      s,
      fs,
      images,
      registry: reg.host,
      results,
      ocisnapPull: s.tools.includes('ocisnap') && (await cliWorks(['pull', '--help'])),
      ocisnapDeploy: s.tools.includes('ocisnap') && (await cliWorks(['deploy', '--help'])),
    };
    if (!ctx.ocisnapPull) log('ocisnap pull is not available in this build: measuring the other tools only');
    if (!ctx.ocisnapDeploy) log('ocisnap deploy is not available in this build: deploy not measured');
    const tools = s.tools.filter((t) => t !== 'ocisnap' || ctx.ocisnapPull);
    for (let round = 0; round < s.runs; round++) {
      log(`round ${round + 1}/${s.runs}`);
      for (const c of s.compressions) {
        const order = tools.map((_, i) => tools[(i + round) % tools.length]!);
        for (const t of order) await runTool(ctx, t, c);
        await runLimits(ctx, c);
      }
      if (s.linkMbit > 0) {
        const order = tools.map((_, i) => tools[(i + round) % tools.length]!);
        await runShapedPulls(ctx, s.compressions[0]!, order);
      }
      await runTarLimit(ctx);
    }
    const profile = s.profile && ctx.ocisnapPull ? await profileOcisnap(ctx) : '';
    const section = report(ctx, started, await versions(), profile);
    writeResults(s.results, section);
    process.stdout.write(`\n${section}\n`);
    log(`written to ${s.results}; took ${((Date.now() - started.getTime()) / 60000).toFixed(1)} min`);
  } finally {
    await reg.stop();
    await fs.dispose();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
