import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  StateCorruptError,
  StateTransitionError,
  addDeployment,
  adoptSnapshot,
  beginDeploy,
  consumeTry,
  emptyState,
  endDeploy,
  lastGoodDeployment,
  markBad,
  markGood,
  pendingDeployment,
  readState,
  recordRollback,
  removeDeployment,
  setFollowed,
  setPinned,
  statePath,
  supersede,
  validateState,
  writeState,
  type NewDeployment,
  type State,
} from '../../src/deploy/state.js';

const t0 = new Date('2026-01-01T00:00:00.000Z');
const at = (min: number) => new Date(t0.getTime() + min * 60_000);

const dep = (snapshot: number, extra: Partial<NewDeployment> = {}): NewDeployment => ({
  snapshot,
  image: `registry.example/os:${snapshot}`,
  manifestDigest: `sha256:${String(snapshot % 10).repeat(64)}`,
  imageId: String((snapshot + 1) % 10).repeat(64),
  ...extra,
});

/** v1 deployed and good, v2 pending. */
function twoDeployments(): State {
  let s = addDeployment(emptyState(), dep(1), { now: at(0), followed: 'registry.example/os:latest' });
  s = markGood(s, 1, { by: 'health-check', now: at(1) });
  return addDeployment(s, dep(2, { parent: 1 }), { now: at(2), tries: 2 });
}

