/**
 * The simulator's own mechanics (bench/sim): its claim order is the ledger's, its clock and
 * queue keep time, its makespan and tail match what can be worked out by hand, every task is
 * committed exactly once under every policy with preemptions, and a run is repeatable.
 */
import { candidateOrder } from '../../../core/ledger/candidates';
import { seededRandom } from '../../../core/random';
import { claimOrder } from '../../../bench/sim/claim-order';
import { EventQueue } from '../../../bench/sim/heap';
import { LedgerMeter, rampAllowance } from '../../../bench/sim/meter';
import type { SimConfig } from '../../../bench/sim/model';
import { DEFAULT_SIM } from '../../../bench/sim/model';
import type { Policy } from '../../../bench/sim/policy';
import { STATIC_POLICY, overshardingPolicy } from '../../../bench/sim/policy';
import type { SimResult } from '../../../bench/sim/sim';
import { simulate } from '../../../bench/sim/sim';
import { splitPolicy } from '../../../bench/sim/split-policy';

/** A small job with no randomness in it: equal speeds and costs, all VMs up at 0, no preemptions. */
function exact(
  workers: number,
  tasksPerWorker: number,
  over: Partial<SimConfig> = {},
): Omit<SimConfig, 'shards'> {
  return {
    ...DEFAULT_SIM,
    workers,
    totalTasks: workers * tasksPerWorker,
    taskMs: 1_000,
    partTasks: 10,
    speedSigma: 0,
    shardCostSigma: 0,
    startSpreadMs: 0,
    preemptionsPerVmHour: 0,
    ...over,
  };
}

/** How many times each task was committed, from the run's committed parts. */
function timesCommitted(r: SimResult, totalTasks: number): Uint32Array {
  const n = new Uint32Array(totalTasks);
  for (const p of r.committed) for (let t = p.first; t < p.next; t++) n[t]!++;
  return n;
}

test('the claim order is core/ledger/candidates.ts candidateOrder, with and without a preferred shard', () => {
  const random = seededRandom(7);
  for (let i = 0; i < 200; i++) {
    const ids = [
      ...new Set(
        Array.from({ length: 1 + Math.floor(random() * 300) }, () => Math.floor(random() * 1_000)),
      ),
    ];
    const preferred =
      i % 3 === 0 ? undefined : i % 3 === 1 ? ids[Math.floor(random() * ids.length)] : 5_000;
    const worker = `vm${i}-${i % 4}`;
    const round = i % 5;
    // The ledger gets the candidates in query order; the sim passes them in its own order.
    const shuffled = [...ids].sort(() => random() - 0.5);
    expect([...claimOrder(shuffled, worker, preferred, round)]).toEqual(
      candidateOrder(ids, worker, preferred, round),
    );
  }
});

test('the event queue returns events in time order, same-time events in the order scheduled', () => {
  const q = new EventQueue<string>();
  const random = seededRandom(3);
  const pushed: Array<[number, string]> = [];
  for (let i = 0; i < 500; i++) {
    const at = Math.floor(random() * 50);
    pushed.push([at, `e${i}`]);
    q.push(at, `e${i}`);
  }
  const popped: Array<[number, string]> = [];
  for (let e = q.pop(); e; e = q.pop()) popped.push([e.atMs, e.item]);
  // A stable sort by time is exactly "time order, ties in scheduling order".
  expect(popped).toEqual([...pushed].sort((a, b) => a[0] - b[0]));
});

test('static assignment without preemptions and with equal speeds ends at the analytic makespan', () => {
  // 8 workers, 8 shards of 100 tasks at 1 s: every worker commits a part every 10 s and
  // completes at 100 s; nobody idles, so the makespan is the ideal.
  const r = simulate(exact(8, 100), STATIC_POLICY);
  expect(r.makespanMs).toBe(100_000);
  expect(r.idealMs).toBe(100_000);
  expect(r.idleWorkerHours).toBe(0);
  expect(r.busyWorkerHours).toBeCloseTo((8 * 100) / 3_600, 9);
  // All 8 commit their 9th part at 90 s: 90 % then, 100 % at 100 s.
  expect(r.t90Ms).toBe(90_000);
  expect(r.tailMs).toBe(10_000);
  expect(r.exactness).toEqual([]);

  // 4 shards per worker: each worker takes 4 of 25 tasks, claimed as it frees up; same makespan.
  const over = simulate(exact(8, 100), overshardingPolicy(4));
  expect(over.makespanMs).toBe(100_000);
  expect(over.units).toBe(32);
});

