/**
 * A ledger for the simulation: the real state machine (core/ledger/shard-state.ts) over shard
 * states held in memory, with the same reads and writes per verb as `FirestoreLedger`
 * (core/ledger/firestore.ts) so that its traffic can be counted. Each verb is one transaction
 * and the simulation runs them one at a time, so they are serialisable by construction; what
 * concurrency costs is modelled by `queryLagMs` (a claimer's candidate list is that old).
 *
 * Units: the registered shards are units 0..S-1; a split adds units after them. Each unit
 * remembers the shard its tasks come from (their cost).
 */
import type { Claim, PartInput, PartRecord } from '../../core/ledger/ledger';
import type { ShardState } from '../../core/ledger/schema';
import {
  applyClaim,
  applyCommitPart,
  applyComplete,
  applyExpiry,
  applyHeartbeat,
  claimOf,
  claimability,
  leaseExpired,
  lostTogetherWindowMs,
  newShardState,
  peersLostWith,
  requireHolder,
} from '../../core/ledger/shard-state';
import { claimOrder } from './claim-order';
import { EventQueue } from './heap';
import type { LedgerMeter } from './meter';
import type { SimConfig } from './model';
import { shardStart } from './model';

/** The dataset id every simulated claim names. */
export const SIM_DATASET = 'sim';

/** A granted claim and the unit's state after it. */
export interface Granted {
  unit: number;
  claim: Claim;
  state: ShardState;
}

/** A committed part, as the exactness check reads it. */
export interface CommittedRange {
  unit: number;
  first: number;
  next: number;
  worker: string;
  epoch: number;
}

/** What one reaper tick did. */
export interface ReapOutcome {
  freed: number[];
  failed: number[];
}

/** The last task (exclusive) a unit's state covers. */
export function unitEnd(s: ShardState): number {
  return s.first_task_index + s.total_tasks;
}

/** The in-memory ledger; every write goes through `set`, which keeps the indexes. */
export class SimLedger {
  /** Unit states by unit id. */
  readonly units: ShardState[] = [];
  /** The registered shard each unit's tasks come from. */
  readonly shardOf: number[] = [];
  /** Every committed part, in commit order. */
  readonly committed: CommittedRange[] = [];
  private readonly partRecords = new Map<string, PartRecord>();
  private readonly version: number[] = [];
  private readonly available = new Set<number>();
  private readonly inUse = new Set<number>();
  /** Units whose last holder was lost (`lost_at` set): read by the lost-together query. */
  private readonly lostUnits = new Set<number>();
  /** In-use units by lease expiry (lazy: stale entries are skipped by version). */
  private readonly expiries = new EventQueue<{ unit: number; version: number }>();
  private readonly expired = new Set<number>();
  /** Claims of the last `queryLagMs`: a later claimer's query may still list them. */
  private recentClaims: Array<{ unit: number; atMs: number }> = [];
  private completedCount = 0;
  private failedCount = 0;

  constructor(
    readonly config: SimConfig,
    readonly meter: LedgerMeter,
  ) {
    for (let k = 0; k < config.shards; k++) {
      const first = shardStart(k, config.shards, config.totalTasks);
      const total = shardStart(k + 1, config.shards, config.totalTasks) - first;
      const entry = {
        shard_id: k,
        directory: `shard_${k}`,
        status: 'available' as const,
        total_tasks: total,
        first_task_index: first,
        num_chunks: 1,
        total_bytes: total,
      };
      this.addUnit(newShardState(entry, config.maxAttempts, 0), k);
    }
  }

  /** Units completed so far. */
  get completed(): number {
    return this.completedCount;
  }

  /** Units failed for good so far. */
  get failed(): number {
    return this.failedCount;
  }

  /** Units that can still be claimed or are held (neither completed nor failed). */
  get open(): number {
    return this.units.length - this.completedCount - this.failedCount;
  }

  /** Units currently held (`in_use`, expired or not). */
  heldUnits(): ReadonlySet<number> {
    return this.inUse;
  }

  /** Adds a unit (a registered shard, or one a split created) and returns its id. */
  addUnit(state: ShardState, shard: number): number {
    const id = this.units.length;
    this.units.push(state);
    this.shardOf.push(shard);
    this.version.push(0);
    this.index(id, null, state);
    return id;
  }

  /** Writes a unit's next state (one document write of `kind`). */
  set(
    unit: number,
    next: ShardState,
    nowMs: number,
    kind: Parameters<LedgerMeter['write']>[2],
  ): void {
    const before = this.units[unit]!;
    this.units[unit] = next;
    this.version[unit]!++;
    this.index(unit, before, next);
    this.meter.write(unit, nowMs, kind);
  }

