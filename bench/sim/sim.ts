/**
 * The discrete-event simulation: N VM slots run the worker loop (worker/loop.ts) against the
 * simulated ledger under a simulated clock. A worker claims (its preferred shard first), runs
 * parts, heartbeats every third of its lease, commits each part, completes the unit and claims
 * again; with nothing to claim it asks the policy (a split), else waits for a doorbell up to the
 * poll interval. A preempted VM vanishes without releasing; its lease runs out and either a
 * claimer takes the expired unit or the reaper (every minute) frees it and rings a doorbell;
 * the slot's replacement claims again after a restart delay. Events live in a binary heap;
 * nothing loops over all workers per tick.
 */
import type { Claim } from '../../core/ledger/ledger';
import type { ShardState } from '../../core/ledger/schema';
import { unitEnd } from '../../core/ledger/shard-state';
import { reserveAheadTasks } from '../../worker/shard-job';
import { Prng } from '../../core/random';
import { EventQueue } from './heap';
import type { CommittedRange, Granted } from './ledger';
import { SimLedger } from './ledger';
import type { MeterSummary } from './meter';
import { LedgerMeter } from './meter';
import type { Incarnation, SimConfig } from './model';
import { SlotHistory, shardCosts } from './model';
import type { Policy } from './policy';

/** What one simulated run measured. */
export interface SimResult {
  policy: string;
  workers: number;
  shards: number;
  /** Work units at the end (shards plus the units splits created). */
  units: number;
  /** From the first boot's start (0) to the last unit's completion; Infinity if a unit failed. */
  makespanMs: number;
  /** Total work over the fleet's summed first speeds: the makespan of a perfect split. */
  idealMs: number;
  /** When 90 % of the tasks were committed. */
  t90Ms: number;
  /** From 90 % to 100 % of the tasks committed. */
  tailMs: number;
  /** Worker-hours up and not working on a unit, until the makespan. */
  idleWorkerHours: number;
  /** Worker-hours processing tasks (including work later lost to a preemption). */
  busyWorkerHours: number;
  /** Worker-hours down: booting, preempted, restarting. */
  downWorkerHours: number;
  /** Worker-hours of processing lost to preemptions (tasks done but not committed). */
  lostWorkHours: number;
  preemptions: number;
  /** Claims of a unit that had been claimed before (after a lost holder). */
  reclaims: number;
  splits: number;
  failedUnits: number;
  /** Problems of the exactly-once check (none expected). */
  exactness: string[];
  /** Every part committed, in commit order (the exactly-once check reads them). */
  committed: CommittedRange[];
  /** Fraction of tasks committed over time: [ms, fraction], one point per commit (thinned). */
  curve: Array<[number, number]>;
  meter: MeterSummary;
  /** Events processed. */
  events: number;
}

type Event =
  | { kind: 'boot'; slot: number; life: number }
  | { kind: 'preempt'; slot: number; life: number }
  | { kind: 'part'; w: number; gen: number; partGen: number }
  | { kind: 'heartbeat'; w: number; gen: number }
  | { kind: 'reserve'; w: number; gen: number; reserveGen: number }
  | { kind: 'poll'; w: number; gen: number }
  | { kind: 'bell'; w: number; gen: number; unit: number }
  | { kind: 'reap' };

type Activity = 'down' | 'idle' | 'busy';

interface Job {
  /** The unit's document (SimLedger's dense index). */
  doc: number;
  claim: Claim;
  /** The unit's end as the holder last learned it (a split moves it down). */
  end: number;
  /** Where the next part starts. */
  pos: number;
  partFirst: number;
  partEnd: number;
  partStartMs: number;
  /** Ms per task on this worker for this unit's tasks. */
  msPerTask: number;
  partGen: number;
  /** Where the holder started and when: its measured task rate sizes its reservations. */
  startPos: number;
  claimedMs: number;
  reserveGen: number;
}

