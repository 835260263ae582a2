/**
 * The verbs both ledgers share, written once over two primitives each adapter provides in its
 * own transaction style: a holder verb (read the shard, decide, write) and an operator verb
 * (the same on an existing shard, optionally dropping its committed parts). The decisions are
 * the state machine's (core/ledger/shard-state.ts); an adapter only reads and writes.
 */
import { toError } from '../errors';
import type {
  Claim,
  FailOptions,
  ManifestSummary,
  ReapedShard,
  ResetOptions,
  ShardRecord,
  ShardRef,
} from './ledger';
import type { ShardState } from './schema';
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
} from './shard-state';

/** A decision over a shard's state: its next state, or null when nothing is to be written. */
export type Decide = (s: ShardState | null, nowMs: number) => ShardState | null;

/** The shared verbs; `SqliteLedger` and `FirestoreLedger` extend it. */
export abstract class LedgerVerbs {
  /**
   * One transaction on the claim's shard: read it (null when missing), `decide`, write what
   * was decided; resolves with the record as it now is.
   */
  protected abstract holderVerb(claim: Claim, decide: Decide): Promise<ShardRecord>;

  /**
   * One transaction on an existing shard (`NOT_FOUND` otherwise): read, `decide`, write; with
   * `discardParts`, the shard's committed parts are deleted in the same transaction.
   */
  protected abstract operatorVerb(
    ref: ShardRef,
    decide: (s: ShardState, nowMs: number) => ShardState | null,
    discardParts: boolean,
  ): Promise<ShardRecord>;

  heartbeat(claim: Claim, options: { leaseMs?: number } = {}): Promise<Claim> {
    return this.holderVerb(claim, (s, now) =>
      applyHeartbeat(requireHolder(s, claim, 'heartbeat'), now, options.leaseMs),
    ).then((record) => ({ ...claim, lease_expires_at: record.lease_expires_at! }));
  }

  complete(claim: Claim, manifest?: ManifestSummary): Promise<ShardRecord> {
    return this.holderVerb(claim, (s, now) => applyComplete(s, claim, manifest, now));
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
    return this.operator(datasetId, shardId, by, false, (s, now) =>
      applyForceComplete(s, shardId, by, manifest, now),
    );
  }

  forceFail(datasetId: string, shardId: number, by: string, reason: string): Promise<ShardRecord> {
    return this.operator(datasetId, shardId, by, false, (s, now) =>
      applyForceFail(s, by, reason, now),
    );
  }

  reset(
    datasetId: string,
    shardId: number,
    by: string,
    options: ResetOptions = {},
  ): Promise<ShardRecord> {
    const discard = options.discardParts ?? false;
    return this.operator(datasetId, shardId, by, discard, (s, now) =>
      applyReset(s, by, now, discard),
    );
  }

  private operator(
    datasetId: string,
    shardId: number,
    by: string,
    discardParts: boolean,
    decide: (s: ShardState, nowMs: number) => ShardState | null,
  ): Promise<ShardRecord> {
    try {
      checkWorkerId(by, 'operator name');
    } catch (e: unknown) {
      return Promise.reject(toError(e));
    }
    return this.operatorVerb({ dataset_id: datasetId, shard_id: shardId }, decide, discardParts);
  }
}

/** What `reapExpired` reports for a shard it took from `before`'s holder. */
export function reapedOf(ref: ShardRef, before: ShardState, after: ShardState): ReapedShard {
  return {
    ...ref,
    worker_id: before.assigned_to ?? '',
    epoch: before.epoch,
    status: after.status === 'failed' ? 'failed' : 'available',
    attempts: after.attempts,
    last_error: after.last_error ?? '',
  };
}