test('one slow worker: the makespan is its shard, the tail runs from 90 % to its last part', () => {
  // 10 workers, 100 tasks each, parts of 10 tasks at 1 s; worker 3 runs at half speed.
  // At 90 s the fast nine have 9 parts each and the slow one 4: 850 of 1,000 tasks. At 100 s
  // the fast nine are done and the slow one has 5 parts: 950, past 90 %. The slow one ends at
  // 200 s, while the other nine idle from 100 s.
  const speeds = Array.from({ length: 10 }, (_, i) => (i === 3 ? 0.5 : 1));
  const r = simulate(exact(10, 100, { slotSpeeds: speeds }), STATIC_POLICY);
  expect(r.makespanMs).toBe(200_000);
  expect(r.t90Ms).toBe(100_000);
  expect(r.tailMs).toBe(100_000);
  expect(r.idleWorkerHours).toBeCloseTo((9 * 100) / 3_600, 9);
  // Total work 1,000 s over summed speed 9.5.
  expect(r.idealMs).toBeCloseTo(1_000_000 / 9.5, 6);

  // With 16 shards per worker the fast ones take over the slow one's share, and so they do by
  // splitting it (a 30 s lease: the holder reserves 15 s of work ahead, which a split leaves it).
  const over = simulate(exact(10, 100, { slotSpeeds: speeds }), overshardingPolicy(16));
  expect(over.makespanMs).toBeLessThan(r.makespanMs * 0.6);
  const split = simulate(exact(10, 100, { slotSpeeds: speeds, leaseMs: 30_000 }), splitPolicy());
  expect(split.splits).toBeGreaterThan(0);
  // Halving splits leave pieces of a quarter, an eighth… of the slow remainder: 126 s here.
  expect(split.makespanMs).toBeLessThan(split.idealMs * 1.25);
  expect(split.exactness).toEqual([]);
});

const POLICIES: Policy[] = [
  STATIC_POLICY,
  splitPolicy(),
  overshardingPolicy(4),
  overshardingPolicy(16),
];

test.each(POLICIES.map((p) => [p.name, p] as const))(
  'every task is committed exactly once under preemptions (%s)',
  (_name, policy) => {
    // Frequent preemptions (one per VM every 30 minutes) on a job of about an hour: holders are
    // lost mid-part, leases expire, the reaper and other claimers take their units back.
    const config = {
      ...DEFAULT_SIM,
      workers: 8,
      totalTasks: 8 * 1_800,
      partTasks: 60,
      preemptionsPerVmHour: 2,
      restartMedianMs: 120_000,
      maxAttempts: 100,
      seed: 11,
    };
    const r = simulate(config, policy);
    expect(r.preemptions).toBeGreaterThan(5);
    expect(r.reclaims).toBeGreaterThan(0);
    expect(r.lostWorkHours).toBeGreaterThan(0);
    expect(r.failedUnits).toBe(0);
    if (policy.name === 'split') expect(r.splits).toBeGreaterThan(0);
    const n = timesCommitted(r, config.totalTasks);
    expect(n.every((k) => k === 1)).toBe(true);
    expect(r.exactness).toEqual([]);
    expect(Number.isFinite(r.makespanMs)).toBe(true);
  },
);

test('a run is repeatable: the same config gives the same figures', () => {
  const config = { ...DEFAULT_SIM, workers: 16, totalTasks: 16 * 600, preemptionsPerVmHour: 1 };
  const a = simulate(config, overshardingPolicy(4));
  const b = simulate(config, overshardingPolicy(4));
  expect(b.makespanMs).toBe(a.makespanMs);
  expect(b.meter).toEqual(a.meter);
  expect(b.committed).toEqual(a.committed);
  const other = simulate({ ...config, replica: 1 }, overshardingPolicy(4));
  expect(other.makespanMs).not.toBe(a.makespanMs);
});

test('the meter counts per-document bursts and the 500/50/5 allowance', () => {
  expect(rampAllowance(0)).toBe(500);
  expect(rampAllowance(5 * 60_000 - 1)).toBe(500);
  expect(rampAllowance(5 * 60_000)).toBe(750);
  expect(rampAllowance(10 * 60_000)).toBe(1_125);
  const m = new LedgerMeter();
  // Doc 1: three writes within one second, then one a second for 60 s.
  m.write(1, 0, 'claim');
  m.write(1, 400, 'heartbeat');
  m.write(1, 900, 'commit');
  for (let t = 2_000; t < 62_000; t += 1_000) m.write(1, t, 'heartbeat');
  m.write(2, 0, 'claim');
  m.read(0, 0, 'claim-query');
  const s = m.summary();
  expect(s.peakDocWrites1s).toBe(3);
  // The densest 60 s window, (-1 s, 59 s], holds the three early writes and 58 later ones.
  expect(s.peakDocWritesPerSecond60s).toBeCloseTo(61 / 60, 9);
  expect(s.writes).toBe(64);
  expect(s.reads).toBe(1); // an empty query is billed as one read
  expect(s.peakWritesPerSecond.value).toBe(4);
});