interface Worker {
  slot: number;
  life: Incarnation;
  id: string;
  up: boolean;
  /** Bumped whenever scheduled events of this worker become stale. */
  gen: number;
  job: Job | null;
  waiting: boolean;
  /** The shard this life tries first (`--preferred_shard_id`), until its first claim. */
  preferred: number | undefined;
  activity: Activity;
  sinceMs: number;
}

const HOUR_MS = 3_600_000;
const MAX_CURVE_POINTS = 600;

/** Runs one job under `policy`; deterministic for a given config. */
export function simulate(base: Omit<SimConfig, 'shards'>, policy: Policy): SimResult {
  const config: SimConfig = { ...base, shards: base.workers * policy.shardsPerWorker };
  return new Simulation(config, policy).run();
}

class Simulation {
  private readonly queue = new EventQueue<Event>();
  private readonly meter = new LedgerMeter();
  private readonly ledger: SimLedger;
  private readonly slots: SlotHistory[];
  private readonly workers: Worker[];
  private readonly costs: Float64Array;
  private readonly rng: Prng;
  private readonly heartbeatEveryMs: number;
  private readonly waiting = new Set<number>();
  private readonly bells: number[] = [];
  private readonly claimedOnce = new Set<number>();
  private readonly hours: Record<Activity, number> = { down: 0, idle: 0, busy: 0 };
  private nowMs = 0;
  private doneTasks = 0;
  private lostWorkMs = 0;
  private preemptions = 0;
  private reclaims = 0;
  private splits = 0;
  private events = 0;
  private finished = false;
  private readonly curve: Array<[number, number]> = [[0, 0]];

  constructor(
    private readonly config: SimConfig,
    private readonly policy: Policy,
  ) {
    this.ledger = new SimLedger(config, this.meter);
    this.costs = shardCosts(config);
    this.rng = Prng.fromKey('sim-doorbells', config.seed, config.replica, config.workers);
    this.heartbeatEveryMs = Math.round(config.leaseMs / 3);
    this.slots = Array.from({ length: config.workers }, (_, i) => new SlotHistory(config, i));
    this.workers = this.slots.map((h, slot) => ({
      slot,
      life: h.life(0),
      id: `vm${slot}-0`,
      up: false,
      gen: 0,
      job: null,
      waiting: false,
      preferred: slot % config.shards,
      activity: 'down',
      sinceMs: 0,
    }));
  }

  run(): SimResult {
    for (const w of this.workers)
      this.queue.push(w.life.upMs, { kind: 'boot', slot: w.slot, life: 0 });
    this.queue.push(Math.floor(this.rng.nextFloat() * this.config.reapEveryMs), { kind: 'reap' });
    const ideal = this.idealMs();
    const limitMs = Math.max(50 * ideal, 24 * HOUR_MS);
    for (let e = this.queue.pop(); e && !this.finished; e = this.queue.pop()) {
      if (e.atMs > limitMs) break;
      this.nowMs = e.atMs;
      this.events++;
      this.handle(e.item);
    }
    const makespanMs = this.finished && this.ledger.failed === 0 ? this.nowMs : Infinity;
    const endMs = this.nowMs;
    for (const w of this.workers) this.setActivity(w, w.activity, endMs);
    const total = this.config.totalTasks;
    const t90 = this.curve.find(([, f]) => f >= 0.9)?.[0] ?? Infinity;
    return {
      policy: this.policy.name,
      workers: this.config.workers,
      shards: this.config.shards,
      units: this.ledger.units.length,
      makespanMs,
      idealMs: ideal,
      t90Ms: t90,
      tailMs: makespanMs - t90,
      idleWorkerHours: this.hours.idle / HOUR_MS,
      busyWorkerHours: this.hours.busy / HOUR_MS,
      downWorkerHours: this.hours.down / HOUR_MS,
      lostWorkHours: this.lostWorkMs / HOUR_MS,
      preemptions: this.preemptions,
      reclaims: this.reclaims,
      splits: this.splits,
      failedUnits: this.ledger.failed,
      exactness: this.finished
        ? this.ledger.exactnessProblems()
        : [`not finished: ${this.doneTasks} of ${total} tasks committed`],
      committed: this.ledger.committed,
      curve: thin(this.curve, MAX_CURVE_POINTS),
      meter: this.meter.summary(),
      events: this.events,
    };
  }

