/**
 * The verbs both ledgers share, written once over two primitives each adapter provides in its
 * own transaction style: a holder verb (read the shard, decide, write) and an operator verb
 * (the same on an existing shard, optionally dropping its committed parts). The decisions are
 * the state machine's (core/ledger/shard-state.ts); an adapter only reads and writes.
 */
import { toError } from '../errors';
import type {
  Claim,
  CompleteOptions,
  FailOptions,
  ManifestSummary,
  ReapedShard,
  ResetOptions,
  ShardRecord,
  ShardRef,
  UnitRef,
} from './ledger';
import type { ShardState } from './schema';
import type { ShardUnits, UnitWrites } from './shard-state';
import {
  applyComplete,
  applyFail,
  applyForceComplete,
  applyForceFail,
  applyHeartbeat,
  applyRelease,
  applyReset,
  checkWorkerId,
  requireHolder,
  shardRecordOf,
  toShardRecord,
} from './shard-state';

/** A decision over one unit's state: its next state, or null when nothing is to be written. */
export type Decide = (s: ShardState | null, nowMs: number) => ShardState | null;

/**
 * A decision over every unit of a shard: the units to write (changed ones, and new ones a
 * split creates), whether to delete every unit's committed parts, and the verb's answer.
 */
export type DecideUnits<T> = (
  units: ShardUnits,
  nowMs: number,
) => { writes: UnitWrites; discardParts?: boolean; result: T };

/** The shared verbs; `SqliteLedger` and `FirestoreLedger` extend it. */
export abstract class LedgerVerbs {
  /**
   * One transaction on the claim's unit: read it (null when missing), `decide`, write what was
   * decided; resolves with the unit's record as it now is.
   */
  protected abstract holderVerb(claim: Claim, decide: Decide): Promise<ShardRecord>;

  /**
   * One transaction over every unit of a shard (`NOT_FOUND` when the shard is not registered):
   * read them all, `decide`, write (creating new units), and with `discardParts` delete every
   * unit's committed parts; resolves with the decision's result.
   */
  protected abstract shardVerb<T>(ref: ShardRef, decide: DecideUnits<T>): Promise<T>;

  heartbeat(claim: Claim, options: { leaseMs?: number; reserveTo?: number } = {}): Promise<Claim> {
    return this.holderVerb(claim, (s, now) =>
      applyHeartbeat(requireHolder(s, claim, 'heartbeat'), now, options.leaseMs, options.reserveTo),
    ).then((record) => ({
      ...claim,
      lease_expires_at: record.lease_expires_at!,
      end_task_index: endOf(record),
    }));
  }

  complete(
    claim: Claim,
    manifest?: ManifestSummary,
    options: CompleteOptions = {},
  ): Promise<ShardRecord> {
    const unit = claim.unit ?? 0;
    return this.shardVerb(claim, (units, now) => {
      const decision = applyComplete(units, claim, manifest, now, options);
      const after = decision?.writes.get(unit) ?? units.get(unit)!;
      return {
        writes: decision?.writes ?? new Map<number, ShardState>(),
        result: toShardRecord({ ...claim, unit }, after),
      };
    });
  }

  fail(claim: Claim, reason: string, options: FailOptions = {}): Promise<ShardRecord> {
    return this.holderVerb(claim, (s, now) =>
      applyFail(s, claim, reason, now, options.final ?? false),
    );
  }

  release(claim: Claim): Promise<ShardRecord> {
    return this.holderVerb(claim, (s, now) => applyRelease(s, claim, now));
  }

  forceComplete(
    datasetId: string,
    shardId: number,
    by: string,
    manifest?: ManifestSummary,
  ): Promise<ShardRecord> {
    return this.operator(datasetId, shardId, by, false, (units, now) =>
      applyForceComplete(units, shardId, by, manifest, now),
    );
  }

  forceFail(datasetId: string, shardId: number, by: string, reason: string): Promise<ShardRecord> {
    return this.operator(datasetId, shardId, by, false, (units, now) =>
      applyForceFail(units, by, reason, now),
    );
  }

  reset(
    datasetId: string,
    shardId: number,
    by: string,
    options: ResetOptions = {},
  ): Promise<ShardRecord> {
    const discard = options.discardParts ?? false;
    return this.operator(datasetId, shardId, by, discard, (units, now) =>
      applyReset(units, by, now, discard),
    );
  }

  /** An operator's verb over the whole shard; resolves with the shard as `status` shows it. */
  private operator(
    datasetId: string,
    shardId: number,
    by: string,
    discardParts: boolean,
    decide: (units: ShardUnits, nowMs: number) => UnitWrites | null,
  ): Promise<ShardRecord> {
    try {
      checkWorkerId(by, 'operator name');
    } catch (e: unknown) {
      return Promise.reject(toError(e));
    }
    const ref = { dataset_id: datasetId, shard_id: shardId };
    return this.shardVerb(ref, (units, now) => {
      const writes = decide(units, now) ?? new Map<number, ShardState>();
      const after = new Map(units);
      for (const [u, s] of writes) after.set(u, s);
      return { writes, discardParts, result: shardRecordOf(ref, after) };
    });
  }
}

/** The end (exclusive task index) a claim's unit has in `record`. */
export function endOf(
  record: Pick<ShardRecord, 'end_task_index' | 'first_task_index' | 'total_tasks'>,
): number {
  return record.end_task_index ?? record.first_task_index + record.total_tasks;
}

/** The unit a ref names (absent: 0). */
export function unitOf(ref: UnitRef): number {
  return ref.unit ?? 0;
}

/** What `reapExpired` reports for a unit it took from `before`'s holder. */
export function reapedOf(ref: UnitRef, before: ShardState, after: ShardState): ReapedShard {
  return {
    dataset_id: ref.dataset_id,
    shard_id: ref.shard_id,
    ...(ref.unit ? { unit: ref.unit } : {}),
    worker_id: before.assigned_to ?? '',
    epoch: before.epoch,
    status: after.status === 'failed' ? 'failed' : 'available',
    attempts: after.attempts,
    last_error: after.last_error ?? '',
  };
}