describe('transitions', () => {
  it('a new deployment is pending with its tries; the first good one becomes last good', () => {
    let s = addDeployment(emptyState(), dep(1), { now: at(0), followed: 'registry.example/os:latest' });
    expect(pendingDeployment(s)).toMatchObject({ snapshot: 1, status: 'pending', triesLeft: 3, createdAt: t0.toISOString() });
    expect(s.followed).toBe('registry.example/os:latest');
    expect(s.highestSnapshot).toBe(1);
    expect(s.lastGood).toBeUndefined();
    s = markGood(s, 1, { by: 'health-check', now: at(1) });
    expect(pendingDeployment(s)).toBeUndefined();
    expect(lastGoodDeployment(s)).toMatchObject({ snapshot: 1, status: 'good', verdict: { by: 'health-check', at: at(1).toISOString() } });
    expect(lastGoodDeployment(s)!.triesLeft).toBeUndefined();
  });

  it('transitions are pure: the input state is not changed', () => {
    const s = twoDeployments();
    const copy = structuredClone(s);
    markBad(s, 2, { by: 'health-check', reason: 'required check sshd failed' });
    consumeTry(s, 2);
    setPinned(s, 1, true);
    expect(s).toEqual(copy);
  });

  it('a failed trial is bad and keeps the previous last good', () => {
    const s = markBad(twoDeployments(), 2, { by: 'health-check', reason: 'required check sshd failed', now: at(3) });
    expect(s.deployments[1]).toEqual({
      ...dep(2, { parent: 1 }),
      createdAt: at(2).toISOString(),
      status: 'bad',
      verdict: { by: 'health-check', reason: 'required check sshd failed', at: at(3).toISOString() },
    });
    expect(s.lastGood).toBe(1);
  });

  it('counts boot tries down and fails the trial when none are left', () => {
    let s = twoDeployments();
    let r = consumeTry(s, 2);
    expect([r.exhausted, r.triesLeft]).toEqual([false, 1]);
    r = consumeTry(r.state, 2);
    expect([r.exhausted, r.triesLeft]).toEqual([false, 0]);
    expect(pendingDeployment(r.state)?.triesLeft).toBe(0);
    r = consumeTry(r.state, 2, at(9));
    expect(r.exhausted).toBe(true);
    s = r.state;
    expect(s.deployments[1]).toMatchObject({ status: 'bad', verdict: { by: 'boot-counter', at: at(9).toISOString() } });
    expect(s.lastGood).toBe(1);
    expect(() => consumeTry(s, 2)).toThrow(/not on trial \(bad\)/);
    expect(() => consumeTry(s, 1)).toThrow(/not on trial \(good\)/);
    expect(() => consumeTry(s, 7)).toThrow(/not an ocisnap deployment/);
  });

  it('a newer deploy supersedes the pending one', () => {
    const s = addDeployment(twoDeployments(), dep(5), { now: at(4) });
    expect(s.deployments.map((d) => [d.snapshot, d.status])).toEqual([
      [1, 'good'],
      [2, 'superseded'],
      [5, 'pending'],
    ]);
    expect(s.deployments[1]!.triesLeft).toBeUndefined();
    expect(s.deployments[1]!.verdict).toMatchObject({ by: 'deploy', reason: expect.stringContaining('snapshot 5') });
    expect(s.highestSnapshot).toBe(5);
    expect(validateState(JSON.parse(JSON.stringify(s)), 'x')).toEqual(s);
  });

  it('refuses numbers already used, even after the deployment was removed', () => {
    let s = markGood(twoDeployments(), 2, { by: 'health-check' });
    expect(() => addDeployment(s, dep(2))).toThrow(StateTransitionError);
    s = removeDeployment(s, 1);
    expect(s.deployments.map((d) => d.snapshot)).toEqual([2]);
    expect(() => addDeployment(s, dep(1))).toThrow(/not above 2/);
    expect(() => addDeployment(s, dep(3), { tries: 0 })).toThrow(/tries/);
  });

  it('guards good and bad verdicts', () => {
    const s = markBad(twoDeployments(), 2, { by: 'health-check' });
    expect(() => markGood(s, 2, { by: 'health-check' })).toThrow(/needs force/);
    const forced = markGood(s, 2, { by: 'admin', force: true });
    expect(forced.lastGood).toBe(2);
    expect(() => markBad(forced, 1, { by: 'admin' })).toThrow(/only a pending deployment/);
    expect(() => markGood(s, 9, { by: 'x' })).toThrow(/not an ocisnap deployment/);
    expect(() => supersede(s, 1, { by: 'rollback' })).toThrow(/not pending/);
  });

  it('forcing the last good to bad falls back to the most recently judged good one', () => {
    let s = twoDeployments();
    s = markGood(s, 2, { by: 'health-check', now: at(5) });
    s = addDeployment(s, dep(3), { now: at(6) });
    s = markGood(s, 3, { by: 'health-check', now: at(7) });
    s = markGood(s, 1, { by: 'health-check', now: at(8) }); // booted 1 by hand later: newest verdict
    expect(s.lastGood).toBe(1);
    s = markBad(s, 1, { by: 'admin', force: true, now: at(9) });
    expect(s.lastGood).toBe(3);
    s = markBad(markBad(s, 3, { by: 'admin', force: true }), 2, { by: 'admin', force: true });
    expect(s.lastGood).toBeUndefined();
    expect(validateState(JSON.parse(JSON.stringify(s)), 'x')).toEqual(s);
  });

  it('a rollback away from the pending deployment supersedes it', () => {
    const s = supersede(twoDeployments(), 2, { by: 'rollback', reason: 'ocisnap rollback 1' });
    expect(s.deployments[1]).toMatchObject({ status: 'superseded', verdict: { by: 'rollback' } });
    expect(pendingDeployment(s)).toBeUndefined();
    // booted by hand later and healthy: it may become good
    expect(markGood(s, 2, { by: 'health-check' }).lastGood).toBe(2);
  });

  it('a deploy is bracketed by an in-progress marker that reserves its number', () => {
    let s = twoDeployments();
    s = beginDeploy(s, 4, 'registry.example/os:4', at(10));
    expect(s.inProgress).toEqual({ snapshot: 4, image: 'registry.example/os:4', startedAt: at(10).toISOString() });
    expect(s.highestSnapshot).toBe(4);
    expect(() => beginDeploy(s, 5, 'registry.example/os:5')).toThrow(/interrupted deploy of registry.example\/os:4 \(snapshot 4\)/);
    expect(() => addDeployment(s, dep(3))).toThrow(/not above 4/);
    s = addDeployment(s, dep(4), { now: at(11) });
    expect(pendingDeployment(s)?.snapshot).toBe(4);
    expect(validateState(JSON.parse(JSON.stringify(s)), 'x')).toEqual(s);
    s = endDeploy(s);
    expect('inProgress' in s).toBe(false);
    // an interrupted deploy that was undone: its number stays used
    s = endDeploy(beginDeploy(s, 6, 'registry.example/os:6'));
    expect(s.highestSnapshot).toBe(6);
    expect(() => beginDeploy(s, 6, 'again')).toThrow(/not above 6/);
  });

  it('adopts an existing snapshot whose number was reserved earlier (container-snap create-snapshot, tukit)', () => {
    // create-snapshot reserved 4 and finished (no marker left); switching to it later records it.
    let s = endDeploy(beginDeploy(twoDeployments(), 4, 'registry.example/os:4', at(10)));
    expect(() => addDeployment(s, dep(4))).toThrow(/not above 4/);
    s = adoptSnapshot(s, dep(4, { parent: 2 }), { now: at(11) });
    expect(pendingDeployment(s)).toMatchObject({ snapshot: 4, parent: 2, status: 'pending', triesLeft: 3 });
    expect(s.deployments.find((d) => d.snapshot === 2)?.status).toBe('superseded');
    expect(s.highestSnapshot).toBe(4);
    expect('inProgress' in s).toBe(false);
    expect(validateState(JSON.parse(JSON.stringify(s)), 'x')).toEqual(s);
    // Never twice, never over a deploy in progress, and a higher number (snapper's) raises highestSnapshot.
    expect(() => adoptSnapshot(s, dep(4))).toThrow(/already a deployment/);
    const running = beginDeploy(s, 5, 'registry.example/os:5', at(12));
    expect(() => adoptSnapshot(running, dep(5))).toThrow(/interrupted deploy of registry.example\/os:5/);
    expect(adoptSnapshot(s, dep(9), { tries: 2 }).highestSnapshot).toBe(9);
    expect(() => adoptSnapshot(s, dep(0))).toThrow(StateTransitionError);
  });

  it('records how a deployment was verified, through an interrupted deploy too', () => {
    const verification = { requirement: 'sigstoreSigned', scope: 'transports.docker["registry.example/os"]', keyId: `sha256:${'a'.repeat(64)}`, at: at(9).toISOString() };
    let s = beginDeploy(twoDeployments(), 3, 'registry.example/os:3', at(10), { verification });
    expect(s.inProgress?.verification).toEqual(verification);
    s = endDeploy(addDeployment(s, dep(3, { verification: s.inProgress!.verification! }), { now: at(11) }));
    expect(s.deployments[2]!.verification).toEqual(verification);
    expect(validateState(JSON.parse(JSON.stringify(s)), 'x')).toEqual(s);
  });

  it('records the last rollback, replacing the previous one', () => {
    let s = recordRollback(twoDeployments(), { from: 2, to: 1, by: 'admin', now: at(5) });
    expect(s.lastRollback).toEqual({ from: 2, to: 1, at: at(5).toISOString(), by: 'admin' });
    s = recordRollback(s, { to: 1, by: 'health-check', reason: 'sshd.service failed', now: at(6) });
    expect(s.lastRollback).toEqual({ to: 1, at: at(6).toISOString(), by: 'health-check', reason: 'sshd.service failed' });
    expect(validateState(JSON.parse(JSON.stringify(s)), 'x')).toEqual(s);
    expect(() => recordRollback(s, { to: 0, by: 'admin' })).toThrow(StateTransitionError);
    expect(() => recordRollback(s, { to: 1, by: 'cron' as 'admin' })).toThrow(/not one of admin, health-check, boot-counter/);
  });

  it('pins, follows and removes with the gc rules', () => {
    let s = setPinned(twoDeployments(), 1, true);
    expect(s.deployments[0]!.pinned).toBe(true);
    expect(() => removeDeployment(s, 1)).toThrow(/last known good/);
    s = markGood(s, 2, { by: 'health-check' });
    expect(() => removeDeployment(s, 1)).toThrow(/pinned/);
    expect(removeDeployment(s, 1, { force: true }).deployments.map((d) => d.snapshot)).toEqual([2]);
    s = setPinned(s, 1, false);
    expect('pinned' in s.deployments[0]!).toBe(false);
    expect(removeDeployment(s, 1).deployments).toHaveLength(1);
    expect(() => removeDeployment(twoDeployments(), 2)).toThrow(/on trial/);
    expect(setFollowed(s, 'other/os:2').followed).toBe('other/os:2');
    expect('followed' in setFollowed(s, undefined)).toBe(false);
  });
});

