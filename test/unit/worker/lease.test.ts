/**
 * The lease keeper (worker/lease.ts) driven by fake timers over a fake clock: a worker whose
 * renewals keep failing stops itself when its lease runs out (and not before), so it cannot
 * go on as a zombie; a renewal that succeeds again keeps it alive; `LEASE_LOST` stops it at
 * once. The processing side (the job stops and commits nothing more) is in shard-job.test.ts.
 */
import { LeaseLostError, ShardlineError, isRetryable } from '../../../core/errors';
import type { Claim, Ledger } from '../../../core/ledger/ledger';
import { createLogger } from '../../../core/log';
import { LeaseKeeper } from '../../../worker/lease';
import { FakeTimers } from '../../support/fake-timers';
import { FakeClock, T0 } from '../../support/ledger-fixtures';

const LEASE_MS = 30_000;
const iso = (ms: number): string => new Date(ms).toISOString();

/** A transient ledger error, as a Firestore outage surfaces (gRPC 14 UNAVAILABLE). */
const unavailable = new ShardlineError('LEDGER', 'the ledger did not answer', {
  cause: Object.assign(new Error('14 UNAVAILABLE: connection reset'), { code: 14 }),
});

interface LogLine {
  severity: string;
  message: string;
  [field: string]: unknown;
}

/** A keeper over a ledger whose only verb is `heartbeat` (any other call fails the test). */
function keeperWith(heartbeat: (claim: Claim, nowMs: number) => Promise<Claim>) {
  const clock = new FakeClock();
  const timers = new FakeTimers(clock);
  const claim: Claim = {
    dataset_id: 'ds',
    shard_id: 0,
    worker_id: 'w1',
    epoch: 1,
    lease_expires_at: iso(T0 + LEASE_MS),
  };
  const beats: number[] = [];
  const ledger = {
    heartbeat: (c: Claim, options: { leaseMs: number }) => {
      expect(options.leaseMs).toBe(LEASE_MS);
      beats.push(clock.nowMs());
      return heartbeat(c, clock.nowMs());
    },
  } as unknown as Ledger;
  const lines: LogLine[] = [];
  const log = createLogger({
    format: 'json',
    minSeverity: 'DEBUG',
    clock,
    sink: (line) => void lines.push(JSON.parse(line) as LogLine),
  });
  const keeper = new LeaseKeeper(ledger, claim, LEASE_MS, clock, log, timers);
  /** Fires timers one by one until none is left (bounded); when each fired, and whether lost. */
  const runOut = async (max = 1000): Promise<Array<{ atMs: number; lost: boolean }>> => {
    const fired = [];
    for (let i = 0; i < max && timers.count > 0; i++) {
      const atMs = (await timers.fireNext())!;
      fired.push({ atMs, lost: keeper.lost.aborted });
    }
    return fired;
  };
  return { clock, timers, beats, lines, keeper, runOut };
}

test('renewals that keep failing stop the keeper when the lease runs out, not before, with the reason', async () => {
  expect(isRetryable(unavailable)).toBe(true);
  const { clock, timers, beats, lines, keeper, runOut } = keeperWith(() =>
    Promise.reject(unavailable),
  );
  const expiresMs = T0 + LEASE_MS;
  expect(timers.count).toBe(1); // the first renewal, due at a third of the lease

  const fired = await runOut();
  expect(timers.count).toBe(0); // stopped: nothing more is scheduled
  expect(beats).toEqual(fired.map((f) => f.atMs)); // every timer was a renewal
  expect(beats[0]).toBe(T0 + LEASE_MS / 3);
  expect(beats.length).toBeGreaterThan(5); // retried, with backoff, all through the lease
  // Every renewal before the last was inside the lease and left the keeper running; the last
  // one came within the keeper's 10 ms floor after the lease's end and gave up.
  expect(fired.slice(0, -1).filter((f) => f.lost || f.atMs >= expiresMs)).toEqual([]);
  const last = fired.at(-1)!;
  expect(last.lost).toBe(true);
  expect(last.atMs).toBeGreaterThanOrEqual(expiresMs);
  expect(last.atMs).toBeLessThanOrEqual(expiresMs + 10);

  const reason = (keeper.lost.reason as Error).message;
  expect(reason).toBe(
    `could not renew the lease before it expired (${beats.length} failed heartbeats; last: the ledger did not answer)`,
  );
  expect(lines.filter((l) => l.message === 'heartbeat failed; retrying')).toHaveLength(
    beats.length - 1,
  );
  expect(lines.filter((l) => l.severity === 'ERROR')).toEqual([
    expect.objectContaining({ message: 'lease lost; stopping this shard', reason }),
  ]);

  // Later time changes nothing: no renewal is tried again.
  clock.advance(10 * LEASE_MS);
  expect(await timers.fireNext()).toBeNull();
  expect(beats).toHaveLength(fired.length);
});