  /** Total work (task costs at speed 1) over the first lives' summed speeds. */
  private idealMs(): number {
    let work = 0;
    for (let k = 0; k < this.config.shards; k++)
      work += this.ledger.units[k]!.total_tasks * this.costs[k]!;
    const speed = this.workers.reduce((sum, w) => sum + w.life.speed, 0);
    return (work * this.config.taskMs) / speed;
  }

  private handle(e: Event): void {
    switch (e.kind) {
      case 'boot':
        return this.boot(e.slot, e.life);
      case 'preempt':
        return this.preempt(e.slot, e.life);
      case 'reap':
        return this.reap();
      default: {
        const w = this.workers[e.w]!;
        if (!w.up || w.gen !== e.gen) return;
        if (e.kind === 'part') {
          if (w.job && w.job.partGen === e.partGen) this.partDone(w);
        } else if (e.kind === 'heartbeat') this.heartbeat(w);
        else if (e.kind === 'reserve') {
          if (w.job && w.job.reserveGen === e.reserveGen) this.renew(w);
        } else if (e.kind === 'poll') {
          this.stopWaiting(w);
          this.work(w);
        } else {
          this.stopWaiting(w);
          this.work(w, e.unit);
        }
      }
    }
  }

  private setActivity(w: Worker, a: Activity, atMs = this.nowMs): void {
    this.hours[w.activity] += atMs - w.sinceMs;
    w.activity = a;
    w.sinceMs = atMs;
  }

  private boot(slot: number, life: number): void {
    const w = this.workers[slot]!;
    w.life = this.slots[slot]!.life(life);
    w.id = `vm${slot}-${life}`;
    w.up = true;
    w.gen++;
    w.job = null;
    w.preferred = slot % this.config.shards;
    this.setActivity(w, 'idle');
    if (Number.isFinite(w.life.downMs))
      this.queue.push(w.life.downMs, { kind: 'preempt', slot, life });
    this.work(w);
  }

  private preempt(slot: number, life: number): void {
    const w = this.workers[slot]!;
    if (w.life.index !== life || !w.up) return;
    this.preemptions++;
    if (w.job) this.lostWorkMs += Math.min(this.nowMs, this.partDoneAt(w.job)) - w.job.partStartMs;
    this.stopWaiting(w);
    w.up = false;
    w.gen++;
    w.job = null;
    this.setActivity(w, 'down');
    const next = this.slots[slot]!.life(life + 1);
    this.queue.push(next.upMs, { kind: 'boot', slot, life: life + 1 });
  }

  /** The worker loop's turn: claim (the preferred unit first), else ask the policy, else wait. */
  private work(w: Worker, bellUnit?: number): void {
    const preferred = bellUnit ?? w.preferred;
    w.preferred = undefined;
    const claimed = this.ledger.claim(w.id, this.nowMs, preferred);
    if (claimed) return this.startJob(w, claimed);
    const split = this.policy.onIdle({ ledger: this.ledger, workerId: w.id, nowMs: this.nowMs });
    if (split) {
      this.splits++;
      return this.startJob(w, split);
    }
    this.wait(w);
  }

  private wait(w: Worker): void {
    const bell = this.bells.shift();
    if (bell !== undefined) {
      this.queue.push(this.nowMs, { kind: 'bell', w: w.slot, gen: w.gen, unit: bell });
      return;
    }
    w.waiting = true;
    this.waiting.add(w.slot);
    this.queue.push(this.nowMs + this.config.pollMs, { kind: 'poll', w: w.slot, gen: w.gen });
  }

  private stopWaiting(w: Worker): void {
    if (!w.waiting) return;
    w.waiting = false;
    this.waiting.delete(w.slot);
  }

