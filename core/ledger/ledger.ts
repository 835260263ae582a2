/**
 * The ledger port: the source of truth for shard status (docs/architecture.md#the-ledger). Two
 * implementations sit side by side and pass one contract suite (test/support/ledger-contract.ts):
 * `SqliteLedger` (a file beside a local dataset) and `FirestoreLedger` (the cloud).
 *
 * Every verb is one transaction (registration of a Firestore dataset with many shards is the
 * one exception; see `FirestoreLedger.registerDataset`). The records are defined once, in
 * core/ledger/schema.ts; their fields use the glossary's words (docs/glossary.md) and are the
 * Firestore field names too. Times in records are ISO-8601 UTC strings (`isoTime`), the one
 * timestamp format shardline writes.
 *
 * The holder rule (docs/conventions.md#claims): heartbeat, commitPart, complete, fail and release
 * succeed only while the shard is `in_use` with `assigned_to === claim.worker_id` and
 * `epoch === claim.epoch`; otherwise they throw `LeaseLostError` (code `LEASE_LOST`).
 * An expired lease that nobody has taken yet is still the holder's: nobody else did the work,
 * so it may renew or finish it. Once a claim or the reaper moves the shard on (a new epoch, or
 * `available`), the old holder is fenced for good.
 */
import type { z } from 'zod';

import type { MasterMetadata, ShardStatus } from '../dataset/metadata';
import type { RecordOf } from './record-schema';
import type { DATASET_FIELDS, ManifestSummarySchema, PART_FIELDS, SHARD_FIELDS } from './schema';

/** `fail` and expired leases after this many attempts leave the shard `failed`. */
export const DEFAULT_MAX_ATTEMPTS = 3;
/** How long a claim stays valid without a heartbeat when the caller does not say: 10 minutes. */
export const DEFAULT_LEASE_MS = 10 * 60_000;
/** The longest lease a claim may ask for: 7 days (a CLI claim held by a person). */
export const MAX_LEASE_MS = 7 * 24 * 3_600_000;

/** Which implementation a ledger is. */
export type LedgerKind = 'sqlite' | 'firestore';

/** Names one shard of one dataset. */
export interface ShardRef {
  dataset_id: string;
  shard_id: number;
}

/**
 * Names one work unit of a shard (glossary: unit): absent or 0 is the shard's own unit, the
 * only one until a split; a split makes units 1, 2… A `Claim` is one.
 */
export interface UnitRef extends ShardRef {
  unit?: number;
}

/** A worker's right to process one work unit of a shard (glossary: claim). */
export interface Claim extends UnitRef {
  worker_id: string;
  /** The fencing token: the unit's epoch when this claim was granted. */
  epoch: number;
  /** ISO time after which another worker may take the unit. */
  lease_expires_at: string;
  /**
   * The unit's end (exclusive task index) as the ledger last told this holder (claim,
   * heartbeat): a split moves it down, never below what the holder reserved. Absent in claims
   * a person rebuilds by hand (`complete --worker_id`).
   */
  end_task_index?: number;
}

/** Options of `claim`. */
export interface ClaimOptions {
  /** Tried first when it is claimable (the doorbell's shard, or `--preferred_shard_id`). */
  preferredShardId?: number;
  /** Lease length in ms; default `DEFAULT_LEASE_MS`, at most `MAX_LEASE_MS`. */
  leaseMs?: number;
  /** Tried last (a worker that just failed these shards prefers others). */
  avoidShardIds?: readonly number[];
}

/** Options of a split (the ledger's `split`, `splitCandidates`). */
export interface SplitOptions {
  /** Fewest tasks each side keeps; default 2 (shard-state.ts `DEFAULT_MIN_SPLIT_TASKS`, `splitPoint`). */
  minTasks?: number;
  /** The splitter's run fingerprint: units whose parts were made with another are left alone. */
  fingerprint?: string;
  /** The new unit's lease; default `DEFAULT_LEASE_MS`. */
  leaseMs?: number;
}

/** Options of `complete`. */
export interface CompleteOptions {
  /**
   * Refuse, with `MANIFEST_REQUIRED`, a completion without a manifest that would complete the
   * shard (the claim's unit is its last one not completed). A worker passes it: then exactly one
   * completer, the last, writes the shard's manifest (worker/shard-job.ts).
   */
  requireManifest?: boolean;
}

/** What `split` did: the new unit's claim, and where it came from. */
export interface SplitResult {
  /** The splitter's claim on the new unit. */
  claim: Claim;
  /** The unit that was split, its holder then, and its new end (the split point). */
  from: UnitRef & { holder: string | null; end_task_index: number };
}

/** Options of `fail`. */
export interface FailOptions {
  /**
   * A deterministic failure no retry can fix (a chunk that fails its checksum, inputs the model
   * cannot run): the shard is `failed` at once instead of after max attempts.
   */
  final?: boolean;
}

/** A committed part as the ledger records it (fields: core/ledger/schema.ts `PART_FIELDS`). */
export type PartRecord = RecordOf<typeof PART_FIELDS>;