test('a renewal that succeeds again keeps the lease; the keeper then stops at the renewed end', async () => {
  let calls = 0;
  let renewedUntilMs = 0;
  const { timers, beats, keeper, runOut } = keeperWith((claim, nowMs) => {
    calls++;
    if (calls === 3 || calls === 4) {
      renewedUntilMs = nowMs + LEASE_MS;
      return Promise.resolve({ ...claim, lease_expires_at: iso(renewedUntilMs) });
    }
    return Promise.reject(unavailable);
  });
  const fired = await runOut();
  // Two failures, two renewals (each next one a third of a lease later), then failures only.
  expect(beats[3]! - beats[2]!).toBe(LEASE_MS / 3);
  expect(beats[4]! - beats[3]!).toBe(LEASE_MS / 3);
  expect(keeper.claim.lease_expires_at).toBe(iso(renewedUntilMs));
  expect(fired.slice(0, -1).filter((f) => f.lost || f.atMs >= renewedUntilMs)).toEqual([]);
  expect(fired.at(-1)!.lost).toBe(true);
  expect(fired.at(-1)!.atMs).toBeGreaterThanOrEqual(renewedUntilMs);
  expect(T0 + LEASE_MS).toBeLessThan(renewedUntilMs);
  // The count in the reason starts again after a success: only the failures since then.
  expect((keeper.lost.reason as Error).message).toMatch(
    new RegExp(`^could not renew the lease before it expired \\(${beats.length - 4} failed`),
  );
  expect(timers.count).toBe(0);
});

test('LEASE_LOST from the ledger stops the keeper at the first renewal, long before the lease ends', async () => {
  const { timers, beats, keeper, runOut } = keeperWith(() =>
    Promise.reject(new LeaseLostError('shard 0 of ds is held by w2 (epoch 2)')),
  );
  const fired = await runOut();
  expect(fired).toEqual([{ atMs: T0 + LEASE_MS / 3, lost: true }]);
  expect(beats).toHaveLength(1);
  expect((keeper.lost.reason as Error).message).toBe(
    'the lease was taken: shard 0 of ds is held by w2 (epoch 2)',
  );
  expect(timers.count).toBe(0);
});

test('stop() cancels the pending renewal', async () => {
  const { timers, beats, keeper } = keeperWith(() => Promise.reject(unavailable));
  expect(timers.count).toBe(1);
  keeper.stop();
  expect(timers.count).toBe(0);
  expect(await timers.fireNext()).toBeNull();
  expect(beats).toEqual([]);
  expect(keeper.lost.aborted).toBe(false);
});

test('a renewal that never answers (a frozen ledger) stops the keeper when the lease runs out', async () => {
  const { timers, beats, keeper, runOut } = keeperWith(() => new Promise<Claim>(() => undefined));
  const fired = await runOut();
  // One renewal at a third of the lease, hanging; the watchdog fires at the lease's end.
  expect(beats).toEqual([T0 + LEASE_MS / 3]);
  expect(fired.map((f) => f.atMs)).toEqual([T0 + LEASE_MS / 3, T0 + LEASE_MS]);
  expect(fired.map((f) => f.lost)).toEqual([false, true]);
  expect((keeper.lost.reason as Error).message).toBe(
    'the lease ran out while its renewal was still waiting for the ledger (20 s)',
  );
  expect(timers.count).toBe(0);
});