describe('validateState', () => {
  const good = (): Record<string, unknown> => JSON.parse(JSON.stringify(twoDeployments())) as Record<string, unknown>;
  const deployments = (s: Record<string, unknown>) => s['deployments'] as Record<string, unknown>[];

  it('accepts a valid state and keeps fields it does not know (an older ocisnap after rollback)', () => {
    const s = good();
    s['futureField'] = { x: 1 };
    deployments(s)[0]!['signature'] = 'verified-by-key-1';
    const v = validateState(s, 'f');
    expect((v as unknown as Record<string, unknown>)['futureField']).toEqual({ x: 1 });
    expect((v.deployments[0] as unknown as Record<string, unknown>)['signature']).toBe('verified-by-key-1');
  });

  const corruptions: [string, (s: Record<string, unknown>) => void, RegExp][] = [
    ['not an object', (s) => Object.keys(s).forEach((k) => delete s[k]), /no version/],
    ['newer version', (s) => (s['version'] = 2), /newer ocisnap/],
    ['bad followed', (s) => (s['followed'] = ''), /followed/],
    ['no deployments', (s) => delete s['deployments'], /deployments: not an array/],
    ['duplicate snapshot', (s) => (deployments(s)[1]!['snapshot'] = 1), /listed twice/],
    ['two pending', (s) => { deployments(s)[0]!['status'] = 'pending'; deployments(s)[0]!['triesLeft'] = 1; delete s['lastGood']; }, /2 pending/],
    ['pending without tries', (s) => delete deployments(s)[1]!['triesLeft'], /triesLeft/],
    ['tries on a good one', (s) => (deployments(s)[0]!['triesLeft'] = 2), /only a pending/],
    ['bad digest', (s) => (deployments(s)[0]!['manifestDigest'] = 'md5:00'), /deployments\[0\] \(snapshot 1\): manifestDigest/],
    ['bad image id', (s) => (deployments(s)[0]!['imageId'] = 'XYZ'), /imageId/],
    ['bad status', (s) => (deployments(s)[0]!['status'] = 'great'), /status/],
    ['bad createdAt', (s) => (deployments(s)[0]!['createdAt'] = 'yesterday'), /createdAt/],
    ['bad verdict', (s) => (deployments(s)[0]!['verdict'] = { by: 'x' }), /verdict/],
    ['lastGood not good', (s) => (s['lastGood'] = 2), /lastGood 2 is not a good deployment/],
    ['highest below', (s) => (s['highestSnapshot'] = 1), /highestSnapshot 1 is below snapshot 2/],
    ['snapshot 0', (s) => (deployments(s)[0]!['snapshot'] = 0), /snapshot: not a snapshot number/],
    ['bad inProgress', (s) => (s['inProgress'] = { snapshot: 3 }), /inProgress: needs/],
    ['bad verification', (s) => (deployments(s)[0]!['verification'] = { requirement: 'signedBy', scope: 'default', at: 'now' }), /\(snapshot 1\): verification: at/],
    ['verification without scope', (s) => (deployments(s)[0]!['verification'] = { requirement: 'signedBy', at: t0.toISOString() }), /verification: scope/],
    ['bad inProgress verification', (s) => (s['inProgress'] = { snapshot: 2, image: 'x', startedAt: t0.toISOString(), verification: { requirement: 'x', scope: 'y', at: t0.toISOString(), keyId: 3 } }), /inProgress\.verification: keyId/],
    ['lastRollback without to', (s) => (s['lastRollback'] = { by: 'admin', at: t0.toISOString() }), /lastRollback\.to/],
    ['lastRollback by someone unknown', (s) => (s['lastRollback'] = { to: 1, by: 'cron', at: t0.toISOString() }), /lastRollback\.by: not one of/],
    ['lastRollback bad time', (s) => (s['lastRollback'] = { to: 1, by: 'admin', at: 'today' }), /lastRollback\.at/],
    ['inProgress above highest', (s) => (s['inProgress'] = { snapshot: 9, image: 'x', startedAt: t0.toISOString() }), /inProgress snapshot 9 is above highestSnapshot 2/],
  ];
  for (const [name, corrupt, message] of corruptions) {
    it(`rejects: ${name}`, () => {
      const s = good();
      corrupt(s);
      expect(() => validateState(s, '/sys/var/lib/ocisnap/state.json')).toThrow(StateCorruptError);
      expect(() => validateState(s, '/sys/var/lib/ocisnap/state.json')).toThrow(message);
      expect(() => validateState(s, '/sys/var/lib/ocisnap/state.json')).toThrow(/^\/sys\/var\/lib\/ocisnap\/state\.json: /);
    });
  }
});

