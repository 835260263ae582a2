/**
 * A ledger for the simulation: the real state machine (core/ledger/shard-state.ts) over work
 * units held in memory, with the same reads and writes per verb as `FirestoreLedger`
 * (core/ledger/firestore.ts), so that its traffic can be counted. Each verb is one transaction
 * and the simulation runs them one at a time, so they are serialisable by construction; what
 * concurrency costs is modelled by `queryLagMs` (a claimer's candidate list is that old).
 *
 * A shard is one or more work units (unit 0 is the shard's own; a split adds units 1, 2…), each
 * its own document. Here every unit also has a dense index, its "doc": the registered shards'
 * unit 0 are docs 0..S-1, split units follow in the order they were made.
 */
import { ShardlineError } from '../../core/errors';
import type { Claim, ManifestSummary, PartInput, PartRecord } from '../../core/ledger/ledger';
import type { ShardState } from '../../core/ledger/schema';
import type { UnitWrites } from '../../core/ledger/shard-state';
import {
  applyClaim,
  applyCommitPart,
  applyComplete,
  applyExpiry,
  applyHeartbeat,
  applySplit,
  claimOf,
  claimability,
  leaseExpired,
  lostTogetherWindowMs,
  newShardState,
  peersLostWith,
  requireHolder,
  splitCandidates,
  splitPoint,
  unitEnd,
  unitStart,
} from '../../core/ledger/shard-state';
import { claimOrder } from './claim-order';
import { EventQueue } from './heap';
import type { LedgerMeter, WriteKind } from './meter';
import type { SimConfig } from './model';
import { shardStart } from './model';

/** The dataset id every simulated claim names. */
export const SIM_DATASET = 'sim';
/** The run fingerprint every simulated part carries. */
export const SIM_FINGERPRINT = 'sim';

/** A granted claim and the unit's state after it. */
export interface Granted {
  doc: number;
  claim: Claim;
  state: ShardState;
}

/** A committed part, as the exactness check reads it. */
export interface CommittedRange {
  shard: number;
  unit: number;
  first: number;
  next: number;
  worker: string;
  epoch: number;
}

/** What one reaper tick did: the docs freed (ring their doorbells) and failed for good. */
export interface ReapOutcome {
  freed: number[];
  failed: number[];
}

/** What a worker's `complete` did. */
export interface Completion {
  state: ShardState;
  /** The last unit of its shard: the shard is completed. */
  shardCompleted: boolean;
}

/** The in-memory ledger; every unit write goes through `write`, which keeps the indexes. */
export class SimLedger {
  /** Unit states by doc. */
  readonly units: ShardState[] = [];
  /** Each doc's shard and unit number. */
  readonly shardOf: number[] = [];
  readonly unitOf: number[] = [];
  /** Every committed part, in commit order. */
  readonly committed: CommittedRange[] = [];
  /** Shards completed (all their units). */
  shardsCompleted = 0;
  private readonly docsOfShard: Array<Map<number, number>> = [];
  private readonly partRecords = new Map<string, PartRecord>();
  private readonly version: number[] = [];
  private readonly available = new Set<number>();
  private readonly inUse = new Set<number>();
  /** Docs whose last holder was lost (`lost_at` set): read by the lost-together query. */
  private readonly lostDocs = new Set<number>();
  /** In-use docs by lease expiry (lazy: stale entries are skipped by version). */
  private readonly expiries = new EventQueue<{ doc: number; version: number }>();
  private readonly expired = new Set<number>();
  /** Claims of the last `queryLagMs`: a later claimer's query may still list them. */
  private recentClaims: Array<{ doc: number; atMs: number }> = [];
  private completedCount = 0;
  private failedCount = 0;
  /** Scratch of `claim`: per shard, the claim that last listed it, and its candidates. */
  private claimStamp = 0;
  private readonly seenStamp: Int32Array;
  private readonly firstDoc: Int32Array;
  private readonly moreDocs = new Map<number, number[]>();