/** One output part as the worker commits it: the record less what the ledger adds. */
export type PartInput = Omit<
  PartRecord,
  'dataset_id' | 'shard_id' | 'unit' | 'worker_id' | 'epoch' | 'committed_at'
>;

/** What `complete` records about the shard's `_MANIFEST.json`. */
export type ManifestSummary = z.infer<typeof ManifestSummarySchema>;

/** A complete or fail done by someone who was not the holder (an operator's `--force`). */
export interface ForcedAction {
  action: 'complete' | 'fail';
  by: string;
  at: string;
}

/** Fields of the stored shard that callers see in another form (`forced`) or not at all. */
type InternalShardFields =
  'claim_next_task_index' | 'claim_next_sample' | 'forced_action' | 'forced_by' | 'forced_at';

/**
 * A work unit as the ledger knows it (fields: core/ledger/schema.ts `SHARD_FIELDS`), times as
 * ISO strings. Unit 0 of a shard never split is the shard.
 */
export type ShardRecord = ShardRef &
  Omit<RecordOf<typeof SHARD_FIELDS, 'iso'>, InternalShardFields> & {
    /** Which unit (0: the shard's own). */
    unit: number;
    /** Set when the shard was completed or failed with `--force`; cleared by claim and reset. */
    forced: ForcedAction | null;
  };

/** A registered dataset (fields: core/ledger/schema.ts `DATASET_FIELDS`). */
export type DatasetRecord = RecordOf<typeof DATASET_FIELDS>;

/** Options of `registerDataset`. */
export interface RegisterOptions {
  /** Where the dataset lives, for status output and re-publishing doorbells. */
  datasetUri: string;
  /** Default `DEFAULT_MAX_ATTEMPTS`. */
  maxAttempts?: number;
}

/** What `registerDataset` did. */
export interface RegisterResult {
  /** False when the same dataset was already registered (idempotent). */
  created: boolean;
  dataset: DatasetRecord;
}

/** Options of `reset`. */
export interface ResetOptions {
  /**
   * Forget committed parts too, so the next holder starts at the shard's first task.
   * Default false: the next holder resumes after the last committed part.
   */
  discardParts?: boolean;
}

/** Options of `reapExpired`. */
export interface ReapOptions {
  /** Only this dataset; default every dataset in the ledger. */
  datasetId?: string;
  /** At most this many shards per call; default 500. */
  limit?: number;
}

/** A unit `reapExpired` took from a holder whose lease ran out. */
export interface ReapedShard extends UnitRef {
  /** The holder that lost it. */
  worker_id: string;
  epoch: number;
  /** `available` again (ring its doorbell), or `failed` after max attempts. */
  status: 'available' | 'failed';
  attempts: number;
  last_error: string;
}

/** One work unit in a `status` row. */
export interface UnitStatusRow extends ShardRecord {
  /** Ms of lease left at `as_of` (negative when expired), null when not `in_use`. */
  lease_left_ms: number | null;
  /** Tasks of its range covered by committed parts (all of them once completed). */
  tasks_done: number;
  /** Its range: first task and end (exclusive), resolved (`start_task_index` may be null). */
  unit_start: number;
  unit_end: number;
}

/**
 * One row of `status`: a shard as shard-state.ts `shardRecordOf` sums up its units, with the
 * units under it.
 */
export interface ShardStatusRow extends ShardRecord {
  /** Ms of lease left at `as_of` (negative when expired), null when not `in_use`. */
  lease_left_ms: number | null;
  /** Tasks covered by committed parts (all of them once completed). */
  tasks_done: number;
  /** Its work units in task order: one for a shard never split. */
  units: UnitStatusRow[];
}

/** Dataset totals of `status`. */
export interface StatusTotals {
  shards: number;
  available: number;
  in_use: number;
  completed: number;
  failed: number;
  total_tasks: number;
  tasks_done: number;
  parts_committed: number;
  samples_committed: number;
  bytes_committed: number;
  /** Failed attempts over all shards. */
  attempts: number;
}

/** `status(dataset)`: every shard and the totals, read in one consistent snapshot. */
export interface LedgerStatus {
  dataset: DatasetRecord;
  /** The clock's time when the snapshot was read; `lease_left_ms` is relative to it. */
  as_of: string;
  /**
   * The dataset's state derived from its shards: `completed` when all are, `failed` when some
   * failed and nothing is left to run, `in_use` while any is held, `available` otherwise.
   */
  state: ShardStatus;
  shards: ShardStatusRow[];
  totals: StatusTotals;
}

/** The port. */
export interface Ledger {
  readonly kind: LedgerKind;
  /** Where the ledger lives, for messages: a file path, or the Firestore collection path. */
  readonly location: string;

  /**
   * Registers a dataset and its shards (all `available`) from its master metadata. Idempotent:
   * the same dataset again is a no-op (`created: false`); a different dataset under the same
   * id fails with `DATASET_CONFLICT`. Call it only after `master_metadata.json` is written.
   */
  registerDataset(master: MasterMetadata, options: RegisterOptions): Promise<RegisterResult>;
  /** The dataset, or null when it is not registered. */
  getDataset(datasetId: string): Promise<DatasetRecord | null>;
  /**
   * One unit of a shard (default unit 0, which for a shard never split is the shard), or null
   * when the dataset, shard or unit is not registered. `status` shows whole shards.
   */
  getShard(datasetId: string, shardId: number, unit?: number): Promise<ShardRecord | null>;