  private index(unit: number, before: ShardState | null, next: ShardState): void {
    const was = before?.status;
    if (was !== next.status) {
      if (was === 'available') this.available.delete(unit);
      if (was === 'in_use') this.inUse.delete(unit);
      if (was === 'completed') this.completedCount--;
      if (was === 'failed') this.failedCount--;
      if (next.status === 'available') this.available.add(unit);
      if (next.status === 'in_use') this.inUse.add(unit);
      if (next.status === 'completed') this.completedCount++;
      if (next.status === 'failed') this.failedCount++;
    }
    this.expired.delete(unit);
    if (next.status === 'in_use' && next.lease_expires_at !== null)
      this.expiries.push(next.lease_expires_at, { unit, version: this.version[unit]! });
    if (next.lost_at !== null) this.lostUnits.add(unit);
  }

  /** In-use units whose lease has expired at `nowMs`. */
  expiredUnits(nowMs: number): number[] {
    for (let at = this.expiries.peekMs(); at !== undefined && at <= nowMs;) {
      const { unit, version } = this.expiries.pop()!.item;
      if (version === this.version[unit] && leaseExpired(this.units[unit]!, nowMs))
        this.expired.add(unit);
      at = this.expiries.peekMs();
    }
    return [...this.expired];
  }

  /**
   * The other units whose holder was lost with `unit`'s (shard-state.ts `peersLostWith`), read
   * as `FirestoreLedger.peersLost` reads them: the held units, and those lost recently.
   */
  private peersLost(unit: number, s: ShardState, nowMs: number): number {
    const others: ShardState[] = [];
    for (const id of this.inUse) if (id !== unit) others.push(this.units[id]!);
    if (s.heartbeat_at !== null) {
      const from = s.heartbeat_at - lostTogetherWindowMs(s);
      for (const id of this.lostUnits) {
        const o = this.units[id]!;
        if (id !== unit && o.status !== 'in_use' && o.lost_at !== null && o.lost_at >= from)
          others.push(o);
      }
    }
    this.meter.read(others.length, nowMs, 'peers');
    return peersLostWith(s, others, nowMs);
  }

  /** One claim transaction on one candidate: the claim, or null when it is taken. */
  private tryClaim(unit: number, workerId: string, nowMs: number): Granted | null {
    this.meter.claimTransactions++;
    this.meter.read(1, nowMs, 'claim-tx');
    const s = this.units[unit]!;
    const peers = leaseExpired(s, nowMs) ? this.peersLost(unit, s, nowMs) : 0;
    const verdict = claimability(s, nowMs, peers);
    if (verdict === 'expire') this.set(unit, applyExpiry(s, nowMs, peers), nowMs, 'expire');
    if (verdict !== 'claimable') return null;
    const next = applyClaim(s, workerId, nowMs, this.config.leaseMs, peers);
    this.set(unit, next, nowMs, 'claim');
    this.recentClaims.push({ unit, atMs: nowMs });
    return { unit, claim: claimOf({ dataset_id: SIM_DATASET, shard_id: unit }, next), state: next };
  }

  /**
   * `claim` as `FirestoreLedger.claim` does it: the preferred unit first, then the candidates
   * (available past their backoff, and held with an expired lease) in the worker's order. The
   * candidate query also lists units claimed by others within `queryLagMs`: trying one is a
   * lost race (counted), after which the worker moves on as the real claimer does.
   */
  claim(workerId: string, nowMs: number, preferred?: number): Granted | null {
    let skip: number | undefined;
    if (preferred !== undefined && preferred >= 0 && preferred < this.units.length) {
      const first = this.tryClaim(preferred, workerId, nowMs);
      if (first) return first;
      skip = preferred;
    }
    this.recentClaims = this.recentClaims.filter((c) => c.atMs > nowMs - this.config.queryLagMs);
    for (let round = 0; round < 2; round++) {
      const ids: number[] = [];
      let listed = 0;
      for (const id of this.available) {
        listed++;
        const retryAt = this.units[id]!.retry_at;
        if ((retryAt === null || retryAt <= nowMs) && id !== skip) ids.push(id);
      }
      this.meter.read(listed, nowMs, 'claim-query');
      const expired = this.expiredUnits(nowMs);
      this.meter.read(expired.length, nowMs, 'claim-query');
      for (const id of expired) if (id !== skip) ids.push(id);
      // Round 0's answer is `queryLagMs` old: it still lists what others claimed since.
      const stale = round === 0 ? this.recentClaims.map((c) => c.unit) : [];
      for (const id of stale) if (id !== skip && !ids.includes(id)) ids.push(id);
      if (ids.length === 0) return null;
      const order = claimOrder(ids, workerId, preferred, round);
      for (const id of order) {
        const granted = this.tryClaim(id, workerId, nowMs);
        if (granted) return granted;
        if (stale.includes(id)) this.meter.lostRaces++;
      }
      skip = undefined;
    }
    return null;
  }