  constructor(
    readonly config: SimConfig,
    readonly meter: LedgerMeter,
  ) {
    this.seenStamp = new Int32Array(config.shards);
    this.firstDoc = new Int32Array(config.shards);
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
      this.docsOfShard.push(new Map());
      this.addDoc(k, 0, newShardState(entry, config.maxAttempts, 0));
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

  /** Units neither completed nor failed. */
  get open(): number {
    return this.units.length - this.completedCount - this.failedCount;
  }

  /** The doc a claim names. */
  docOf(claim: Claim): number {
    const doc = this.docsOfShard[claim.shard_id]?.get(claim.unit ?? 0);
    if (doc === undefined) throw new Error(`no unit ${claim.unit ?? 0} of shard ${claim.shard_id}`);
    return doc;
  }

  private addDoc(shard: number, unit: number, state: ShardState): number {
    const doc = this.units.length;
    this.units.push(state);
    this.shardOf.push(shard);
    this.unitOf.push(unit);
    this.version.push(0);
    this.docsOfShard[shard]!.set(unit, doc);
    this.index(doc, null, state);
    return doc;
  }

  /** The shard's units as a transaction over the shard reads them (one query: every unit). */
  private readShard(
    shard: number,
    nowMs: number,
    kind: 'holder-tx' | 'split-tx',
  ): Map<number, ShardState> {
    const units = new Map<number, ShardState>();
    for (const [unit, doc] of this.docsOfShard[shard]!) units.set(unit, this.units[doc]!);
    this.meter.read(units.size, nowMs, kind);
    return units;
  }

  /** Writes what a shard-level transition decided: changed units and created ones. */
  private writeShard(shard: number, writes: UnitWrites, nowMs: number, kind: WriteKind): void {
    for (const [unit, state] of writes) {
      const doc = this.docsOfShard[shard]!.get(unit);
      if (doc === undefined) {
        this.meter.write(this.addDoc(shard, unit, state), nowMs, kind);
      } else this.write(doc, state, nowMs, kind);
    }
  }

  /** Writes one unit's next state (one document write of `kind`). */
  private write(doc: number, next: ShardState, nowMs: number, kind: WriteKind): void {
    const before = this.units[doc]!;
    this.units[doc] = next;
    this.version[doc]!++;
    this.index(doc, before, next);
    this.meter.write(doc, nowMs, kind);
  }

  private index(doc: number, before: ShardState | null, next: ShardState): void {
    const was = before?.status;
    if (was !== next.status) {
      if (was === 'available') this.available.delete(doc);
      if (was === 'in_use') this.inUse.delete(doc);
      if (was === 'completed') this.completedCount--;
      if (was === 'failed') this.failedCount--;
      if (next.status === 'available') this.available.add(doc);
      if (next.status === 'in_use') this.inUse.add(doc);
      if (next.status === 'completed') this.completedCount++;
      if (next.status === 'failed') this.failedCount++;
    }
    this.expired.delete(doc);
    if (next.status === 'in_use' && next.lease_expires_at !== null)
      this.expiries.push(next.lease_expires_at, { doc, version: this.version[doc]! });
    if (next.lost_at !== null) this.lostDocs.add(doc);
  }

  /** In-use docs whose lease has expired at `nowMs`. */
  expiredDocs(nowMs: number): number[] {
    for (let at = this.expiries.peekMs(); at !== undefined && at <= nowMs;) {
      const { doc, version } = this.expiries.pop()!.item;
      if (version === this.version[doc] && leaseExpired(this.units[doc]!, nowMs))
        this.expired.add(doc);
      at = this.expiries.peekMs();
    }
    return [...this.expired];
  }

  private claimOf(doc: number, s: ShardState): Claim {
    return claimOf(
      { dataset_id: SIM_DATASET, shard_id: this.shardOf[doc]!, unit: this.unitOf[doc]! },
      s,
    );
  }

  /**
   * The other units whose holder was lost with `doc`'s (shard-state.ts `peersLostWith`), read
   * as `FirestoreLedger.peersLost` reads them: the held units, and those lost recently.
   */
  private peersLost(doc: number, s: ShardState, nowMs: number): number {
    const others: ShardState[] = [];
    for (const id of this.inUse) if (id !== doc) others.push(this.units[id]!);
    if (s.heartbeat_at !== null) {
      const from = s.heartbeat_at - lostTogetherWindowMs(s);
      for (const id of this.lostDocs) {
        const o = this.units[id]!;
        if (id !== doc && o.status !== 'in_use' && o.lost_at !== null && o.lost_at >= from)
          others.push(o);
      }
    }
    this.meter.read(others.length, nowMs, 'peers');
    return peersLostWith(s, others, nowMs);
  }

  /** One claim transaction on one candidate: the claim, or null when it is taken. */
  private tryClaim(doc: number, workerId: string, nowMs: number): Granted | null {
    this.meter.claimTransactions++;
    this.meter.read(1, nowMs, 'claim-tx');
    const s = this.units[doc]!;
    const peers = leaseExpired(s, nowMs) ? this.peersLost(doc, s, nowMs) : 0;
    const verdict = claimability(s, nowMs, peers);
    if (verdict === 'expire') this.write(doc, applyExpiry(s, nowMs, peers), nowMs, 'expire');
    if (verdict !== 'claimable') return null;
    const next = applyClaim(s, workerId, nowMs, this.config.leaseMs, peers);
    this.write(doc, next, nowMs, 'claim');
    this.recentClaims.push({ doc, atMs: nowMs });
    return { doc, claim: this.claimOf(doc, next), state: next };
  }

  /**
   * `claim` as `FirestoreLedger.claim` does it: the preferred shard's unit 0 first, then the
   * candidates (units available past their backoff, and held with an expired lease), shard by
   * shard in the worker's order and by unit within a shard. The candidate query also lists
   * units claimed by others within `queryLagMs`: trying one is a lost race (counted), after
   * which the worker moves on as the real claimer does.
   */
  claim(workerId: string, nowMs: number, preferred?: number): Granted | null {
    let skip: number | undefined;
    if (preferred !== undefined && preferred >= 0 && preferred < this.config.shards) {
      const first = this.tryClaim(this.docsOfShard[preferred]!.get(0)!, workerId, nowMs);
      if (first) return first;
      skip = preferred;
    }
    this.recentClaims = this.recentClaims.filter((c) => c.atMs > nowMs - this.config.queryLagMs);
    for (let round = 0; round < 2; round++) {
      // Candidates grouped by shard without a Map per claim (16,000 of them at 16× oversharding):
      // `firstDoc` holds a shard's one candidate, `moreDocs` the rare shard with several units.
      const stamp = ++this.claimStamp;
      const shards: number[] = [];
      const add = (doc: number): void => {
        const shard = this.shardOf[doc]!;
        if (round === 0 && shard === skip && this.unitOf[doc] === 0) return;
        if (this.seenStamp[shard] !== stamp) {
          this.seenStamp[shard] = stamp;
          this.firstDoc[shard] = doc;
          this.moreDocs.delete(shard);
          shards.push(shard);
          return;
        }
        const docs = this.moreDocs.get(shard) ?? [this.firstDoc[shard]!];
        if (!docs.includes(doc)) docs.push(doc);
        this.moreDocs.set(shard, docs);
      };
      let listed = 0;
      for (const doc of this.available) {
        listed++;
        const retryAt = this.units[doc]!.retry_at;
        if (retryAt === null || retryAt <= nowMs) add(doc);
      }
      this.meter.read(listed, nowMs, 'claim-query');
      const expired = this.expiredDocs(nowMs);
      this.meter.read(expired.length, nowMs, 'claim-query');
      for (const doc of expired) add(doc);
      // Round 0's answer is `queryLagMs` old: it still lists what others claimed since.
      const stale = round === 0 ? this.recentClaims.map((c) => c.doc) : [];
      for (const doc of stale) add(doc);
      if (shards.length === 0) return null;
      for (const shard of claimOrder(shards, workerId, preferred, round)) {
        const more = this.moreDocs.get(shard);
        const docs = more
          ? more.sort((a, b) => this.unitOf[a]! - this.unitOf[b]!)
          : [this.firstDoc[shard]!];
        for (const doc of docs) {
          const granted = this.tryClaim(doc, workerId, nowMs);
          if (granted) return granted;
          if (stale.includes(doc)) this.meter.lostRaces++;
        }
      }
    }
    return null;
  }

  /**
   * `split` as `FirestoreLedger.split` does it: the held units read outside a transaction and
   * ranked (`splitCandidates`), then the best re-read with its whole shard in a transaction
   * and split at its `splitPoint` (`applySplit`). The splitter holds the new unit.
   */
  split(workerId: string, nowMs: number, minTasks?: number): Granted | null {
    const held = [...this.inUse].map((doc) => ({
      shard_id: this.shardOf[doc]!,
      unit: this.unitOf[doc]!,
      state: this.units[doc]!,
    }));
    this.meter.read(held.length, nowMs, 'split-query');
    const options = {
      fingerprint: SIM_FINGERPRINT,
      ...(minTasks === undefined ? {} : { minTasks }),
    };
    for (const c of splitCandidates(held, workerId, options)) {
      const units = this.readShard(c.shard_id, nowMs, 'split-tx');
      const fresh = units.get(c.unit);
      const at = fresh ? splitPoint(fresh, minTasks) : null;
      if (!fresh || at === null || at !== c.at) continue;
      const split = applySplit(units, c.unit, at, workerId, nowMs, this.config.leaseMs);
      this.writeShard(c.shard_id, split.writes, nowMs, 'split');
      const doc = this.docsOfShard[c.shard_id]!.get(split.unit)!;
      return { doc, claim: this.claimOf(doc, split.state), state: split.state };
    }
    return null;
  }

  /**
   * `heartbeat`: renews the holder's lease and, with `reserveTo`, raises its reservation; the
   * answer carries the unit's end. `LeaseLostError` when it no longer holds the unit.
   */
  heartbeat(claim: Claim, nowMs: number, reserveTo?: number): ShardState {
    const doc = this.docOf(claim);
    this.meter.read(1, nowMs, 'holder-tx');
    const s = requireHolder(this.units[doc] ?? null, claim, 'heartbeat');
    const next = applyHeartbeat(s, nowMs, undefined, reserveTo);
    this.write(doc, next, nowMs, 'heartbeat');
    return next;
  }

  /** `commitPart` of tasks [first, next) as the holder's next part; returns the unit's new state. */
  commitPart(claim: Claim, first: number, next: number, nowMs: number): ShardState {
    const doc = this.docOf(claim);
    this.meter.read(2, nowMs, 'holder-tx');
    const s = requireHolder(this.units[doc] ?? null, claim, 'commitPart');
    const unit = claim.unit ?? 0;
    const index = String(s.parts_committed).padStart(5, '0');
    const part: PartInput = {
      part_index: s.parts_committed,
      name: unit === 0 ? `part_${index}` : `part_u${unit}_${index}`,
      first_task_index: first,
      first_sample: 0,
      last_task_index: next - 1,
      next_task_index: next,
      next_sample: 0,
      samples: next - first,
      bytes: next - first,
      checksums: {},
      fingerprint: SIM_FINGERPRINT,
    };
    const key = `${doc}/${part.part_index}`;
    const decision = applyCommitPart(s, claim, part, this.partRecords.get(key) ?? null, nowMs);
    this.write(doc, decision.state, nowMs, 'commit');
    if (!decision.duplicate) {
      this.partRecords.set(key, decision.record);
      this.meter.write(null, nowMs, 'part');
      this.committed.push({
        shard: claim.shard_id,
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
   * `complete` as the worker does it: without a manifest first (`requireManifest`), which the
   * shard's last unit is refused (`MANIFEST_REQUIRED`), then again with the shard's manifest.
   * After it, the worker's roll-up reads the dataset's units, and when the shard completed the
   * progress function's roll-up on `shard.completed` reads them again.
   */
  complete(claim: Claim, nowMs: number): Completion {
    const shard = claim.shard_id;
    let units = this.readShard(shard, nowMs, 'holder-tx');
    let decision: ReturnType<typeof applyComplete>;
    try {
      decision = applyComplete(units, claim, undefined, nowMs, { requireManifest: true });
    } catch (e: unknown) {
      if (!(e instanceof ShardlineError) || e.code !== 'MANIFEST_REQUIRED') throw e;
      units = this.readShard(shard, nowMs, 'holder-tx');
      decision = applyComplete(units, claim, manifestOf(units), nowMs, { requireManifest: true });
    }
    if (decision) this.writeShard(shard, decision.writes, nowMs, 'complete');
    const shardCompleted = decision?.shardCompleted ?? false;
    if (shardCompleted) this.shardsCompleted++;
    this.meter.read(this.units.length, nowMs, 'status');
    if (shardCompleted) this.meter.read(this.units.length, nowMs, 'status');
    return { state: this.units[this.docOf(claim)]!, shardCompleted };
  }

  /** The reaper's `reapExpired`: expired leases back to available, or failed at max attempts. */
  reap(nowMs: number): ReapOutcome {
    const expired = this.expiredDocs(nowMs);
    this.meter.read(expired.length, nowMs, 'reap-query');
    const out: ReapOutcome = { freed: [], failed: [] };
    for (const doc of expired) {
      this.meter.read(1, nowMs, 'holder-tx');
      const s = this.units[doc]!;
      if (!leaseExpired(s, nowMs)) continue;
      const next = applyExpiry(s, nowMs, this.peersLost(doc, s, nowMs));
      this.write(doc, next, nowMs, 'reap');
      (next.status === 'failed' ? out.failed : out.freed).push(doc);
    }
    return out;
  }

  /**
   * Checks that the committed parts cover tasks [0, totalTasks) exactly once, that each
   * unit's parts cover its range, and that every unit is completed; returns the problems
   * found (none: an empty list).
   */
  exactnessProblems(): string[] {
    const problems: string[] = [];
    const ranges = [...this.committed].sort((a, b) => a.first - b.first || a.next - b.next);
    let at = 0;
    for (const r of ranges) {
      if (r.first > at) problems.push(`tasks [${at}, ${r.first}) were never committed`);
      if (r.first < at)
        problems.push(
          `tasks [${r.first}, ${Math.min(at, r.next)}) were committed twice (shard ${r.shard} unit ${r.unit})`,
        );
      at = Math.max(at, r.next);
    }
    if (at < this.config.totalTasks)
      problems.push(`tasks [${at}, ${this.config.totalTasks}) were never committed`);
    const covered = new Map<string, number>();
    for (const r of this.committed) {
      const key = `${r.shard}.${r.unit}`;
      covered.set(key, (covered.get(key) ?? 0) + r.next - r.first);
    }
    this.units.forEach((s, doc) => {
      const name = `shard ${this.shardOf[doc]} unit ${this.unitOf[doc]}`;
      if (s.status !== 'completed') problems.push(`${name} ended ${s.status}`);
      const n = covered.get(`${this.shardOf[doc]}.${this.unitOf[doc]}`) ?? 0;
      const size = unitEnd(s) - unitStart(s);
      if (s.status === 'completed' && n !== size)
        problems.push(`${name} is completed with ${n} of its ${size} tasks committed`);
    });
    return problems;
  }
}

/** The shard's manifest summary: every unit's parts together. */
function manifestOf(units: ReadonlyMap<number, ShardState>): ManifestSummary {
  const m = { parts: 0, samples: 0, bytes: 0 };
  for (const s of units.values()) {
    m.parts += s.parts_committed;
    m.samples += s.samples_committed;
    m.bytes += s.bytes_committed;
  }
  return m;
}