describe('readState / writeState', () => {
  let sysroot: string;
  beforeEach(async () => {
    sysroot = await mkdtemp(join(tmpdir(), 'ocisnap-state-'));
  });
  afterEach(async () => {
    await rm(sysroot, { recursive: true, force: true });
  });

  it('reads an empty state when nothing was deployed', async () => {
    expect(await readState(sysroot)).toEqual(emptyState());
  });

  it('writes atomically and reads back what it wrote', async () => {
    const s = twoDeployments();
    await writeState(sysroot, s);
    expect(await readState(sysroot)).toEqual(s);
    const dir = join(sysroot, 'var/lib/ocisnap');
    expect(await readdir(dir)).toEqual(['state.json']);
    expect((await stat(statePath(sysroot))).mode & 0o777).toBe(0o644);
    const text = await readFile(statePath(sysroot), 'utf8');
    expect(JSON.parse(text)).toMatchObject({ version: 1, lastGood: 1, followed: 'registry.example/os:latest' });
    await writeState(sysroot, markGood(s, 2, { by: 'health-check' }));
    expect((await readState(sysroot)).lastGood).toBe(2);
  });

  it('never writes an invalid state', async () => {
    await writeState(sysroot, twoDeployments());
    const broken = { ...twoDeployments(), lastGood: 2 };
    await expect(writeState(sysroot, broken)).rejects.toThrow(/state to be written to .*lastGood 2 is not a good deployment/);
    expect((await readState(sysroot)).lastGood).toBe(1);
  });

  it('names the file when it is not JSON', async () => {
    await mkdir(join(sysroot, 'var/lib/ocisnap'), { recursive: true });
    await writeFile(statePath(sysroot), '{"version": 1, "deployments": [');
    await expect(readState(sysroot)).rejects.toThrow(StateCorruptError);
    await expect(readState(sysroot)).rejects.toThrow(`${statePath(sysroot)}: not valid JSON`);
  });
});