  /** `heartbeat`: renews the holder's lease; `LeaseLostError` when it no longer holds. */
  heartbeat(claim: Claim, nowMs: number): ShardState {
    this.meter.read(1, nowMs, 'holder-tx');
    const s = requireHolder(this.units[claim.shard_id] ?? null, claim, 'heartbeat');
    const next = applyHeartbeat(s, nowMs);
    this.set(claim.shard_id, next, nowMs, 'heartbeat');
    return next;
  }

  /** `commitPart` of tasks [first, next) as the holder's next part; returns the unit's new state. */
  commitPart(claim: Claim, first: number, next: number, nowMs: number): ShardState {
    const unit = claim.shard_id;
    this.meter.read(2, nowMs, 'holder-tx');
    const s = requireHolder(this.units[unit] ?? null, claim, 'commitPart');
    const part: PartInput = {
      part_index: s.parts_committed,
      name: `unit_${unit}_part_${String(s.parts_committed).padStart(5, '0')}`,
      first_task_index: first,
      first_sample: 0,
      last_task_index: next - 1,
      next_task_index: next,
      next_sample: 0,
      samples: next - first,
      bytes: next - first,
      checksums: {},
      fingerprint: 'sim',
    };
    const key = `${unit}/${part.part_index}`;
    const decision = applyCommitPart(s, claim, part, this.partRecords.get(key) ?? null, nowMs);
    this.set(unit, decision.state, nowMs, 'commit');
    if (!decision.duplicate) {
      this.partRecords.set(key, decision.record);
      this.meter.write(null, nowMs, 'part');
      this.committed.push({
        unit,
        first,
        next,
        worker: claim.worker_id,
        epoch: claim.epoch,
      });
    }
    return decision.state;
  }

  /**
   * `complete`, then the two roll-ups that follow a completion read the whole dataset: the
   * worker's (loop.ts `rollUp`) and the progress function's on `shard.completed`.
   */
  complete(claim: Claim, nowMs: number): ShardState {
    const unit = claim.shard_id;
    this.meter.read(1, nowMs, 'holder-tx');
    const s = this.units[unit]!;
    const manifest = {
      parts: s.parts_committed,
      samples: s.samples_committed,
      bytes: s.bytes_committed,
    };
    const next = applyComplete(s, claim, manifest, nowMs);
    if (next) this.set(unit, next, nowMs, 'complete');
    this.meter.read(this.units.length, nowMs, 'status');
    this.meter.read(this.units.length, nowMs, 'status');
    return this.units[unit]!;
  }

  /** The reaper's `reapExpired`: expired leases back to available, or failed at max attempts. */
  reap(nowMs: number): ReapOutcome {
    const expired = this.expiredUnits(nowMs);
    this.meter.read(expired.length, nowMs, 'reap-query');
    const out: ReapOutcome = { freed: [], failed: [] };
    for (const unit of expired) {
      this.meter.read(1, nowMs, 'holder-tx');
      const s = this.units[unit]!;
      if (!leaseExpired(s, nowMs)) continue;
      const next = applyExpiry(s, nowMs, this.peersLost(unit, s, nowMs));
      this.set(unit, next, nowMs, 'reap');
      (next.status === 'failed' ? out.failed : out.freed).push(unit);
    }
    return out;
  }

  /**
   * Checks that the committed parts cover tasks [0, totalTasks) exactly once and every unit is
   * completed; returns the problems found (none: an empty list).
   */
  exactnessProblems(): string[] {
    const problems: string[] = [];
    const ranges = [...this.committed].sort((a, b) => a.first - b.first || a.next - b.next);
    let at = 0;
    for (const r of ranges) {
      if (r.first > at) problems.push(`tasks [${at}, ${r.first}) were never committed`);
      if (r.first < at)
        problems.push(
          `tasks [${r.first}, ${Math.min(at, r.next)}) were committed twice (unit ${r.unit})`,
        );
      at = Math.max(at, r.next);
    }
    if (at < this.config.totalTasks)
      problems.push(`tasks [${at}, ${this.config.totalTasks}) were never committed`);
    const covered = new Map<number, number>();
    for (const r of this.committed)
      covered.set(r.unit, (covered.get(r.unit) ?? 0) + r.next - r.first);
    this.units.forEach((s, unit) => {
      if (s.status !== 'completed') problems.push(`unit ${unit} ended ${s.status}`);
      const n = covered.get(unit) ?? 0;
      if (s.status === 'completed' && n !== s.total_tasks)
        problems.push(
          `unit ${unit} is completed with ${n} of its ${s.total_tasks} tasks committed`,
        );
    });
    return problems;
  }
}