  /**
   * Claims one shard for `workerId`: the preferred shard when it is claimable, else another in
   * an order that differs per worker. A shard is claimable when `available` and past its
   * `retry_at`, or `in_use` with an expired lease (which may count a failed attempt of the old
   * holder: shard-state.ts `applyExpiry`; at max attempts the shard becomes `failed` instead,
   * and a counted attempt's backoff makes it wait). Raises the shard's epoch. Null when nothing
   * is claimable; `NOT_FOUND` when the dataset is not registered.
   */
  claim(datasetId: string, workerId: string, options?: ClaimOptions): Promise<Claim | null>;
  /**
   * Splits the unit worth it most (shard-state.ts `splitCandidates`: held units, live or
   * expired, with the largest remainder past what is committed and reserved) and gives the
   * splitter a claim on the new unit, in one transaction; null when no unit is worth
   * splitting. Concurrent splitters of one unit: one wins, the others see what is left.
   */
  split(datasetId: string, workerId: string, options?: SplitOptions): Promise<SplitResult | null>;
  /**
   * Renews the lease from now (by `leaseMs`, default the claim's lease length); with
   * `reserveTo`, reserves the unit's tasks up to that one (exclusive, clipped to the unit's
   * end) for the holder: no split cuts below its reservation. The answer carries the unit's
   * end as it now is (`end_task_index`): a split may have moved it.
   */
  heartbeat(claim: Claim, options?: { leaseMs?: number; reserveTo?: number }): Promise<Claim>;
  /**
   * Records one output part of the claim's unit and moves its `next_task_index` to the part's.
   * Parts come in order; committing the same part again is a no-op, a different part under a
   * committed index fails with `ALREADY_EXISTS`, a gap or a range that does not start at
   * `next_task_index` with `INVALID_ARGUMENT`, a part past the unit's end (a split moved it)
   * with `PAST_END` (its `details.end_task_index` is the end). Renews the lease too.
   */
  commitPart(claim: Claim, part: PartInput): Promise<PartRecord>;
  /**
   * Marks the claim's unit `completed` (keeping `assigned_to`); the shard is completed when all
   * its units are. The manifest belongs to the completion that completes the shard: its
   * `parts` must equal every unit's parts committed, and it is refused while other units are
   * not completed. Repeating it for the same claim is a no-op. Resolves with the unit's record.
   */
  complete(
    claim: Claim,
    manifest?: ManifestSummary,
    options?: CompleteOptions,
  ): Promise<ShardRecord>;
  /**
   * attempts + 1 and `last_error = reason`; `available` again after a backoff that grows with
   * the attempts (`retry_at`), or `failed` at max attempts (at once with `final`).
   */
  fail(claim: Claim, reason: string, options?: FailOptions): Promise<ShardRecord>;
  /** Gives the shard back (`available`) without counting an attempt: a clean shutdown. */
  release(claim: Claim): Promise<ShardRecord>;

  /**
   * `complete` by someone who is not the holder (an operator), of every unit of the shard:
   * recorded in `forced`; holders are fenced. Completing an already completed shard is a no-op.
   */
  forceComplete(
    datasetId: string,
    shardId: number,
    by: string,
    manifest?: ManifestSummary,
  ): Promise<ShardRecord>;
  /**
   * `fail` by someone who is not the holder, of every unit of the shard not completed (each
   * counts an attempt), recorded in `forced`; refused on a completed shard.
   */
  forceFail(datasetId: string, shardId: number, by: string, reason: string): Promise<ShardRecord>;
  /**
   * Operator reset of a shard and all its units: `available`, no holder, no lease, no
   * `completed_at`, attempts 0, no `last_error`; records `reset_by`/`reset_at`. Holders are
   * fenced. A split stays: each unit keeps its range (shard-state.ts `applyReset`).
   */
  reset(
    datasetId: string,
    shardId: number,
    by: string,
    options?: ResetOptions,
  ): Promise<ShardRecord>;
  /**
   * Takes back every `in_use` unit whose lease expired at `nowMs` (default the clock's now):
   * `available` with attempts + 1, or `failed` at max attempts. Returns what it took, so the
   * caller can ring the doorbells again.
   */
  reapExpired(nowMs?: number, options?: ReapOptions): Promise<ReapedShard[]>;
  /** Every shard of the dataset with totals; `NOT_FOUND` when it is not registered. */
  status(datasetId: string): Promise<LedgerStatus>;
  /** One unit's committed parts in order (default unit 0: a shard never split has no other). */
  listParts(ref: UnitRef): Promise<PartRecord[]>;
  /** Every committed part of the shard, all units, in task order. */
  listShardParts(ref: ShardRef): Promise<PartRecord[]>;
  /** Releases what the ledger holds open (the SQLite file; a Firestore client it owns). */
  close(): Promise<void>;
}