  /** A doorbell for `unit`: Pub/Sub hands it to one waiting worker, or keeps it for the next. */
  private ring(unit: number): void {
    if (this.waiting.size === 0) {
      this.bells.push(unit);
      return;
    }
    const ids = [...this.waiting];
    const w = this.workers[ids[this.rng.nextInt(ids.length)]!]!;
    this.stopWaiting(w);
    w.gen++;
    this.queue.push(this.nowMs + this.config.doorbellDelayMs, {
      kind: 'bell',
      w: w.slot,
      gen: w.gen,
      unit,
    });
  }

  private startJob(w: Worker, g: Granted): void {
    if (this.claimedOnce.has(g.doc)) this.reclaims++;
    this.claimedOnce.add(g.doc);
    const shard = this.ledger.shardOf[g.doc]!;
    w.gen++;
    w.job = {
      doc: g.doc,
      claim: g.claim,
      end: unitEnd(g.state),
      pos: g.state.next_task_index,
      partFirst: 0,
      partEnd: 0,
      partStartMs: 0,
      msPerTask: (this.config.taskMs * this.costs[shard]!) / w.life.speed,
      partGen: 0,
      startPos: g.state.next_task_index,
      claimedMs: this.nowMs,
      reserveGen: 0,
    };
    this.setActivity(w, 'busy');
    this.queue.push(this.nowMs + this.heartbeatEveryMs, {
      kind: 'heartbeat',
      w: w.slot,
      gen: w.gen,
    });
    // The holder reserves what it is about to read before it reads it: a heartbeat at once.
    this.renew(w);
    if (w.job?.partGen === 0) this.startPart(w);
  }

  /** Tasks the holder has finished at `atMs` (committed or in the part in hand). */
  private tasksDone(job: Job, atMs: number): number {
    if (job.partGen === 0 || job.pos >= job.partEnd) return job.pos;
    const done = Math.floor((atMs - job.partStartMs) / job.msPerTask);
    return job.partFirst + Math.min(job.partEnd - job.partFirst, Math.max(0, done));
  }

  /** Tasks below this one are started (read) by the holder at `atMs`: its position in flight. */
  private inFlight(job: Job, atMs: number): number {
    if (job.partGen === 0 || job.pos >= job.partEnd) return job.pos;
    const started = Math.floor((atMs - job.partStartMs) / job.msPerTask) + 1;
    return job.partFirst + Math.min(job.partEnd - job.partFirst, Math.max(0, started));
  }

  private partDoneAt(job: Job): number {
    return job.partStartMs + (job.partEnd - job.partFirst) * job.msPerTask;
  }

  private startPart(w: Worker): void {
    const job = w.job!;
    if (job.pos >= job.end) return this.finishJob(w);
    job.partFirst = job.pos;
    job.partEnd = Math.min(job.pos + this.config.partTasks, job.end);
    job.partStartMs = this.nowMs;
    this.schedulePart(w, this.partDoneAt(job));
  }

  /** The part in hand ends at `atMs` (any earlier schedule of it is stale). */
  private schedulePart(w: Worker, atMs: number): void {
    const job = w.job!;
    job.partGen++;
    this.queue.push(atMs, { kind: 'part', w: w.slot, gen: w.gen, partGen: job.partGen });
  }

  private partDone(w: Worker): void {
    const job = w.job!;
    let state: ShardState;
    try {
      state = this.ledger.commitPart(job.claim, job.partFirst, job.partEnd, this.nowMs);
    } catch (e: unknown) {
      return this.lost(w, e);
    }
    this.doneTasks += job.partEnd - job.partFirst;
    this.curve.push([this.nowMs, this.doneTasks / this.config.totalTasks]);
    job.pos = job.partEnd;
    job.end = unitEnd(state);
    this.startPart(w);
  }

  /** The lease keeper's periodic heartbeat (every third of the lease), carrying a reservation. */
  private heartbeat(w: Worker): void {
    if (!w.job) return;
    this.queue.push(this.nowMs + this.heartbeatEveryMs, {
      kind: 'heartbeat',
      w: w.slot,
      gen: w.gen,
    });
    this.renew(w);
  }

  /**
   * One heartbeat with a reservation, as the worker's lease keeper sends them: it reserves the
   * work the holder gets through in min(half a lease, `reserveAheadMs`) at its rate so far, at
   * least 4 tasks (worker/shard-job.ts `reserveAheadTasks`), past the task it reads next. The holder reads no
   * task it has not reserved, so when it reaches its reservation it sends another at once.
   */
  private renew(w: Worker): void {
    const job = w.job!;
    const next = this.inFlight(job, this.nowMs);
    const ahead = reserveAheadTasks(
      this.tasksDone(job, this.nowMs) - job.startPos,
      this.nowMs - job.claimedMs,
      Math.min(this.config.leaseMs / 2, this.config.reserveAheadMs),
    );
    let state: ShardState;
    try {
      state = this.ledger.heartbeat(job.claim, this.nowMs, Math.min(job.end, next + ahead));
    } catch (e: unknown) {
      return this.lost(w, e);
    }
    const reserved = state.reserved_task_index ?? next;
    if (reserved < unitEnd(state)) {
      // The holder starts task `reserved` when it has done those before it (parts follow one
      // another without a gap); before its first part it is about to start `job.pos`.
      const from =
        job.partGen === 0
          ? { task: job.pos, ms: this.nowMs }
          : { task: job.partFirst, ms: job.partStartMs };
      const reachMs = Math.max(this.nowMs + 1, from.ms + (reserved - from.task) * job.msPerTask);
      job.reserveGen++;
      this.queue.push(reachMs, {
        kind: 'reserve',
        w: w.slot,
        gen: w.gen,
        reserveGen: job.reserveGen,
      });
    }
    this.learnEnd(w, unitEnd(state));
  }

  /**
   * The holder learns its unit's end (a split moved it): it cuts the part in hand there. What it
   * processed beyond the new end is wasted (the split point should leave it none).
   */
  private learnEnd(w: Worker, end: number): void {
    const job = w.job!;
    if (end >= job.end) return;
    job.end = end;
    if (job.partEnd <= end) return;
    const doneAt = job.partStartMs + (end - job.partFirst) * job.msPerTask;
    if (doneAt < this.nowMs) this.lostWorkMs += this.nowMs - Math.max(doneAt, job.partStartMs);
    if (end <= job.partFirst) {
      job.partGen++;
      job.pos = job.partFirst;
      return this.finishJob(w);
    }
    job.partEnd = end;
    this.schedulePart(w, Math.max(this.nowMs, doneAt));
  }

  private finishJob(w: Worker): void {
    const job = w.job!;
    try {
      this.ledger.complete(job.claim, this.nowMs);
    } catch (e: unknown) {
      return this.lost(w, e);
    }
    w.job = null;
    w.gen++;
    this.setActivity(w, 'idle');
    if (this.ledger.open === 0) {
      this.finished = true;
      return;
    }
    this.work(w);
  }

  /**
   * The holder was fenced (its lease lost): it drops the unit and looks for work. Any other
   * error is the state machine refusing what the simulated worker did: a bug, so it surfaces.
   */
  private lost(w: Worker, e: unknown): void {
    if ((e as { code?: unknown } | null)?.code !== 'LEASE_LOST') throw e;
    w.job = null;
    w.gen++;
    this.setActivity(w, 'idle');
    this.work(w);
  }

  private reap(): void {
    const out = this.ledger.reap(this.nowMs);
    for (const unit of out.freed) this.ring(unit);
    if (this.ledger.open === 0) {
      // Nothing left to run (a unit failed for good on its last attempt): the job ends.
      this.finished = true;
      return;
    }
    this.queue.push(this.nowMs + this.config.reapEveryMs, { kind: 'reap' });
  }
}

/** At most `max` points of a curve, always keeping the first and the last. */
function thin(points: Array<[number, number]>, max: number): Array<[number, number]> {
  if (points.length <= max) return points;
  const out: Array<[number, number]> = [];
  const step = (points.length - 1) / (max - 1);
  for (let i = 0; i < max; i++) out.push(points[Math.round(i * step)]!);
  return out;
}
